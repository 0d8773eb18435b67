"""Degradation primitives: each op's meaning (kernels, sigma, noise variance, JPEG, resolution,
median), checked against first principles and against OpenCV where OpenCV defines the meaning."""
import io
import math

import numpy as np
import pytest
import torch

cv2 = pytest.importorskip("cv2")

from degradations import functional as Fn  # noqa: E402
from degradations import kernels  # noqa: E402
from degradations.registry import OPS  # noqa: E402


def _rand_img(seed, h=48, w=40, smooth=False):
    rng = np.random.default_rng(seed)
    if smooth:
        yy, xx = np.mgrid[0:h, 0:w]
        base = 128 + 60 * np.sin(xx / 5.0)[..., None] * np.cos(yy / 7.0)[..., None] + np.array([0, 20, -20])
        return np.clip(base + rng.normal(0, 3, (h, w, 3)), 0, 255).astype(np.uint8)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _to_t(imgs):
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float()


def _to_np(x):
    return x.permute(0, 2, 3, 1).to(torch.uint8).numpy()


# ---------------------------------------------------------------------------------------------
# Kernels.

@pytest.mark.parametrize("k", [3, 5, 7, 9, 11, 15, 21, 31])
def test_gaussian_kernel_matches_opencv_and_sums_to_one(k):
    g = kernels.gaussian_kernel1d(k)
    assert g.shape == (k,) and abs(g.sum() - 1) < 1e-12
    np.testing.assert_allclose(g, cv2.getGaussianKernel(k, 0)[:, 0], atol=1e-9)
    np.testing.assert_allclose(g, g[::-1])                       # symmetric, peak in the middle
    assert g.argmax() == k // 2


def test_gaussian_default_sigma_is_opencvs_rule():
    assert kernels.default_sigma(31) == pytest.approx(0.3 * (15 - 1) + 0.8)
    g = kernels.gaussian_kernel1d(31)
    x = np.arange(31) - 15
    # truncated at +-3 sigma, so the measured spread is slightly below sigma
    assert math.sqrt((g * x * x).sum()) == pytest.approx(kernels.default_sigma(31), rel=0.02)


def test_gaussian_blur_of_impulse_has_requested_sigma():
    # Kernel level (float image, no rounding): std of the response equals sigma in both axes.
    img = np.zeros((61, 61, 3), np.float32)
    img[30, 30] = 1.0
    for sigma in (1.5, 3.0):
        out = Fn.cv2_gaussian(img, 25, sigma)[:, :, 0].astype(np.float64)
        assert abs(out.sum() - 1) < 1e-4
        yy, xx = np.mgrid[0:61, 0:61] - 30
        assert math.sqrt((out * xx * xx).sum()) == pytest.approx(sigma, rel=0.01)
        assert math.sqrt((out * yy * yy).sum()) == pytest.approx(sigma, rel=0.01)
    # Op level (uint8 semantics, torch batched): a bright line spreads with the requested sigma.
    x = torch.zeros(1, 3, 9, 81)
    x[..., 40] = 255.0
    y = OPS["gaussian_blur"].apply_torch(x, [{"op": "gaussian_blur", "ksize": 31, "sigma": 4.0}])
    prof = y[0, 0, 4].double()
    pos = torch.arange(81, dtype=torch.float64) - 40
    assert math.sqrt(float((prof * pos ** 2).sum() / prof.sum())) == pytest.approx(4.0, rel=0.05)


def test_aniso_gaussian_covariance_and_orientation():
    k = kernels.aniso_gaussian_kernel2d(41, 4.0, 1.5, 30.0)
    assert abs(k.sum() - 1) < 1e-12
    c = np.arange(41) - 20
    xx, yy = c[None, :], -c[:, None]                  # y up, as the angle is defined
    cov = np.array([[(k * xx * xx).sum(), (k * xx * yy).sum()], [(k * xx * yy).sum(), (k * yy * yy).sum()]])
    t = math.radians(30)
    r = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    np.testing.assert_allclose(cov, r @ np.diag([16.0, 2.25]) @ r.T, atol=0.05)
    evals, evecs = np.linalg.eigh(cov)
    major = evecs[:, 1]
    assert abs(math.degrees(math.atan2(major[1], major[0])) % 180 - 30) < 0.5


