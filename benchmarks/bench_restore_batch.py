"""Restoration wall time with and without batching: held-out faces, the shipped model, one run.

    python benchmarks/bench_restore_batch.py                       # 16 faces, restore.py's defaults
    python benchmarks/bench_restore_batch.py --pti-steps 20 --threads 1

Takes the first ``--images`` faces of ``utkface64-mini.zip`` (held out from training), degrades
them with the ``paper`` pipeline (``degradations.folder.degrade_folder``, seed 0), then restores
them twice with ``restore_folder`` (the library call of ``restore.py``) and the same settings:
one image at a time (``--batch 1``) and batched (``--batch``, default the device's), both scored
against the clean faces. The two arms are interleaved so a shared machine's changing load falls
on both alike: the faces are split into chunks of one batch, and each chunk is restored by both
arms in turn (A B, then B A for the next chunk). Prints both arms' wall and process CPU times
(summed over the chunks), the speed-ups and mean PSNR / SSIM side by side, and writes
``OUT/bench_restore_batch.json``. Defaults are those of ``restore.py`` (shipped model and encoder,
350 PTI steps with early stopping, auto perceptual loss).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import zipfile

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dnnlib.util import atomic_write  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                    "shared", "datasets", "utkface64-mini.zip")


def extract_faces(zip_path: str, n: int, outdir: str) -> None:
    with zipfile.ZipFile(zip_path) as z:
        names = sorted(m for m in z.namelist() if m.lower().endswith(".png"))[:n]
        os.makedirs(outdir, exist_ok=True)
        for m in names:
            with open(os.path.join(outdir, os.path.basename(m)), "wb") as f:
                f.write(z.read(m))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DATA, help="ZIP of held-out faces")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--batch", type=int, default=None, help="batched run's batch size [default: by device]")
    ap.add_argument("--pti-steps", type=int, default=None, help="[default: restore.py's]")
    ap.add_argument("--w-steps", type=int, default=None, help="[default: restore.py's]")
    ap.add_argument("--perceptual", default="auto")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads [default: torch's]")
    ap.add_argument("--outdir", default="/tmp/bench-restore-batch")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from degradations.folder import degrade_folder
    from inversion.config import default_batch_size
    from apps.restore import RestoreOptions, restore_folder
    from inversion.models import load_models

    clean, degraded = os.path.join(args.outdir, "clean"), os.path.join(args.outdir, "degraded")
    extract_faces(args.data, args.images, clean)
    degrade_folder(clean, degraded, "paper", seed=0, progress=False)
    models = load_models(None, None, args.device, announce=False)        # the shipped model and encoder
    batch = args.batch or default_batch_size(args.device)
    arms = {"one at a time": 1, f"batch {batch}": batch}
    times = {label: [0.0, 0.0] for label in arms}                  # wall, CPU seconds
    recs = {label: [] for label in arms}
    faces = sorted(f for f in os.listdir(degraded) if f.lower().endswith(".png"))
    chunks = [faces[i:i + batch] for i in range(0, len(faces), batch)]
    for c, chunk in enumerate(chunks):
        src = os.path.join(args.outdir, "chunks", str(c))
        os.makedirs(src, exist_ok=True)
        for f in chunk:
            if not os.path.exists(os.path.join(src, f)):
                shutil.copyfile(os.path.join(degraded, f), os.path.join(src, f))
        order = list(arms.items()) if c % 2 == 0 else list(arms.items())[::-1]
        for label, b in order:
            out = os.path.join(args.outdir, f"restored-b{b}", str(c))
            if os.path.isdir(out):
                shutil.rmtree(out)                   # time a full run, not a resumed one
            t0, c0 = time.perf_counter(), time.process_time()
            settings = dict(pti_steps=args.pti_steps, w_steps=args.w_steps, batch_size=b, perceptual=args.perceptual)
            restore_folder(models, src, out, RestoreOptions(gt=clean, metrics=["psnr", "ssim"], progress=False).replace(
                **{k: v for k, v in settings.items() if v is not None}))    # None: restore.py's default
            times[label][0] += time.perf_counter() - t0
            times[label][1] += time.process_time() - c0
            recs[label] += [json.loads(line) for line in open(os.path.join(out, "restore.jsonl"))]
            print(f"chunk {c + 1}/{len(chunks)} {label}: {times[label][0]:.1f} s so far", flush=True)
    runs = {}
    for label, b in arms.items():
        r = recs[label]
        mean = lambda kind, m: sum(x[kind][m] for x in r) / len(r)        # noqa: E731
        runs[label] = {"batch": b, "wall_sec": times[label][0], "cpu_sec": times[label][1], "images": len(r),
                       "psnr": mean("restored", "psnr"), "ssim": mean("restored", "ssim"),
                       "input_psnr": mean("input", "psnr"), "pti_steps_mean": sum(x["pti_steps"] for x in r) / len(r)}
        print(f"{label:>14}: {runs[label]['wall_sec']:8.1f} s wall, {runs[label]['cpu_sec']:8.1f} s CPU  "
              f"PSNR {runs[label]['psnr']:.3f} dB  SSIM {runs[label]['ssim']:.4f}  "
              f"(mean PTI steps {runs[label]['pti_steps_mean']:.1f})", flush=True)
    a, b = runs.values()
    summary = {"runs": runs, "speedup": a["wall_sec"] / b["wall_sec"], "speedup_cpu": a["cpu_sec"] / b["cpu_sec"],
               "psnr_diff_db": b["psnr"] - a["psnr"], "ssim_diff": b["ssim"] - a["ssim"],
               "threads": torch.get_num_threads(), "device": args.device, "pti_steps": args.pti_steps,
               "w_steps": args.w_steps, "images": args.images, "interleaved_chunks": len(chunks)}
    print(f"speed-up {summary['speedup']:.2f}x wall, {summary['speedup_cpu']:.2f}x CPU; "
          f"PSNR diff {summary['psnr_diff_db']:+.3f} dB, SSIM diff {summary['ssim_diff']:+.4f}; "
          f"input PSNR {a['input_psnr']:.3f} dB; threads {summary['threads']}")
    with atomic_write(os.path.join(args.outdir, "bench_restore_batch.json"), "w") as f:
        json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
