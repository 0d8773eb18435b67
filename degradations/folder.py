"""Degrade a folder (or one file) of real images: the library behind ``degrade.py``.

Outputs keep the relative paths and names of the inputs, as lossless PNG (``a/b.jpg`` ->
``OUTDIR/a/b.png``; with ``copies`` > 1, ``a/b_0.png``, ``a/b_1.png``, ...; if two inputs
would share an output name, e.g. ``b.jpg`` and ``b.png``, they keep their extension:
``b.jpg.png``). Each written image gets one line in ``OUTDIR/degradations.jsonl``::

    {"file": "a/b.png", "source": "a/b.jpg", "copy": 0, "seed": 123, "record": {...}}

The seed of an output is derived from (seed, source path, copy), so results do not depend on the
order or on which files were already done: outputs that exist are skipped (resume by running the
same command again). Unreadable files are reported and skipped. Alpha is kept: the colour is
degraded and the original alpha channel is written back (RGBA PNG); grayscale inputs come out RGB.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from tqdm import tqdm

from dnnlib import image_io
from dnnlib.util import UserError, append_jsonl, atomic_write, read_jsonl

from .pipeline import Pipeline, build_pipeline, load_spec

RECORDS_FILE = "degradations.jsonl"
OPTIONS_FILE = "degrade_options.json"


def output_seed(seed: int, source: str, copy: int) -> int:
    """Per-output seed from the run seed, the source's relative path and the copy index."""
    h = hashlib.sha256(f"{int(seed)}:{source}:{int(copy)}".encode("utf-8")).digest()
    return int.from_bytes(h[:8], "little") % (2 ** 63 - 1)


def plan_outputs(sources: List[str], copies: int) -> List[Tuple[str, int, str]]:
    """``(source, copy, output relative path)`` for every job (see the module docstring)."""
    stems = image_io.output_stems(sources)
    jobs = []
    for rel in sources:
        base = stems[rel]
        for k in range(copies):
            name = f"{base}_{k}.png" if copies > 1 else f"{base}.png"
            jobs.append((rel, k, name))
    return jobs


def degrade_folder(input_path: str, outdir: str, pipeline: Any = "paper", seed: int = 0, copies: int = 1,
                   resolution: Optional[int] = None, mode: Optional[str] = None, progress: bool = True,
                   dry_run: bool = False, log=None) -> Dict[str, Any]:
    """Degrade every image under ``input_path`` into ``outdir``. ``pipeline``: preset name, dict
    or JSON path. ``resolution`` None: each image's min(H, W) sets the relative ranges (``mode``
    None: relative below 256). Returns counts: written, skipped (already there), failed."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if copies < 1:
        raise UserError("--copies must be at least 1")
    spec = load_spec(pipeline)
    build_pipeline(spec, resolution or 256, mode=mode)   # validate the spec before any work
    root, sources = image_io.list_sources(input_path, outdir)
    if not sources:
        raise UserError(f"no images found under {input_path}")
    jobs = plan_outputs(sources, copies)
    in_paths = {os.path.abspath(os.path.join(root, s)) for s in sources}
    for _, _, out_rel in jobs:
        if os.path.abspath(os.path.join(outdir, out_rel)) in in_paths:
            raise UserError(f"output {out_rel} would overwrite an input; choose another --outdir")
    summary = {"inputs": len(sources), "outputs": len(jobs), "written": 0, "skipped": 0, "failed": 0}
    if dry_run:
        log(f"dry run: {len(sources)} images -> {len(jobs)} outputs under {outdir}")
        return summary
    os.makedirs(outdir, exist_ok=True)
    options = {"input": os.path.abspath(input_path), "outdir": os.path.abspath(outdir), "pipeline": spec,
               "seed": int(seed), "copies": int(copies), "resolution": resolution, "mode": mode}
    with atomic_write(os.path.join(outdir, OPTIONS_FILE), "w") as f:
        json.dump(options, f, indent=2)
    records_path = os.path.join(outdir, RECORDS_FILE)
    have = {r.get("file") for r in read_jsonl(records_path)}
    pipes: Dict[int, Pipeline] = {}
    failed_sources = set()
    bar = None
    if progress:
        bar = tqdm(total=len(jobs), unit="img", file=sys.stderr)
    cache: Tuple[Optional[str], Any] = (None, None)
    for source, k, out_rel in jobs:
        if bar is not None:
            bar.update(1)
        out_path = os.path.join(outdir, out_rel)
        exists = os.path.isfile(out_path)
        if exists and out_rel in have:
            summary["skipped"] += 1
            continue
        if source in failed_sources:
            summary["failed"] += 1
            continue
        if cache[0] != source:
            try:
                cache = (source, image_io.read_image_alpha(os.path.join(root, source)))
            except UserError as exc:
                log(f"skipped {source}: {exc}")
                failed_sources.add(source)
                summary["failed"] += 1
                continue
        rgb, alpha = cache[1]
        res = int(resolution or min(rgb.shape[:2]))
        if res not in pipes:
            pipes[res] = Pipeline(spec, res, mode=mode)
        pipe = pipes[res]
        s = output_seed(seed, source, k)
        record = pipe.sample(1, torch.Generator().manual_seed(s))[0]
        if not exists:
            out = pipe.replay_numpy(rgb, record)
            if alpha is not None:
                out = np.concatenate([out, alpha[:, :, None]], axis=2)
            image_io.write_image(out_path, out)
            summary["written"] += 1
        else:
            summary["skipped"] += 1   # written before its record line: add the line only
        append_jsonl(records_path, {"file": out_rel, "source": source, "copy": k, "seed": s, "record": record})
    if bar is not None:
        bar.close()
    image_io.require_progress(summary["written"] + summary["skipped"], summary["failed"], "the messages above")
    return summary
