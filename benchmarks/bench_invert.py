"""Inversion speed: seconds per image for stage 1 (latent optimisation) and stage 2 (PTI).

    python benchmarks/bench_invert.py --config small64 --w-steps 20 --pti-steps 20
    python benchmarks/bench_invert.py --config paper256 --w-steps 3 --pti-steps 3 --device cuda
    python benchmarks/bench_invert.py --network pretrained/qc-ffhq256.pt --pti-steps 350

Runs ``invert_images`` (the call ``invert.py run`` makes) on the generator's own samples with
early stopping off, on random weights of the chosen size (``bench_generate.CONFIGS``) or a network
file. Prints one JSON line: measured seconds per image for each stage, seconds per step, and the
per-image time extrapolated to ``--report-steps`` steps (the paper: 350 PTI steps, 83 s per
256x256 image on its GPU).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench_generate import CONFIGS  # noqa: E402
from inversion import PTIOptions, invert_images  # noqa: E402
from torch_utils.misc import resolve_device  # noqa: E402
from training.networks import Generator  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="small64", choices=list(CONFIGS))
    ap.add_argument("--network", default=None, help="benchmark a network file instead of --config")
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--w-steps", type=int, default=20)
    ap.add_argument("--pti-steps", type=int, default=20)
    ap.add_argument("--report-steps", type=int, default=350, help="extrapolate seconds/image to this many steps")
    ap.add_argument("--tune-blocks", type=int, default=None, help="tune only the last N blocks [default: all]")
    ap.add_argument("--perceptual", default="auto", choices=["auto", "lpips", "lpips-random", "fallback"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads [default: torch's]")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.network:
        from training.checkpoint import load_network
        nets = load_network(args.network, device=device)
        G, name = nets.get("G_ema", nets.get("G")), os.path.basename(args.network)
    else:
        torch.manual_seed(0)
        G, name = Generator(**CONFIGS[args.config]).eval().requires_grad_(False).to(device), args.config
    z = torch.randn([args.images, G.z_dim], device=device)
    q = torch.randn([args.images, G.q_dim], device=device) if G.q_dim else None
    with torch.no_grad():
        img = G.synthesis(G.mapping(z, torch.zeros([args.images, G.c_dim], device=device)), q).clamp(-1, 1)
    images = list((img * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
    opts = PTIOptions(lpips_threshold=0.0, tune_blocks=args.tune_blocks)
    invert_images(G, images[:1], w_steps=1, pti_steps=1, device=device, progress=False,
                  perceptual=args.perceptual, options=opts)                                  # warm-up
    t0 = time.perf_counter()
    res = invert_images(G, images, w_steps=args.w_steps, pti_steps=args.pti_steps, device=device, progress=False,
                        perceptual=args.perceptual, options=opts)
    wall = time.perf_counter() - t0
    s1 = sum(r.stats["seconds_stage1"] for r in res) / len(res)
    s2 = sum(r.stats["seconds_stage2"] for r in res) / len(res)
    out = {"network": name, "resolution": G.img_resolution, "device": str(device),
           "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "threads": torch.get_num_threads(), "images": len(res), "batch": len(res),
           "perceptual_loss": res[0].stats["perceptual_loss"], "tune_blocks": args.tune_blocks,
           "w_steps": args.w_steps, "pti_steps": args.pti_steps,
           "stage1_sec_per_image": s1, "stage2_sec_per_image": s2,
           "stage1_sec_per_step_per_image": s1 / max(args.w_steps, 1),
           "stage2_sec_per_step": s2 / max(args.pti_steps, 1),
           f"stage1_sec_per_image_at_{args.report_steps}": s1 / max(args.w_steps, 1) * args.report_steps,
           f"stage2_sec_per_image_at_{args.report_steps}": s2 / max(args.pti_steps, 1) * args.report_steps,
           "psnr_stage1": sum(r.stats["psnr_stage1"] for r in res) / len(res),
           "psnr": sum(r.stats["psnr"] for r in res) / len(res), "wall_sec": wall}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
