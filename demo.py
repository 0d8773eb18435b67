"""`make demo`: show the project's main jobs on the shipped default model, offline, on CPU.

Steps: render sharp/degraded pairs with generate's library call, degrade a few generated faces
with the `paper` pipeline, restore them through the inversion path (when available), and write
``demo-out/index.md`` with the images and a summary table.
"""
from __future__ import annotations

import json
import os
import time

import click
import numpy as np
import torch

from dnnlib.util import atomic_write, cli_main
from training.checkpoint import load_network
from training.generation import generate_images
from training.pretrained import default_network_path


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--network", default=None, help="Network file (default: the shipped model)")
@click.option("--outdir", default="demo-out", show_default=True)
@click.option("--count", type=int, default=8, show_default=True, help="Pairs to render")
@cli_main
def main(network, outdir, count):
    """Run the demo."""
    t0 = time.time()
    network = network or default_network_path(announce=True, allow_fixture=True)
    G = load_network(network)["G_ema"]
    os.makedirs(outdir, exist_ok=True)

    pairs_dir = os.path.join(outdir, "pairs")
    generate_images(G, pairs_dir, seeds=list(range(count)), grid=True, progress=True)

    lines = ["# QC-StyleGAN demo", "", f"Network: `{network}`", "",
             "## Generated sharp / degraded pairs (q = 0 / q ~ N(0, I))", "",
             "![pairs](pairs/grid.png)", ""]
    summary = {"network": network, "pairs": count}
    if G.q_dim > 0:
        summary.update(_degrade_and_restore(G, outdir, lines))
    summary["seconds"] = round(time.time() - t0, 1)
    with atomic_write(os.path.join(outdir, "index.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with atomic_write(os.path.join(outdir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    click.echo(json.dumps(summary, indent=2))
    click.echo(f"open {os.path.join(outdir, 'index.md')}")


def _degrade_and_restore(G, outdir: str, lines: list) -> dict:
    """Degrade generated sharp faces with the paper pipeline and restore them."""
    from degradations import build_pipeline
    from dnnlib.image_io import read_image, write_image
    from metrics.image_metrics import psnr, ssim

    pairs_dir = os.path.join(outdir, "pairs")
    names = sorted(f for f in os.listdir(pairs_dir) if f.endswith(".png") and "_degraded" not in f
                   and f != "grid.png")[:4]
    clean = np.stack([read_image(os.path.join(pairs_dir, n)) for n in names])        # [N, H, W, 3]
    pipe = build_pipeline("paper", resolution=G.img_resolution)
    x = torch.from_numpy(clean).permute(0, 3, 1, 2).float()
    y, records = pipe(x, generator=torch.Generator().manual_seed(0))
    degraded = y.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    deg_dir = os.path.join(outdir, "degraded")
    for n, im in zip(names, degraded):
        write_image(os.path.join(deg_dir, n), im)
    result = {"degraded_psnr": float(np.mean([psnr(d, c) for d, c in zip(degraded, clean)])),
              "degraded_ssim": float(np.mean([ssim(d, c) for d, c in zip(degraded, clean)]))}
    lines += ["## Real degradations (`paper` pipeline) of generated faces", ""]
    lines += [f"![{n}](degraded/{n})" for n in names] + [""]
    try:
        from inversion import invert_images
    except ImportError:
        lines += ["(restoration: the inversion package is not available in this checkout)", ""]
        return result
    restored_dir = os.path.join(outdir, "restored")
    results = invert_images(G, list(degraded), progress=True)
    from inversion import apply_delta
    with torch.no_grad():
        for n, res in zip(names, results):
            G_t = apply_delta(G, res.delta) if res.delta is not None else G
            img = G_t.synthesis(res.w[None].to(torch.float32), q=None, noise_mode="const")
            out = (img * 127.5 + 128).clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()
            write_image(os.path.join(restored_dir, n), out)
    restored = np.stack([read_image(os.path.join(restored_dir, n)) for n in names])
    result.update(restored_psnr=float(np.mean([psnr(r, c) for r, c in zip(restored, clean)])),
                  restored_ssim=float(np.mean([ssim(r, c) for r, c in zip(restored, clean)])))
    lines += ["## Restored (invert, render with q = 0)", ""]
    lines += [f"![{n}](restored/{n})" for n in names] + [""]
    return result


if __name__ == "__main__":
    main()
