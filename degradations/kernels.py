"""Blur kernels as numpy arrays (float64, summing to 1).

Meanings follow the albumentations 1.0 transforms the official QC-StyleGAN release trained with
(Sec. 4 of the paper, "degradation synthesis"): OpenCV's Gaussian kernel with sigma derived from
the size when none is given, a motion kernel that is a one-pixel line segment between two points
of the kernel (8-connected, as ``cv2.line`` draws it), and a box (mean) kernel.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import numpy as np

# OpenCV's fixed kernels for sigma <= 0 and sizes 1..9 (cv::getGaussianKernel).
_SMALL_GAUSSIAN = {
    1: [1.0],
    3: [0.25, 0.5, 0.25],
    5: [0.0625, 0.25, 0.375, 0.25, 0.0625],
    7: [0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125],
    9: [v / 64 for v in (1, 3.25, 7.5, 12.75, 15, 12.75, 7.5, 3.25, 1)],
}


def check_ksize(ksize: int) -> int:
    ksize = int(ksize)
    if ksize < 1 or ksize % 2 != 1:
        raise ValueError(f"kernel size must be odd and positive, got {ksize}")
    return ksize


def default_sigma(ksize: int) -> float:
    """Sigma OpenCV derives from the kernel size when sigma <= 0: 0.3 * ((k - 1) / 2 - 1) + 0.8."""
    return 0.3 * ((ksize - 1) * 0.5 - 1.0) + 0.8


def gaussian_kernel1d(ksize: int, sigma: Optional[float] = None) -> np.ndarray:
    """1-D Gaussian of odd size ``ksize``; ``sigma`` None or <= 0 derives it like OpenCV
    (including OpenCV's fixed kernels for sizes up to 9)."""
    ksize = check_ksize(ksize)
    if sigma is None or sigma <= 0:
        if ksize in _SMALL_GAUSSIAN:
            return np.array(_SMALL_GAUSSIAN[ksize], dtype=np.float64)
        sigma = default_sigma(ksize)
    x = np.arange(ksize, dtype=np.float64) - (ksize - 1) / 2
    k = np.exp(-(x * x) / (2.0 * float(sigma) ** 2))
    return k / k.sum()


def aniso_gaussian_kernel2d(ksize: int, sigma_x: float, sigma_y: float, angle: float) -> np.ndarray:
    """2-D Gaussian with standard deviations ``sigma_x`` along the direction ``angle`` (degrees,
    counter-clockwise from the x axis, y pointing up) and ``sigma_y`` across it.

    Covariance ``S = R diag(sx^2, sy^2) R^T``; weights ``exp(-p^T S^-1 p / 2)`` normalised.
    """
    ksize = check_ksize(ksize)
    if sigma_x <= 0 or sigma_y <= 0:
        raise ValueError("anisotropic Gaussian needs positive sigma_x and sigma_y")
    t = math.radians(angle)
    c, s = math.cos(t), math.sin(t)
    rot = np.array([[c, -s], [s, c]])
    cov = rot @ np.diag([sigma_x ** 2, sigma_y ** 2]) @ rot.T
    inv = np.linalg.inv(cov)
    r = (ksize - 1) / 2
    coords = np.arange(ksize, dtype=np.float64) - r
    xx = coords[None, :]                # column offset (x to the right)
    yy = -coords[:, None]               # row offset, flipped so y points up
    q = inv[0, 0] * xx * xx + 2 * inv[0, 1] * xx * yy + inv[1, 1] * yy * yy
    k = np.exp(-0.5 * q)
    return k / k.sum()


def line_pixels(x0: int, y0: int, x1: int, y1: int) -> List[Tuple[int, int]]:
    """Pixels ``(x, y)`` of the 8-connected one-pixel line from (x0, y0) to (x1, y1), both ends
    included: Bresenham walked from the left end, with the tie-breaking ``cv2.line(...,
    thickness=1)`` uses, so kernels match the ones albumentations drew."""
    if x1 < x0:
        x0, y0, x1, y1 = x1, y1, x0, y0
    dx, dy = x1 - x0, y1 - y0
    sy = -1 if dy < 0 else 1
    dy = abs(dy)
    major, minor = (1, 0), (0, sy)
    if dy > dx:
        dx, dy = dy, dx
        major, minor = minor, major
    err = dx - 2 * dy
    x, y = x0, y0
    pts = [(x, y)]
    for _ in range(dx):
        if err < 0:
            err += 2 * dx - 2 * dy
            x, y = x + major[0] + minor[0], y + major[1] + minor[1]
        else:
            err -= 2 * dy
            x, y = x + major[0], y + major[1]
        pts.append((x, y))
    return pts


def motion_line_from_angle(ksize: int, length: float, angle: float) -> List[int]:
    """Endpoints ``[xs, ys, xe, ye]`` of a centred segment of ``length`` pixels at ``angle``
    degrees (counter-clockwise, y up) inside a ``ksize`` kernel."""
    ksize = check_ksize(ksize)
    r = (ksize - 1) / 2
    half = min(max(float(length) - 1.0, 0.0), ksize - 1) / 2
    t = math.radians(angle)
    dx, dy = half * math.cos(t), -half * math.sin(t)
    clip = lambda v: int(min(max(round(v), 0), ksize - 1))  # noqa: E731
    return [clip(r - dx), clip(r - dy), clip(r + dx), clip(r + dy)]


def motion_taps(ksize: int, line: Sequence[int]) -> List[Tuple[int, int]]:
    """Distinct kernel pixels ``(row, col)`` on the motion line (each carries weight 1/len)."""
    check_ksize(ksize)
    xs, ys, xe, ye = (int(v) for v in line)
    for v in (xs, ys, xe, ye):
        if not 0 <= v < ksize:
            raise ValueError(f"motion line endpoint {v} outside a kernel of size {ksize}")
    return sorted({(y, x) for x, y in line_pixels(xs, ys, xe, ye)})


def motion_kernel(ksize: int, line: Sequence[int]) -> np.ndarray:
    """``ksize x ksize`` kernel: ones on the line from (xs, ys) to (xe, ye), normalised."""
    k = np.zeros((ksize, ksize), dtype=np.float64)
    for r, c in motion_taps(ksize, line):
        k[r, c] = 1.0
    return k / k.sum()


def box_kernel(ksize: int) -> np.ndarray:
    ksize = check_ksize(ksize)
    return np.full((ksize, ksize), 1.0 / (ksize * ksize))
