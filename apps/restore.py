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
  the official release's pSp output folder (``latent/`` + ``org/``, ``inversion.official_outputs``)
  gives the pivot (w, q) of each input named like its ``org/`` image, and PTI runs from it (the
  release's stage 2; ``pti_steps=0``: the pSp codes alone);
* the folder loop (inputs, resume, options file, chunks, unreadable files, the exit rule) is
  ``dnnlib.folder_job.FolderJob``; the
  options are one ``RestoreOptions``, the inversion's settings one ``InversionConfig`` in it;
* ``OUTDIR/restore.jsonl``: one line per image (file, source, seconds, steps, reconstruction
  PSNR / perceptual distance / LPIPS, and with ground truth the metrics of input and restored);
  unreadable files (every odd form ``dnnlib.image_io`` refuses) get a line with ``error`` and are
  skipped; finished images are skipped on a rerun, so running the same command again resumes
  (and retries the failed ones); when no input can be processed at all, a ``UserError`` ends it;
* ``fidelity`` (``fidelity.py``): how much of the input the output keeps. ``'auto'`` (the default)
  picks f per image from the model's own reading of how degraded the input is (the severity, RMS
  of G_θ(w, q) - G_θ(w, 0), and the detail ratio of the input to G_θ(w, 0)) with the network's
  calibrated curve: a sharp input is left as it is, a degraded one restored as far as the model
  is trusted. A fixed f in [0, 1] applies to every
  image. For f > 0 the output is the input plus (1 - f) of what the model changed, upsampled to the
  input's size, so detail above the model's resolution stays the input's (at the model's size
  this is ``(1 - f) restored + f input``); f = 0 is the paper's G_θ(w, 0) itself. Each record
  holds ``fidelity``, ``severity``, ``detail`` and ``q_norm``; whole photos get the same per face;
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

import dataclasses
import json
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from dnnlib import image_io
from dnnlib.folder_job import FolderJob, log_stderr
from dnnlib.util import UserError, append_jsonl, atomic_write
from faces.pipeline import FacePipeline, split_photos
from metrics.compare import GroundTruth, ImageScorer, summarize

from inversion.api import invert_images, prepare_image, save_inversion
from inversion.config import AppOptions, InversionConfig
from inversion.models import Models
from inversion.official_outputs import is_official_outputs, pivot_ws, read_official_outputs
from .store import COMPARE_DIR, INVERSIONS_DIR, reuse_or_invert
from apps import fidelity as fid
from .latents import Latent, generator_for, render
from .photos import restore_photos

RECORDS_FILE = "restore.jsonl"
SUMMARY_FILE = "restore-summary.json"
RECORD_STATS = ("w_steps", "pti_steps", "psnr", "lpips", "perceptual", "perceptual_loss")   # InversionStats in a record
OPTIONS_FILE = "restore_options.json"


@dataclasses.dataclass
class RestoreOptions(AppOptions):
    """What ``restore_folder`` does besides restoring (``restore.py``'s options)."""
    inversions: Optional[str] = None          # an invert.py run folder whose finished DIR/<stem>/ are reused
    gt: Optional[str] = None                  # ground-truth folder (same relative paths): metrics
    compare: bool = False                     # also OUTDIR/compare/<name>.png: input | restored (| gt)
    keep_inversions: bool = False             # save new inversions under OUTDIR/inversions (for edit.py)
    metrics: Optional[Sequence[str]] = None   # with gt: psnr, ssim, lpips, niqe; None = all (lpips when available)
    lpips_backbone: str = "imagenet"          # 'random': debugging only
    inversion: InversionConfig = dataclasses.field(default_factory=InversionConfig)   # every inversion setting
    progress: bool = True                     # progress bar on stderr
    face_pipeline: Optional[FacePipeline] = None   # whole photos (faces.pipeline); None = aligned crops
    fidelity: fid.Fidelity = "auto"           # 'auto': per image from the model's severity (fidelity.py); f in [0, 1]:
                                              # input + (1 - f) (restored - input) (0: G(w, 0) itself; 1: the input)
    fidelity_curve: Optional[fid.FidelityCurve] = None   # for 'auto'; None: fidelity.GENERIC_CURVE
    on_step: Optional[Callable[[str, int, int], None]] = None   # progress: (stage, step, steps) of each inversion step
    log: Optional[Callable[[str], None]] = None   # notes and skipped files; None: stderr


