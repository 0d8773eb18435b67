"""Our networks reproduce the official StyleGAN2-ADA and QC-StyleGAN reference vectors."""
import json
import os

import pytest
import torch

from conftest import assert_close_scaled, shared_path
from training.checkpoint import load_network
from training.discriminator import Discriminator
from training.networks import Generator

# Reference comparisons: assert_close_scaled (conftest: float32 across CPU kernels, 2e-5 of the
# tensor's scale). TOL stays for the few checks of two of our own paths on the same machine.
TOL = dict(rtol=1e-4, atol=1e-4)


def _fixture(name):
    root = shared_path("fixtures", name)
    cfg = json.load(open(os.path.join(root, "config.json")))
    expected = torch.load(os.path.join(root, "expected.pt"), weights_only=True)
    return root, cfg, expected


def _from_weights(name):
    root, cfg, expected = _fixture(name)
    weights = torch.load(os.path.join(root, "weights.pt"), weights_only=True)
    nets = {"G": Generator(**cfg["G_kwargs"]).eval()}
    nets["G"].load_state_dict(weights["G"], strict=True)
    if "D" in weights:
        nets["D"] = Discriminator(**cfg["D_kwargs"]).eval()
        nets["D"].load_state_dict(weights["D"], strict=True)
    return nets, expected


def _from_pickle(name):
    root, _, expected = _fixture(name)
    return load_network(os.path.join(root, "network.pkl")), expected


LOADERS = {"weights.pt": _from_weights, "network.pkl": _from_pickle}


@pytest.mark.parametrize("source", list(LOADERS))
@torch.no_grad()
def test_stylegan2_ada_reference(source):
    nets, e = LOADERS[source]("stylegan2_ada")
    G, D = nets["G"], nets["D"]
    assert_close_scaled(G.mapping(e["z"], e["c"]), e["ws"])
    assert_close_scaled(G.mapping(e["z"], e["c"], truncation_psi=0.7), e["ws_trunc"])
    assert_close_scaled(G.synthesis(e["ws"], noise_mode="const"), e["img_const"])
    assert_close_scaled(G.synthesis(e["ws"], noise_mode="none"), e["img_none"])
    assert_close_scaled(G.synthesis(e["ws_trunc"], noise_mode="const"), e["img_trunc_const"])
    assert_close_scaled(D(e["img_const"], e["c"]), e["d_logits"])
    if source == "network.pkl":   # G_ema is a copy of G in the fixture
        assert_close_scaled(nets["G_ema"].synthesis(e["ws"]), e["img_const"])


@pytest.mark.parametrize("source", list(LOADERS))
@torch.no_grad()
def test_qc_stylegan_reference(source):
    nets, e = LOADERS[source]("qc_stylegan")
    G = nets["G"]
    assert_close_scaled(G.mapping(e["z"], None), e["ws"])
    assert_close_scaled(G.synthesis(e["ws"], q=torch.zeros_like(e["q"])), e["img_sharp"])
    assert_close_scaled(G.synthesis(e["ws"]), e["img_sharp"])          # q=None == zeros
    img, feats = G.synthesis(e["ws"], q=e["q"], return_feats=True)
    assert_close_scaled(img, e["img_degraded"])
    assert len(feats) == len(e["feats_degraded"]) == 2
    for got, want in zip(feats, e["feats_degraded"]):
        assert_close_scaled(got, want)
    _, feats0 = G.synthesis(e["ws"], q=None, return_feats=True)
    for got, want in zip(feats0, e["feats_sharp"]):
        assert_close_scaled(got, want)
    assert_close_scaled(G.synthesis(e["ws"], q=2 * e["q"]), e["img_degraded_2q"])
    if source == "network.pkl":
        assert set(nets) >= {"G", "G_ema", "D", "D_degraded"}
        logits = nets["D_degraded"](e["img_degraded"])
        assert logits.shape == (4, 1) and torch.isfinite(logits).all()


@torch.no_grad()
def test_pair_mode_matches_separate_renders():
    nets, e = _from_weights("qc_stylegan")
    sharp, degraded = nets["G"].synthesis(e["ws"], q=e["q"], pair=True)
    assert_close_scaled(sharp, e["img_sharp"])
    assert_close_scaled(degraded, e["img_degraded"])


@torch.no_grad()
def test_degrad_block_properties():
    torch.manual_seed(0)
    G = Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3, q_dim=4,
                  mapping_kwargs=dict(num_layers=1),
                  synthesis_kwargs=dict(channel_base=256, channel_max=16, degrad_channels=3)).eval()
    block = G.synthesis.b16
    db = block.convq.double()
    r1 = torch.randn(5, db.extra_channels, 8, 8, dtype=torch.float64) * 10
    q = torch.randn(5, 4, dtype=torch.float64)
    assert torch.equal(db.residual(r1, torch.zeros_like(q)), torch.zeros(5, 16, 8, 8, dtype=torch.float64))
    for k in (0.0, 0.5, 2.0, 3.7):   # DB(f, k q) = k DB(f, q) for k >= 0
        torch.testing.assert_close(db.residual(r1, k * q), k * db.residual(r1, q), rtol=1e-10, atol=1e-10)
    block.convq.float()
    # Whole generator: q = 0 gives exactly the sharp image, q != 0 changes it.
    z = torch.randn(3, 16)
    sharp = G(z)
    # (the residual is exactly 0; conv1 with or without its extra rows may round differently)
    torch.testing.assert_close(G(z, q=torch.zeros(3, 4)), sharp, rtol=1e-6, atol=1e-6)
    assert (G(z, q=torch.randn(3, 4)) - sharp).abs().max() > 1e-3
    assert G.degrad_resolutions == [8, 16]


