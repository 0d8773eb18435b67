"""The model card's numbers in one command: what a trained QC-StyleGAN and its encoders achieve
on faces the model never saw.

Each section is one claim of the paper, measured at our scale:

* ``teacher``: Eq. 4 asks G(w, 0) to be the teacher's image for the same w; mean PSNR of the
  uint8 renders over seeds (same w from the shared, frozen mapping).
* ``q_recovery``: the q encoder on the generator's own samples G(w, q), q ~ N(0, I): R^2 of the
  true q from the predicted q (a least-squares linear read-out with intercept, fitted on 70 % of
  the samples, scored on the other 30 %), mean per-dimension correlation, mean |q| predicted vs
  true.
* ``probe``: Sec. 4.6 on held-out faces: OpenCV Gaussian blur at 5 levels (sigma up to 2 px at
  64x64, i.e. 8 px at the probe's 256 px reference), q from the encoder, a linear classifier on a
  seeded 70/30 split (``evaluation.probe``; with each task's mean over five splits of the same codes,
  and the same tasks on each image's log power spectrum, ``image_spectrum``: what the pool allows).
* ``swd``: sample quality (needs ``--reals``, the training ZIP): SWD x 1e3 of the QC sharp mode,
  the teacher, the QC degraded mode against ``paper``-degraded reals, and (``--baseline``) a plain
  StyleGAN2 trained on degraded reals against the same degraded reals (the paper's Table 1 claim:
  the degraded mode models degraded images better than such a baseline).
* ``restoration``: Sec. 4.3 on held-out faces degraded by the ``paper`` pipeline (relative mode,
  seeded): PSNR/SSIM against the clean face of the degraded input, of OpenCV's non-local-means
  denoiser, and of the restoration (encoder, stage-1 steps, PTI, rendered at q = 0), and of that
  restoration mixed with its input at each ``--fidelity`` of ``FIDELITIES`` (``restore.py``).
* ``restore_crops`` / ``restore_photos``: ``restore.py`` itself at its defaults (``--fidelity
  auto``) and at ``--fidelity 0``, on degraded held-out crops (and clean ones), and on held-out
  faces composited into real photos at mild and strong degradations (``restore_report``).

The held-out faces come from a training-layout ZIP or folder (``utkface64-mini.zip``: 512 UTKFace
faces that are not in ``utkface64.zip``). Nothing here trains on them.

    python -m evaluation.model_report --heldout ../shared/datasets/utkface64-mini.zip --out report.json
"""
from __future__ import annotations

import json
import sys
import time
from typing import Dict, List, Optional, Sequence

import click
import numpy as np
import torch
from tqdm import tqdm

from dnnlib.image_io import blend, from_uint8_hwc, to_uint8_hwc
from dnnlib.util import UserError, atomic_write, cli_main
from metrics import swd
from metrics.image_metrics import psnr, ssim
from metrics.metric_utils import MetricOptions
from inversion import pretrained
from training.checkpoint import load_generator
from training.dataset import ImageDataset
from training.generation import seed_to_q, seed_to_z

from inversion.api import invert_images, prepare_image
from inversion.models import load_models
from evaluation import restore_report
from .heldout import degrade_faces, nlm_denoise
from .probe import run_probe

# Targets of the shipped-model issue, reported beside the measurements (not enforced here).
TARGETS = {
    "teacher_psnr_db": 25.0,              # G(w, 0) vs the teacher's G(w), mean PSNR
    "q_r2": 0.5,                          # R^2 of true q from predicted q
    "probe_blurry_vs_sharp": 0.95,
    "probe_blur_5_levels": 0.60,
    "swd_sharp_max": 0.7 * 24.6,          # 0.7x the first shipped model's sharp SWD (x 1e3, 2k images)
    "swd_sharp_vs_teacher": 1.10,         # QC sharp SWD within 10 % of its teacher's
}
SWD_IMAGES = 2000
PROBE_SIGMAS_AT_256 = [1.6, 3.2, 4.8, 6.4, 8.0]     # -> 0.4 ... 2.0 px at 64x64
DEFAULT_SPLIT = 0.7
FIDELITIES = (0.25, 0.5, 0.75)                       # restoration rows: (1 - f) G(w, 0) + f input


def load_heldout_faces(path: str, count: int, resolution: int) -> List[np.ndarray]:
    """The first ``count`` images (sorted names) of a training-layout ZIP or folder: uint8 [R, R, 3]."""
    ds = ImageDataset(path)
    if len(ds) < count:
        raise UserError(f"{path} holds {len(ds)} images, {count} asked for")
    faces = [prepare_image(ds[i][0].transpose(1, 2, 0), resolution, 3) for i in range(count)]
    ds.close()
    return faces