def summarize_records(records: Sequence[dict], names: Sequence[str]) -> Dict[str, dict]:
    return {kind: summarize([r[kind] for r in records if isinstance(r.get(kind), dict)], names)
            for kind in ("input", "restored")}


def model_renders(G, res, name: str, device) -> tuple:
    """uint8 [R, R, C] each: G_θ(w, 0) and G_θ(w, q) of an inversion (its stored renders, or
    rendered here)."""
    if res.sharp is not None and res.reconstruction is not None:
        return np.asarray(res.sharp), np.asarray(res.reconstruction)
    lat = Latent(name=name, w=torch.as_tensor(res.w).float(), q=torch.as_tensor(res.q).float(), delta=res.delta)
    sharp, deg = render(generator_for(G, lat), lat.w[None], lat.q[None], device=device)
    return (np.asarray(image_io.to_uint8_hwc(sharp)[0]),
            np.asarray(image_io.to_uint8_hwc(deg)[0]) if deg is not None else None)


def choose_fidelity(opts: "RestoreOptions", res, sharp: np.ndarray, reconstruction: Optional[np.ndarray],
                    model_in: np.ndarray) -> fid.FidelityChoice:
    """The fidelity of one restored image or face (``opts.fidelity``: fixed, or 'auto' by the curve);
    ``model_in``: the input as the inversion saw it (uint8 [R, R, C])."""
    q = torch.as_tensor(res.q).float()
    q_norm = float(q.norm()) if q.numel() else None
    steps = (res.stats.pti_steps if res.stats is not None else None) or 0     # not recorded: as short as can be
    return fid.choose(opts.fidelity, opts.fidelity_curve or fid.GENERIC_CURVE, reconstruction, sharp, q_norm, model_in,
                      pti_steps=steps)


def restore_folder(models: Models, input_path: str, outdir: str, options: Optional[RestoreOptions] = None
                   ) -> Dict[str, Any]:
    """Restore every image under ``input_path`` into ``outdir`` (see the module docstring) with
    ``models`` (G, encoder, device) and ``options`` (``RestoreOptions``; its ``inversion`` an
    ``InversionConfig``; ``options.replace(pti_steps=..., gt=...)`` for a changed copy):
    ``batch_size`` images are inverted together, each written as soon as it is finished;
    ``face_pipeline``: whole photos get their faces restored and pasted back
    (``photos.restore_photos``). Returns counts (inputs, written, skipped, failed, reused, faces,
    no_face) and, with ``gt``, the summary."""
    return _Restoration(models, input_path, outdir, options or RestoreOptions()).run()


