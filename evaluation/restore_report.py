"""Restoration as a user runs it, on held-out faces: ``restore.py`` at its defaults and at
``--fidelity 0`` (the paper's G(w, 0), Sec. 4.3), scored against the clean images.

Two settings, each a ``model_report`` section:

* ``restore_crops``: held-out 64 x 64 faces degraded by the ``paper`` pipeline (relative mode,
  seeded, as ``model_report.restoration``), restored through ``restore_folder`` with restore.py's
  defaults (``--fidelity auto`` and the network's curve); the same inversions rendered again at
  fidelity 0; the degraded input and OpenCV's non-local means beside them; plus clean faces through
  the defaults (a sharp input must stay as it is).
* ``restore_photos``: composites of held-out faces in real photos (``evaluation.composites``: faces 0.5
  to 3 x 64 px, tilted) at the ``mild`` and ``strong`` degradations, restored with ``--align dlib``
  at the defaults and at fidelity 0; PSNR over each placed face's square and SSIM over its box,
  against the undegraded composite, per face (with its side and the fidelity the defaults chose)
  and averaged.

Each input set is inverted once, by the fidelity-0 run (its inversions kept under ``f0/`` and
``restore_fidelity_0/``), and the defaults render those inversions again under the network's curve
into a folder named after that curve (``auto-<8 hex>``, ``defaults_folder``). So a rerun in the
same ``--workdir`` resumes what is done, and a rerun after a recalibration scores the new curve in
seconds per face instead of inverting again (the old curve's folder stays beside it). Another
network or encoder needs a fresh ``--workdir``: the fidelity-0 folders would resume as they are.

Nothing here trains on the faces; they come from the held-out ZIP (``utkface64-mini.zip``).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Dict, List, Optional, Sequence

import numpy as np

from dnnlib import image_io
from metrics.image_metrics import psnr, ssim

from apps.fidelity import FidelityCurve, load_curve
from apps.restore import RestoreOptions, restore_folder

PHOTO_LEVELS = ("mild", "strong")


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def defaults_folder(curve: FidelityCurve) -> str:
    """The folder of restore.py's defaults under ``curve``: ``auto-`` and 8 hex digits of its
    parameters (the same curve, the same folder: a rerun resumes it; a new curve gets its own)."""
    key = json.dumps(curve.to_dict(), sort_keys=True)
    return "auto-" + hashlib.sha1(key.encode()).hexdigest()[:8]


def _restorer(models, inversion: Optional[Dict[str, object]] = None):
    """restore.py's library call at its defaults, quietly: ``run(inp, out, **overrides)``, and the
    defaults' folder name under the network's curve (``defaults_folder``). ``inversion``: inversion
    settings replaced in every run (tests shorten PTI; None in reports)."""
    curve = load_curve(models.network)[0]
    opts = RestoreOptions(progress=False, fidelity_curve=curve, log=lambda _m: None)

    def run(inp: str, out: str, **kw) -> None:
        restore_folder(models, inp, out, opts.replace(**{**(inversion or {}), **kw}))
    return run, defaults_folder(curve)


def _rerender(run, inp: str, workdir: str, f0: str, auto: str, **kw) -> None:
    """``inp`` inverted once at fidelity 0 into ``workdir/f0`` (its inversions kept), then the
    defaults rendered from those inversions into ``workdir/auto`` (none kept: no face was found)."""
    run(inp, os.path.join(workdir, f0), fidelity=0.0, keep_inversions=True, **kw)
    kept = os.path.join(workdir, f0, "inversions")
    run(inp, os.path.join(workdir, auto), inversions=kept if os.path.isdir(kept) else None, **kw)


def _scores(imgs: Sequence[np.ndarray], refs: Sequence[np.ndarray]) -> Dict[str, float]:
    return {"psnr_db": _mean([psnr(a, b) for a, b in zip(imgs, refs)]),
            "ssim": _mean([ssim(a, b) for a, b in zip(imgs, refs)])}


def restore_crops(models, faces: Sequence[np.ndarray], degraded: Sequence[np.ndarray], nlm,
                  workdir: str, inversion: Optional[Dict[str, object]] = None) -> dict:
    """Scores of the degraded input, NLM, restore.py's defaults and --fidelity 0 on ``degraded``
    (uint8 [R, R, 3] each, clean originals ``faces``), and the defaults on the clean faces."""
    names = [f"{i:04d}.png" for i in range(len(faces))]
    for sub, imgs in (("degraded", degraded), ("clean", faces)):
        for n, im in zip(names, imgs):
            image_io.write_image(os.path.join(workdir, sub, n), im)
    _restore, auto = _restorer(models, inversion)
    _rerender(_restore, os.path.join(workdir, "degraded"), workdir, "f0", auto)
    _rerender(_restore, os.path.join(workdir, "clean"), workdir, "clean-f0", "clean-" + auto)
    read = lambda sub: [image_io.read_image(os.path.join(workdir, sub, n)) for n in names]   # noqa: E731
    rows = {"degraded": _scores(degraded, faces), "nlm": _scores([nlm(d) for d in degraded], faces),
            "restore_defaults": _scores(read(auto), faces), "restore_fidelity_0": _scores(read("f0"), faces)}
    clean_out = read("clean-" + auto)
    d, n = rows["degraded"], rows["nlm"]

    def beats(row):
        return bool(row["psnr_db"] > d["psnr_db"] and row["ssim"] > d["ssim"])

    fid = [r["fidelity"] for r in restore_records(os.path.join(workdir, auto))]
    fid_clean = [r["fidelity"] for r in restore_records(os.path.join(workdir, "clean-" + auto))]
    return {"images": len(faces), "defaults_folder": auto, "scores": rows,
            "defaults_beat_input": beats(rows["restore_defaults"]),
            "defaults_beat_nlm_ssim": bool(rows["restore_defaults"]["ssim"] > n["ssim"]),
            "fidelity_0_beats_input": beats(rows["restore_fidelity_0"]),
            "mean_fidelity_degraded": _mean(fid), "mean_fidelity_clean": _mean(fid_clean),
            "clean_unchanged": int(sum(np.array_equal(a, b) for a, b in zip(clean_out, faces))),
            "clean_psnr_db": _mean([min(psnr(a, b), 99.0) for a, b in zip(clean_out, faces)]),
            "clean_fidelity_0_psnr_db": _mean([psnr(a, b) for a, b in zip(read("clean-f0"), faces)])}


def restore_records(outdir: str) -> List[dict]:
    """The per-image records of a restore run (its restore.jsonl), without error lines."""
    from dnnlib.util import read_jsonl
    return [r for r in read_jsonl(os.path.join(outdir, "restore.jsonl")) if "error" not in r]


PHOTOS, FACES_PER_PHOTO = 2, 3        # composites per level (12 faces in all: 0.5x to 3x of 64 px)
PHOTO_ROWS = ("degraded", "restore_defaults", "restore_fidelity_0")


def face_rows(comp, images: Dict[str, np.ndarray], face_records: Sequence[dict]) -> List[dict]:
    """One row per placed face of composite ``comp``: its side (px) and scale, PSNR over its square
    and SSIM over its box for each of ``images`` (``PHOTO_ROWS`` -> uint8 [H, W, 3], the whole
    photo), and the fidelity restore.py chose for it (the record whose box overlaps the placed box
    by ``composites.MATCH_IOU``; None where no face was found there: the input is kept)."""
    from .composites import MATCH_IOU, iou
    rows = []
    for box, mask, scale in zip(comp.boxes, comp.masks, comp.scales):
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        x0, y0 = max(0, x0), max(0, y0)
        overlap, fidelity = max(((iou(box, r["box"]), r["fidelity"]) for r in face_records), default=(0.0, None))
        row: Dict[str, object] = {"photo": comp.name, "side_px": round(box[2] - box[0]), "scale": round(scale, 3),
                                  "fidelity": fidelity if overlap >= MATCH_IOU else None}
        for k, im in images.items():
            row[k] = {"psnr_db": float(psnr(im[mask][None], comp.photo[mask][None])),
                      "ssim": float(ssim(im[y0:y1, x0:x1], comp.photo[y0:y1, x0:x1]))}
        rows.append(row)
    return rows


def restore_photos(models, heldout_zip: str, workdir: str, photos: int = PHOTOS, per_photo: int = FACES_PER_PHOTO,
                   seed: int = 0, inversion: Optional[Dict[str, object]] = None) -> dict:
    """Face-region PSNR / SSIM of the degraded composite, restore.py --align dlib at its defaults and
    at --fidelity 0, per degradation level, against the undegraded composite."""
    from .composites import degrade, make_composites
    comps = make_composites(heldout_zip, photos=photos, per_photo=per_photo, seed=seed)
    pipe = models.face_pipeline("dlib")
    _restore, auto = _restorer(models, inversion)
    out: Dict[str, dict] = {"photos": len(comps), "defaults_folder": auto, "faces": sum(len(c.boxes) for c in comps),
                            "face_sides_px": sorted(round(b[2] - b[0]) for c in comps for b in c.boxes)}
    for level in PHOTO_LEVELS:
        inp = os.path.join(workdir, level, "in")
        for c in comps:
            image_io.write_image(os.path.join(inp, c.name + ".png"), degrade(c.photo, level, c.seed))
        _rerender(_restore, inp, os.path.join(workdir, level), "restore_fidelity_0", auto, face_pipeline=pipe)
        recs = {r["file"]: r.get("faces", []) for r in restore_records(os.path.join(workdir, level, auto))}
        faces: List[dict] = []
        for c in comps:
            imgs = {"degraded": image_io.read_image(os.path.join(inp, c.name + ".png"))}
            for tag, folder in (("restore_defaults", auto), ("restore_fidelity_0", "restore_fidelity_0")):
                imgs[tag] = image_io.read_image(os.path.join(workdir, level, folder, c.name + ".png"))
            faces += face_rows(c, imgs, recs.get(c.name + ".png", []))
        scores = {k: {m: _mean([f[k][m] for f in faces]) for m in ("psnr_db", "ssim")} for k in PHOTO_ROWS}
        d = scores["degraded"]
        out[level] = {"scores": scores,
                      "defaults_at_least_input": bool(scores["restore_defaults"]["psnr_db"] >= d["psnr_db"]
                                                      and scores["restore_defaults"]["ssim"] >= d["ssim"]),
                      "mean_fidelity": _mean([f["fidelity"] for f in faces if f["fidelity"] is not None]),
                      "faces": faces}
    return out


def run_section(section: str, models, heldout: str, faces, degraded, nlm, seed: int,
                inversion: Optional[Dict[str, object]] = None, workdir: Optional[str] = None) -> dict:
    """``model_report``'s entry: the restorations go to ``workdir/<section>`` (kept, with their
    restore.jsonl records: fidelity, severity and detail per image or face), or to a temporary
    folder when ``workdir`` is None."""
    if workdir is not None:
        return _run_in(section, models, heldout, faces, degraded, nlm, seed, inversion, os.path.join(workdir, section))
    with tempfile.TemporaryDirectory(prefix=f"qc-{section}-") as work:
        return _run_in(section, models, heldout, faces, degraded, nlm, seed, inversion, work)


def _run_in(section, models, heldout, faces, degraded, nlm, seed, inversion, work: str) -> dict:
    if section == "restore_crops":
        return restore_crops(models, faces, degraded, nlm, work, inversion)
    return restore_photos(models, heldout, work, seed=seed, inversion=inversion)
