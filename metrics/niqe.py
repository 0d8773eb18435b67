"""NIQE: Natural Image Quality Evaluator (Mittal, Soundararajan & Bovik, IEEE SPL 2013).

No-reference quality: lower is better. Block features of the test image (Sec. II-III of the
paper: MSCN coefficients and their products with the four neighbours, fitted with (asymmetric)
generalized Gaussians, at two scales) are modelled as a multivariate Gaussian and compared with
the pristine model shipped in ``metrics/data/niqe_pris_params.npz`` (the parameters of the
original MATLAB release) by Eq. 10:
``D = sqrt((mu_p - mu_d)^T ((S_p + S_d) / 2)^+ (mu_p - mu_d))``.

Conventions follow the MATLAB reference as BasicSR reproduces it: the Y channel of YCbCr in 0-255
(rounded to integers), 96x96 blocks, every whole block used, the second scale a MATLAB-style
bicubic antialiased 2x downscale (``metrics.imresize``).
"""
from __future__ import annotations

import functools
import os

import numpy as np
from scipy import ndimage
from scipy.special import gamma

from dnnlib.util import UserError
from metrics.image_metrics import prepare
from metrics.imresize import imresize

PRISTINE_PARAMS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "niqe_pris_params.npz")
BLOCK_SIZE = 96                                       # block side at scale 1 (pixels)
GAMMA_GRID = np.arange(0.2, 10.001, 0.001)            # shape parameters searched by moment matching
NEIGHBOUR_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))  # horizontal, vertical, two diagonals


@functools.lru_cache(maxsize=1)
def load_pristine_params(path: str = PRISTINE_PARAMS) -> dict:
    """``mu_pris_param`` [36], ``cov_pris_param`` [36, 36], ``gaussian_window`` [7, 7]."""
    with np.load(path) as data:
        return {"mu": data["mu_pris_param"].reshape(-1).astype(np.float64),
                "cov": data["cov_pris_param"].astype(np.float64),
                "window": data["gaussian_window"].astype(np.float64)}


@functools.lru_cache(maxsize=1)
def _ratio_table() -> np.ndarray:
    g = GAMMA_GRID
    return gamma(2 / g) ** 2 / (gamma(1 / g) * gamma(3 / g))


def fit_aggd(x: np.ndarray):
    """Moment-matching fit of an asymmetric generalized Gaussian; returns (shape, beta_l, beta_r)."""
    x = x.reshape(-1)
    left_std = np.sqrt(np.mean(x[x < 0] ** 2))
    right_std = np.sqrt(np.mean(x[x > 0] ** 2))
    gamma_hat = left_std / right_std
    r_hat = np.mean(np.abs(x)) ** 2 / np.mean(x ** 2)
    r_hat_norm = r_hat * (gamma_hat ** 3 + 1) * (gamma_hat + 1) / (gamma_hat ** 2 + 1) ** 2
    alpha = GAMMA_GRID[np.argmin((_ratio_table() - r_hat_norm) ** 2)]
    k = np.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
    return alpha, left_std * k, right_std * k


def block_features(block: np.ndarray) -> list:
    """The 18 features of one MSCN block (paper Sec. III): an AGGD fit to the coefficients
    (shape, mean of the left/right scales) and, for each of the four neighbour products, (shape,
    mean (Eq. 8), left scale, right scale). Scales, not their squares: the shipped pristine model
    was fitted with these (the squared variant gives 13.9 instead of 5.73 on baboon)."""
    alpha, bl, br = fit_aggd(block)
    feats = [alpha, (bl + br) / 2]
    for shift in NEIGHBOUR_SHIFTS:
        pair = block * np.roll(block, shift, axis=(0, 1))
        alpha, bl, br = fit_aggd(pair)
        mean = (br - bl) * gamma(2 / alpha) / gamma(1 / alpha)
        feats.extend([alpha, mean, bl, br])
    return feats


def mscn(img: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients (paper Eq. 1) of a 2-D image in 0-255.

    The local moments are stored in float32, as the reference implementations do: in flat
    regions ``E[x^2] - mu^2`` cancels, and float32 rounding there is part of the published
    numbers (baboon: 5.72958 in float32 vs 5.72996 in float64; MATLAB gives 5.72957).
    """
    img = img.astype(np.float32)
    mu = ndimage.correlate(img, window, mode="nearest")
    sigma = np.sqrt(np.abs(ndimage.correlate(img * img, window, mode="nearest") - mu * mu))
    return ((img - mu) / (sigma + 1)).astype(np.float64)


def niqe_gray(img: np.ndarray, params: dict = None) -> float:
    """NIQE of a 2-D float image in 0-255 (already converted and rounded)."""
    params = params or load_pristine_params()
    h, w = img.shape
    nh, nw = h // BLOCK_SIZE, w // BLOCK_SIZE
    if nh < 1 or nw < 1 or nh * nw < 2:
        raise UserError(f"NIQE needs at least two {BLOCK_SIZE}x{BLOCK_SIZE} blocks (an image of at least "
                        f"{BLOCK_SIZE}x{2 * BLOCK_SIZE} pixels), got {w}x{h}")
    img = img[:nh * BLOCK_SIZE, :nw * BLOCK_SIZE].astype(np.float64)
    per_scale = []
    for scale in (1, 2):
        norm = mscn(img, params["window"])
        bs = BLOCK_SIZE // scale
        feats = [block_features(norm[i * bs:(i + 1) * bs, j * bs:(j + 1) * bs])
                 for j in range(nw) for i in range(nh)]
        per_scale.append(np.array(feats))
        if scale == 1:
            img = imresize(img / 255.0, 0.5, antialias=True) * 255.0
    feats = np.concatenate(per_scale, axis=1)                       # [blocks, 36]
    mu_d = np.nanmean(feats, axis=0)
    finite = feats[~np.isnan(feats).any(axis=1)]
    cov_d = np.cov(finite, rowvar=False)
    diff = params["mu"] - mu_d
    inv = np.linalg.pinv((params["cov"] + cov_d) / 2)
    return float(np.sqrt(diff @ inv @ diff))                        # Eq. 10


def niqe(img: np.ndarray, channel: str = "y", crop_border: int = 0) -> float:
    """NIQE of an image ``[H, W, 3]`` (or ``[H, W]``) in 0-255; lower is better.

    ``channel='y'`` (default, the MATLAB convention) uses the BT.601 Y channel; ``'gray'`` is
    accepted as a synonym. The converted image is rounded to integers like MATLAB's uint8 input.
    """
    channel = "y" if channel == "gray" else channel
    if channel != "y":
        raise UserError(f"NIQE is defined on one channel; use channel='y' (got '{channel}')")
    img = prepare(img, "y", crop_border)[:, :, 0]
    return niqe_gray(np.round(img))