class _Restoration:
    """One ``restore_folder`` call: its checks, options file, resumable loop and summary."""

    def __init__(self, models: Models, input_path: str, outdir: str, opts: RestoreOptions):
        G = models.G
        if G.q_dim == 0:
            raise UserError("restoration needs a QC generator (q_dim > 0); this network is plain StyleGAN2")
        if opts.gt is not None and not os.path.isdir(opts.gt):
            raise UserError(f"--gt must be a folder: {opts.gt}")
        opts = dataclasses.replace(opts, fidelity=fid.check_fidelity(opts.fidelity))
        if opts.inversions is not None and not os.path.isdir(opts.inversions):
            raise UserError(f"--inversions folder not found: {opts.inversions}")
        log = opts.log or log_stderr
        self.G, self.encoder, self.device, self.outdir, self.opts, self.log = G, models.E, models.device, outdir, opts, log
        self.pivots: Dict[str, tuple] = {}           # the release's pSp output folder as --inversions: name -> (ws, q)
        if opts.inversions is not None and is_official_outputs(opts.inversions):
            self.pivots = {p.name: (pivot_ws(p, G.num_ws), p.q)
                           for p in read_official_outputs(opts.inversions, G.w_dim, G.q_dim)}
        self.run_ = FolderJob.of_input(input_path, outdir, RECORDS_FILE, "restore", opts.progress, log, OPTIONS_FILE)
        # default list: LPIPS skipped with a note when its weights are absent
        self.scorer = ImageScorer(list(opts.metrics) if opts.metrics else None, lpips_backbone=opts.lpips_backbone,
                                  device=self.device, log=log) if opts.gt is not None else None
        self.truth = GroundTruth(opts.gt) if opts.gt is not None else None
        stems = image_io.output_stems(self.run_.sources)
        self.jobs = [(src, stems[src] + ".png") for src in self.run_.sources]
        self.run_.refuse_overwrite(o for _, o in self.jobs)
        self.batch_size = opts.inversion.batch_for(self.device)
        self.config = opts.inversion.replace(batch_size=self.batch_size)
        curve = opts.fidelity_curve or fid.GENERIC_CURVE
        if opts.fidelity == "auto" and curve.reads_severity() and not curve.reads_severity(self.config.pti_steps):
            log(f"note: --fidelity auto reads the severity only from inversions of at least {curve.min_pti_steps:g} "
                f"PTI steps (its calibration's); this run's {self.config.pti_steps} leave the choice to the detail "
                f"band (each record's severity_used)")
        self.input_path = input_path
        self.summary = {"inputs": len(self.jobs), "written": 0, "skipped": 0, "failed": 0, "reused": 0, "faces": 0,
                        "no_face": 0}

    def run(self) -> Dict[str, Any]:
        opts, run, summary = self.opts, self.run_, self.summary
        done = run.finished()
        todo = run.pending(self.jobs, done=lambda job: job[1] in done)
        summary["skipped"] = run.skipped
        run.start(self._options())
        for chunk in run.chunks(todo, self.batch_size, source_of=lambda job: job[0],
                                error_record=lambda job, why: {"file": job[1], "source": job[0], "error": why}):
            alphas = {src: alpha for (src, _), (_, alpha) in chunk}     # whole photos are pasted back with theirs
            crops, photos = split_photos(opts.face_pipeline, [(src, out_rel, rgb) for (src, out_rel), (rgb, _) in chunk])
            if photos:
                for rec in self._restore_photos(photos, alphas):
                    append_jsonl(run.records, rec)
                    summary["written"] += 1
                    summary["faces"] += len(rec["faces"])
                    summary["no_face"] += int(not rec["faces"])
                    run.tick()
            self._restore_crops(crops)
        summary["failed"] = len(run.failed)
        run.finish(summary["written"] + summary["skipped"])
        if self.scorer is not None:
            latest = run.latest_records()                  # a rerun's line replaces the old one
            summary["metrics"] = summarize_records(list(latest.values()), self.scorer.names)
            with atomic_write(os.path.join(self.outdir, SUMMARY_FILE), "w") as f:
                json.dump(summary["metrics"], f, indent=2)
                f.write("\n")
        return summary

    def _options(self) -> Dict[str, Any]:
        """What ``restore_options.json`` records."""
        opts = self.opts
        return {"input": os.path.abspath(self.input_path), "outdir": os.path.abspath(self.outdir),
                "inversions": opts.inversions, "gt": opts.gt, "compare": opts.compare,
                "metrics": self.scorer.names if self.scorer else None,
                "align": opts.face_pipeline.options() if opts.face_pipeline is not None else None,
                "fidelity": opts.fidelity,
                "fidelity_curve": (opts.fidelity_curve or fid.GENERIC_CURVE).to_dict() if opts.fidelity == "auto" else None,
                "inversion": self.config.record()}

    def _invert(self, images: List[np.ndarray], names: List[str], on_result=None, pivots=None) -> list:
        """One batched inversion of a list of uint8 images; ``on_result(i, result)`` as each finishes;
        ``pivots``: given stage-1 starts (the release's pSp codes) instead of the encoder's."""
        return invert_images(self.G, images, self.encoder, self.config, device=self.device, names=names,
                             progress=False, on_result=on_result, pivots=pivots, on_step=self.opts.on_step)

    def _invert_crops(self, images: List[np.ndarray], names: List[str], on_result) -> None:
        """``_invert`` once per kind of start: the names with a pivot of the release's pSp output
        folder (PTI from its codes) first, then the others (the encoder's start)."""
        pivoted = [i for i, n in enumerate(names) if n in self.pivots]
        others = [i for i, n in enumerate(names) if n not in self.pivots]
        for group, pivots in ((pivoted, [self.pivots[names[i]] for i in pivoted]), (others, None)):
            if group:
                self._invert([images[i] for i in group], [names[i] for i in group], pivots=pivots,
                             on_result=lambda k, res, group=group: on_result(group[k], res))

    def _restore_crops(self, crops: Sequence[tuple]) -> None:
        """Aligned crops: reuse a finished ``--inversions`` folder, else invert (all of them in one
        call); each is written as soon as its inversion is there."""
        def finished(i: int, res, reused: bool) -> None:
            src, out_rel, img = crops[i]
            if self.opts.keep_inversions and not reused:
                save_inversion(os.path.join(self.outdir, INVERSIONS_DIR, os.path.splitext(out_rel)[0]), res)
            self._write(res, src, out_rel, img, 0.0 if reused else res.stats.seconds, reused)

        reuse_or_invert([os.path.splitext(out_rel)[0] for _, out_rel, _ in crops], [img for _, _, img in crops],
                        self.opts.inversions, self._invert_crops, finished)

    def _write(self, res, src: str, out_rel: str, img: np.ndarray, seconds: float, reused: bool) -> None:
        append_jsonl(self.run_.records, self._finish_image(res, src, out_rel, img, seconds, reused))
        self.summary["written"] += 1
        self.summary["reused"] += int(reused)
        self.run_.tick()

    def _restore_photos(self, photos, alphas) -> list:
        """Whole photos: every face restored (one inversion call for all of them) and pasted back."""
        return restore_photos(self.opts.face_pipeline, photos, alphas, self.outdir, invert_fn=self._invert,
                              renders_fn=lambda res, name: model_renders(self.G, res, name, self.device),
                              fidelity_fn=lambda res, sharp, recon, crop: choose_fidelity(self.opts, res, sharp, recon, crop),
                              inversions=self.opts.inversions, keep_inversions=self.opts.keep_inversions,
                              compare=self.opts.compare,
                              score_fn=(lambda src, inp, restored: self._score(src, inp, restored)[0])
                              if self.scorer is not None else None,
                              log=self.log)

    def _score(self, src: str, image: np.ndarray, restored: np.ndarray) -> Tuple[Dict[str, Any], Optional[np.ndarray]]:
        """The record fields of ``image`` (the input) and ``restored`` against the ground truth of
        ``src``, and that ground truth; ({}, None) without ``gt``, and with a note when ``src`` has
        none or one of another size."""
        if self.truth is None:
            return {}, None
        rel = self.truth.match(src)
        if rel is None:
            self.log(f"{src}: no ground truth in {self.opts.gt}; metrics skipped")
            return {}, None
        gt_img = image_io.read_image(os.path.join(self.truth.root, rel))
        if gt_img.shape != image.shape:
            self.log(f"{src}: ground truth {rel} is {gt_img.shape[1]}x{gt_img.shape[0]}, the input "
                     f"{image.shape[1]}x{image.shape[0]}; metrics skipped")
            return {}, None
        return {"gt": rel, "input": self.scorer(image, gt_img), "restored": self.scorer(restored, gt_img)}, gt_img

    def _finish_image(self, res, src: str, out_rel: str, img: np.ndarray, seconds: float, reused: bool) -> dict:
        """Render (or take) G_θ(w, 0), resize back, write it, score it. Returns its record."""
        h, w = img.shape[:2]
        sharp, recon = model_renders(self.G, res, out_rel, self.device)
        model_in = prepare_image(img, sharp.shape[0], sharp.shape[2])
        choice = choose_fidelity(self.opts, res, sharp, recon, model_in)
        restored = fid.compose(img, model_in, sharp, choice.fidelity)
        image_io.write_image(os.path.join(self.outdir, out_rel), restored)
        rec: Dict[str, Any] = {"file": out_rel, "source": src, "size": [h, w], "seconds": round(seconds, 3),
                               "reused_inversion": reused, **res.stats.record(*RECORD_STATS), **choice.record()}
        fields, gt_img = self._score(src, img, restored)
        rec.update(fields)
        if self.opts.compare:
            tiles = [img, restored] + ([gt_img] if gt_img is not None else [])
            image_io.write_image(os.path.join(self.outdir, COMPARE_DIR, out_rel), np.concatenate(tiles, axis=1))
        return rec