@torch.no_grad()
def teacher_agreement(G, G_teacher, seeds: Sequence[int], device) -> dict:
    """Mean PSNR between G(w, 0) and the teacher's synthesis of the same w, uint8 renders."""
    z = torch.from_numpy(np.concatenate([seed_to_z(s, G.z_dim) for s in seeds])).float().to(device)
    ws = G.mapping(z, None)                                                  # [N, num_ws, w_dim]
    a = to_uint8_hwc(G.synthesis(ws, None, noise_mode="const"))
    b = to_uint8_hwc(G_teacher.synthesis(ws, noise_mode="const"))
    values = [float(psnr(x, y)) for x, y in zip(a, b)]
    return {"seeds": [int(s) for s in seeds], "psnr_db_mean": float(np.mean(values)),
            "psnr_db_min": float(np.min(values)), "target": TARGETS["teacher_psnr_db"]}


def linear_r2(pred: np.ndarray, true: np.ndarray, split: float = DEFAULT_SPLIT) -> float:
    """R^2 (pooled over dimensions) of ``true`` [N, D] from a linear map of ``pred`` [N, D'] with
    intercept, least squares on the first ``split`` of the rows, scored on the rest."""
    n_fit = int(round(split * len(pred)))
    if n_fit < pred.shape[1] + 2 or len(pred) - n_fit < 2:
        raise UserError(f"too few samples ({len(pred)}) for a linear read-out of {pred.shape[1]} dims")
    X = np.concatenate([pred, np.ones([len(pred), 1])], axis=1).astype(np.float64)
    coef, *_ = np.linalg.lstsq(X[:n_fit], true[:n_fit].astype(np.float64), rcond=None)
    resid = true[n_fit:] - X[n_fit:] @ coef
    centred = true[n_fit:] - true[:n_fit].mean(axis=0)
    return float(1.0 - (resid ** 2).sum() / max((centred ** 2).sum(), 1e-30))


@torch.no_grad()
def q_recovery(G, encoder, count: int, seed: int, device, batch: int = 32) -> dict:
    """The q encoder on G(w, q) with known q ~ N(0, I)."""
    true_q, pred_q = [], []
    for lo in range(0, count, batch):
        seeds = range(seed + lo, seed + min(count, lo + batch))
        z = torch.from_numpy(np.concatenate([seed_to_z(s, G.z_dim) for s in seeds])).float().to(device)
        q = torch.from_numpy(np.concatenate([seed_to_q(s, G.q_dim) for s in seeds])).float().to(device)
        img = from_uint8_hwc(to_uint8_hwc(G.synthesis(G.mapping(z, None), q, noise_mode="const")), device=device)
        _, q_hat = encoder(img)                        # from the 8-bit image, as a user's file
        true_q.append(q.cpu().numpy())
        pred_q.append(q_hat.cpu().numpy())
    t, p = np.concatenate(true_q), np.concatenate(pred_q)
    corr = [float(np.corrcoef(t[:, d], p[:, d])[0, 1]) for d in range(t.shape[1])]
    return {"samples": int(count), "r2": linear_r2(p, t), "corr_per_dim_mean": float(np.nanmean(corr)),
            "norm_true_mean": float(np.linalg.norm(t, axis=1).mean()),
            "norm_pred_mean": float(np.linalg.norm(p, axis=1).mean()), "target_r2": TARGETS["q_r2"]}


def probe(G, encoder, faces: Sequence[np.ndarray], seed: int, device) -> dict:
    """Sec. 4.6 at 64x64 with the encoder's q (``evaluation.probe.run_probe``)."""
    out = run_probe(G, faces, families=("blur",), encoder=encoder, w_steps=0, blur_sigmas=PROBE_SIGMAS_AT_256,
                    seed=seed, test_fraction=1 - DEFAULT_SPLIT, device=device, progress=False, baseline=True)
    out["targets"] = {"blurry_vs_sharp": TARGETS["probe_blurry_vs_sharp"],
                      "blur_5_levels": TARGETS["probe_blur_5_levels"]}
    return out


