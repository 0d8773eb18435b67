"""What the quality code knows: the linear probe of QC-StyleGAN Sec. 4.6 as a tool.

Clean images are degraded with known levels (Gaussian blur of several strengths; optionally
Gaussian noise and JPEG), each degraded image is inverted (stage 1 only: PTI does not change q) or
encoded to q, and a linear classifier (``apps.linear``) is fitted on q with a
seeded, stratified train/test split. Reported tasks:

* ``blurry_vs_sharp``: sharp (no blur) vs blurred at any level (balanced);
* ``blur_5_levels`` / ``blur_10_levels``: which blur level (sigmas 1..5 and 0.5..5 px at 256 px,
  scaled to the model's resolution);
* with ``noise`` / ``jpeg``: ``noisy_vs_clean``, ``noise_5_levels``, ``jpeg_vs_clean``,
  ``jpeg_5_levels``.

Beside the tasks, ``clean_vs_each_level`` gives per family the accuracy of sharp vs each level
alone (same split rule): where along the levels q starts to read the degradation. Each task also
gives ``split_accuracies``, its test accuracy on ``SPLITS`` seeded splits of the same codes (the
first is the reported one, seed ``seed``), and their ``split_mean``: with a few hundred images a
task's test set holds a few dozen, and one split's accuracy moves by several points.

``image_spectrum`` (with ``baseline=True``) runs the same tasks, splits and classifier on a
q-free reading of the same degraded pool: each image's radially averaged log power spectrum
(``spectrum_features``). It is not in the paper; it says how far the images themselves tell the
levels apart linearly, so a q accuracy reads against what the pool allows (at 64x64 the mildest
level of the model report's probe, a 0.4-px Gaussian, is inside the faces' own spread of sharpness).

The paper reports 97.9 %, 85 % and 77 % test accuracy for the three blur tasks on faces (FFHQ
model). Clean images are a folder (resized to the model's resolution first) or the generator's
own sharp samples G(w, 0).

    python -m evaluation.probe --network QC.pt [--encoder E.pt] (--data DIR | --samples 200) --out probe.json
"""
from __future__ import annotations

import json
import math
import os
import sys
from typing import Dict, List, Optional, Sequence

import click
import numpy as np
import torch

from degradations import build_pipeline
from dnnlib import image_io
from dnnlib.image_io import PIXEL_RANGE, from_uint8_hwc, to_uint8_hwc
from dnnlib.util import UserError, atomic_write, cli_main

from inversion.api import invert_images, prepare_image
from inversion.config import DEFAULT_W_STEPS
from apps.latents import render, seed_latents
from apps.linear import DEFAULT_TEST_FRACTION, fit_and_evaluate
from inversion.objectives import PerceptualLoss, ReconstructionLoss
from inversion.models import load_models
from inversion.pti import PTIOptions, optimize_latents

REFERENCE_RESOLUTION = 256
BLUR_SIGMAS = [0.5 * k for k in range(1, 11)]          # px at 256; levels 1..10
BLUR_SIGMAS_5 = [1.0, 2.0, 3.0, 4.0, 5.0]              # a subset of BLUR_SIGMAS
NOISE_VARS = [50.0, 150.0, 300.0, 450.0, 650.0]        # Gaussian noise variance (pixel values^2)
JPEG_QUALITIES = [90, 70, 50, 30, 10]
PAPER_ACCURACY = {"blurry_vs_sharp": 0.979, "blur_5_levels": 0.85, "blur_10_levels": 0.77}
FAMILIES = ("blur", "noise", "jpeg")
Q_INIT_STD = 0.1                                       # stage-1 start of q without an encoder


def blur_op(sigma_px: float) -> dict:
    """The probe's blur: OpenCV's Gaussian of ``sigma_px`` pixels, kernel 2 * ceil(3 sigma) + 1."""
    return {"op": "gaussian_blur", "ksize": 2 * int(math.ceil(3 * sigma_px)) + 1, "sigma": sigma_px}


def family_levels(family: str, resolution: int, blur_sigmas: Optional[Sequence[float]] = None) -> List[Optional[dict]]:
    """The pool of a family: level 0 is the clean image (None), then one op spec per level."""
    scale = resolution / REFERENCE_RESOLUTION
    if family == "blur":
        return [None] + [blur_op(s * scale) for s in (blur_sigmas or BLUR_SIGMAS)]
    if family == "noise":
        return [None] + [{"op": "gaussian_noise", "var": v} for v in NOISE_VARS]
    if family == "jpeg":
        return [None] + [{"op": "jpeg", "quality": q} for q in JPEG_QUALITIES]
    raise UserError(f"unknown probe family '{family}' (expected {', '.join(FAMILIES)})")


