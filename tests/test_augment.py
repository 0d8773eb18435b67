"""training/augment.py: ADA pipeline behaviour and adaptive p."""

import pytest
import torch

from training.augment import AdaController, AugmentPipe, pipeline_spec


def _images(n=4, c=3, r=16, seed=0):
    return torch.rand([n, c, r, r], generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_specs():
    assert set(pipeline_spec("bgc")) == {"xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac",
                                         "brightness", "contrast", "lumaflip", "hue", "saturation"}
    assert "cutout" in pipeline_spec("bgcfnc")
    with pytest.raises(ValueError):
        pipeline_spec("xyz")


@pytest.mark.parametrize("spec", ["blit", "geom", "color", "filter", "noise", "cutout"])
def test_p_zero_is_identity_and_tiny_p_near_identity(spec):
    x = _images()
    assert torch.equal(AugmentPipe(spec, p=0)(x), x)
    assert (AugmentPipe(spec, p=1e-9)(x) - x).abs().max() < 1e-5  # neutral parameters: no change


@pytest.mark.parametrize("spec", ["blit", "geom", "color", "filter", "noise", "cutout"])
def test_p_one_changes_images_and_is_differentiable(spec):
    x = _images().requires_grad_(True)
    y = AugmentPipe(spec, p=1)(x, torch.Generator().manual_seed(1))
    assert y.shape == x.shape and (y - x).abs().max() > 1e-2
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_blit_is_a_pixel_permutation():
    x = _images(n=8, c=1)
    y = AugmentPipe("blit", p=1)(x, torch.Generator().manual_seed(2))
    # xflip/rot90/integer shift with reflection only copies pixels: every output value is an input value.
    for i in range(8):
        assert torch.isin(y[i].flatten(), x[i].flatten()).all()


def test_color_keeps_gray_pixels_gray_without_brightness_contrast():
    pipe = AugmentPipe("c", p=1)
    pipe.spec = dict(hue=1, saturation=1)
    g = torch.rand([4, 1, 8, 8]).expand(4, 3, 8, 8).contiguous()
    y = pipe(g)
    torch.testing.assert_close(y, g, atol=1e-5, rtol=0)  # luma axis is fixed by hue and saturation


def test_filter_is_linear_shift_invariant():
    # A constant image lives in the lowest band: it stays constant, only its level changes.
    x = torch.full([16, 3, 16, 16], 0.5)
    y = AugmentPipe("filter", p=1)(x, torch.Generator().manual_seed(0))
    assert y.flatten(1).std(dim=1).max() < 1e-5 and (y[:, 0, 0, 0] != 0.5).any()
    # Same gains for a shifted image (same generator seed): output shifts with it.
    z = _images(n=2)
    a = AugmentPipe("filter", p=1)(z, torch.Generator().manual_seed(3))
    b = AugmentPipe("filter", p=1)(torch.roll(z, 3, dims=3), torch.Generator().manual_seed(3))
    torch.testing.assert_close(torch.roll(a, 3, dims=3), b, atol=1e-5, rtol=0)


def test_application_rate_follows_p():
    x = _images(n=2000, c=1, r=4)
    y = AugmentPipe("noise", p=0.3)(x, torch.Generator().manual_seed(0))
    changed = ((y - x).abs().flatten(1).max(dim=1).values > 0).float().mean()
    assert abs(float(changed) - 0.3) < 0.05


def test_ada_p_moves_toward_target():
    pipe = AugmentPipe("bgc", p=0.1)
    ada = AdaController(pipe, target=0.6, interval=4, speed_kimg=1)
    ada.accumulate(torch.ones(100))          # D sure every real is real: overfitting -> raise p
    r_t = ada.adjust()
    assert r_t == 1.0 and float(pipe.p) == pytest.approx(0.1 + 100 / 1000)
    ada.accumulate(-torch.ones(50))          # r_t = -1 < target -> lower p
    ada.adjust()
    assert float(pipe.p) == pytest.approx(0.2 - 50 / 1000)
    ada.accumulate(-torch.ones(10000))       # clamped at 0
    ada.adjust()
    assert float(pipe.p) == 0.0
    assert ada.adjust() is None              # nothing collected: no change
