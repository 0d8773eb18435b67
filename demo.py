"""`make demo`: the project's main jobs on the shipped default model, offline, on CPU.

Steps, each a library call the CLIs use too:

1. ``pairs/``: sharp/degraded pairs G(w, 0) / G(w, q) of ``--pairs`` seeds (generate.py);
2. ``clean/`` -> ``degraded/``: the first ``--restore`` sharp faces degraded with the ``paper``
   pipeline (degrade.py), so their clean originals are known;
3. ``restored/``: blind restoration (restore.py: encoder, ``--w-steps`` refining its (w, q), then
   ``--pti-steps`` of PTI, render G(w, 0); the inversion options of restore.py, preset ``demo``), scored against the clean originals (PSNR, SSIM; LPIPS
   when its weights are cached);
4. ``edit/``: the shipped gender boundary applied to the restored inversions with q kept (edit.py;
   with the shipped model only: the boundary belongs to its W space);
5. ``photo/``: one whole real photo (scikit-image's astronaut), degraded, its face detected,
   restored and pasted back (restore.py --align; needs the ``faces`` extra and scikit-image,
   skipped with a note otherwise);
6. ``overview.png`` (rows: clean, degraded, restored), ``index.md`` and ``summary.json``; the
   summary table is printed.

Rerunning reuses what is already there (each step resumes).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from typing import Optional

import click
import cv2
import numpy as np

from degradations.folder import degrade_folder
from dnnlib.image_io import make_grid, read_image, write_image
from dnnlib.util import UserError, atomic_write, cli_main, read_jsonl
from faces.pipeline import align_enabled
from apps.directions import get_direction
from apps.editing import edit_latents
from apps.latents import load_latents
from apps.fidelity import load_curve
from apps.restore import RECORDS_FILE, RestoreOptions, restore_folder
from inversion.cli_options import inversion_options
from inversion.config import InversionConfig, resolve_config
from inversion.models import Models, load_models
from apps.store import INVERSIONS_DIR
from metrics.lpips_metric import backbone_path
from training.generation import generate_images
from inversion.pretrained import BOUNDARIES, is_shipped

DEMO_PRESET = "demo"     # light inversion (inversion.config.PRESETS): keeps the demo to minutes on 2 cores
EDIT_STRENGTHS = (-3.0, 0.0, 3.0)
VIEW_SCALE = 2           # overview tiles are upscaled (nearest) for viewing


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--network", default=None, help="QC generator [default: the shipped model]")
@click.option("--encoder", default=None, help="Encoder [default: the shipped encoder with the shipped model]")
@click.option("--outdir", default="demo-out", show_default=True)
@click.option("--pairs", type=click.IntRange(1, 64), default=16, show_default=True, help="Sharp/degraded pairs to render")
@click.option("--restore", "n_restore", type=click.IntRange(1, 64), default=6, show_default=True,
              help="Generated faces to degrade and restore")
@click.option("--quiet", is_flag=True, help="No progress bars")
@cli_main
@inversion_options(preset=DEMO_PRESET)
def main(network, encoder, outdir, pairs, n_restore, quiet, inversion):
    """Run the demo and write OUTDIR/index.md."""
    summary = run_demo(network, encoder, outdir, pairs, n_restore, inversion, progress=not quiet)
    click.echo("\n" + format_summary(summary))
    click.echo(f"\nopen {os.path.join(outdir, 'index.md')}  ({summary['seconds']:.0f} s)")


def run_demo(network, encoder, outdir: str, pairs: int = 16, n_restore: int = 6,
             config: Optional[InversionConfig] = None, progress: bool = True) -> dict:
    """Run every step (module docstring) with ``config`` (default: preset ``demo``); returns the
    summary written to ``summary.json``."""
    t0 = time.time()
    config = config or resolve_config(DEMO_PRESET)
    shipped = is_shipped(network)
    models = load_models(network, encoder, device="cpu")          # read once: G, encoder, the face template
    G = models.G
    os.makedirs(outdir, exist_ok=True)
    d = {k: os.path.join(outdir, k) for k in ("pairs", "clean", "degraded", "restored", "edit")}

    # 1. Pairs.
    generate_images(G, d["pairs"], seeds=list(range(pairs)), grid=True, progress=progress)
    # 2. Known clean faces, degraded with the paper's random mixture.
    n_restore = min(n_restore, pairs)
    names = [f"seed{s:04d}.png" for s in range(n_restore)]
    os.makedirs(d["clean"], exist_ok=True)
    for n in names:
        if not os.path.isfile(os.path.join(d["clean"], n)):
            shutil.copyfile(os.path.join(d["pairs"], n), os.path.join(d["clean"], n))
    degrade_folder(d["clean"], d["degraded"], "paper", seed=0, progress=progress)
    # 3. Restoration, scored against the clean originals.
    metrics = ["psnr", "ssim"] + (["lpips"] if lpips_available() else [])
    curve = load_curve(models.network)[0]          # --fidelity auto, as restore.py finds it
    rs = restore_folder(models, d["degraded"], d["restored"],
                        RestoreOptions(gt=d["clean"], compare=True, keep_inversions=True, fidelity_curve=curve,
                                       metrics=metrics, inversion=config, progress=progress))
    # 4. Editing with the degradation kept (the shipped boundary lives in the shipped model's W).
    edited = []
    if shipped:
        direction = get_direction(G, "boundary", BOUNDARIES["gender"])
        latents = load_latents(G, os.path.join(d["restored"], INVERSIONS_DIR))
        edit_latents(G, latents, direction, EDIT_STRENGTHS, d["edit"], progress=progress,
                     direction_info={"kind": "boundary", "arg": "gender (shipped)"})
        edited = [lat.name for lat in latents]
    # 5. A whole real photo: detect, align, restore, paste back.
    photo = restore_photo(models, os.path.join(outdir, "photo"), config, progress)
    # 6. Overview and index.
    rows = [[read_image(os.path.join(d[k], n)) for n in names] for k in ("clean", "degraded", "restored")]
    tiles = [np.kron(im, np.ones((VIEW_SCALE, VIEW_SCALE, 1), np.uint8)) for row in rows for im in row]
    write_image(os.path.join(outdir, "overview.png"), make_grid(tiles, len(names)))

    summary = {"network": os.path.relpath(models.network), "encoder": os.path.relpath(models.encoder) if models.encoder else None,
               "pairs": pairs, "restored": n_restore, "w_steps": config.w_steps, "pti_steps": config.pti_steps,
               "metrics": rs.get("metrics", {}), "lpips": "lpips" in metrics,
               "niqe": f"not reported: NIQE needs images of at least 96x96 pixels; these are "
                       f"{G.img_resolution}x{G.img_resolution}",
               "edited": len(edited), "photo": photo, "seconds": round(time.time() - t0, 1)}
    with atomic_write(os.path.join(outdir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    with atomic_write(os.path.join(outdir, "index.md"), "w") as f:
        f.write(_index(summary, names, edited))
    return summary


def restore_photo(models: Models, outdir: str, config: InversionConfig, progress: bool) -> dict:
    """Degrade scikit-image's astronaut photo and restore it whole (restore.py --align auto)."""
    try:
        import skimage.data     # optional (the test extra): imported here so the demo runs without it
    except ImportError:
        return {"skipped": "scikit-image is not installed (pip install scikit-image)"}
    notes = []
    if not align_enabled("auto", notes.append):
        return {"skipped": notes[0]}
    clean = skimage.data.astronaut()
    rng = np.random.RandomState(0)     # blur 1.5 px, noise sigma 6, JPEG 40: a visibly damaged photo
    x = cv2.GaussianBlur(clean, (0, 0), 1.5).astype(np.float32) + rng.normal(0, 6, clean.shape).astype(np.float32)
    ok, buf = cv2.imencode(".jpg", np.clip(np.rint(x), 0, 255).astype(np.uint8)[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 40])
    for sub, img in (("input", cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]), ("clean", clean)):
        path = os.path.join(outdir, sub, "astronaut.png")
        if not os.path.isfile(path):
            write_image(path, np.ascontiguousarray(img))
    faces = models.face_pipeline("auto")
    restored = os.path.join(outdir, "restored")
    s = restore_folder(models, os.path.join(outdir, "input"), restored,
                       RestoreOptions(gt=os.path.join(outdir, "clean"), compare=True, metrics=["psnr", "ssim"],
                                      inversion=config, progress=progress, face_pipeline=faces,
                                      fidelity_curve=load_curve(models.network)[0]))
    # the photo's latest record, not this run's count: a rerun that finds the photo done pastes nothing new
    records = [r for r in read_jsonl(os.path.join(restored, RECORDS_FILE)) if r.get("file") == "astronaut.png"
               and "error" not in r]
    return {"faces": len(records[-1]["faces"]) if records else s["faces"], "metrics": s.get("metrics", {})}


