"""Paired full-reference image metrics: PSNR and SSIM, with explicit conventions.

Conventions (the ones used by restoration papers and BasicSR-style evaluation):
- images are uint8 or float arrays ``[H, W, C]`` (or ``[H, W]``) in the 0-255 range;
- ``channel='rgb'`` measures every channel; ``channel='y'`` first converts RGB to the Y channel of
  ITU-R BT.601 YCbCr (``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255``, range 16-235, float,
  not rounded);
- ``crop_border=k`` drops ``k`` pixels on every side before measuring;
- PSNR = 10 log10(255^2 / MSE), MSE over all pixels and channels (``inf`` for identical images);
- SSIM (Wang et al. 2004, Eq. 13) with K1 = 0.01, K2 = 0.03, L = 255, an 11x11 Gaussian window of
  sigma 1.5, population (not sample) statistics, computed at every position where the window lies
  inside the image ("valid"), averaged over positions and then over channels. This equals
  scikit-image's ``structural_similarity(..., gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=255)``.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from dnnlib.util import UserError

DATA_RANGE = 255.0
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
Y_COEFFS = np.array([65.481, 128.553, 24.966]) / 255.0   # BT.601 Y from RGB in 0-255
Y_OFFSET = 16.0
CHANNEL_MODES = ("rgb", "y")


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """Y channel of BT.601 YCbCr: ``[H, W, 3]`` RGB in 0-255 -> ``[H, W]`` float64 in 16-235."""
    img = np.asarray(img, dtype=np.float64)
    if img.ndim != 3 or img.shape[2] != 3:
        raise UserError(f"Y-channel conversion needs an RGB image [H, W, 3], got shape {img.shape}")
    return img @ Y_COEFFS + Y_OFFSET


def prepare(img: np.ndarray, channel: str = "rgb", crop_border: int = 0) -> np.ndarray:
    """Apply the channel convention and border crop; returns float64 ``[H, W, C]``."""
    if channel not in CHANNEL_MODES:
        raise UserError(f"unknown channel mode '{channel}' (expected one of {', '.join(CHANNEL_MODES)})")
    img = np.asarray(img, dtype=np.float64)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3:
        raise UserError(f"expected an image [H, W, C], got shape {img.shape}")
    if channel == "y":
        img = img if img.shape[2] == 1 else rgb_to_y(img)[:, :, None]
    if crop_border > 0:
        if img.shape[0] <= 2 * crop_border or img.shape[1] <= 2 * crop_border:
            raise UserError(f"crop_border={crop_border} leaves nothing of a {img.shape[0]}x{img.shape[1]} image")
        img = img[crop_border:-crop_border, crop_border:-crop_border]
    return img


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> None:
    if np.shape(pred) != np.shape(gt):
        raise UserError(f"images differ in shape: {np.shape(pred)} vs {np.shape(gt)}")


def psnr(pred: np.ndarray, gt: np.ndarray, channel: str = "rgb", crop_border: int = 0) -> float:
    """Peak signal-to-noise ratio in dB, 0-255 data range; ``inf`` for identical images."""
    _check_pair(pred, gt)
    a, b = prepare(pred, channel, crop_border), prepare(gt, channel, crop_border)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0:
        return float("inf")
    return 10.0 * math.log10(DATA_RANGE ** 2 / mse)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """Normalised 2-D Gaussian window ``[size, size]``."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x ** 2) / (2 * sigma ** 2))
    g /= g.sum()
    return np.outer(g, g)


def _filter_valid(x: np.ndarray, win: np.ndarray) -> np.ndarray:
    """Correlate a 2-D array with ``win`` and keep only positions where it fits inside ("valid")."""
    r = win.shape[0] // 2
    full = ndimage.correlate(x, win, mode="reflect")
    return full[r:-r, r:-r]


def ssim_map(a: np.ndarray, b: np.ndarray, win: np.ndarray) -> np.ndarray:
    """Per-position SSIM of two single-channel float64 images (Wang et al. 2004, Eq. 13)."""
    c1 = (SSIM_K1 * DATA_RANGE) ** 2
    c2 = (SSIM_K2 * DATA_RANGE) ** 2
    mu_a, mu_b = _filter_valid(a, win), _filter_valid(b, win)
    var_a = _filter_valid(a * a, win) - mu_a ** 2
    var_b = _filter_valid(b * b, win) - mu_b ** 2
    cov = _filter_valid(a * b, win) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2)
    return num / den


def ssim(pred: np.ndarray, gt: np.ndarray, channel: str = "rgb", crop_border: int = 0) -> float:
    """Structural similarity, mean over valid window positions and then over channels."""
    _check_pair(pred, gt)
    a, b = prepare(pred, channel, crop_border), prepare(gt, channel, crop_border)
    if min(a.shape[0], a.shape[1]) < SSIM_WINDOW:
        raise UserError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels "
                        f"(after cropping), got {a.shape[0]}x{a.shape[1]}")
    win = gaussian_window()
    return float(np.mean([ssim_map(a[:, :, k], b[:, :, k], win).mean() for k in range(a.shape[2])]))
