"""degradations.severity: a pipeline record read as (blur, noise, compression, lowres) numbers."""
import math

import numpy as np
import pytest
import torch

from degradations import build_pipeline
from degradations.severity import SEVERITY_AXES, severity_vector


def _rec(*ops, resolution=64):
    return {"resolution": resolution, "ops": list(ops)}


def test_a_sharp_record_is_the_zero_vector():
    v = severity_vector(_rec())
    assert v.shape == (len(SEVERITY_AXES),) and v.dtype == np.float32
    assert not v.any()


def test_each_axis_in_its_documented_unit():
    # a wide Gaussian kernel: its spread is sigma; 0.8 px of 64 = 1.25 % of the width
    assert severity_vector(_rec({"op": "gaussian_blur", "ksize": 15, "sigma": 0.8}))[0] == pytest.approx(1.25, rel=1e-3)
    # box k: (k^2 - 1) / 12 per axis
    assert severity_vector(_rec({"op": "box_blur", "ksize": 5}))[0] == pytest.approx(100 * math.sqrt(2.0) / 64, rel=1e-5)
    assert severity_vector(_rec({"op": "gaussian_noise", "var": 625.0, "gray": False, "seed": 1}))[1] == pytest.approx(1.0)
    assert severity_vector(_rec({"op": "poisson_noise", "photons": 127.5 * 255 / 625, "gray": False, "seed": 1}))[1] == pytest.approx(1.0)
    assert severity_vector(_rec({"op": "jpeg", "quality": 50}))[2] == pytest.approx(1.0)
    assert severity_vector(_rec({"op": "downscale", "scale": 0.5, "interpolation": "nearest"}))[3] == pytest.approx(1.0)


def test_a_horizontal_motion_line_spreads_along_one_axis():
    # 7 pixels in a row: variance (7^2 - 1) / 12 = 4 along x, 0 along y -> mean 2 per axis
    v = severity_vector(_rec({"op": "motion_blur", "ksize": 7, "line": [0, 3, 6, 3]}))[0]
    assert v == pytest.approx(100 * math.sqrt(2.0) / 64, rel=1e-6)


def test_blur_grows_with_the_kernel_and_is_relative_to_the_image_width():
    for op in ("gaussian_blur", "box_blur", "median_blur"):
        vals = [severity_vector(_rec({"op": op, "ksize": k, **({"sigma": None} if op == "gaussian_blur" else {})}))[0]
                for k in (3, 5, 7, 9)]
        assert all(a < b for a, b in zip(vals, vals[1:])), (op, vals)
    g = {"op": "gaussian_blur", "ksize": 31, "sigma": 4.0}
    assert severity_vector(_rec(g, resolution=256))[0] == pytest.approx(severity_vector(
        _rec({"op": "gaussian_blur", "ksize": 9, "sigma": 1.0}, resolution=64))[0], rel=1e-2)


def test_two_blurs_add_their_variances():
    a = {"op": "gaussian_blur", "ksize": 21, "sigma": 1.5}
    b = {"op": "gaussian_blur", "ksize": 21, "sigma": 2.0}
    assert severity_vector(_rec(a, b))[0] == pytest.approx(100 * 2.5 / 64, rel=1e-3)


def test_every_paper_pipeline_record_reads_as_degraded():
    pipe = build_pipeline("paper", 64)
    for rec in pipe.sample(200, torch.Generator().manual_seed(3)):
        v = severity_vector(rec)
        assert (v >= 0).all() and v.sum() > 0, rec