def lpips_available() -> bool:
    """Whether LPIPS's AlexNet backbone is in the torch hub cache (nothing is downloaded)."""
    try:
        backbone_path("alex")
        return True
    except UserError:
        return False


def format_summary(summary: dict) -> str:
    """Markdown table: PSNR / SSIM (/ LPIPS) of the degraded inputs and the restorations vs clean."""
    names = ["psnr", "ssim"] + (["lpips"] if summary["lpips"] else [])
    heads = {"psnr": "PSNR (dB) ↑", "ssim": "SSIM ↑", "lpips": "LPIPS ↓"}
    lines = ["| vs clean original | " + " | ".join(heads[n] for n in names) + " |",
             "|---|" + "---:|" * len(names)]
    for kind, label in (("input", "degraded (input)"), ("restored", "restored")):
        vals = summary["metrics"].get(kind, {})
        cells = [f"{vals[n]['mean']:.3f}" if vals.get(n, {}).get("mean") is not None else "-" for n in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    notes = [f"{summary['restored']} generated faces, `paper` degradations, restored with "
             f"{'the encoder + ' if summary['encoder'] else ''}{summary['w_steps']} stage-1 steps + "
             f"{summary['pti_steps']} PTI steps."]
    if not summary["lpips"]:
        notes.append("LPIPS: not reported (AlexNet weights alexnet-owt-7be5be79.pth are not in the torch hub cache).")
    notes.append(f"NIQE: {summary['niqe']}.")
    photo = summary.get("photo") or {}
    pm = photo.get("metrics") or {}
    if pm.get("restored"):
        notes.append(f"Whole photo (astronaut, {photo['faces']} face(s) pasted back), vs the clean photo: PSNR "
                     f"{pm['input']['psnr']['mean']:.2f} -> {pm['restored']['psnr']['mean']:.2f} dB, SSIM "
                     f"{pm['input']['ssim']['mean']:.3f} -> {pm['restored']['ssim']['mean']:.3f}.")
    elif photo.get("skipped"):
        notes.append(f"Whole photo: skipped ({photo['skipped']}).")
    return "\n".join(lines + [""] + notes)


def _img(path: str, width: int) -> str:
    return f'<img src="{path}" width="{width}">'


def _index(summary: dict, names, edited) -> str:
    out = ["# QC-StyleGAN demo", "",
           f"Network `{summary['network']}`, encoder `{summary['encoder']}`; {summary['seconds']:.0f} s.", "",
           "## Sharp / degraded pairs: G(w, 0) and G(w, q), q ~ N(0, I)", "", _img("pairs/grid.png", 512), "",
           "## Restoration of degraded generated faces", "",
           "Rows: clean original, `paper` degradation, restored G(w, 0) of its inversion.", "",
           _img("overview.png", 96 * len(names)), "", format_summary(summary), "",
           "Per image: `restored/restore.jsonl`; side by side (input | restored | original): `restored/compare/`.", ""]
    photo = summary.get("photo") or {}
    if "faces" in photo:
        out += ["## A whole real photo: detect, align, restore, paste back", "",
                "scikit-image's astronaut, degraded (blur, noise, JPEG); left the input, right the restored photo "
                f"({photo['faces']} face(s) restored and pasted back; per face `photo/restored/faces/`).", "",
                _img("photo/restored/compare/astronaut.png", 768), ""]
    elif photo:
        out += ["## A whole real photo", "", f"Skipped: {photo['skipped']}.", ""]
    if edited:
        out += ["## Editing with the degradation kept (gender boundary)", "",
                f"Strengths {', '.join(f'{a:+g}' for a in EDIT_STRENGTHS)}; top row G(w + αn, q), bottom row G(w + αn, 0).", ""]
        out += [_img(f"edit/{n}/grid.png", 3 * 64 * VIEW_SCALE) for n in edited] + [""]
    return "\n".join(out)


if __name__ == "__main__":
    main()  # pylint: disable=no-value-for-parameter
