"""FID (Heusel et al., NeurIPS 2017) and KID (Binkowski et al., ICLR 2018) on feature statistics.

FID = ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2)) with unbiased covariances, as in the
original TTUR code. KID is the unbiased MMD^2 estimate with the cubic polynomial kernel
k(x, y) = (x.y / d + 1)^3, averaged over 100 random subsets of at most 1000 items (the StyleGAN
convention).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from metrics import metric_utils

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

    Tr((S1 S2)^1/2) is computed as the sum of square roots of the eigenvalues of the symmetric
    S1^1/2 S2 S1^1/2 (the same eigenvalues as S1 S2): two symmetric eigendecompositions instead
    of a general matrix square root (2048-d: seconds instead of a minute on a CPU), and exact for
    singular covariances without an epsilon offset.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    diff = mu1 - mu2
    r1 = _psd_sqrt(sigma1)
    m = r1 @ sigma2 @ r1
    eig = np.linalg.eigvalsh((m + m.T) / 2)
    tr_covmean = float(np.sqrt(np.clip(eig, 0, None)).sum())
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def kernel_distance(real: np.ndarray, gen: np.ndarray, num_subsets: int = KID_SUBSETS,
                    max_subset_size: int = KID_SUBSET_SIZE, seed: int = 0) -> float:
    """KID between feature sets real [n_r, D] and gen [n_g, D]."""
    real = np.asarray(real, np.float64)
    gen = np.asarray(gen, np.float64)
    d = real.shape[1]
    m = min(len(real), len(gen), max_subset_size)
    if m < 2:
        raise ValueError("KID needs at least two items in each set")
    rng = np.random.RandomState(seed)
    total = 0.0
    for _ in range(num_subsets):
        x = gen[rng.choice(len(gen), m, replace=False)]
        y = real[rng.choice(len(real), m, replace=False)]
        a = (x @ x.T / d + 1) ** 3 + (y @ y.T / d + 1) ** 3
        b = (x @ y.T / d + 1) ** 3
        total += (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
    return float(total / num_subsets / m)


def _feature_stats(opts: metric_utils.MetricOptions, mode: str, num_gen: int, max_real: Optional[int], **capture):
    """(real, generated) feature statistics, with what ``capture`` asks for (mean/cov or all)."""
    net = metric_utils.get_feature_net(opts)
    return (metric_utils.compute_real_stats(opts, net, mode, max_real, **capture),
            metric_utils.compute_generator_stats(opts, net, mode, num_gen, **capture))


def compute_fid(opts: metric_utils.MetricOptions, mode: str, num_gen: int,
                max_real: Optional[int] = None) -> float:
    real, gen = _feature_stats(opts, mode, num_gen, max_real, capture_mean_cov=True)
    if opts.rank != 0:
        return float("nan")
    return frechet_distance(*real.get_mean_cov(), *gen.get_mean_cov())


def compute_kid(opts: metric_utils.MetricOptions, mode: str, num_gen: int,
                max_real: Optional[int] = None) -> float:
    real, gen = _feature_stats(opts, mode, num_gen, max_real, capture_all=True)
    if opts.rank != 0:
        return float("nan")
    return kernel_distance(real.get_all(), gen.get_all(), seed=opts.seed)
