"""Degrade a folder (or one file) of real images: the library behind ``degrade.py``.

Outputs keep the relative paths and names of the inputs, as lossless PNG (``a/b.jpg`` ->
``OUTDIR/a/b.png``; with ``copies`` > 1, ``a/b_0.png``, ``a/b_1.png``, ...; if two inputs
would share an output name, e.g. ``b.jpg`` and ``b.png``, they keep their extension:
``b.jpg.png``). Each written image gets one line in ``OUTDIR/degradations.jsonl``::

    {"file": "a/b.png", "source": "a/b.jpg", "copy": 0, "seed": 123, "record": {...}}

The seed of an output is derived from (seed, source path, copy), so results do not depend on the
order or on which files were already done: outputs that exist are skipped (resume by running the
same command again). Unreadable files are reported and skipped (when none can be read, the run
fails: ``dnnlib.folder_job``'s exit rule). Alpha is kept: the colour is
degraded and the original alpha channel is written back (RGBA PNG); grayscale inputs come out RGB.
"""
from __future__ import annotations

import hashlib
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from dnnlib import image_io
from dnnlib.folder_job import FolderJob
from dnnlib.util import UserError, append_jsonl

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
    None: relative below 256). The folder loop (resume, options file, unreadable files, the exit
    rule) is ``dnnlib.folder_job.FolderJob``. Returns counts of outputs: written, skipped (already
    there), failed."""
    if copies < 1:
        raise UserError("--copies must be at least 1")
    spec = load_spec(pipeline)
    build_pipeline(spec, resolution or 256, mode=mode)   # validate the spec before any work
    job = FolderJob.of_input(input_path, outdir, RECORDS_FILE, progress=progress, log=log, options_file=OPTIONS_FILE)
    jobs = plan_outputs(job.sources, copies)
    job.refuse_overwrite(out_rel for _, _, out_rel in jobs)
    summary = {"inputs": len(job.sources), "outputs": len(jobs), "written": 0, "skipped": 0, "failed": 0}
    if dry_run:
        job.log(f"dry run: {len(job.sources)} images -> {len(jobs)} outputs under {outdir}")
        return summary
    done = job.finished()
    per_source: Dict[str, List[Tuple[str, int, str]]] = {}
    for entry in jobs:
        per_source.setdefault(entry[0], []).append(entry)
    todo = job.pending([(src, [e for e in outs if e[2] not in done]) for src, outs in per_source.items()],
                       done=lambda entry: not entry[1])
    summary["skipped"] = len(jobs) - sum(len(outs) for _, outs in todo)
    job.start({"input": os.path.abspath(input_path), "outdir": os.path.abspath(outdir), "pipeline": spec,
               "seed": int(seed), "copies": int(copies), "resolution": resolution, "mode": mode})
    pipes: Dict[int, Pipeline] = {}
    for [((source, outputs), (rgb, alpha))] in job.chunks(todo, 1, source_of=lambda entry: entry[0]):
        res = int(resolution or min(rgb.shape[:2]))
        if res not in pipes:
            pipes[res] = Pipeline(spec, res, mode=mode)
        for _, k, out_rel in outputs:
            written = _degrade_one(pipes[res], rgb, alpha, output_seed(seed, source, k), os.path.join(outdir, out_rel),
                                   job.records, {"file": out_rel, "source": source, "copy": k})
            summary["written" if written else "skipped"] += 1
        job.tick()
    summary["failed"] = sum(len(outputs) for (_, outputs), _ in job.failed)
    job.finish(summary["written"] + summary["skipped"], reasons="the messages above")
    return summary


def _degrade_one(pipe: Pipeline, rgb: np.ndarray, alpha: Optional[np.ndarray], seed: int, out_path: str,
                 records: str, fields: Dict[str, Any]) -> bool:
    """Sample the degradation of one output from its seed, write the image unless it is there
    (written before its record line: only the line is added) and append its record line.
    Returns whether the image was written."""
    record = pipe.sample(1, torch.Generator().manual_seed(seed))[0]
    written = not os.path.isfile(out_path)
    if written:
        out = pipe.replay_numpy(rgb, record)
        if alpha is not None:
            out = np.concatenate([out, alpha[:, :, None]], axis=2)
        image_io.write_image(out_path, out)
    append_jsonl(records, {**fields, "seed": seed, "record": record})
    return written