def degrade_pool(images: Sequence[np.ndarray], levels: Sequence[Optional[dict]], seed: int = 0):
    """Give image i the level ``perm[i] % L`` (balanced, seeded). -> (degraded uint8 list, level ids)."""
    rng = np.random.RandomState(seed)
    ids = rng.permutation(len(images)) % len(levels)
    out = []
    for i, (img, lv) in enumerate(zip(images, ids)):
        if levels[lv] is None:
            out.append(img)
            continue
        pipe = build_pipeline({"name": "probe", "steps": [levels[lv]]}, img.shape[0], mode="absolute")
        y, _ = pipe(from_uint8_hwc(img[None], PIXEL_RANGE), generator=torch.Generator().manual_seed(seed * 100003 + i))
        out.append(to_uint8_hwc(y, PIXEL_RANGE)[0])
    return out, ids


def tasks_for(family: str, blur_sigmas: Sequence[float]) -> Dict[str, Optional[List[int]]]:
    """Task name -> level ids it classifies (None: clean vs any degraded)."""
    if family == "blur":
        pos = {round(s, 6): i + 1 for i, s in enumerate(blur_sigmas)}
        five = [pos[round(s, 6)] for s in BLUR_SIGMAS_5 if round(s, 6) in pos]
        out = {"blurry_vs_sharp": None}
        if len(five) == 5:
            out["blur_5_levels"] = five
        out[f"blur_{len(blur_sigmas)}_levels"] = list(range(1, len(blur_sigmas) + 1))
        return out
    name = "noisy" if family == "noise" else family
    return {f"{name}_vs_clean": None, f"{family}_5_levels": [1, 2, 3, 4, 5]}


SPECTRUM_BANDS = 16          # radial bands of spectrum_features, up to the Nyquist frequency


