"""Blind restoration with QC-StyleGAN (Sec. 4.3): invert a degraded image to (w, q) and a tuned
generator θ (PTI), then render the sharp image G_θ(w, 0).

``restore_folder`` runs this over a folder (or one file):

* outputs keep the inputs' relative paths and names as lossless PNG (``a/b.jpg`` ->
  ``OUTDIR/a/b.png``; names that would collide keep their extension, like ``degrade.py``);
* the restored image is rendered at the model's resolution and resized back to the input's
  original size with Lanczos filtering (the aspect ratio comes back too: inversion squashed the
  image to R x R);
* an existing ``invert.py run`` folder (``inversions``) is reused: ``DIR/<stem>/`` when finished,
  else the image is inverted here (``keep_inversions`` saves new ones under ``OUTDIR/inversions``);
* ``OUTDIR/restore.jsonl``: one line per image (file, source, seconds, steps, reconstruction
  PSNR / perceptual distance / LPIPS, and with ground truth the metrics of input and restored);
  unreadable files (every odd form ``dnnlib.image_io`` refuses) get a line with ``error`` and are
  skipped; finished images are skipped on a rerun, so running the same command again resumes
  (and retries the failed ones); when no input can be processed at all, a ``UserError`` ends it;
* ``compare``: ``OUTDIR/compare/<name>.png`` = input | restored (| ground truth), at input size;
* whole photos (``face_pipeline``, ``restore.py --align``): each face is detected, aligned to the
  model's template, restored (the faces of a chunk of photos go to the inversion as one list) and
  pasted back at the photo's own size (alpha kept); ``OUTDIR/faces/<name>_<k>.png`` = aligned
  input | restored; the photo's record holds per face its box, landmarks, transform and scores; a
  photo with no face is reported and copied through unchanged (``docs/faces.md``);
* ground truth (``gt``, matched by relative path, else by path without extension): PSNR, SSIM,
  LPIPS and NIQE of the input and of the restored image (the default list skips LPIPS with a note
  when its backbone weights are absent; asked for with ``metrics``, their absence is an error), per image and averaged in
  ``OUTDIR/restore-summary.json`` as ``{"input": {metric: {mean, std, n}}, "restored": {...}}``
  (the layout of ``calc_metrics.py compare``'s summary, once per image kind).
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Dict, Optional, Sequence

import numpy as np

from dnnlib import image_io
from dnnlib.util import UserError, append_jsonl, atomic_write, read_jsonl

RECORDS_FILE = "restore.jsonl"
SUMMARY_FILE = "restore-summary.json"
OPTIONS_FILE = "restore_options.json"
COMPARE_DIR = "compare"
INVERSIONS_DIR = "inversions"


def find_gt(gt_dir: str, source: str) -> Optional[str]:
    exact = os.path.join(gt_dir, source)
    if os.path.isfile(exact):
        return exact
    stem = os.path.splitext(source)[0]
    folder = os.path.join(gt_dir, os.path.dirname(source))
    if os.path.isdir(folder):
        cands = [f for f in sorted(os.listdir(folder))
                 if os.path.splitext(f)[0] == os.path.basename(stem) and image_io.is_image_file(f)]
        if len(cands) == 1:
            return os.path.join(folder, cands[0])
    return None


class ImageScorer:
    """PSNR / SSIM / LPIPS / NIQE of an image against its ground truth (metrics package)."""

    def __init__(self, names: Sequence[str], lpips_backbone: str = "imagenet", device="cpu", log=None):
        from metrics.compare import prepare_metrics      # default list: LPIPS skipped with a note when absent
        self.names, self.lpips = prepare_metrics(list(names) if names else None, True, "alex", lpips_backbone,
                                                 device, log)

    def __call__(self, img: np.ndarray, gt: np.ndarray) -> Dict[str, Optional[float]]:
        from metrics import image_metrics, niqe
        out: Dict[str, Optional[float]] = {}
        if "psnr" in self.names:
            out["psnr"] = float(image_metrics.psnr(img, gt))
        if "ssim" in self.names:
            out["ssim"] = float(image_metrics.ssim(img, gt))
        if "lpips" in self.names:
            try:
                out["lpips"] = float(self.lpips(img, gt))
            except RuntimeError:     # too small for the AlexNet/VGG feature stack
                out["lpips"] = None
        if "niqe" in self.names:
            try:
                out["niqe"] = float(niqe.niqe(img))
            except UserError:        # too small for NIQE's 96-px blocks
                out["niqe"] = None
        return out


def summarize_records(records: Sequence[dict], names: Sequence[str]) -> Dict[str, dict]:
    from metrics.compare import summarize
    return {kind: summarize([r[kind] for r in records if isinstance(r.get(kind), dict)], names)
            for kind in ("input", "restored")}


def _invert_chunk(G, images, names, encoder, options, on_result=None) -> list:
    """Invert a list of uint8 images, ``options['batch_size']`` together (``restore_folder`` always
    sets it); ``on_result(i, result)`` runs as soon as image ``i`` is finished."""
    from inversion.api import invert_images
    return invert_images(G, images, encoder=encoder, names=names, progress=False, on_result=on_result, **options)


def restore_folder(G, input_path: str, outdir: str, encoder=None, inversions: Optional[str] = None,
                   gt: Optional[str] = None, compare: bool = False, keep_inversions: bool = False,
                   metrics: Optional[Sequence[str]] = None, lpips_backbone: str = "imagenet",
                   pti_steps: Optional[int] = None, w_steps: Optional[int] = None, batch_size: Optional[int] = None,
                   perceptual: str = "auto", device="cpu", progress: bool = True, log=None,
                   face_pipeline=None) -> Dict[str, Any]:
    """Restore every image under ``input_path`` into ``outdir`` (see the module docstring).
    ``batch_size`` images are inverted together (default: by device,
    ``inversion.api.default_batch_size``); each is written as soon as it is finished.
    ``face_pipeline`` (``faces.pipeline.build_face_pipeline``): whole photos get their faces restored and
    pasted back (``inversion/applications/photos.py``); None = every input is an aligned crop.
    Returns counts (inputs, written, skipped, failed, reused, faces, no_face) and, with ``gt``, the summary."""
    from degradations.folder import plan_outputs
    from inversion.api import default_batch_size, load_inversion
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if G.q_dim == 0:
        raise UserError("restoration needs a QC generator (q_dim > 0); this network is plain StyleGAN2")
    if gt is not None and not os.path.isdir(gt):
        raise UserError(f"--gt must be a folder: {gt}")
    if inversions is not None and not os.path.isdir(inversions):
        raise UserError(f"--inversions folder not found: {inversions}")
    root, sources = image_io.list_sources(input_path, outdir)
    scorer = ImageScorer(metrics or (), lpips_backbone, device, log) if gt is not None else None
    jobs = [(src, out_rel) for src, _, out_rel in plan_outputs(sources, 1)]
    in_paths = {os.path.abspath(os.path.join(root, s)) for s in sources}
    if any(os.path.abspath(os.path.join(outdir, o)) in in_paths for _, o in jobs):
        raise UserError("an output would overwrite an input; choose another --outdir")
    os.makedirs(outdir, exist_ok=True)
    batch_size = int(batch_size) if batch_size is not None else default_batch_size(device)
    inv_options: Dict[str, Any] = {"perceptual": perceptual, "device": device, "batch_size": batch_size}
    if pti_steps is not None:
        inv_options["pti_steps"] = int(pti_steps)
    if w_steps is not None:
        inv_options["w_steps"] = int(w_steps)
    with atomic_write(os.path.join(outdir, OPTIONS_FILE), "w") as f:
        json.dump({"input": os.path.abspath(input_path), "outdir": os.path.abspath(outdir),
                   "inversions": inversions, "gt": gt, "compare": compare, "metrics": scorer.names if scorer else None,
                   "align": face_pipeline.options() if face_pipeline is not None else None,
                   **{k: v for k, v in inv_options.items() if k != "device"}}, f, indent=2)
        f.write("\n")

    records_path = os.path.join(outdir, RECORDS_FILE)
    done = {r["file"] for r in read_jsonl(records_path) if "error" not in r}
    summary = {"inputs": len(jobs), "written": 0, "skipped": 0, "failed": 0, "reused": 0, "faces": 0, "no_face": 0}
    todo = []
    for src, out_rel in jobs:
        if out_rel in done and os.path.isfile(os.path.join(outdir, out_rel)):
            summary["skipped"] += 1
        else:
            todo.append((src, out_rel))
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(jobs), initial=summary["skipped"], desc="restore", unit="img", file=sys.stderr)

    def write(res, src: str, out_rel: str, img: np.ndarray, seconds: float, reused: bool) -> None:
        rec = _finish_image(G, res, src, out_rel, img, outdir, gt, scorer, compare, seconds, reused, device, log)
        append_jsonl(records_path, rec)
        summary["written"] += 1
        summary["reused"] += int(reused)
        if bar is not None:
            bar.update(1)

    for lo in range(0, len(todo), max(1, batch_size)):
        chunk, alphas = [], {}                 # alphas: for whole photos, pasted back with theirs
        for src, out_rel in todo[lo:lo + batch_size]:
            try:
                rgb, alphas[src] = image_io.read_image_alpha(os.path.join(root, src))
                chunk.append((src, out_rel, rgb))
            except UserError as exc:
                log(f"skipped {src}: {exc}")
                append_jsonl(records_path, {"file": out_rel, "source": src, "error": str(exc)})
                summary["failed"] += 1
                if bar is not None:
                    bar.update(1)
        from faces.pipeline import split_photos
        chunk, photos = split_photos(face_pipeline, chunk)
        if photos:
            for rec in _restore_photos(G, face_pipeline, photos, alphas, outdir, encoder, inv_options, inversions,
                                       keep_inversions, compare, gt, scorer, device, log):
                append_jsonl(records_path, rec)
                summary["written"] += 1
                summary["faces"] += len(rec["faces"])
                summary["no_face"] += int(not rec["faces"])
                if bar is not None:
                    bar.update(1)
        fresh = []
        for src, out_rel, img in chunk:
            stem = os.path.splitext(out_rel)[0]
            folder = os.path.join(inversions, stem) if inversions else None
            if folder and os.path.isfile(os.path.join(folder, "result.json")):
                write(load_inversion(folder), src, out_rel, img, 0.0, True)
            else:
                fresh.append((src, out_rel, img))
        if fresh:
            def finished(i: int, res, fresh=fresh) -> None:          # as soon as image i is finished
                src, out_rel, img = fresh[i]
                if keep_inversions:
                    from inversion.api import save_inversion
                    save_inversion(os.path.join(outdir, INVERSIONS_DIR, os.path.splitext(out_rel)[0]), res)
                seconds = res.stats["seconds_stage1"] + res.stats["seconds_stage2"]
                write(res, src, out_rel, img, seconds, False)

            _invert_chunk(G, [im for _, _, im in fresh], [os.path.splitext(o)[0] for _, o, _ in fresh],
                          encoder, inv_options, on_result=finished)
    if bar is not None:
        bar.close()
    image_io.require_progress(summary["written"] + summary["skipped"], summary["failed"], records_path)
    if scorer is not None:
        recs = [r for r in read_jsonl(records_path) if "error" not in r]
        latest = {r["file"]: r for r in recs}                     # a rerun's line replaces the old one
        summary["metrics"] = summarize_records(list(latest.values()), scorer.names)
        with atomic_write(os.path.join(outdir, SUMMARY_FILE), "w") as f:
            json.dump(summary["metrics"], f, indent=2)
            f.write("\n")
    return summary


def sharp_image(G, res, name: str, device) -> np.ndarray:
    """uint8 [R, R, C]: G_θ(w, 0) of an inversion (its stored render, or rendered here)."""
    if res.sharp is not None:
        return np.asarray(res.sharp)
    import torch
    from .latents import Latent, generator_for, render
    lat = Latent(name=name, w=torch.as_tensor(res.w).float(), q=torch.as_tensor(res.q).float(), delta=res.delta)
    return np.asarray(image_io.to_uint8_hwc(render(generator_for(G, lat), lat.w[None], None, device=device)[0])[0])


def _restore_photos(G, pipeline, photos, alphas, outdir, encoder, inv_options, inversions, keep_inversions, compare,
                    gt, scorer, device, log) -> list:
    """Whole photos: every face restored (one inversion call for all of them) and pasted back."""
    from .photos import restore_photos

    def score(src, inp, restored):
        gt_path = find_gt(gt, src) if gt is not None else None
        if gt_path is None:
            return {}
        gt_img = image_io.read_image(gt_path)
        if gt_img.shape != restored.shape:
            log(f"{src}: ground truth has another size; metrics skipped")
            return {}
        return {"gt": os.path.relpath(gt_path, gt).replace(os.sep, "/"), "input": scorer(inp, gt_img),
                "restored": scorer(restored, gt_img)}

    return restore_photos(pipeline, photos, alphas, outdir,
                          invert_fn=lambda crops, names: _invert_chunk(G, crops, names, encoder, inv_options),
                          sharp_fn=lambda res, name: sharp_image(G, res, name, device), inversions=inversions,
                          keep_inversions=keep_inversions, compare=compare,
                          score_fn=score if scorer is not None else None, log=log)


def _finish_image(G, res, src: str, out_rel: str, img: np.ndarray, outdir: str, gt: Optional[str],
                  scorer: Optional[ImageScorer], compare: bool, seconds: float, reused: bool, device, log) -> dict:
    """Render (or take) G_θ(w, 0), resize back, write it, score it. Returns its record."""
    h, w = img.shape[:2]
    sharp = sharp_image(G, res, out_rel, device)
    restored = image_io.resize(np.asarray(sharp), h, w)
    if restored.shape[2] != img.shape[2]:
        restored = np.repeat(restored, img.shape[2], axis=2) if restored.shape[2] == 1 else restored[:, :, :img.shape[2]]
    image_io.write_image(os.path.join(outdir, out_rel), restored)
    stats = dict(res.stats or {})
    rec: Dict[str, Any] = {"file": out_rel, "source": src, "size": [h, w], "seconds": round(seconds, 3),
                           "reused_inversion": reused, "w_steps": stats.get("w_steps"), "pti_steps": stats.get("pti_steps"),
                           "psnr": stats.get("psnr"), "lpips": stats.get("lpips"), "perceptual": stats.get("perceptual"),
                           "perceptual_loss": stats.get("perceptual_loss")}
    tiles = [img, restored]
    if gt is not None:
        gt_path = find_gt(gt, src)
        if gt_path is None:
            log(f"{src}: no ground truth in {gt}; metrics skipped")
        else:
            gt_img = image_io.read_image(gt_path)
            if gt_img.shape != img.shape:
                log(f"{src}: ground truth {os.path.relpath(gt_path, gt)} is {gt_img.shape[1]}x{gt_img.shape[0]}, "
                    f"the input {w}x{h}; metrics skipped")
            else:
                rec["gt"] = os.path.relpath(gt_path, gt).replace(os.sep, "/")
                rec["input"] = scorer(img, gt_img)
                rec["restored"] = scorer(restored, gt_img)
                tiles.append(gt_img)
    if compare:
        image_io.write_image(os.path.join(outdir, COMPARE_DIR, out_rel), np.concatenate(tiles, axis=1))
    return rec