def restoration(G, encoder, faces: Sequence[np.ndarray], seed: int, w_steps: int, pti_steps: int,
                device) -> dict:
    """Degraded input vs NLM vs QC restoration (q = 0 render), scored against the clean faces."""
    degraded = degrade_faces(faces, seed)
    t0 = time.perf_counter()
    results = invert_images(G, degraded, encoder=encoder, w_steps=w_steps, pti_steps=pti_steps,
                            device=device, progress=True)
    seconds = time.perf_counter() - t0
    rows = {"degraded": degraded, "nlm": [nlm_denoise(d) for d in degraded],
            "restored": [r.sharp for r in results]}
    for f in FIDELITIES:
        rows[f"restored_fidelity_{f}"] = [blend(r.sharp, d, f) for r, d in zip(results, degraded)]
    out: Dict[str, dict] = {}
    for name, imgs in rows.items():
        p = [float(psnr(a, b)) for a, b in zip(imgs, faces)]
        s = [float(ssim(a, b)) for a, b in zip(imgs, faces)]
        out[name] = {"psnr_db": float(np.mean(p)), "ssim": float(np.mean(s))}
    r, d, n = out["restored"], out["degraded"], out["nlm"]

    def beats_input(row: dict) -> bool:
        return bool(row["psnr_db"] > d["psnr_db"] and row["ssim"] > d["ssim"])

    return {"images": len(faces), "w_steps": w_steps, "pti_steps": pti_steps, "pipeline": "paper (relative)",
            "seconds": seconds, "scores": out, "restored_beats_input": beats_input(r),
            "restored_beats_nlm_ssim": bool(r["ssim"] > n["ssim"]),
            "fidelity_beats_input": {str(f): beats_input(out[f"restored_fidelity_{f}"]) for f in FIDELITIES}}


@torch.no_grad()
def swd_scores(G, reals: str, device, G_teacher=None, baseline=None, num_images: int = SWD_IMAGES,
               seed: int = 0) -> dict:
    """SWD x 1e3 (mean over pyramid levels, and per level) of each generator against ``reals``:
    QC sharp and teacher vs reals, QC degraded and the plain ``baseline`` vs degraded reals."""
    runs = [("qc_sharp", G, "sharp", None), ("teacher", G_teacher, "sharp", None),
            ("qc_degraded", G, "degraded", None), ("baseline_degraded", baseline, "degraded", "sharp")]
    out: dict = {"reals": reals, "images": num_images}
    for name, net, mode, gen_mode in runs:
        if net is None:
            continue
        opts = MetricOptions(G=net.eval().to(device), dataset_kwargs={"path": reals}, device=torch.device(device),
                             seed=seed, progress=True)
        out[name] = swd.compute_swd(opts, mode, num_images, gen_mode=gen_mode)
    avg = {k: v["avg"] for k, v in out.items() if isinstance(v, dict)}
    out["sharp_within_0.7x_of_24.6"] = bool(avg["qc_sharp"] <= TARGETS["swd_sharp_max"])
    if "teacher" in avg:
        out["sharp_within_10pct_of_teacher"] = bool(avg["qc_sharp"] <= TARGETS["swd_sharp_vs_teacher"] * avg["teacher"])
    if "baseline_degraded" in avg:
        out["degraded_beats_baseline"] = bool(avg["qc_degraded"] < avg["baseline_degraded"])
    return out


