"""Generator throughput: images/s for a config, batch, dtype and device.

    python benchmarks/bench_generate.py                       # paper256-size QC generator, CPU
    python benchmarks/bench_generate.py --dtype bfloat16 --batch 8
    python benchmarks/bench_generate.py --network pretrained/qc-faces64.pt

Runs the same call generate.py makes (``render_batch``: mapping, then a sharp/degraded pair
sharing the trunk) on random weights of the chosen size; prints one JSON line per setting.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from torch_utils.misc import resolve_device  # noqa: E402
from training.generation import Job, render_batch, seed_to_q, seed_to_z  # noqa: E402
from training.networks import Generator  # noqa: E402

CONFIGS = {
    # paper256: the paper's 256x256 generator (FFHQ/church 256 configs), about 85 GFLOP per image.
    "paper256": dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=256, img_channels=3, q_dim=16,
                     mapping_kwargs=dict(num_layers=8),
                     synthesis_kwargs=dict(channel_base=16384, channel_max=512, num_fp16_res=4, conv_clamp=256)),
    "small64": dict(z_dim=256, c_dim=0, w_dim=256, img_resolution=64, img_channels=3, q_dim=16,
                    mapping_kwargs=dict(num_layers=4),
                    synthesis_kwargs=dict(channel_base=8192, channel_max=256, num_fp16_res=4, conv_clamp=256)),
}


def bench(G, device, batch, dtype, pairs, iters, warmup):
    jobs = [Job(f"b{i}", z=seed_to_z(i, G.z_dim), q=seed_to_q(i, G.q_dim) if pairs else None)
            for i in range(batch)]
    with torch.no_grad():
        for _ in range(warmup):
            render_batch(G, jobs, device, None, 1.0, None, "const", dtype)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(iters):
            render_batch(G, jobs, device, None, 1.0, None, "const", dtype)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    return batch * iters / seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="paper256", choices=list(CONFIGS))
    ap.add_argument("--network", default=None, help="benchmark a network file instead of --config")
    ap.add_argument("--batch", default="1,4,8", help="comma-separated batch sizes")
    ap.add_argument("--dtype", default="float32,bfloat16", help="comma-separated: float32,bfloat16,float16")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--sharp-only", action="store_true", help="render q=0 only (no pair)")
    args = ap.parse_args()
    device = resolve_device(args.device)
    if args.network:
        from training.checkpoint import load_generator
        G = load_generator(args.network, device=device)
        name = os.path.basename(args.network)
    else:
        torch.manual_seed(0)
        G = Generator(**CONFIGS[args.config]).eval().requires_grad_(False).to(device)
        name = args.config
    pairs = G.q_dim > 0 and not args.sharp_only
    for dtype in args.dtype.split(","):
        for batch in (int(b) for b in args.batch.split(",")):
            rate = bench(G, device, batch, dtype, pairs, args.iters, args.warmup)
            print(json.dumps({"config": name, "device": str(device), "threads": torch.get_num_threads(),
                              "dtype": dtype, "batch": batch, "pairs": pairs,
                              "renders_per_s": round(rate, 3),
                              "images_per_s": round(rate * (2 if pairs else 1), 3)}), flush=True)


if __name__ == "__main__":
    main()
