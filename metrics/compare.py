"""Folder comparison for restoration results: PSNR, SSIM, LPIPS (paired) and NIQE (no reference).

``compare_folders(pred, gt)`` matches images by relative path (falling back to the path without
extension, so ``a/0001.png`` pairs with ``a/0001.jpg``), computes the requested metrics per image,
writes one JSON line per image and a summary ``{"psnr": {"mean", "std", "n"}, ...}`` (std is the
population std over images). NIQE needs no ground truth, so ``gt=None`` works for it alone.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

import dnnlib
from dnnlib.folder_job import FolderJob
from dnnlib.image_io import list_images, read_image
from dnnlib.util import UserError
from metrics import image_metrics
from metrics import niqe as niqe_mod
from metrics.lpips_metric import LPIPS

PAIRED = ("psnr", "ssim", "lpips")
NO_REFERENCE = ("niqe",)
ALL_METRICS = PAIRED + NO_REFERENCE
LOWER_IS_BETTER = {"psnr": False, "ssim": False, "lpips": True, "niqe": True}


def parse_metrics(spec, have_gt: bool) -> List[str]:
    """'psnr,ssim' -> list; None -> all four with ground truth, ['niqe'] without."""
    if spec is None:
        return list(ALL_METRICS) if have_gt else list(NO_REFERENCE)
    names = spec if isinstance(spec, (list, tuple)) else [s.strip().lower() for s in str(spec).split(",") if s.strip()]
    for n in names:
        if n not in ALL_METRICS:
            raise UserError(f"unknown image metric '{n}' (expected some of {', '.join(ALL_METRICS)})")
    if not names:
        raise UserError("no metrics given")
    if not have_gt and any(n in PAIRED for n in names):
        raise UserError(f"{', '.join(n for n in names if n in PAIRED)} need ground truth: pass --gt DIR "
                        f"(only niqe works without it)")
    return names


def prepare_metrics(spec, have_gt: bool, lpips_net: str = "alex", lpips_backbone: str = "imagenet",
                    device="cpu", log=None) -> Tuple[List[str], object]:
    """``(metric names, LPIPS model or None)``. A metric whose weights are missing is skipped with
    one note when the list is the default (``spec`` None), and fails with the message naming the
    file when it was asked for: the default list works offline (PSNR/SSIM/NIQE need nothing)."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    names = parse_metrics(spec, have_gt)
    lp = None
    if "lpips" in names:
        try:
            lp = LPIPS(net=lpips_net, backbone=lpips_backbone, device=device)     # fails fast when missing
        except (UserError, ImportError) as exc:
            if spec is not None:
                raise
            log(f"note: lpips skipped (default metric list; ask with --metrics to make it an error): {exc}")
            names = [n for n in names if n != "lpips"]
    return names, lp


class GroundTruth:
    """The ground-truth files of a folder (``list_images``), matched to a result by relative path,
    else by the path without extension when exactly one file has it (``a/0001.png`` pairs with
    ``a/0001.jpg``): ``calc_metrics.py compare`` and ``restore.py --gt``."""

    def __init__(self, root: str):
        self.root = root
        self.files = list_images(root)
        self._exact = set(self.files)
        self._by_stem: Dict[str, List[str]] = {}
        for g in self.files:
            self._by_stem.setdefault(os.path.splitext(g)[0], []).append(g)

    def match(self, rel: str) -> Optional[str]:
        """The ground truth (relative path, '/'-separated) of result ``rel``, or None."""
        if rel in self._exact:
            return rel
        cands = self._by_stem.get(os.path.splitext(rel)[0], [])
        return cands[0] if len(cands) == 1 else None


def match_files(pred_dir: str, gt_dir: Optional[str]) -> Tuple[List[Tuple[str, Optional[str]]], List[str]]:
    """Pairs (pred relative path, gt relative path or None) and the unmatched pred files."""
    preds = list_images(pred_dir)
    if not preds:
        raise UserError(f"no images found in {pred_dir}")
    if gt_dir is None:
        return [(p, None) for p in preds], []
    truth = GroundTruth(gt_dir)
    if not truth.files:
        raise UserError(f"no images found in {gt_dir}")
    pairs, unmatched = [], []
    for p in preds:
        g = truth.match(p)
        if g is not None:
            pairs.append((p, g))
        else:
            unmatched.append(p)
    if not pairs:
        raise UserError(f"no file of {pred_dir} has a counterpart in {gt_dir} (matched by relative path)")
    return pairs, unmatched


class ImageScorer:
    """The image metrics of a comparison, the same for ``calc_metrics.py compare`` and ``restore.py
    --gt``: the names of ``prepare_metrics`` (LPIPS loaded once), PSNR / SSIM in ``channel`` ('rgb'
    or 'y') with ``crop_border``, NIQE on the Y channel with ``niqe_crop_border`` (default
    ``crop_border``)."""

    def __init__(self, spec, have_gt: bool = True, lpips_net: str = "alex", lpips_backbone: str = "imagenet",
                 device="cpu", channel: str = "rgb", crop_border: int = 0, niqe_crop_border: Optional[int] = None,
                 log=None):
        if channel not in image_metrics.CHANNEL_MODES:
            raise UserError(f"unknown channel mode '{channel}' (expected rgb or y)")
        self.names, self.lpips = prepare_metrics(spec, have_gt, lpips_net, lpips_backbone, device, log)
        self.channel, self.crop_border = channel, crop_border
        self.niqe_crop = crop_border if niqe_crop_border is None else niqe_crop_border

    def measure(self, pred: np.ndarray, gt: Optional[np.ndarray] = None) -> Tuple[Dict[str, Optional[float]], List[str]]:
        """Each metric of uint8 ``pred`` [H, W, 3] against ``gt`` (same shape; None: NIQE only),
        and notes: a metric the image is too small for is None with a note (LPIPS below the
        feature stack's size, NIQE below its 96-px blocks)."""
        out: Dict[str, Optional[float]] = {}
        notes: List[str] = []
        if "psnr" in self.names:
            out["psnr"] = float(image_metrics.psnr(pred, gt, self.channel, self.crop_border))
        if "ssim" in self.names:
            out["ssim"] = float(image_metrics.ssim(pred, gt, self.channel, self.crop_border))
        if "lpips" in self.names:
            try:
                out["lpips"] = float(self.lpips(pred, gt))
            except RuntimeError as exc:       # too small for the AlexNet/VGG feature stack
                out["lpips"] = None
                notes.append(f"lpips: {exc}")
        if "niqe" in self.names:
            try:
                out["niqe"] = float(niqe_mod.niqe(pred, crop_border=self.niqe_crop))
            except UserError as exc:          # too small for NIQE's blocks
                out["niqe"] = None
                notes.append(f"niqe: {exc}")
        return out, notes

    def __call__(self, pred: np.ndarray, gt: Optional[np.ndarray] = None) -> Dict[str, Optional[float]]:
        return self.measure(pred, gt)[0]