def spectrum_features(images: Sequence[np.ndarray], bands: int = SPECTRUM_BANDS) -> np.ndarray:
    """A q-free reading of how sharp each image is: the log mean power of its luminance spectrum
    (mean removed, Hann window) in ``bands`` equal radial bands from the lowest non-zero frequency
    to Nyquist, each band relative to the lowest one (so a brightness or contrast change moves
    only the last feature, the lowest band's own level). Below 2 * ``bands`` pixels the bands are
    R // 2, each then wider than the frequency grid's step, so none is empty.
    images: uint8 [R, R, C], all one size -> [N, min(bands, R // 2)]."""
    if len(images) == 0:
        return np.zeros([0, bands])
    g = np.stack([np.asarray(im, np.float64) for im in images])
    g = g.mean(axis=3) if g.ndim == 4 else g                          # luminance [N, H, W]
    _, h, w = g.shape
    win = np.outer(np.hanning(h), np.hanning(w))
    power = np.abs(np.fft.fft2((g - g.mean(axis=(1, 2), keepdims=True)) * win)) ** 2   # [N, H, W]
    fy, fx = np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij")
    radius = np.sqrt(fy ** 2 + fx ** 2) / 0.5                          # 1 = Nyquist
    edges = np.linspace(1.0 / min(h, w), 1.0, min(bands, min(h, w) // 2))   # band k: [edges[k-1], edges[k])
    idx = np.digitize(radius, edges)                                  # 0: DC and below; len(edges): past Nyquist
    level = np.stack([np.log(power[:, idx == k].mean(axis=1) + 1e-12) for k in range(1, len(edges))], axis=1)
    return np.concatenate([level - level[:, :1], level[:, :1]], axis=1)


SPLITS = 5          # seeded train/test splits per task: seed, seed + 1, ... (the first is the reported one)


def evaluate_task(q: np.ndarray, ids: np.ndarray, levels: Optional[List[int]], seed: int,
                  test_fraction: float) -> dict:
    if levels is None:                        # clean (0) vs degraded (1), balanced by subsampling
        clean = np.flatnonzero(ids == 0)
        deg = np.flatnonzero(ids != 0)
        deg = np.sort(np.random.RandomState(seed).permutation(deg)[:len(clean)])
        sel = np.concatenate([clean, deg])
        y = (ids[sel] != 0).astype(int)
    else:
        sel = np.flatnonzero(np.isin(ids, levels))
        y = ids[sel]
    _, stats = fit_and_evaluate(q[sel], y, test_fraction=test_fraction, seed=seed)
    return stats


def evaluate_task_splits(q: np.ndarray, ids: np.ndarray, levels: Optional[List[int]], seed: int,
                         test_fraction: float, splits: int = SPLITS) -> dict:
    """``evaluate_task`` at ``seed``, plus the test accuracies of ``splits`` seeded splits
    (seed, seed + 1, ...; the same codes, so no image is encoded again) and their mean."""
    stats = evaluate_task(q, ids, levels, seed, test_fraction)
    acc = [stats["test_accuracy"]] + [evaluate_task(q, ids, levels, seed + r, test_fraction)["test_accuracy"]
                                      for r in range(1, splits)]
    return {**stats, "split_accuracies": acc, "split_mean": float(np.mean(acc))}


def clean_vs_each_level(q: np.ndarray, ids: np.ndarray, seed: int, test_fraction: float) -> List[dict]:
    """Sharp vs level k alone, for each level k >= 1 of a pool (``ids``: level per image): where along
    the levels q starts to tell a degraded image from a sharp one (the balanced ``*_vs_sharp`` task
    averages over the levels, so one unreadable mild level caps it)."""
    out = []
    for k in range(1, int(ids.max()) + 1):
        sel = np.flatnonzero(np.isin(ids, [0, k]))
        st = evaluate_task(q[sel], ids[sel], None, seed, test_fraction)
        out.append({"level": k, "test_accuracy": st["test_accuracy"], "n_test": st["n_test"]})
    return out


def encode_q(G, images: Sequence[np.ndarray], encoder=None, w_steps: Optional[int] = None,
             device="cpu", batch_size: int = 32, progress: bool = True, seed: int = 0) -> np.ndarray:
    """q of each image [N, q_dim]: the encoder's (refined by ``w_steps``), or stage-1 optimisation.

    Without an encoder, q starts from small seeded values (std ``Q_INIT_STD``) instead of 0: at
    q = 0 the DegradBlock's residual is 0 before its first ReLU, whose gradient there is 0, so
    q = 0 is a stationary point of the reconstruction loss and would never move.
    """
    if encoder is not None:
        res = invert_images(G, list(images), encoder=encoder, pti_steps=0, w_steps=w_steps, device=device,
                            progress=progress, batch_size=batch_size)
        return np.stack([r.q.numpy() for r in res])
    opts = PTIOptions()
    G = G.eval().requires_grad_(False).to(device)
    loss_fn = ReconstructionLoss(PerceptualLoss("auto", device=device), opts.l2_weight, opts.perceptual_weight)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for lo in range(0, len(images), batch_size):
        batch = [prepare_image(im, G.img_resolution, G.img_channels) for im in images[lo:lo + batch_size]]
        q0 = (Q_INIT_STD * torch.randn([len(batch), G.q_dim], generator=gen)).to(device)
        _, q = optimize_latents(G, from_uint8_hwc(batch, device=device), loss_fn,
                                DEFAULT_W_STEPS if w_steps is None else w_steps, opts, q_init=q0)
        out.append(q.cpu().numpy())
    return np.concatenate(out)


def run_probe(G, clean_images: Sequence[np.ndarray], families: Sequence[str] = ("blur",), encoder=None,
              w_steps: Optional[int] = None, blur_sigmas: Optional[Sequence[float]] = None, seed: int = 0,
              test_fraction: float = DEFAULT_TEST_FRACTION, device="cpu", batch_size: int = 32,
              progress: bool = True, baseline: bool = False) -> dict:
    """The Sec. 4.6 experiment. ``clean_images``: uint8 [R, R, 3] at the model's resolution.
    ``baseline``: also the same tasks on ``spectrum_features`` of the same pool
    (``out["image_spectrum"]``: ``tasks`` and ``clean_vs_each_level``)."""
    if G.q_dim == 0:
        raise UserError("the probe needs a QC generator (q_dim > 0)")
    if len(clean_images) < 8:
        raise UserError(f"need at least 8 clean images, got {len(clean_images)}")
    clean = [prepare_image(im, G.img_resolution, G.img_channels) for im in clean_images]
    blur_sigmas = list(blur_sigmas or BLUR_SIGMAS)
    out = {"setup": {"images": len(clean), "resolution": G.img_resolution, "families": list(families),
                     "q_source": "encoder" if encoder is not None else "stage-1 optimisation",
                     "w_steps": w_steps, "blur_sigmas_px_at_256": blur_sigmas, "seed": seed,
                     "test_fraction": test_fraction, "classifier": "multinomial logistic regression on q"},
           "tasks": {}, "paper": PAPER_ACCURACY}
    for k, family in enumerate(families):
        levels = family_levels(family, G.img_resolution, blur_sigmas)
        degraded, ids = degrade_pool(clean, levels, seed=seed + k)
        q = encode_q(G, degraded, encoder, w_steps, device, batch_size, progress, seed=seed + k)
        readings = [(out, q)]
        if baseline:
            readings.append((out.setdefault("image_spectrum", {"tasks": {}}), spectrum_features(degraded)))
        for part, x in readings:
            for name, task_levels in tasks_for(family, blur_sigmas).items():
                part["tasks"][name] = evaluate_task_splits(x, ids, task_levels, seed, test_fraction)
            part.setdefault("clean_vs_each_level", {})[family] = clean_vs_each_level(x, ids, seed, test_fraction)
    return out


def sample_clean_images(G, count: int, seed: int = 0, device="cpu") -> List[np.ndarray]:
    """The generator's sharp samples G(w, 0) for seeds seed..seed+count-1."""
    out = []
    lats = seed_latents(G, range(seed, seed + count), device)
    for lo in range(0, count, 16):
        ws = torch.stack([l.w for l in lats[lo:lo + 16]])
        out.extend(to_uint8_hwc(render(G, ws, None, device=device)[0]))
    return out


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--network", default=None, help="QC generator checkpoint [default: the shipped model].")
@click.option("--encoder", default=None, help="Encoder checkpoint (q from the encoder instead of optimisation).")
@click.option("--data", default=None, type=click.Path(), help="Folder of clean images.")
@click.option("--samples", type=click.IntRange(min=8), default=None, help="Use N generated sharp samples instead of --data.")
@click.option("--max-images", type=click.IntRange(min=8), default=None, help="Use at most this many images of --data.")
@click.option("--families", default="blur", show_default=True, help="Comma list of blur, noise, jpeg.")
@click.option("--w-steps", type=click.IntRange(min=0), default=None, help="Stage-1 steps [default: 0 with an encoder, else the inversion default].")
@click.option("--blur-sigmas", default=None, help="Comma list of blur sigmas (px at 256) [default: 0.5,1,...,5].")
@click.option("--test-fraction", type=click.FloatRange(0.05, 0.95), default=DEFAULT_TEST_FRACTION, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch", "batch_size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda[:N]")
@click.option("--baseline/--no-baseline", default=True, show_default=True,
              help="Also the tasks on each image's log power spectrum (a q-free reading of the same pool).")
@click.option("--out", default="probe.json", show_default=True, help="JSON report.")
@cli_main
def main(network, encoder, data, samples, max_images, families, w_steps, blur_sigmas, test_fraction, seed, batch_size, device,
         baseline, out):
    """Linear probe of the quality code (paper Sec. 4.6)."""
    if (data is None) == (samples is None):
        raise UserError("give exactly one of --data DIR or --samples N")
    models = load_models(network, encoder, device, with_encoder=encoder is not None)
    G, E, device = models.G, models.E, models.device
    if data is not None:
        files = image_io.list_images(data)[:max_images]
        images = []
        for f in files:
            try:
                images.append(image_io.read_image(os.path.join(data, f)))
            except UserError as exc:
                print(f"skipped {f}: {exc}", file=sys.stderr)
    else:
        images = sample_clean_images(G, samples, seed, device)
    fams = [f.strip() for f in families.split(",") if f.strip()]
    sigmas = [float(v) for v in blur_sigmas.split(",")] if blur_sigmas else None
    report = run_probe(G, images, fams, E, w_steps, blur_sigmas=sigmas, seed=seed, test_fraction=test_fraction, device=device,
                       batch_size=batch_size, baseline=baseline)
    with atomic_write(out, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    for name, st in report["tasks"].items():
        paper = PAPER_ACCURACY.get(name)
        spec = report.get("image_spectrum", {}).get("tasks", {}).get(name)
        print(f"{name:<18} test {100 * st['test_accuracy']:5.1f} %  (mean of {SPLITS} splits {100 * st['split_mean']:.1f} %"
              + (f"; image spectrum {100 * spec['split_mean']:.1f} %" if spec else "")
              + f"; chance {100 * st['chance']:.1f} %" + (f", paper {100 * paper:.1f} %)" if paper else ")"))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()  # pylint: disable=no-value-for-parameter
