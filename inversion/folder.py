"""``invert.py run``: invert every image of a folder (or one file) into ``DIR/<name>/``.

``<name>`` is the input's path relative to the input folder without its extension, so the
folder layout is kept (with it where two inputs would share a name: ``a.jpg`` and ``a.png`` ->
``a.jpg/``, ``a.png/``; ``dnnlib.image_io.output_stems``). Each finished image gets one line in
``DIR/results.jsonl``; a second run skips images whose folder already holds ``result.json``.
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

from .api import RESULT_FILES, invert_images, save_inversion

RESULTS = "results.jsonl"


def invert_folder(G, input_path: str, outdir: str, encoder=None, pti_steps: int = 350,
                  w_steps: Optional[int] = None, device: Any = None, batch: int = 8, progress: bool = True,
                  **invert_kwargs) -> Dict[str, Any]:
    """Invert the images under ``input_path``; returns {'done', 'skipped', 'failed'} counts."""
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
        results = invert_images(G, images, encoder=encoder, pti_steps=pti_steps, w_steps=w_steps, device=device,
                                progress=False, batch_size=batch, names=keys, **invert_kwargs)
        for name, key, res in zip(chunk, keys, results):
            save_inversion(os.path.join(outdir, key), res)
            s = res.stats
            append_jsonl(os.path.join(outdir, RESULTS), {
                "name": key, "file": name, "psnr": s["psnr"], "psnr_stage1": s["psnr_stage1"],
                "lpips": s["lpips"], "perceptual": s["perceptual"], "perceptual_loss": s["perceptual_loss"],
                "w_steps": s["w_steps"], "pti_steps": s["pti_steps"],
                "seconds": s["seconds_stage1"] + s["seconds_stage2"], "input_size": s["input_size"],
                "delta_bytes": s["delta_bytes"], "timestamp": time.time()})
            counts["done"] += 1
            bar.update(1)
    bar.close()
    require_progress(counts["done"] + counts["skipped"], counts["failed"], os.path.join(outdir, RESULTS))
    return counts