def model_report(G, encoder, heldout: str, G_teacher=None, probe_images: int = 300, restore_images: int = 32,
                 q_samples: int = 256, teacher_seeds: int = 64, w_steps: int = 50, pti_steps: int = 100,
                 seed: int = 0, device="cpu", sections: Sequence[str] = ("teacher", "q_recovery", "probe",
                                                                          "restoration"),
                 reals: Optional[str] = None, baseline=None, swd_images: int = SWD_IMAGES, models=None,
                 workdir: Optional[str] = None) -> dict:
    """Run the named sections; returns the JSON-ready report. ``models`` (``inversion.models``)
    is needed by the sections that run ``restore.py``'s library call (restore_crops, restore_photos);
    ``workdir``: keep those sections' restorations there (else a temporary folder)."""
    G = G.eval().requires_grad_(False).to(device)
    if G.q_dim == 0:
        raise UserError("the report needs a QC generator (q_dim > 0)")
    needs_encoder = {"q_recovery", "probe", "restoration", "restore_crops", "restore_photos"} & set(sections)
    if needs_encoder and encoder is None:
        raise UserError(f"sections {', '.join(sorted(needs_encoder))} need --encoder")
    if encoder is not None:
        encoder.check_generator(G)
        encoder = encoder.eval().to(device)
    report: dict = {"heldout": heldout, "seed": seed}
    bar = tqdm(list(sections), desc="report", unit="section")
    for section in bar:
        bar.set_postfix_str(section)
        t0 = time.perf_counter()
        if section == "teacher":
            if G_teacher is None:
                report[section] = {"skipped": "no --teacher given"}
                continue
            report[section] = teacher_agreement(G, G_teacher.eval().to(device), range(teacher_seeds), device)
        elif section == "q_recovery":
            report[section] = q_recovery(G, encoder, q_samples, seed + 100000, device)
        elif section == "probe":
            faces = load_heldout_faces(heldout, probe_images, G.img_resolution)
            report[section] = probe(G, encoder, faces, seed, device)
        elif section == "swd":
            if reals is None:
                report[section] = {"skipped": "no --reals given (the training ZIP the SWD compares with)"}
                continue
            report[section] = swd_scores(G, reals, device, G_teacher=G_teacher, baseline=baseline,
                                         num_images=swd_images, seed=seed)
        elif section == "restoration":
            faces = load_heldout_faces(heldout, restore_images, G.img_resolution)
            report[section] = restoration(G, encoder, faces, seed, w_steps, pti_steps, device)
        elif section in ("restore_crops", "restore_photos"):
            if models is None:
                raise UserError(f"section {section} needs the loaded models")
            faces = load_heldout_faces(heldout, restore_images, G.img_resolution)
            report[section] = restore_report.run_section(section, models, heldout, faces,
                                                         degrade_faces(faces, seed), nlm_denoise, seed,
                                                         workdir=workdir)
        else:
            raise UserError(f"unknown section '{section}'")
        report[section]["seconds_section"] = time.perf_counter() - t0
    return report


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--network", default=None, help="QC generator [default: the shipped model].")
@click.option("--encoder", default=None, help="Encoder checkpoint [default: the shipped encoder with the shipped model].")
@click.option("--teacher", default=None, help="Teacher generator for the Eq. 4 check [default: the shipped teacher with the shipped model].")
@click.option("--heldout", required=True, type=click.Path(), help="ZIP or folder of faces never trained on.")
@click.option("--sections", default="teacher,q_recovery,probe,restoration", show_default=True)
@click.option("--probe-images", type=click.IntRange(min=20), default=300, show_default=True)
@click.option("--restore-images", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--q-samples", type=click.IntRange(min=40), default=256, show_default=True)
@click.option("--w-steps", type=click.IntRange(min=0), default=50, show_default=True, help="Restoration stage-1 steps.")
@click.option("--pti-steps", type=click.IntRange(min=0), default=100, show_default=True, help="Restoration PTI steps.")
@click.option("--reals", default=None, type=click.Path(), help="Training ZIP for the swd section.")
@click.option("--baseline", default=None, help="Plain StyleGAN2 trained on degraded reals (train.py --degraded-reals) for the swd section.")
@click.option("--swd-images", type=click.IntRange(min=64), default=SWD_IMAGES, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--out", default="model_report.json", show_default=True, help="JSON report.")
@click.option("--workdir", default=None, type=click.Path(file_okay=False),
              help="Keep the restorations of restore_crops / restore_photos here (their restore.jsonl: fidelity, severity, detail) [default: a temporary folder].")
@cli_main
def main(network, encoder, teacher, heldout, sections, probe_images, restore_images, q_samples, w_steps,
         pti_steps, reals, baseline, swd_images, seed, device, out, workdir):
    """Measure a QC model and its encoders on held-out faces (the model card's numbers)."""
    if teacher is None and pretrained.is_shipped(network):
        teacher = pretrained.DEFAULT_TEACHER
    models = load_models(network, encoder, device)
    G, E, device, net_path, enc_path = models.G, models.E, models.device, models.network, models.encoder
    T = load_generator(teacher, device="cpu") if teacher else None
    B = load_generator(baseline, device="cpu") if baseline else None
    report = model_report(G, E, heldout, G_teacher=T, probe_images=probe_images, restore_images=restore_images,
                          q_samples=q_samples, w_steps=w_steps, pti_steps=pti_steps, seed=seed, device=device,
                          sections=[s.strip() for s in sections.split(",") if s.strip()],
                          reals=reals, baseline=B, swd_images=swd_images, models=models, workdir=workdir)
    report["files"] = {"network": net_path, "encoder": enc_path, "teacher": teacher, "baseline": baseline}
    with atomic_write(out) as f:
        f.write(json.dumps(report, indent=2).encode())
    print(json.dumps({k: v for k, v in report.items() if isinstance(v, dict)}, indent=1)[:4000])
    print(f"report: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