def test_motion_kernel_is_opencv_line_normalised():
    rng = np.random.default_rng(0)
    for _ in range(300):
        k = int(rng.choice(np.arange(3, 32, 2)))
        line = [int(v) for v in rng.integers(0, k, 4)]
        ref = np.zeros((k, k), np.float32)
        cv2.line(ref, (line[0], line[1]), (line[2], line[3]), 1, thickness=1)
        m = kernels.motion_kernel(k, line)
        assert abs(m.sum() - 1) < 1e-12
        np.testing.assert_array_equal(m > 0, ref > 0)
        assert np.allclose(m[m > 0], 1.0 / (ref > 0).sum())


def test_motion_kernel_from_angle_orientation_and_length():
    h = kernels.motion_kernel(15, kernels.motion_line_from_angle(15, 9, 0))
    assert np.count_nonzero(h) == 9 and np.count_nonzero(h[7]) == 9          # centre row
    v = kernels.motion_kernel(15, kernels.motion_line_from_angle(15, 15, 90))
    assert np.count_nonzero(v[:, 7]) == 15                                      # centre column
    d = kernels.motion_kernel(15, kernels.motion_line_from_angle(15, 15, 45))
    anti = np.fliplr(d).diagonal()                                              # y up: "/" diagonal
    assert np.count_nonzero(anti) == np.count_nonzero(d) == 11                  # 14 * cos 45 + 1
    # The op smears an impulse along the line (horizontal line -> horizontal streak).
    x = torch.zeros(1, 3, 31, 31)
    x[..., 15, 15] = 255.0
    y = OPS["motion_blur"].apply_torch(x, [{"op": "motion_blur", "ksize": 15,
                                             "line": kernels.motion_line_from_angle(15, 9, 0)}])
    nz = torch.nonzero(y[0, 0])
    assert set(nz[:, 0].tolist()) == {15} and len(nz) == 9


def test_box_kernel_and_op_is_a_window_mean():
    assert abs(kernels.box_kernel(5).sum() - 1) < 1e-12
    img = _rand_img(1)
    e = {"op": "box_blur", "ksize": 5}
    y_t = _to_np(OPS["box_blur"].apply_torch(_to_t([img]), [e]))[0]
    manual = img[10:15, 10:15].reshape(-1, 3).astype(np.float64).mean(0)
    np.testing.assert_allclose(y_t[12, 12], np.rint(manual), atol=1)
    assert np.abs(y_t.astype(int) - OPS["box_blur"].apply_cv2(img, e).astype(int)).max() <= 1


# ---------------------------------------------------------------------------------------------
# Median.

def test_median_removes_isolated_salt_noise():
    img = np.full((40, 40, 3), 128, np.uint8)
    rng = np.random.default_rng(0)
    ys, xs = rng.integers(2, 38, 30) // 4 * 4, rng.integers(2, 38, 30) // 4 * 4   # isolated pixels
    img[ys, xs] = 255
    for impl in ("torch", "cv2"):
        for k in (3, 9):
            e = {"op": "median_blur", "ksize": k}
            if impl == "torch":
                out = _to_np(Fn.median_blur(_to_t([img]), k))[0]
            else:
                out = OPS["median_blur"].apply_cv2(img, e)
            assert (out == 128).all(), (impl, k)


@pytest.mark.parametrize("k", [3, 5, 9, 15])
def test_median_torch_equals_opencv(k):
    img = _rand_img(k, 24, 20)
    out = _to_np(Fn.median_blur(_to_t([img]), k))[0]
    np.testing.assert_array_equal(out, cv2.medianBlur(img, k))


