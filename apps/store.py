"""The resumable per-image folder loop under ``invert.py run``, ``edit.py --input`` and
``restore.py``: find the inputs, skip the finished ones, read them a chunk at a time (an
unreadable file is reported, gets an ``error`` line and is tried again by the next run), hand
each chunk to one batched inversion, and let the caller write each image and its JSONL line as
soon as it is finished; a job that could process no input at all ends with a ``UserError``
(``dnnlib.image_io.require_progress``).

It also names the layout those jobs share: ``is_finished`` (an inversion folder whose result
file, written last, exists), ``INVERSIONS_DIR`` / ``COMPARE_DIR`` / ``FACES_DIR`` (sub-folders of
an output folder).
"""
from __future__ import annotations

import os
import sys
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, TypeVar

import numpy as np
from tqdm import tqdm

from dnnlib.image_io import list_sources, read_image_alpha, require_progress
from dnnlib.util import UserError, append_jsonl

from inversion.api import RESULT_FILES

INVERSIONS_DIR = "inversions"    # restore --keep-inversions, edit --input: invert.py run layout
COMPARE_DIR = "compare"          # restore --compare: input | restored (| ground truth)
FACES_DIR = "faces"              # whole photos: aligned input | result, one tile per face

T = TypeVar("T")


def is_finished(folder: Optional[str]) -> bool:
    """Whether ``folder`` holds a finished inversion (``save_inversion`` writes its result file last)."""
    return bool(folder) and os.path.isfile(os.path.join(folder, RESULT_FILES["result"]))


def default_log(msg: str) -> None:
    print(msg, file=sys.stderr)


class FolderRun:
    """One pass of a folder job: ``sources`` (relative paths under ``root``), the records file,
    the failure count and the progress bar (one tick per input).

        run = FolderRun(input_path, outdir, "results.jsonl", "invert")
        run.start(skipped=len(run.sources) - len(todo))
        for chunk in run.chunks(todo, batch, source_of, error_record):   # [(entry, rgb, alpha)]
            ...                                   # invert, write each result, run.tick()
        run.finish(done)                          # UserError when no input could be processed
    """

    def __init__(self, input_path: str, outdir: str, records_file: str, desc: str, progress: bool = True,
                 log: Optional[Callable[[str], None]] = None):
        self.root, self.sources = list_sources(input_path, outdir)
        self.outdir = outdir
        self.records = os.path.join(outdir, records_file)
        self.desc, self.progress = desc, progress
        self.log = log or default_log
        self.failed = 0
        self.bar: Optional[tqdm] = None

    def start(self, skipped: int) -> None:
        """Create the output folder; show progress over every input, ``skipped`` of them finished
        by an earlier run."""
        os.makedirs(self.outdir, exist_ok=True)
        self.bar = tqdm(total=len(self.sources), initial=skipped, desc=self.desc, unit="img", file=sys.stderr,
                        disable=not self.progress)

    def tick(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def chunks(self, todo: Sequence[T], batch: int, source_of: Callable[[T], str],
               error_record: Callable[[T, str], dict]) -> Iterator[List[Tuple[T, np.ndarray, Optional[np.ndarray]]]]:
        """``todo`` read ``batch`` entries at a time: lists of ``(entry, rgb uint8 [H, W, 3], alpha
        uint8 [H, W] or None)``. An unreadable input is logged, recorded (``error_record(entry,
        reason)``), counted in ``failed`` and ticked; a chunk of only those is not yielded."""
        for lo in range(0, len(todo), max(1, batch)):
            chunk = []
            for entry in todo[lo:lo + batch]:
                src = source_of(entry)
                try:
                    rgb, alpha = read_image_alpha(os.path.join(self.root, src))
                except UserError as exc:
                    self.log(f"skipped {src}: {exc}")
                    append_jsonl(self.records, error_record(entry, str(exc)))
                    self.failed += 1
                    self.tick()
                    continue
                chunk.append((entry, rgb, alpha))
            if chunk:
                yield chunk

    def finish(self, processed: int) -> None:
        """Close the bar; the folder jobs' exit rule over ``processed`` (now or before) and ``failed``."""
        if self.bar is not None:
            self.bar.close()
        require_progress(processed, self.failed, self.records)
