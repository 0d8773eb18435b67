"""The layout the inversion folder jobs share (``invert.py run``, ``edit.py --input``,
``restore.py``; their resumable loop is ``dnnlib.folder_job.FolderJob``): ``is_finished`` (an
inversion folder whose result file, written last, exists), ``INVERSIONS_DIR`` / ``COMPARE_DIR`` /
``FACES_DIR`` (sub-folders of an output folder), and ``reuse_or_invert`` (an earlier run's
finished inversion, else a new one: restore's aligned crops and the faces of whole photos).
"""
from __future__ import annotations

import os
from typing import Callable, Optional, Sequence

import numpy as np

from inversion.api import RESULT_FILES, InversionResult, load_inversion

INVERSIONS_DIR = "inversions"    # restore --keep-inversions, edit --input: invert.py run layout
COMPARE_DIR = "compare"          # restore --compare: input | restored (| ground truth)
FACES_DIR = "faces"              # whole photos: aligned input | result, one tile per face


def is_finished(folder: Optional[str]) -> bool:
    """Whether ``folder`` holds a finished inversion (``save_inversion`` writes its result file last)."""
    return bool(folder) and os.path.isfile(os.path.join(folder, RESULT_FILES["result"]))


def reuse_or_invert(names: Sequence[str], images: Sequence[np.ndarray], inversions: Optional[str],
                    invert: Callable[[list, list, Callable], None],
                    on_result: Callable[[int, InversionResult, bool], None]) -> None:
    """The inversion of each named image (uint8 [H, W, C]): the finished ``inversions/<name>/`` of
    an ``invert.py run`` folder when there is one (``on_result(i, result, True)`` at once, in
    order), else a new one: the others go to one call ``invert(images, names, on_result)``, and
    ``on_result(i, result, False)`` runs as each of them is finished."""
    fresh = []
    for i, name in enumerate(names):
        folder = os.path.join(inversions, name) if inversions else None
        if is_finished(folder):
            on_result(i, load_inversion(folder), True)
        else:
            fresh.append(i)
    if fresh:
        invert([images[i] for i in fresh], [names[i] for i in fresh],
               lambda k, res: on_result(fresh[k], res, False))