# ---------------------------------------------------------------------------------------------
# Noise.

def test_gaussian_noise_variance_matches_request():
    x = torch.full((2, 3, 128, 128), 128.0)
    e = [{"op": "gaussian_noise", "var": 100.0, "gray": False, "seed": 1},
         {"op": "gaussian_noise", "var": 400.0, "gray": True, "seed": 2}]
    y = OPS["gaussian_noise"].apply_torch(x, e)
    d = y - x
    assert float(d[0].var()) == pytest.approx(100.0, rel=0.05)
    assert float(d[1].var()) == pytest.approx(400.0, rel=0.05)
    assert abs(float(d[0].mean())) < 0.5
    assert torch.equal(d[1, 0], d[1, 2]) and not torch.equal(d[0, 0], d[0, 2])   # grey vs colour
    # Channels of colour noise are independent.
    c = np.corrcoef(d[0, 0].flatten().numpy(), d[0, 1].flatten().numpy())[0, 1]
    assert abs(c) < 0.05
    # The per-image OpenCV version gives the same numbers from the same seed.
    img = _to_np(x[:1])[0]
    np.testing.assert_array_equal(OPS["gaussian_noise"].apply_cv2(img, e[0]), _to_np(y[:1])[0])


def test_gaussian_noise_is_clipped_to_range():
    x = torch.full((1, 3, 32, 32), 250.0)
    y = OPS["gaussian_noise"].apply_torch(x, [{"op": "gaussian_noise", "var": 650.0, "gray": False, "seed": 3}])
    assert float(y.max()) == 255.0 and float(y.min()) >= 0 and torch.equal(y, y.round())


def test_poisson_noise_variance_scales_with_signal():
    x = torch.cat([torch.full((1, 3, 96, 96), 40.0), torch.full((1, 3, 96, 96), 160.0)])
    e = [{"op": "poisson_noise", "photons": 100.0, "gray": False, "seed": s} for s in (1, 2)]
    y = OPS["poisson_noise"].apply_torch(x, e)
    for i, v in enumerate((40.0, 160.0)):
        assert float((y[i] - x[i]).var()) == pytest.approx(v * 255 / 100, rel=0.1)
        assert float(y[i].mean()) == pytest.approx(v, abs=1.0)


# ---------------------------------------------------------------------------------------------
# JPEG.

def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * math.log10(255 ** 2 / mse)


def test_jpeg_psnr_falls_with_quality_and_is_a_real_round_trip():
    from PIL import Image
    img = _rand_img(0, 64, 64, smooth=True)
    x = _to_t([img, img, img])
    qs = [90, 50, 10]
    y = _to_np(OPS["jpeg"].apply_torch(x, [{"op": "jpeg", "quality": q} for q in qs]))
    psnrs = [_psnr(img, y[i]) for i in range(3)]
    assert psnrs[0] > psnrs[1] > psnrs[2]
    for i, q in enumerate(qs):
        # A libjpeg round trip through Pillow at the same quality gives (nearly) the same pixels.
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=q)
        ref = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        assert np.abs(ref.astype(int) - y[i].astype(int)).mean() < 0.5
        np.testing.assert_array_equal(y[i], OPS["jpeg"].apply_cv2(img, {"op": "jpeg", "quality": q}))
    # 8x8 blocks: at q=10 differences across block borders exceed those inside blocks.
    g = y[2].astype(np.float64).mean(2)
    dx = np.abs(np.diff(g, axis=1))
    border = dx[:, 7::8].mean()
    inside = np.delete(dx, np.s_[7::8], axis=1).mean()
    assert border > 1.5 * inside


# ---------------------------------------------------------------------------------------------
# Resolution.

