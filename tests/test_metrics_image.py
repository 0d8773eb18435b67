"""Image metrics: NIQE reference value, PSNR/SSIM against scikit-image, LPIPS offline behaviour."""
import math
import os

import numpy as np
import pytest
import torch

from dnnlib.util import UserError
from metrics import image_metrics, imresize, niqe
from metrics.lpips_metric import LPIPS, backbone_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared", "reference")
BABOON = os.path.join(SHARED, "baboon.png")


def _rand_pair(seed, shape=(48, 40, 3), noise=12.0):
    rng = np.random.RandomState(seed)
    a = rng.randint(0, 256, shape).astype(np.uint8)
    b = np.clip(a + rng.randn(*shape) * noise, 0, 255).astype(np.uint8)
    return a, b


# --- NIQE ----------------------------------------------------------------------------------

@pytest.mark.skipif(not os.path.isfile(BABOON), reason="../shared/reference/baboon.png not present")
def test_niqe_baboon_matches_matlab():
    from dnnlib.image_io import read_image
    value = niqe.niqe(read_image(BABOON))
    assert abs(value - 5.7296) <= 5e-4, value


@pytest.mark.skipif(not os.path.isfile(os.path.join(SHARED, "niqe_pris_params.npz")), reason="../shared absent")
def test_shipped_pristine_params_equal_reference():
    ours = np.load(niqe.PRISTINE_PARAMS)
    ref = np.load(os.path.join(SHARED, "niqe_pris_params.npz"))
    for key in ("mu_pris_param", "cov_pris_param", "gaussian_window"):
        np.testing.assert_array_equal(ours[key], ref[key])


@pytest.mark.skipif(not os.path.isfile(BABOON), reason="../shared/reference/baboon.png not present")
def test_niqe_rises_with_strong_blur_and_noise():
    from scipy import ndimage
    from dnnlib.image_io import read_image
    img = read_image(BABOON).astype(np.float64)
    clean = niqe.niqe(img)
    blurred = niqe.niqe(np.clip(ndimage.gaussian_filter(img, (3, 3, 0)), 0, 255))
    noisy = niqe.niqe(np.clip(img + np.random.RandomState(0).randn(*img.shape) * 30, 0, 255))
    assert blurred > clean + 2 and noisy > clean + 2, (clean, blurred, noisy)


def test_niqe_rejects_small_images():
    with pytest.raises(UserError, match="96x192"):
        niqe.niqe(np.zeros((64, 64, 3), np.uint8))


def test_imresize_matches_matlab_conventions():
    # Constant stays constant; output size is ceil(n * scale); a 2x shrink of a linear ramp keeps it
    # linear away from the borders with the pixel-centre mapping x_in = 2 x_out - 0.5 (1-based).
    img = np.tile(np.arange(20, dtype=np.float64), (9, 1))
    out = imresize.imresize(img, 0.5)
    assert out.shape == (5, 10)
    np.testing.assert_allclose(out[:, 3:7], np.tile(np.arange(3, 7) * 2 + 0.5, (5, 1)), atol=1e-12)
    np.testing.assert_allclose(imresize.imresize(np.full((7, 7), 3.0), 0.5), 3.0, atol=1e-12)
    w = imresize.resize_weights(12, 6, 0.5)
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-12)


# --- PSNR / SSIM ---------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_psnr_ssim_match_skimage_rgb(seed):
    skm = pytest.importorskip("skimage.metrics")
    a, b = _rand_pair(seed)
    ref_psnr = skm.peak_signal_noise_ratio(a, b, data_range=255)
    ref_ssim = skm.structural_similarity(a.astype(np.float64), b.astype(np.float64), data_range=255,
                                         gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                         channel_axis=2)
    assert abs(image_metrics.psnr(b, a) - ref_psnr) < 1e-4
    assert abs(image_metrics.ssim(b, a) - ref_ssim) < 1e-4


def test_psnr_ssim_match_skimage_y_channel_with_crop():
    skm = pytest.importorskip("skimage.metrics")
    from skimage.color import rgb2ycbcr
    a, b = _rand_pair(5, shape=(60, 52, 3), noise=20)
    ya = rgb2ycbcr(a)[4:-4, 4:-4, 0]
    yb = rgb2ycbcr(b)[4:-4, 4:-4, 0]
    ref_psnr = skm.peak_signal_noise_ratio(ya, yb, data_range=255)
    ref_ssim = skm.structural_similarity(ya, yb, data_range=255, gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False)
    assert abs(image_metrics.psnr(b, a, channel="y", crop_border=4) - ref_psnr) < 1e-4
    assert abs(image_metrics.ssim(b, a, channel="y", crop_border=4) - ref_ssim) < 1e-4


def test_ssim_identical_is_one_and_psnr_infinite():
    a, _ = _rand_pair(3)
    assert image_metrics.ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert image_metrics.ssim(a, a, channel="y") == pytest.approx(1.0, abs=1e-12)
    assert math.isinf(image_metrics.psnr(a, a))


def test_psnr_of_known_noise_level():
    # Mid-grey image plus +-sigma noise (no clipping): MSE = sigma^2 exactly.
    rng = np.random.RandomState(0)
    sigma = 8.0
    a = np.full((64, 64, 3), 128.0)
    b = a + sigma * rng.choice([-1.0, 1.0], size=a.shape)
    expected = 10 * math.log10(255 ** 2 / sigma ** 2)
    assert image_metrics.psnr(b, a) == pytest.approx(expected, abs=1e-9)


def test_paired_metrics_reject_shape_mismatch():
    a, _ = _rand_pair(0)
    with pytest.raises(UserError, match="differ in shape"):
        image_metrics.psnr(a, a[:-1])


# --- LPIPS ---------------------------------------------------------------------------------

def test_lpips_missing_backbone_names_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(UserError) as err:
        backbone_path("alex")
    assert "alexnet-owt-7be5be79.pth" in str(err.value)
    assert str(tmp_path / "hub" / "checkpoints") in str(err.value)
    with pytest.raises(UserError, match="vgg16-397923af.pth"):
        LPIPS("vgg")


def test_lpips_random_backbone_is_deterministic_and_ordered():
    m = LPIPS("alex", backbone="random")
    a, small = _rand_pair(1, shape=(64, 64, 3), noise=5)
    _, big = _rand_pair(1, shape=(64, 64, 3), noise=60)
    assert m(a, a) == pytest.approx(0.0, abs=1e-7)
    d_small, d_big = m(small, a), m(big, a)
    assert 0 < d_small < d_big
    assert LPIPS("alex", backbone="random")(small, a) == pytest.approx(d_small, rel=1e-6)


def test_lpips_loads_backbone_from_hub_cache(tmp_path, monkeypatch):
    torchvision = pytest.importorskip("torchvision")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.manual_seed(1)
    state = torchvision.models.alexnet().state_dict()
    torch.save(state, folder / "alexnet-owt-7be5be79.pth")
    m = LPIPS("alex")
    np.testing.assert_array_equal(m.model.net.slice1[0].weight.numpy(), state["features.0.weight"].numpy())
    np.testing.assert_array_equal(getattr(m.model.net.slice5, "10").bias.numpy(), state["features.10.bias"].numpy())
