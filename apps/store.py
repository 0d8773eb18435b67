"""The layout the inversion folder jobs share (``invert.py run``, ``edit.py --input``,
``restore.py``; their resumable loop is ``dnnlib.folder_job.FolderJob``): ``is_finished`` (an
inversion folder whose result file, written last, exists), ``INVERSIONS_DIR`` / ``COMPARE_DIR`` /
``FACES_DIR`` (sub-folders of an output folder).
"""
from __future__ import annotations

import os
from typing import Optional

from inversion.api import RESULT_FILES

INVERSIONS_DIR = "inversions"    # restore --keep-inversions, edit --input: invert.py run layout
COMPARE_DIR = "compare"          # restore --compare: input | restored (| ground truth)
FACES_DIR = "faces"              # whole photos: aligned input | result, one tile per face


def is_finished(folder: Optional[str]) -> bool:
    """Whether ``folder`` holds a finished inversion (``save_inversion`` writes its result file last)."""
    return bool(folder) and os.path.isfile(os.path.join(folder, RESULT_FILES["result"]))