def test_nearest_downscale_matches_opencv_exactly():
    rng = np.random.default_rng(0)
    for _ in range(40):
        h, w = int(rng.integers(8, 80)), int(rng.integers(8, 80))
        s = float(rng.uniform(0.1, 0.9))
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        small = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_NEAREST)
        ref = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
        e = {"op": "downscale", "scale": s, "interpolation": "nearest"}
        np.testing.assert_array_equal(OPS["downscale"].apply_cv2(img, e), ref)
        np.testing.assert_array_equal(_to_np(OPS["downscale"].apply_torch(_to_t([img]), [e]))[0], ref)


def _low_band_fraction(img, cutoff):
    g = img.astype(np.float64).mean(2)
    p = np.abs(np.fft.fft2(g - g.mean())) ** 2
    f = np.abs(np.fft.fftfreq(g.shape[0]))
    low = (f[:, None] <= cutoff) & (f[None, :] <= cutoff)
    return p[low].sum() / p.sum()


@pytest.mark.parametrize("interp", ["nearest", "bilinear", "bicubic", "area"])
def test_downscale_moves_the_spectrum_below_the_new_nyquist(interp):
    img = _rand_img(5, 128, 128)                           # white noise: flat spectrum
    e = {"op": "downscale", "scale": 0.25, "interpolation": interp}
    y_c = OPS["downscale"].apply_cv2(img, e)
    y_t = _to_np(OPS["downscale"].apply_torch(_to_t([img]), [e]))[0]
    before = _low_band_fraction(img, 0.125)
    assert before < 0.1                                   # ~ (2 * 0.125)^2 of the power
    for y in (y_c, y_t):
        after = _low_band_fraction(y, 0.125)
        assert after > (0.4 if interp == "nearest" else 0.6) and after > 5 * before
    assert np.abs(y_c.astype(int) - y_t.astype(int)).mean() < (0.01 if interp == "nearest" else 4.0)
    # A milder factor keeps more of the high band.
    e2 = dict(e, scale=0.75)
    assert _low_band_fraction(OPS["downscale"].apply_cv2(img, e2), 0.125) < _low_band_fraction(y_c, 0.125)


# ---------------------------------------------------------------------------------------------
# Border handling and torch/OpenCV agreement of the linear filters.

def test_reflect101_padding_matches_opencv_even_beyond_image_size():
    for n, p in [(5, 2), (5, 7), (1, 3), (2, 5)]:
        ref = cv2.copyMakeBorder(np.arange(n, dtype=np.uint8)[None, :], 0, 0, p, p, cv2.BORDER_REFLECT_101)[0]
        np.testing.assert_array_equal(Fn.border_index(n, p, "reflect101"), ref)


@pytest.mark.parametrize("name,entry", [
    ("gaussian_blur", {"ksize": 9, "sigma": None}),
    ("gaussian_blur", {"ksize": 31, "sigma": 2.5}),
    ("aniso_gaussian_blur", {"ksize": 11, "sigma_x": 3.0, "sigma_y": 1.0, "angle": 60.0}),
    ("motion_blur", {"ksize": 21, "line": [0, 3, 20, 15]}),
    ("box_blur", {"ksize": 25}),
])
def test_linear_filters_torch_and_opencv_agree(name, entry):
    img = _rand_img(2)
    e = {"op": name, **entry}
    a = _to_np(OPS[name].apply_torch(_to_t([img]), [e]))[0].astype(int)
    b = OPS[name].apply_cv2(img, e).astype(int)
    assert np.abs(a - b).max() <= 1 and np.abs(a - b).mean() < 0.05
    if name in ("gaussian_blur", "motion_blur", "box_blur"):
        # The meaning is OpenCV's: compare with the call albumentations made.
        k = e["ksize"]
        if name == "gaussian_blur":
            ref = cv2.GaussianBlur(img, (k, k), e["sigma"] or 0)
        elif name == "motion_blur":
            ref = cv2.filter2D(img, -1, kernels.motion_kernel(k, e["line"]).astype(np.float32))
        else:
            ref = cv2.blur(img, (k, k))
        assert np.abs(b - ref.astype(int)).max() <= 1