def summarize(records: Sequence[dict], names: Sequence[str]) -> Dict[str, dict]:
    out = {}
    for n in names:
        vals = np.array([r[n] for r in records if r.get(n) is not None], dtype=np.float64)
        out[n] = {"mean": float(vals.mean()) if vals.size else None,
                  "std": float(vals.std()) if vals.size else None,
                  "n": int(vals.size)}
    return out


def format_table(summary: Dict[str, dict]) -> str:
    lines = [f"{'metric':<8} {'mean':>12} {'std':>12} {'n':>6}"]
    for name, s in summary.items():
        arrow = "lower is better" if LOWER_IS_BETTER.get(name) else "higher is better"
        fmt = lambda v: "-" if v is None else f"{v:12.4f}"
        lines.append(f"{name:<8} {fmt(s['mean']):>12} {fmt(s['std']):>12} {s['n']:>6}  ({arrow})")
    return "\n".join(lines)


def default_out_path(pred_dir: str) -> str:
    pred = os.path.abspath(pred_dir.rstrip("/\\"))
    return os.path.join(os.path.dirname(pred), os.path.basename(pred) + "-metrics.json")


def compare_folders(pred_dir: str, gt_dir: Optional[str] = None, metrics=None, channel: str = "rgb",
                    crop_border: int = 0, lpips_net: str = "alex", lpips_backbone: str = "imagenet",
                    niqe_crop_border: Optional[int] = None, device="cpu", out: Optional[str] = None,
                    progress: bool = True) -> dict:
    """Compare every image of ``pred_dir`` with its counterpart in ``gt_dir``.

    ``channel`` ('rgb' or 'y') and ``crop_border`` apply to PSNR/SSIM; NIQE always uses the Y
    channel (crop: ``niqe_crop_border``, default ``crop_border``). Writes ``out`` (summary JSON,
    default ``<pred_dir>-metrics.json`` beside the folder) and ``out`` with ``.jsonl`` (one line
    per image; a file that cannot be read or whose ground truth has another size gets a line with
    ``error`` and is left out of the summary; only when none can be compared is it an error: the
    exit rule of ``dnnlib.folder_job``).
    A default metric list skips LPIPS with a note when its weights are missing
    (``prepare_metrics``). Returns ``{'summary', 'records', 'errors', 'unmatched', 'out', 'per_image'}``.
    """
    if not os.path.isdir(pred_dir):
        raise UserError(f"--pred must be a folder: {pred_dir}")
    if gt_dir is not None and not os.path.isdir(gt_dir):
        raise UserError(f"--gt must be a folder: {gt_dir}")
    scorer = ImageScorer(metrics, gt_dir is not None, lpips_net, lpips_backbone, device, channel, crop_border,
                         niqe_crop_border)
    pairs, unmatched = match_files(pred_dir, gt_dir)

    def read(pair: Tuple[str, Optional[str]]) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        rel_pred, rel_gt = pair
        pred = read_image(os.path.join(pred_dir, rel_pred))
        gt = read_image(os.path.join(gt_dir, rel_gt)) if rel_gt is not None else None
        if gt is not None and gt.shape != pred.shape:
            raise UserError(f"{rel_pred}: size {pred.shape[1]}x{pred.shape[0]} differs from the ground "
                            f"truth {rel_gt} ({gt.shape[1]}x{gt.shape[0]})")
        return pred, gt

    job = FolderJob(pred_dir, [p for p, _ in pairs], None, desc="compare", progress=progress)
    job.start()
    records = []
    for [((rel_pred, rel_gt), (pred, gt))] in job.chunks(pairs, 1, source_of=lambda pair: pair[0], read=read):
        values, notes = scorer.measure(pred, gt)
        rec = {"file": rel_pred, **({"gt": rel_gt} if rel_gt is not None else {}), **values}
        if notes:
            rec["note"] = "; ".join(notes)
        records.append(rec)
        job.tick()
    job.finish(len(records), reasons="the messages above")      # an unreadable or mismatched pair: reported
    errors = [{"file": p, **({"gt": g} if g is not None else {}), "error": why} for (p, g), why in job.failed]

    summary = summarize(records, scorer.names)
    out = out or default_out_path(pred_dir)
    per_image = os.path.splitext(out)[0] + ".jsonl"
    with dnnlib.util.atomic_write(per_image, "w") as f:
        for rec in records + errors:
            f.write(json.dumps(rec) + "\n")
    with dnnlib.util.atomic_write(out, "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    return {"summary": summary, "records": records, "errors": errors, "unmatched": unmatched, "out": out,
            "per_image": per_image}
