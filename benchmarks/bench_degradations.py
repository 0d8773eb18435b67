"""Throughput of the ``paper`` degradation pipeline at 256x256 (images/s).

Rows: the batched path on CPU (``pipe(x, generator)`` on float32 batches), the per-image path on
CPU (``pipe.apply_numpy``), and a plain per-image OpenCV loop doing the same work (the same
records, applied the way albumentations 1.0 applies them: cv2.GaussianBlur, cv2.filter2D with the
motion kernel, cv2.medianBlur, cv2.blur, numpy Gaussian noise, cv2.resize nearest down/up,
cv2.imencode/imdecode) as the baseline; GPU rows when CUDA is available.

    python benchmarks/bench_degradations.py [--images 256] [--batch 32] [--per-op]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from degradations import build_pipeline  # noqa: E402
from degradations import kernels  # noqa: E402


def opencv_loop(imgs, records):
    """The baseline: one image at a time, plain OpenCV/numpy calls (no batching)."""
    import cv2
    out = []
    for img, rec in zip(imgs, records):
        for e in rec["ops"]:
            op = e["op"]
            if op == "gaussian_blur":
                img = cv2.GaussianBlur(img, (e["ksize"], e["ksize"]), e["sigma"] or 0)
            elif op == "motion_blur":
                img = cv2.filter2D(img, -1, kernels.motion_kernel(e["ksize"], e["line"]).astype(np.float32))
            elif op == "median_blur":
                img = cv2.medianBlur(img, e["ksize"])
            elif op == "box_blur":
                img = cv2.blur(img, (e["ksize"], e["ksize"]))
            elif op == "gaussian_noise":
                rng = np.random.default_rng(e["seed"])
                noise = rng.normal(0.0, e["var"] ** 0.5, img.shape)
                img = np.clip(img + noise, 0, 255).astype(np.uint8)
            elif op == "downscale":
                h, w = img.shape[:2]
                small = cv2.resize(img, None, fx=e["scale"], fy=e["scale"], interpolation=cv2.INTER_NEAREST)
                img = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
            elif op == "jpeg":
                _, buf = cv2.imencode(".jpg", img, [int(cv2.IMWRITE_JPEG_QUALITY), e["quality"]])
                img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
            else:
                raise ValueError(op)
        out.append(img)
    return out


def _time(fn, repeats):
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run(num_images=256, batch=32, resolution=256, repeats=3, per_op=False, seed=0, torch_impl=False):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    # Smooth-ish test images (noise on a gradient) so JPEG and median do realistic work.
    base = np.linspace(0, 255, resolution, dtype=np.float32)
    imgs = [np.clip(base[None, :, None] * 0.5 + base[:, None, None] * 0.3 + rng.normal(0, 20, (resolution, resolution, 3)),
                    0, 255).astype(np.uint8) for _ in range(num_images)]
    x_all = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float().contiguous()
    pipe = build_pipeline("paper", resolution)
    # Every row applies the same records (the same work); drawing them is timed on its own.
    records = pipe.sample(num_images, torch.Generator().manual_seed(seed))
    rows = []

    def batched(device, impl="auto"):
        pipe.impl = impl
        chunks = [(x_all[i:i + batch].to(device), records[i:i + batch]) for i in range(0, num_images, batch)]

        def fn():
            for x, recs in chunks:
                pipe.replay(x, recs)
            if device.type == "cuda":
                torch.cuda.synchronize()
        return fn

    def per_image():
        for img, rec in zip(imgs, records):
            pipe.replay_numpy(img, rec)

    sample_s = _time(lambda: pipe.sample(num_images, torch.Generator().manual_seed(seed)), repeats)
    rows.append(("cpu batched (auto impl)", _time(batched(torch.device("cpu")), repeats)))
    if torch_impl:
        rows.append(("cpu batched (torch impl)", _time(batched(torch.device("cpu"), "torch"), repeats)))
    rows.append(("cpu per-image replay_numpy", _time(per_image, repeats)))
    rows.append(("cpu OpenCV loop (baseline)", _time(lambda: opencv_loop(imgs, records), repeats)))
    if torch.cuda.is_available():
        rows.append(("cuda batched", _time(batched(torch.device("cuda")), repeats)))
    print(f"paper pipeline, {resolution}x{resolution}, {num_images} images, batch {batch}, "
          f"torch threads {torch.get_num_threads()}")
    results = {}
    for name, sec in rows:
        results[name] = num_images / sec
        print(f"  {name:32s} {num_images / sec:9.1f} images/s")
    base_ips = results["cpu OpenCV loop (baseline)"]
    print(f"  drawing the records: {sample_s / num_images * 1e6:.0f} us/image (not in the rows)")
    print(f"  ratio batched/OpenCV loop: {results['cpu batched (auto impl)'] / base_ips:.2f}x; "
          f"per-image/OpenCV loop: {results['cpu per-image replay_numpy'] / base_ips:.2f}x")
    if per_op:
        _per_op(pipe, x_all[:batch], records[:batch] * 1, repeats)
    return results


def _per_op(pipe, x, records, repeats):
    """Milliseconds per image of each op, torch (batched) vs cv2 (per image), same entries."""
    from collections import defaultdict
    from degradations.registry import OPS
    by_op = defaultdict(list)
    for r in records:
        for e in r["ops"]:
            by_op[e["op"]].append(e)
    print("  per op, ms/image (torch batched | cv2 per image):")
    for name, entries in sorted(by_op.items()):
        xs = x[:len(entries)]
        op = OPS[name]
        u8 = [np.ascontiguousarray(v) for v in xs.permute(0, 2, 3, 1).to(torch.uint8).numpy()]
        t_t = _time(lambda: op.apply_torch(xs, entries), repeats) / len(entries) * 1e3
        t_c = _time(lambda: [op.apply_cv2(v, e) for v, e in zip(u8, entries)], repeats) / len(entries) * 1e3
        print(f"    {name:16s} {t_t:7.2f} | {t_c:7.2f}   (n={len(entries)})")


def set_threads(n):
    import cv2
    torch.set_num_threads(n)
    cv2.setNumThreads(n)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--per-op", action="store_true", help="also time each op: torch batched vs cv2")
    ap.add_argument("--torch-impl", action="store_true", help="also time impl='torch' on CPU (slow)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch and OpenCV threads for every row (0: library defaults)")
    a = ap.parse_args()
    if a.threads:
        set_threads(a.threads)
    run(a.images, a.batch, a.resolution, a.repeats, a.per_op, torch_impl=a.torch_impl)
