"""Inversion speed: images/s of stage 1 + PTI for several batch sizes (images tuned together).

    python benchmarks/bench_invert.py --config small64 --batch 1,4,8,16 --w-steps 5 --pti-steps 5
    python benchmarks/bench_invert.py --config paper256 --batch 1,4 --w-steps 1 --pti-steps 2
    python benchmarks/bench_invert.py --network pretrained/qc-faces64.pt --batch 1,8 --pti-steps 10
    python benchmarks/bench_invert.py --config small64 --batch 4 --reference      # + the one-image loop

For each batch size B, ``invert_images`` (the call ``invert.py run`` and ``restore.py`` make) runs
on B of the generator's own samples with early stopping off, on random weights of the chosen size
(``bench_generate.CONFIGS``) or a network file. Prints one JSON line per B: images/s, seconds per
PTI step per image, the per-image time extrapolated to ``--report-steps`` steps (the paper: 350 PTI
steps, 83 s per 256x256 image on its GPU), and the memory a batch holds for the tuned tensors.
``--reference`` also times the one-image reference path (``PivotalTuner.tune`` per image) on the
same B images, for the batched-vs-loop comparison in one run. ``--profile`` adds, per B, where a
batched PTI step's time goes: ``torch.profiler`` over ``--pti-steps`` steps of
``PivotalTuner.tune_batch``, self CPU time per op (top ``--profile-rows``), and the share of the
convolutions (forward and backward) in it. Times are wall and process CPU seconds: on a shared
machine CPU seconds are the steadier of the two.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench_generate import CONFIGS  # noqa: E402
from inversion import PTIOptions, invert_images  # noqa: E402
from inversion.objectives import PerceptualLoss, ReconstructionLoss  # noqa: E402
from inversion.pti import PivotalTuner  # noqa: E402
from torch_utils.misc import resolve_device  # noqa: E402
from dnnlib.image_io import to_uint8_hwc  # noqa: E402
from training.networks import Generator  # noqa: E402


def samples(G, n: int, device):
    z = torch.randn([n, G.z_dim], generator=torch.Generator().manual_seed(0)).to(device)
    q = torch.randn([n, G.q_dim], generator=torch.Generator().manual_seed(1)).to(device) if G.q_dim else None
    with torch.no_grad():
        ws = G.mapping(z, torch.zeros([n, G.c_dim], device=device))
        img = G.synthesis(ws, q).clamp(-1, 1)
    return list(to_uint8_hwc(img)), ws, q, img


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


CONV_OPS = ("aten::convolution_backward", "aten::mkldnn_convolution", "aten::_slow_conv2d_forward",
            "aten::_slow_conv2d_backward", "aten::slow_conv_transpose2d", "aten::bmm")


def profile_step(tuner, ws, q, target, steps: int, rows: int) -> dict:
    """Self CPU time per op over ``steps`` batched PTI steps (minus the setup and final renders of
    a 1-step run, measured the same way). Prints the table; returns the summary."""
    from torch.profiler import ProfilerActivity, profile

    def self_times(n_steps):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            tuner.tune_batch(ws, q, target, n_steps)
        return prof, {e.key: e.self_cpu_time_total / 1e6 for e in prof.key_averages()}

    prof, full = self_times(steps + 1)
    _, one = self_times(1)
    per_step = {k: (v - one.get(k, 0.0)) / steps for k, v in full.items()}
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows), flush=True)
    total = sum(per_step.values())
    conv = sum(per_step.get(k, 0.0) for k in CONV_OPS)
    top = sorted(per_step.items(), key=lambda kv: -kv[1])[:rows]
    return {"profiled_sec_per_step": total, "conv_share": conv / total if total else float("nan"),
            "top_ops_sec_per_step": {k: round(v, 4) for k, v in top}}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="small64", choices=list(CONFIGS))
    ap.add_argument("--network", default=None, help="benchmark a network file instead of --config")
    ap.add_argument("--batch", default="1,4,8,16", help="comma-separated batch sizes")
    ap.add_argument("--w-steps", type=int, default=5)
    ap.add_argument("--pti-steps", type=int, default=5)
    ap.add_argument("--report-steps", type=int, default=350, help="extrapolate seconds/image to this many steps")
    ap.add_argument("--tune-blocks", type=int, default=None, help="tune only the last N blocks [default: all]")
    ap.add_argument("--perceptual", default="auto", choices=["auto", "lpips", "lpips-random", "fallback"])
    ap.add_argument("--reference", action="store_true", help="also time the one-image reference loop")
    ap.add_argument("--profile", action="store_true", help="per-op profile of the batched PTI step for each B")
    ap.add_argument("--profile-rows", type=int, default=15, help="ops shown by --profile")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads [default: torch's]")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.network:
        from training.checkpoint import load_generator
        G, name = load_generator(args.network, device=device), os.path.basename(args.network)
    else:
        torch.manual_seed(0)
        G, name = Generator(**CONFIGS[args.config]).eval().requires_grad_(False).to(device), args.config
    batches = [int(b) for b in args.batch.split(",")]
    images, ws_all, q_all, img_all = samples(G, max(batches), device)
    opts = PTIOptions(lpips_threshold=0.0, tune_blocks=args.tune_blocks)
    kw = dict(device=device, progress=False, perceptual=args.perceptual, config=opts)
    invert_images(G, images[:1], w_steps=1, pti_steps=1, batch_size=1, **kw)             # warm-up
    tuner = None
    for b in batches:
        sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        res = invert_images(G, images[:b], w_steps=args.w_steps, pti_steps=args.pti_steps, batch_size=b, **kw)
        sync(device)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        s1 = sum(r.stats.seconds_stage1 for r in res) / b
        s2 = sum(r.stats.seconds_stage2 for r in res) / b
        if tuner is None:
            perc = PerceptualLoss(args.perceptual, device=device)
            tuner = PivotalTuner(G, ReconstructionLoss(perc.to(device), opts.l2_weight, opts.perceptual_weight), opts)
        out = {"network": name, "resolution": G.img_resolution, "device": str(device),
               "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "threads": torch.get_num_threads(), "batch": b, "perceptual_loss": res[0].stats.perceptual_loss,
               "tune_blocks": args.tune_blocks, "w_steps": args.w_steps, "pti_steps": args.pti_steps,
               "images_per_sec": b / wall, "wall_sec": wall, "cpu_sec": cpu,
               "stage1_sec_per_step_per_image": s1 / max(args.w_steps, 1),
               "stage2_sec_per_step_per_image": s2 / max(args.pti_steps, 1),
               f"sec_per_image_at_{args.report_steps}_pti_steps": s1 + s2 / max(args.pti_steps, 1) * args.report_steps,
               "tuned_tensor_mib_per_image": 4 * 4 * tuner.tuned_numel / 2 ** 20,
               "psnr": sum(r.stats.psnr for r in res) / b}
        if args.reference and args.pti_steps > 0:
            target = img_all[:b]
            sync(device)
            t0 = time.perf_counter()
            for i in range(b):
                tuner.tune(ws_all[i:i + 1], None if q_all is None else q_all[i:i + 1], target[i:i + 1], args.pti_steps)
            sync(device)
            out["reference_stage2_sec_per_step_per_image"] = (time.perf_counter() - t0) / b / args.pti_steps
        if args.profile and args.pti_steps > 0:
            out["profile"] = profile_step(tuner, ws_all[:b], None if q_all is None else q_all[:b], img_all[:b],
                                          args.pti_steps, args.profile_rows)
        out["peak_rss_mib_so_far"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if device.type == "cuda":
            out["cuda_max_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
