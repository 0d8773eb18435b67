"""apps.store: the finished-inversion marker of the inversion folder jobs (their loop is
dnnlib.folder_job, tests/test_folder_job.py)."""
import json
import os

from inversion.api import RESULT_FILES
from apps.store import is_finished


def test_is_finished_means_the_result_file_exists(tmp_path):
    folder = tmp_path / "inv" / "a"
    assert not is_finished(str(folder)) and not is_finished(None)
    folder.mkdir(parents=True)
    (folder / RESULT_FILES["w"]).write_bytes(b"")
    assert not is_finished(str(folder))                       # written first; the result file is last
    (folder / RESULT_FILES["result"]).write_text(json.dumps({"name": "a"}))
    assert is_finished(str(folder)) and os.path.basename(str(folder)) == "a"


def test_reuse_or_invert_takes_finished_inversions_and_inverts_the_rest_in_one_call(tmp_path):
    """restore's crops and the faces of whole photos: an invert.py run folder's finished
    inversions are reused (at once, in order), the others inverted together."""
    import numpy as np
    import torch
    from apps.store import reuse_or_invert
    from inversion.api import InversionResult, InversionStats, save_inversion
    done = InversionResult(w=torch.ones(2, 3), q=torch.zeros(4), delta=None, stats=InversionStats(psnr=30.0), name="b")
    save_inversion(str(tmp_path / "b"), done)
    calls, got = [], []

    def invert(images, names, on_result):
        calls.append(list(names))
        for k in reversed(range(len(names))):            # finished in any order
            on_result(k, f"new {names[k]} {images[k].shape[0]}")

    images = [np.zeros((s, s, 3), np.uint8) for s in (4, 5, 6)]
    reuse_or_invert(["a", "b", "c"], images, str(tmp_path), invert, lambda i, res, reused: got.append((i, res, reused)))
    assert calls == [["a", "c"]]
    assert got[0][0] == 1 and got[0][2] is True and got[0][1].stats.psnr == 30.0
    assert got[1:] == [(2, "new c 6", False), (0, "new a 4", False)]
    got.clear()
    reuse_or_invert(["a"], images[:1], None, invert, lambda i, res, reused: got.append((i, res, reused)))
    assert got == [(0, "new a 4", False)]                 # no inversions folder: everything inverted
