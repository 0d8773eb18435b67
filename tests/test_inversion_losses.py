"""Inversion losses: the no-download fallback, the lpips-package path (random backbone) and the
automatic choice between them."""
import pytest
import torch
import torch.nn.functional as F

from dnnlib.util import UserError
from inversion.objectives import PerceptualLoss, ReconstructionLoss, laplacian_pyramid, ms_ssim




def _images(seed=0, n=2, res=32):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand([n, 3, res, res], generator=g) * 2 - 1
    return F.avg_pool2d(F.pad(x, [1] * 4, mode="reflect"), 3, 1)      # some spatial correlation


def test_fallback_zero_for_identical_and_grows_with_blur():
    P = PerceptualLoss("fallback")
    x = _images()
    assert P.name == "lap1+msssim"
    assert torch.allclose(P(x, x), torch.zeros(2), atol=1e-6)
    mild = F.avg_pool2d(F.pad(x, [1] * 4, mode="reflect"), 3, 1)
    strong = F.avg_pool2d(F.pad(x, [3] * 4, mode="reflect"), 7, 1)
    assert torch.all(P(mild, x) > 0.01)
    assert torch.all(P(strong, x) > P(mild, x))


def test_fallback_gradient_is_finite_and_points_to_target():
    P = PerceptualLoss("fallback")
    x, y = _images(0), _images(1)
    x = x.clone().requires_grad_(True)
    loss = P(x, y).sum()
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with torch.no_grad():
        assert P(x - 0.05 * x.grad / x.grad.abs().max(), y).sum() < loss


def test_pyramid_and_msssim_conventions():
    x = _images(res=32)
    bands = laplacian_pyramid(x)
    assert [b.shape[-1] for b in bands] == [32, 16, 8, 4]
    assert torch.allclose(ms_ssim(x, x), torch.ones(2), atol=1e-5)
    assert torch.all(ms_ssim(x, -x) < 0.3) and torch.all(ms_ssim(x, 0.9 * x) > 0.95)
    tiny = _images(res=8)                                   # smaller window below 11 px
    assert torch.allclose(ms_ssim(tiny, tiny), torch.ones(2), atol=1e-5)


def test_lpips_package_path_with_random_backbone():
    P = PerceptualLoss("lpips-random")
    assert P.name == "lpips-alex-random-backbone"
    x, y = _images(0, res=16), _images(1, res=16)          # upsampled to 32 inside
    assert torch.allclose(P(x, x), torch.zeros(2), atol=1e-6)
    x = x.clone().requires_grad_(True)
    d = P(x, y)
    assert torch.all(d > 0)
    d.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_auto_falls_back_without_backbone_and_lpips_requires_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))          # empty hub cache
    P = PerceptualLoss("auto")
    assert P.kind == "fallback" and P.name == "lap1+msssim"
    with pytest.raises(UserError, match="alexnet"):
        PerceptualLoss("lpips")
    with pytest.raises(UserError, match="unknown perceptual"):
        PerceptualLoss("vgg")


def test_reconstruction_loss_terms():
    x, y = _images(0), _images(1)
    R = ReconstructionLoss(PerceptualLoss("fallback"), l2_weight=2.0, perceptual_weight=0.5)
    total, terms = R(x, y, return_terms=True)
    assert torch.allclose(terms["l2"], (x - y).square().mean(dim=[1, 2, 3]))
    assert torch.allclose(total, 2 * terms["l2"] + 0.5 * terms["perceptual"])
