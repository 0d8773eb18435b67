"""Alignment of a face to a model's template, and paste-back into the photo.

Coordinates are continuous with pixel centres at integers (OpenCV's ``warpAffine`` convention).

* ``similarity_transform``: the least-squares rotation + uniform scale + translation taking the
  five landmarks (eye centres, nose tip, mouth corners) onto the template's positions in the
  R x R crop (Umeyama's closed form, reflection excluded), as the FFHQ recipe aligns faces.
* ``crop_face``: the aligned crop at the photo's own resolution (side S = 2 R / scale, at least R:
  oversampled twice so the warp there and back is nearly lossless) and the R x R model input (the
  S crop resized with area averaging). Parts of the crop outside
  the photo are filled by reflection (faces cut by the border).
* ``paste_back``: the (restored) crop warped back with the inverse transform into the photo at its
  own resolution (a crop of side R is first upsampled to S with Lanczos when the face is larger
  than R), blended with a soft square mask that is 1 inside, falls to 0 over ``feather`` of the
  crop's side and is exactly 0 outside the crop's square: every pixel outside it is unchanged,
  and only the window around the face is touched (memory is bounded by the face, not the photo).
* ``paste_change``: what the model changed (its output minus its input, at R x R) upsampled and
  added to the photo through the same mask: the photo keeps its own detail above the model's
  resolution (restoration of faces larger than the model, Sec. 4.3 at the photo's size).
"""
from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import cv2
import numpy as np

POINT_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
DEFAULT_FEATHER = 0.1      # share of the crop's side over which the paste-back mask falls from 1 to 0
NATIVE_OVERSAMPLE = 2.0    # native crop pixels per photo pixel: two bicubic warps (there and back)
                           # then change the photo by ~0.15 grey levels (mean) instead of ~1.3 at 1x
MAX_NATIVE = 4096          # px: bound on the native crop's side (memory)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """src, dst [K, 2] -> M [2, 3] minimising sum |M [src; 1] - dst|^2 over similarities."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need matching [K >= 2, 2] point sets, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    cov = b.T @ a / len(src)                                  # [2, 2]
    u, sig, vt = np.linalg.svd(cov)
    d = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])   # no reflection
    rot = u @ d @ vt
    var = (a ** 2).sum() / len(src)
    scale = float((sig * np.diag(d)).sum() / var) if var > 0 else 1.0
    m = np.zeros([2, 3])
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def transform_scale(m: np.ndarray) -> float:
    """Crop pixels per photo pixel of a similarity [2, 3]."""
    return float(math.sqrt(abs(np.linalg.det(np.asarray(m)[:, :2]))))


def apply_transform(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    pts = np.asarray(pts, np.float64)
    return pts @ np.asarray(m)[:, :2].T + np.asarray(m)[:, 2]


def invert_transform(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, np.float64)
    a = np.linalg.inv(m[:, :2])
    return np.concatenate([a, -(a @ m[:, 2])[:, None]], axis=1)


def scaled_transform(m: np.ndarray, factor: float) -> np.ndarray:
    """The same alignment into a crop ``factor`` times larger (crop coordinates scale about the
    corner pixel's outer edge, so a crop resized by ``factor`` lines up)."""
    m = np.asarray(m, np.float64).copy()
    m[:, :2] *= factor
    m[:, 2] = (m[:, 2] + 0.5) * factor - 0.5
    return m


def native_size(m: np.ndarray, resolution: int) -> int:
    """Side of the crop at the photo's own resolution, oversampled: ``NATIVE_OVERSAMPLE`` R / scale,
    at least R and at most ``MAX_NATIVE`` (unless R is larger)."""
    s = int(math.ceil(NATIVE_OVERSAMPLE * resolution / transform_scale(m) - 1e-6))
    return max(int(resolution), min(s, MAX_NATIVE))


def resize_crop(img: np.ndarray, size: int, down: bool) -> np.ndarray:
    """A square crop to ``size`` x ``size`` as the face pipeline resizes it: area averaging for a
    crop going to the model (``down``), Lanczos for the model's face going back to the photo."""
    if img.shape[0] == size and img.shape[1] == size:
        return img
    out = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA if down else cv2.INTER_LANCZOS4)
    return out[:, :, None] if out.ndim == 2 else out


