"""``invert.py run``: invert every image of a folder (or one file) into ``DIR/<name>/``.

``<name>`` is the input's path relative to the input folder without its extension, so the
folder layout is kept (with it where two inputs would share a name: ``a.jpg`` and ``a.png`` ->
``a.jpg/``, ``a.png/``; ``dnnlib.image_io.output_stems``). Each finished image gets one line in
``DIR/results.jsonl``; a second run skips images whose folder already holds its result file
(``apps.store.is_finished``: written when the image is finished, even in the middle of a batch).
Unreadable images (any odd file ``dnnlib.image_io`` refuses) are reported, get a line with
``error`` in ``results.jsonl`` and are tried again by the next run; when no input at all can be
processed the job ends with a ``UserError`` (the exit rule of ``dnnlib.folder_job``).
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Dict, Optional

from dnnlib.folder_job import FolderJob
from dnnlib.image_io import output_stems
from dnnlib.util import append_jsonl, read_jsonl
from faces.pipeline import NO_FACE_NOTE, FacePipeline, expand_photos, save_face_info

from inversion.api import invert_images, save_inversion
from inversion.config import AppOptions, InversionConfig
from inversion.models import Models
from .store import is_finished

RESULTS = "results.jsonl"
RESULT_STATS = ("psnr", "psnr_stage1", "lpips", "perceptual", "perceptual_loss", "w_steps", "pti_steps", "seconds",
                "input_size", "delta_bytes", "batch")          # an image's InversionStats in its results.jsonl line


@dataclasses.dataclass
class InvertOptions(AppOptions):
    """What ``invert_folder`` does (``invert.py run``'s options)."""
    inversion: InversionConfig = dataclasses.field(default_factory=InversionConfig)   # every inversion setting
    face_pipeline: Optional[FacePipeline] = None     # whole photos (faces.pipeline); None = aligned crops
    progress: bool = True                            # progress bar on stderr
    log: Optional[Callable[[str], None]] = None      # notes and skipped files; None: stderr


def invert_folder(models: Models, input_path: str, outdir: str, options: Optional[InvertOptions] = None
                  ) -> Dict[str, Any]:
    """Invert the images under ``input_path`` into ``outdir`` with ``models`` (G, encoder, device)
    and ``options`` (``InvertOptions``; its ``inversion`` ``InversionConfig``), ``batch_for(device)``
    images at a time; each image is written when it is finished, so an interrupted run loses at
    most the images still being tuned. Returns {'done', 'skipped', 'failed'} counts.

    ``options.face_pipeline`` (``faces.pipeline``): face k of a whole photo ``a.jpg`` is aligned and
    inverted into ``DIR/a_k/`` with ``aligned.png`` and ``face.json`` (its transform)."""
    opts = options or InvertOptions()
    config = opts.inversion
    batch = config.batch_for(models.device)
    face_pipeline = opts.face_pipeline
    run = FolderJob.of_input(input_path, outdir, RESULTS, "invert", opts.progress, opts.log)
    stems = output_stems(run.sources)
    # Photos without a face are reported once and not tried again; a photo with faces is detected
    # again on a rerun and only its faces without a result are inverted (a run stopped between two
    # faces of one photo keeps the finished ones and does the others).
    photos_done = {r["photo"] for r in read_jsonl(run.records) if "photo" in r and "faces" in r}
    todo = run.pending(run.sources, done=lambda n: is_finished(os.path.join(outdir, stems[n])) or stems[n] in photos_done)
    counts = {"done": 0, "skipped": run.skipped, "failed": 0}
    run.start()
    ticked = set()
    for read in run.chunks(todo, batch, source_of=lambda n: n,
                           error_record=lambda n, why: {"name": n, "error": why, "timestamp": time.time()}):
        chunk, images = [n for n, _ in read], [rgb for _, (rgb, _) in read]
        keys = [stems[n] for n in chunk]
        faces: Dict[str, Any] = {}
        if face_pipeline is not None:
            chunk, keys, images, faces, no_face, done_before = _faces_of(face_pipeline, chunk, keys, images, run)
            counts["done"] += no_face            # reported (results line), not tried again
            counts["skipped"] += done_before     # every face finished by an earlier run
        if not chunk:
            continue

        def write(i: int, res, chunk=chunk, keys=keys, faces=faces) -> None:   # as soon as image i is finished
            key, name = keys[i], chunk[i]
            save_inversion(os.path.join(outdir, key), res)
            face, photo = faces.get(key, (None, None))
            if face is not None:
                save_face_info(os.path.join(outdir, key), face, name, photo)
            append_jsonl(run.records, {
                "name": key, "file": name, **res.stats.record(*RESULT_STATS), "timestamp": time.time(),
                **({"photo": stems[name], "face": face.index, "transform": face.record()["transform"]}
                   if face is not None else {})})
            counts["done"] += 1
            if stems[name] not in ticked:        # one tick per input (a photo: its first face written)
                ticked.add(stems[name])
                run.tick()

        invert_images(models.G, images, models.E, config.replace(batch_size=batch), device=models.device,
                      progress=False, names=keys, on_result=write)
    counts["failed"] = len(run.failed)
    run.finish(counts["done"] + counts["skipped"])
    return counts


def _faces_of(pipeline, chunk, keys, images, run: FolderJob):
    """Whole photos of a chunk -> one entry per face (``<key>_<k>``) not finished before; photos
    without a face get a results line (and are not tried again). Returns (names, keys, images,
    faces, photos without a face, photos whose faces were all finished before)."""
    items, empty = expand_photos(pipeline, list(zip(keys, images)))
    with_faces = {p for _, _, f, p in items if f is not None}
    items = [it for it in items if it[2] is None or not is_finished(os.path.join(run.outdir, it[0]))]
    done_before = with_faces - {p for _, _, f, p in items if f is not None}
    run.tick(len(done_before))
    name_of = dict(zip(keys, chunk))
    for key in empty:
        append_jsonl(run.records, {"name": key, "file": name_of[key], "photo": key, "faces": 0,
                                   "note": NO_FACE_NOTE, "timestamp": time.time()})
        run.tick()
    shape_of = dict(zip(keys, (im.shape for im in images)))
    faces = {k: (f, shape_of.get(p)) for k, _, f, p in items}          # aligned crops: (None, None)
    return ([name_of[p or k] for k, _, _, p in items], [k for k, _, _, _ in items], [im for _, im, _, _ in items], faces,
            len(empty), len(done_before))
