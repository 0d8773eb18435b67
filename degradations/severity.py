"""How degraded a pipeline made an image, as numbers: a severity vector read off its record.

A pipeline's record (``Pipeline.__call__`` / ``apply_numpy``) lists the ops it applied with their
sampled parameters; ``severity_vector`` maps it to four non-negative axes, 0 for an op family the
record does not contain (a sharp image is the zero vector):

* ``blur``: the applied kernels' spatial spread, sqrt of the summed per-axis variances, in
  percent of the image width (a Gaussian's sigma; a box or median of size k counts as a box,
  (k^2 - 1) / 12 per axis; a motion line by its pixels' spread; 0.8 px at 64 px = 1.25);
* ``noise``: the added noise's standard deviation on the 0-255 scale, / 25 (Poisson noise taken at
  mid-grey, where its variance is 127.5 * 255 / photons);
* ``compression``: JPEG's (100 - quality) / 50 (quality 50 = 1);
* ``lowres``: log2 of the downscale factor (1/scale; half resolution = 1).

Used to make the quality code q read the degradation linearly (``inversion.encoder_training``'s
``q_readout_weight``): Sec. 4.6 of the paper probes q with a linear classifier of blur level.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Tuple

import numpy as np

from . import kernels

SEVERITY_AXES: Tuple[str, ...] = ("blur", "noise", "compression", "lowres")
NOISE_UNIT = 25.0              # noise std (0-255) that counts 1
JPEG_UNIT = 50.0               # quality points below 100 that count 1
MID_GREY = 127.5


def _kernel_variance(k2d: np.ndarray) -> float:
    """Per-axis mean spatial variance of a normalised 2-D kernel [k, k] (isotropic: sigma^2)."""
    n = k2d.shape[0]
    x = np.arange(n, dtype=np.float64)
    wy, wx = k2d.sum(axis=1), k2d.sum(axis=0)
    var_y = float((wy * x * x).sum() - (wy * x).sum() ** 2)
    var_x = float((wx * x * x).sum() - (wx * x).sum() ** 2)
    return (var_x + var_y) / 2


def _blur_variance(op: Dict[str, Any]) -> float:
    """Per-axis variance in pixels^2 of one blur op of a record."""
    name, k = op["op"], int(op.get("ksize", 1))
    if name == "gaussian_blur":
        k1 = kernels.gaussian_kernel1d(k, op.get("sigma"))
        return _kernel_variance(np.outer(k1, k1))
    if name == "aniso_gaussian_blur":
        return _kernel_variance(kernels.aniso_gaussian_kernel2d(k, op["sigma_x"], op["sigma_y"], op["angle"]))
    if name == "motion_blur":
        return _kernel_variance(kernels.motion_kernel(k, op["line"]))
    if name in ("box_blur", "median_blur"):
        return (k * k - 1) / 12.0
    return 0.0


def severity_vector(record: Dict[str, Any]) -> np.ndarray:
    """A pipeline record -> float32 [len(SEVERITY_AXES)] (see the module docstring)."""
    resolution = float(record["resolution"])
    blur_var, noise_var, jpeg, lowres = 0.0, 0.0, 0.0, 0.0
    for op in record.get("ops", []):
        name = op["op"]
        if name.endswith("_blur"):
            blur_var += _blur_variance(op)
        elif name == "gaussian_noise":
            noise_var += float(op["var"])
        elif name == "poisson_noise":
            noise_var += MID_GREY * 255.0 / float(op["photons"])
        elif name == "jpeg":
            jpeg = max(jpeg, (100.0 - float(op["quality"])) / JPEG_UNIT)
        elif name == "downscale":
            lowres += math.log2(1.0 / float(op["scale"]))
    blur = 100.0 * math.sqrt(blur_var) / resolution
    return np.array([blur, math.sqrt(noise_var) / NOISE_UNIT, jpeg, lowres], dtype=np.float32)