def test_generator_gradients_reach_every_parameter():
    torch.manual_seed(0)
    G = Generator(z_dim=8, c_dim=2, w_dim=8, img_resolution=8, img_channels=3, q_dim=2,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=64, channel_max=8))
    D = Discriminator(c_dim=2, img_resolution=8, img_channels=3, channel_base=64, channel_max=8,
                      epilogue_kwargs=dict(mbstd_group_size=2))
    c = torch.eye(2)[[0, 1, 0, 1]]
    img = G(torch.randn(4, 8), c, q=torch.randn(4, 2), noise_mode="random")
    D(img, c).sum().backward()
    for name, p in list(G.named_parameters()) + list(D.named_parameters()):
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("arch", ["orig", "skip", "resnet"])
def test_architectures_build_and_render(arch):
    torch.manual_seed(0)
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, q_dim=2,
                  synthesis_kwargs=dict(channel_base=128, channel_max=8, architecture=arch))
    D = Discriminator(c_dim=0, img_resolution=16, img_channels=3, architecture=arch, channel_base=128,
                      channel_max=8)
    with torch.no_grad():
        z, q = torch.randn(2, 8), torch.randn(2, 2)
        img = G(z, q=q)
        sharp, deg = G.synthesis(G.mapping(z, None), q=q, pair=True)
        torch.testing.assert_close(deg, img, rtol=1e-5, atol=1e-5)
        assert img.shape == (2, 3, 16, 16) and D(img).shape == (2, 1)


@torch.no_grad()
def test_cpu_inference_formats_match_reference():
    """channels_last + non-fused (the CPU inference format) is exact; bfloat16 is close."""
    nets, e = _from_weights("qc_stylegan")
    G = nets["G"]
    sharp, deg = G.synthesis(e["ws"], q=e["q"], pair=True, channels_last=True, fused_modconv=False)
    assert_close_scaled(sharp, e["img_sharp"])
    assert_close_scaled(deg, e["img_degraded"])
    sharp, deg = G.synthesis(e["ws"], q=e["q"], pair=True, dtype=torch.bfloat16, channels_last=True,
                             fused_modconv=False)
    assert sharp.dtype == torch.float32
    scale = e["img_degraded"].abs().max()
    assert (deg - e["img_degraded"]).abs().max() < 0.05 * scale
    assert (sharp - e["img_sharp"]).abs().mean() < 0.01 * e["img_sharp"].abs().max()


@torch.no_grad()
def test_pair_mode_shares_random_noise():
    nets, e = _from_weights("qc_stylegan")
    torch.manual_seed(3)
    sharp, deg = nets["G"].synthesis(e["ws"], q=torch.zeros_like(e["q"]), pair=True, noise_mode="random")
    torch.testing.assert_close(sharp, deg, rtol=1e-5, atol=1e-5)
    assert (sharp - e["img_sharp"]).abs().max() > 1e-3      # the noise really was random


def _qc_reference_fails(G, e):
    """True when the QC fixture comparison (the same checks as above) catches G."""
    try:
        assert_close_scaled(G.synthesis(e["ws"]), e["img_sharp"])
        assert_close_scaled(G.synthesis(e["ws"], q=e["q"]), e["img_degraded"])
        assert_close_scaled(G.synthesis(e["ws"], q=2 * e["q"]), e["img_degraded_2q"])
    except AssertionError:
        return True
    return False


@torch.no_grad()
def test_reference_tolerance_still_catches_broken_networks(monkeypatch):
    """The scale-relative tolerance is loose enough for any CPU, not loose enough for a bug:
    one DegradBlock weight with its sign flipped, demodulation dropped, or the Eq. 8 mixing
    pairing r_1 groups with the wrong q entries must each fail the fixture comparison."""
    import training.degrad_block as degrad_block
    import training.networks as networks
    nets, e = _from_weights("qc_stylegan")
    G = nets["G"]
    assert not _qc_reference_fails(G, e)

    block = getattr(G.synthesis, f"b{G.degrad_resolutions[-1]}")
    w = block.convq[0].weight
    w[0, 0].neg_()                                   # one weight's sign
    assert _qc_reference_fails(G, e)
    w[0, 0].neg_()
    assert not _qc_reference_fails(G, e)

    real_mod = networks.modulated_conv2d
    monkeypatch.setattr(networks, "modulated_conv2d",
                        lambda *a, **k: real_mod(*a, **dict(k, demodulate=False)))
    assert _qc_reference_fails(G, e)                 # no demodulation
    monkeypatch.setattr(networks, "modulated_conv2d", real_mod)

    real_residual = degrad_block.DegradBlock.residual
    monkeypatch.setattr(degrad_block.DegradBlock, "residual",
                        lambda self, r1, q: real_residual(self, r1, q.flip(1)))
    assert _qc_reference_fails(G, e)                 # r_1,i weighted by q_(D-1-i)