def crop_face(photo: np.ndarray, m: np.ndarray, resolution: int) -> Tuple[np.ndarray, np.ndarray, int]:
    """photo uint8 [H, W, C], m [2, 3] photo -> R x R crop. Returns (model crop uint8 [R, R, C],
    native crop uint8 [S, S, C], S)."""
    s = native_size(m, resolution)
    ms = scaled_transform(m, s / resolution)
    native = cv2.warpAffine(photo, ms, (s, s), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
    native = native[:, :, None] if native.ndim == 2 else native
    return resize_crop(native, resolution, down=True), native, s


def crop_box(m: np.ndarray, resolution: int) -> List[float]:
    """Bounding box [x0, y0, x1, y1] in the photo of the R x R crop's square."""
    c = np.array([[-0.5, -0.5], [resolution - 0.5, -0.5], [resolution - 0.5, resolution - 0.5], [-0.5, resolution - 0.5]])
    p = apply_transform(invert_transform(m), c)
    return [float(p[:, 0].min()), float(p[:, 1].min()), float(p[:, 0].max()), float(p[:, 1].max())]


def _paste_window(shape: Sequence[int], m: np.ndarray, resolution: int, side: int, feather: float, opacity: float):
    """Where a crop of ``side`` aligned by ``m`` (at side R) lands in a photo of ``shape``: the
    window (x0, y0, x1, y1) clipped to the photo, the window -> crop map [2, 3], and the soft mask
    float32 [h, w, 1] (1 inside, smoothstep to exactly 0 over ``feather`` of the side, times
    ``opacity``). None when the crop misses the photo."""
    h, w = int(shape[0]), int(shape[1])
    ms = scaled_transform(m, side / resolution)
    x0, y0, x1, y1 = crop_box(m, resolution)
    x0, y0 = max(0, int(math.floor(x0))), max(0, int(math.floor(y0)))
    x1, y1 = min(w, int(math.ceil(x1)) + 1), min(h, int(math.ceil(y1)) + 1)
    if x1 <= x0 or y1 <= y0:
        return None
    mw = ms.copy()
    mw[:, 2] += ms[:, :2] @ np.array([x0, y0], np.float64)      # window pixel -> crop pixel
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    u = mw[0, 0] * (xx - x0) + mw[0, 1] * (yy - y0) + mw[0, 2]      # crop coordinates of each pixel
    v = mw[1, 0] * (xx - x0) + mw[1, 1] * (yy - y0) + mw[1, 2]
    edge = np.minimum(np.minimum(u + 0.5, side - 0.5 - u), np.minimum(v + 0.5, side - 0.5 - v))  # crop px to the edge
    t = np.clip(edge / max(feather * side, 1e-6), 0.0, 1.0)
    mask = (opacity * t * t * (3 - 2 * t)).astype(np.float32)[:, :, None]       # smoothstep: soft, exactly 0 outside
    return (x0, y0, x1, y1), mw, mask


def _warp_into_window(crop: np.ndarray, mw: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    warped = cv2.warpAffine(crop, mw, size, flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    return warped[:, :, None] if warped.ndim == 2 else warped


def _paste_in_window(photo: np.ndarray, crop: np.ndarray, m: np.ndarray, resolution: int, feather: float,
                     opacity: float, combine) -> np.ndarray:
    """The one paste-back: ``crop`` (square, side S) warped into the face's window of a copy of
    ``photo``; ``combine(region, warped, mask)`` -> the window's new float values (only pixels with
    mask > 0 change)."""
    photo = np.asarray(photo)
    out = photo.copy()
    window = _paste_window(photo.shape, m, resolution, crop.shape[0], feather, opacity)
    if window is None:
        return out
    (x0, y0, x1, y1), mw, mask = window
    warped = _warp_into_window(crop, mw, (x1 - x0, y1 - y0))
    region = out[y0:y1, x0:x1]
    new = np.clip(np.rint(combine(region.astype(np.float32), warped, mask)), 0, 255).astype(np.uint8)
    out[y0:y1, x0:x1] = np.where(mask > 0, new, region)
    return out


def paste_back(photo: np.ndarray, face: np.ndarray, m: np.ndarray, resolution: int,
               feather: float = DEFAULT_FEATHER, opacity: float = 1.0) -> np.ndarray:
    """Blend ``face`` (uint8 square crop of any side, aligned by ``m`` at side R) into a copy of
    ``photo`` (uint8 [H, W, C]); see the module docstring. ``opacity`` scales the soft mask: the
    result is ``(1 - opacity) photo + opacity pasted`` (edits on photos), computed in the face's
    window only."""
    s = native_size(m, resolution)
    if face.shape[0] < s:                          # face larger than the crop: upsample first
        face = resize_crop(face, s, down=False)
    return _paste_in_window(photo, face, m, resolution, feather, opacity,
                            lambda region, warped, mask: region + mask * (warped - region))


def paste_change(photo: np.ndarray, before: np.ndarray, after: np.ndarray, m: np.ndarray, resolution: int,
                 feather: float = DEFAULT_FEATHER, opacity: float = 1.0) -> np.ndarray:
    """Add what the model changed, ``after - before`` (uint8 R x R crops: the model's input and its
    output), to a copy of ``photo``, through the same soft mask as ``paste_back``.

    The change is upsampled (Lanczos) to the native crop's side S and warped into the photo, so the
    photo keeps every detail above the model's resolution (the band the model never saw) and takes
    the model's band from the output: for a face larger than R this is the output's low frequencies
    plus the photo's high ones. A model that changes nothing leaves the photo exactly as it was
    (no resampling of the photo itself); colours change only where the model changed them."""
    change = after.astype(np.float32) - before.astype(np.float32)      # [R, R, C]
    s = native_size(m, resolution)
    if change.shape[0] != s:
        change = cv2.resize(change, (s, s), interpolation=cv2.INTER_LANCZOS4)
        change = change[:, :, None] if change.ndim == 2 else change
    return _paste_in_window(photo, change, m, resolution, feather, opacity,
                            lambda region, warped, mask: region + mask * warped)


def face_region(shape: Sequence[int], m: np.ndarray, resolution: int, inner: float = 0.0) -> np.ndarray:
    """bool [H, W]: pixels of the photo inside the crop's square (shrunk by ``inner`` of its side
    on every edge; ``inner = feather`` gives where the paste-back mask is 1)."""
    h, w = int(shape[0]), int(shape[1])
    mi = np.asarray(m, np.float64)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    u = mi[0, 0] * xx + mi[0, 1] * yy + mi[0, 2]
    v = mi[1, 0] * xx + mi[1, 1] * yy + mi[1, 2]
    lo, hi = -0.5 + inner * resolution, resolution - 0.5 - inner * resolution
    return (u >= lo) & (u <= hi) & (v >= lo) & (v <= hi)
