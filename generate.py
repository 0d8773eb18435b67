"""Render sharp/degraded image pairs from a QC-StyleGAN (or plain StyleGAN2-ADA) network.

Examples:
    python generate.py --seeds 0-7 --outdir out/gen --grid            # the shipped model
    python generate.py --network network-snapshot.pkl --seeds 1,2 --q-seeds 100 --q-scale 1.5 --outdir out

Exit status: 0 done; 1 bad option; 2 a wrong --network file (no generator, truncated, newer
format): nothing is written.
"""
from __future__ import annotations

import click

from dnnlib.util import UserError, cli_main, parse_range
from inversion.pretrained import resolve_network
from torch_utils.misc import resolve_device
from training.checkpoint import load_generator
from training.generation import DTYPES, generate_images


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--network", "network_path", default=None, help="Network file: our .pt, an official .pkl, or a teacher .pth.tar [default: the shipped model]")
@click.option("--seeds", default=None, help="Seeds, e.g. '0-3,10' (z = RandomState(seed).randn(1, z_dim))")
@click.option("--projected-w", default=None, help="Render saved latents instead: .npz/.npy/.pt with 'w' [N, num_ws, w_dim] (and optional 'q')")
@click.option("--outdir", required=True, help="Output folder")
@click.option("--trunc", "truncation_psi", type=float, default=1.0, show_default=True, help="Truncation psi")
@click.option("--trunc-cutoff", "truncation_cutoff", type=int, default=None, help="Truncate only the first N w layers")
@click.option("--class", "class_idx", type=int, default=None, help="Class index (conditional networks)")
@click.option("--noise-mode", type=click.Choice(["const", "random", "none"]), default="const", show_default=True)
@click.option("--q-seeds", default=None, help="Seeds for q (one for all, or one per seed); default: the image seed")
@click.option("--q-file", default=None, help="Saved q: .npy/.npz/.pt of [q_dim] or [N, q_dim]")
@click.option("--q-scale", type=float, default=1.0, show_default=True, help="Multiply q (degradation strength)")
@click.option("--sharp-only", is_flag=True, help="Skip the degraded companions")
@click.option("--batch", type=int, default=8, show_default=True, help="Images per forward pass")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda[:N]")
@click.option("--dtype", type=click.Choice(["auto"] + list(DTYPES)), default="auto", show_default=True,
              help="auto: bfloat16 where the CPU has it natively (AMX / AVX-512 BF16), else float32 ($QC_AUTO_PRECISION=bf16|fp32 forces it); "
                   "float32: the official pixels on every CPU; float16: CUDA")
@click.option("--grid", is_flag=True, help="Also write grid.png of sharp/degraded pairs")
@cli_main
def main(network_path, seeds, projected_w, outdir, truncation_psi, truncation_cutoff, class_idx, noise_mode,
         q_seeds, q_file, q_scale, sharp_only, batch, device, dtype, grid):
    """Render images: DIR/seed%04d.png (sharp, q = 0) and DIR/seed%04d_degraded.png (q)."""
    if (seeds is None) == (projected_w is None):
        raise UserError("give exactly one of --seeds and --projected-w")
    if batch < 1:
        raise UserError("--batch must be >= 1")
    dev = resolve_device(device)
    network_path = resolve_network(network_path)
    G = load_generator(network_path, device=dev)
    generate_images(G, outdir, seeds=parse_range(seeds) if seeds else (), projected_w=projected_w,
                    truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, class_idx=class_idx,
                    noise_mode=noise_mode, q_seeds=parse_range(q_seeds) if q_seeds else None, q_file=q_file,
                    q_scale=q_scale, degraded=not sharp_only, batch=batch, device=dev, dtype=dtype, grid=grid)
    click.echo(f"wrote {outdir}")


if __name__ == "__main__":
    main()
