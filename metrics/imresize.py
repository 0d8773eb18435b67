"""MATLAB-compatible ``imresize`` (bicubic, with antialiasing when shrinking).

NIQE's published numbers are defined by MATLAB's ``imresize(img, 0.5)``: the Keys cubic kernel
with a = -0.5, widened by 1/scale when downscaling (antialiasing), symmetric (mirror) boundary
handling, and weights normalised per output pixel. This module reproduces that in float64 NumPy.
"""
from __future__ import annotations

import math

import numpy as np

CUBIC_A = -0.5          # Keys' cubic convolution parameter used by MATLAB
CUBIC_WIDTH = 4.0       # support of the cubic kernel in input pixels (scale 1)


def cubic_kernel(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB ``cubic``)."""
    ax = np.abs(x)
    ax2, ax3 = ax ** 2, ax ** 3
    a = CUBIC_A
    near = ((a + 2) * ax3 - (a + 3) * ax2 + 1) * (ax <= 1)
    far = (a * ax3 - 5 * a * ax2 + 8 * a * ax - 4 * a) * ((ax > 1) & (ax <= 2))
    return near + far


def resize_weights(in_len: int, out_len: int, scale: float, antialias: bool = True) -> np.ndarray:
    """The dense [out_len, in_len] matrix MATLAB's ``imresize`` applies along one axis."""
    widen = antialias and scale < 1
    width = CUBIC_WIDTH / scale if widen else CUBIC_WIDTH
    u = np.arange(1, out_len + 1, dtype=np.float64)
    centre = u / scale + 0.5 * (1 - 1 / scale)             # output pixel centre in input coordinates (1-based)
    left = np.floor(centre - width / 2)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]          # [out, taps], 1-based input indices
    dist = centre[:, None] - idx
    w = scale * cubic_kernel(scale * dist) if widen else cubic_kernel(dist)
    w = w / w.sum(axis=1, keepdims=True)
    # Symmetric boundary: index sequence 1..n, n..1 repeated.
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    idx0 = mirror[np.mod(idx.astype(np.int64) - 1, 2 * in_len)]
    mat = np.zeros((out_len, in_len), dtype=np.float64)
    rows = np.repeat(np.arange(out_len)[:, None], taps, axis=1)
    np.add.at(mat, (rows, idx0), w)
    return mat


def imresize(img: np.ndarray, scale: float, antialias: bool = True) -> np.ndarray:
    """Resize ``img`` ([H, W] or [H, W, C], float) by ``scale`` like MATLAB ``imresize(img, scale)``
    with the default bicubic method. Output size is ``ceil(H * scale) x ceil(W * scale)``; no
    clipping or rounding is applied."""
    img = np.asarray(img, dtype=np.float64)
    h, w = img.shape[:2]
    out_h, out_w = int(math.ceil(h * scale)), int(math.ceil(w * scale))
    wh = resize_weights(h, out_h, scale, antialias)
    ww = resize_weights(w, out_w, scale, antialias)
    # MATLAB resizes the dimension with the smaller scale first; with equal scales, rows first.
    out = np.tensordot(wh, img, axes=([1], [0]))           # [out_h, W, ...]
    out = np.tensordot(ww, out, axes=([1], [1]))           # [out_w, out_h, ...]
    return np.swapaxes(out, 0, 1)
