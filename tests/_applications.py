"""Small generators for the application tests (restore, edit, degradation synthesis, probe)."""
import torch

from training.networks import Generator


def tiny_qc_generator(seed: int = 0, resolution: int = 16, q_dim: int = 4, degrad_coupling: float = 1.0,
                      noise_strength: float = 0.0) -> Generator:
    """A randomly initialised QC generator with one DegradBlock (the last block), in eval mode.

    ``degrad_coupling`` scales the weights of conv1's degradation channels (r_1 of Eq. 8). A
    trained QC-StyleGAN renders a degradation set by q, nearly independent of the content (the
    paper's claim, Sec. 4.4-4.5); random weights couple the two strongly. A small coupling plus
    a non-zero noise input gives a generator with the trained model's property by construction,
    so tests can check that the applications keep it.
    """
    torch.manual_seed(seed)
    G = Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=resolution, img_channels=3, q_dim=q_dim,
                  mapping_kwargs={"num_layers": 2},
                  synthesis_kwargs={"channel_base": 256, "channel_max": 16, "num_fp16_res": 0,
                                    "conv_clamp": 256, "degrad_blocks": 1, "degrad_channels": 4})
    with torch.no_grad():
        for block in G.synthesis.blocks():
            if block.has_degrad_block:
                c = block.out_channels
                block.conv1.weight[c:] *= degrad_coupling
                if noise_strength:
                    block.conv1.noise_strength.fill_(noise_strength)
    return G.eval().requires_grad_(False)


def save_tiny_checkpoint(path: str, **kwargs) -> Generator:
    """Write ``tiny_qc_generator(**kwargs)`` as our checkpoint (G and G_ema) and return it."""
    from training.checkpoint import save_checkpoint
    G = tiny_qc_generator(**kwargs)
    save_checkpoint(str(path), nets={"G": G, "G_ema": G})
    return G
