"""Shared helpers of the inversion tests (no tests here): a tiny QC generator with usable scales."""
import numpy as np
import torch

from training.networks import Generator

RESIDUAL_STD = 0.5     # std of G(w, q) - G(w, 0): a clearly visible degradation
IMAGE_STD = 0.5        # std of the sharp images, about [-1, 1] like a trained generator


def tiny_generator(seed: int = 0, resolution: int = 16, q_dim: int = 2) -> Generator:
    """A random-weight QC generator (2 DegradBlocks) rescaled like a trained one: images of std
    ``IMAGE_STD`` and degradation residuals of std ``RESIDUAL_STD``, w_avg the mean mapped w.
    (Random init gives images of std ~5, far outside [-1, 1], which no inversion can match in
    uint8.)"""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        G = Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=resolution, img_channels=3, q_dim=q_dim,
                      mapping_kwargs=dict(num_layers=2),
                      synthesis_kwargs=dict(channel_base=256, channel_max=32, degrad_channels=4,
                                            num_fp16_res=0, conv_clamp=256))
        G.eval().requires_grad_(False)
        with torch.no_grad():
            G.mapping.w_avg.copy_(G.mapping(torch.randn(256, 16), None)[:, 0].mean(0))
            ws = G.mapping(torch.randn(64, 16), None)
            sharp = G.synthesis(ws, None)
            gain = IMAGE_STD / sharp.std()
            for b in G.synthesis.blocks():
                if hasattr(b, "torgb"):
                    b.torgb.weight.mul_(gain)
                    b.torgb.bias.mul_(gain)
            if q_dim:
                s, d = G.synthesis(ws, torch.randn(64, q_dim), pair=True)
                g = RESIDUAL_STD / (d - s).std()
                for b in G.synthesis.blocks():
                    if b.has_degrad_block:
                        b.convq[-1].weight.mul_(g)
    return G


def sample_images(G, n: int, seed: int = 1):
    """n degraded samples G(w, q) with their (ws, q): (uint8 [n, R, R, 3], ws, q)."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn([n, G.z_dim], generator=gen)
    q = torch.randn([n, G.q_dim], generator=gen)
    with torch.no_grad():
        ws = G.mapping(z, None)
        img = G.synthesis(ws, q, noise_mode="const")
    u8 = (img * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return np.ascontiguousarray(u8), ws, q
