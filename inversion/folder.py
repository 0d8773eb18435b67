"""``invert.py run``: invert every image of a folder (or one file) into ``DIR/<name>/``.

``<name>`` is the input's path relative to the input folder without its extension, so the
folder layout is kept (with it where two inputs would share a name: ``a.jpg`` and ``a.png`` ->
``a.jpg/``, ``a.png/``; ``dnnlib.image_io.output_stems``). Each finished image gets one line in
``DIR/results.jsonl``; a second run skips images whose folder already holds ``result.json``
(written when the image is finished, even in the middle of a batch).
Unreadable images (any odd file ``dnnlib.image_io`` refuses) are reported, get a line with
``error`` in ``results.jsonl`` and are tried again by the next run; when no input at all can be
processed the job ends with a ``UserError`` (``image_io.require_progress``).
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Dict, Optional

from tqdm import tqdm

from dnnlib.image_io import list_sources, output_stems, read_image, require_progress
from dnnlib.util import UserError, append_jsonl

from .api import RESULT_FILES, default_batch_size, invert_images, save_inversion

RESULTS = "results.jsonl"


def invert_folder(G, input_path: str, outdir: str, encoder=None, pti_steps: int = 350,
                  w_steps: Optional[int] = None, device: Any = None, batch: Optional[int] = None,
                  progress: bool = True, **invert_kwargs) -> Dict[str, Any]:
    """Invert the images under ``input_path``, ``batch`` at a time (default: by device, see
    ``inversion.api.default_batch_size``); each image is written when it is finished, so an
    interrupted run loses at most the images still being tuned. Returns {'done', 'skipped',
    'failed'} counts."""
    if batch is None:
        batch = default_batch_size(device if device is not None else next(G.parameters()).device)
    root, names = list_sources(input_path, outdir)
    stems = output_stems(names)
    todo = [n for n in names if not os.path.isfile(os.path.join(outdir, stems[n], RESULT_FILES["result"]))]
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
        keys = [stems[n] for n in chunk]

        def write(i: int, res, chunk=chunk, keys=keys) -> None:      # as soon as image i is finished
            save_inversion(os.path.join(outdir, keys[i]), res)
            s = res.stats
            append_jsonl(os.path.join(outdir, RESULTS), {
                "name": keys[i], "file": chunk[i], "psnr": s["psnr"], "psnr_stage1": s["psnr_stage1"],
                "lpips": s["lpips"], "perceptual": s["perceptual"], "perceptual_loss": s["perceptual_loss"],
                "w_steps": s["w_steps"], "pti_steps": s["pti_steps"],
                "seconds": s["seconds_stage1"] + s["seconds_stage2"], "input_size": s["input_size"],
                "delta_bytes": s["delta_bytes"], "batch": s["batch"], "timestamp": time.time()})
            counts["done"] += 1
            bar.update(1)

        invert_images(G, images, encoder=encoder, pti_steps=pti_steps, w_steps=w_steps, device=device,
                      progress=False, batch_size=len(chunk), names=keys, on_result=write, **invert_kwargs)
    bar.close()
    require_progress(counts["done"] + counts["skipped"], counts["failed"], os.path.join(outdir, RESULTS))
    return counts
