"""``invert.py run``: invert every image of a folder (or one file) into ``DIR/<name>/``.

``<name>`` is the input's path relative to the input folder without its extension, so the
folder layout is kept. Each finished image gets one line in ``DIR/results.jsonl``; a second run
skips images whose folder already holds ``result.json``. Unreadable images are reported, get a
line with ``error`` in ``results.jsonl`` and are tried again by the next run.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Dict, Optional

from tqdm import tqdm

from dnnlib.image_io import list_sources, read_image
from dnnlib.util import UserError, append_jsonl, read_jsonl

from .api import RESULT_FILES, invert_images, save_inversion

RESULTS = "results.jsonl"


def invert_folder(G, input_path: str, outdir: str, encoder=None, pti_steps: int = 350,
                  w_steps: Optional[int] = None, device: Any = None, batch: int = 8, progress: bool = True,
                  face_pipeline=None, **invert_kwargs) -> Dict[str, Any]:
    """Invert the images under ``input_path``; returns {'done', 'skipped', 'failed'} counts.
    ``face_pipeline`` (``faces.pipeline``): face k of a whole photo ``a.jpg`` is aligned and
    inverted into ``DIR/a_k/`` with ``aligned.png`` and ``face.json`` (its transform)."""
    root, names = list_sources(input_path, outdir)
    photos_done = {r["photo"] for r in read_jsonl(os.path.join(outdir, RESULTS)) if "photo" in r}
    todo = [n for n in names if not os.path.isfile(os.path.join(outdir, os.path.splitext(n)[0], RESULT_FILES["result"]))
            and os.path.splitext(n)[0] not in photos_done]
    counts = {"done": 0, "skipped": len(names) - len(todo), "failed": 0}
    os.makedirs(outdir, exist_ok=True)
    bar = tqdm(total=len(todo), desc="invert", unit="img", disable=not progress)
    for lo in range(0, len(todo), batch):
        chunk, images = [], []
        for name in todo[lo:lo + batch]:
            try:
                images.append(read_image(os.path.join(root, name)))
                chunk.append(name)
            except UserError as exc:
                print(f"warning: skipped {name}: {exc}", file=sys.stderr)
                append_jsonl(os.path.join(outdir, RESULTS), {"name": name, "error": str(exc), "timestamp": time.time()})
                counts["failed"] += 1
                bar.update(1)
        if not chunk:
            continue
        keys = [os.path.splitext(n)[0] for n in chunk]
        faces: Dict[str, Any] = {}
        if face_pipeline is not None:
            chunk, keys, images, faces = _faces_of(face_pipeline, chunk, keys, images, outdir, bar)
        results = invert_images(G, images, encoder=encoder, pti_steps=pti_steps, w_steps=w_steps, device=device,
                                progress=False, batch_size=batch, names=keys, **invert_kwargs)
        for name, key, res in zip(chunk, keys, results):
            save_inversion(os.path.join(outdir, key), res)
            face, photo = faces.get(key, (None, None))
            if face is not None:
                from faces.pipeline import save_face_info
                save_face_info(os.path.join(outdir, key), face, name, photo)
            s = res.stats
            append_jsonl(os.path.join(outdir, RESULTS), {
                "name": key, "file": name, "psnr": s["psnr"], "psnr_stage1": s["psnr_stage1"],
                "lpips": s["lpips"], "perceptual": s["perceptual"], "perceptual_loss": s["perceptual_loss"],
                "w_steps": s["w_steps"], "pti_steps": s["pti_steps"],
                "seconds": s["seconds_stage1"] + s["seconds_stage2"], "input_size": s["input_size"],
                "delta_bytes": s["delta_bytes"], "timestamp": time.time(),
                **({"photo": os.path.splitext(name)[0], "face": face.index, "transform": face.record()["transform"]}
                   if face is not None else {})})
            counts["done"] += 1
            if face is None or face.index == 0:
                bar.update(1)
    bar.close()
    return counts


def _faces_of(pipeline, chunk, keys, images, outdir, bar):
    """Whole photos of a chunk -> one entry per face (``<key>_<k>``); photos without a face get a
    results line (and are not tried again)."""
    from faces.pipeline import NO_FACE_NOTE, expand_photos
    items, empty = expand_photos(pipeline, list(zip(keys, images)))
    name_of = dict(zip(keys, chunk))
    for key in empty:
        append_jsonl(os.path.join(outdir, RESULTS), {"name": key, "file": name_of[key], "photo": key, "faces": 0,
                                                     "note": NO_FACE_NOTE, "timestamp": time.time()})
        bar.update(1)
    faces = {k: (f, None if f is None else images[keys.index(p)].shape) for k, _, f, p in items}
    return ([name_of[p or k] for k, _, _, p in items], [k for k, _, _, _ in items], [im for _, im, _, _ in items], faces)
