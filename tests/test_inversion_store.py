"""apps.store: the resumable per-image folder loop shared by invert.py run, edit.py --input
and restore.py (chunks, unreadable files, the exit rule) and the finished-inversion marker."""
import json
import os

import numpy as np
import pytest

from dnnlib.image_io import write_image
from dnnlib.util import UserError, read_jsonl
from inversion.api import RESULT_FILES
from apps.store import FolderRun, is_finished


def _folder(tmp_path, good=3, bad=1):
    inp = tmp_path / "in"
    inp.mkdir()
    for i in range(good):
        write_image(str(inp / f"g{i}.png"), np.full((4, 4, 3), i, np.uint8))
    for i in range(bad):
        (inp / f"bad{i}.png").write_bytes(b"not an image")
    return inp


def test_chunks_read_in_batches_and_record_unreadable_files(tmp_path):
    inp, out = _folder(tmp_path), tmp_path / "out"
    logged = []
    run = FolderRun(str(inp), str(out), "records.jsonl", "test", progress=False, log=logged.append)
    assert run.sources == ["bad0.png", "g0.png", "g1.png", "g2.png"]
    run.start(skipped=0)
    chunks = list(run.chunks(run.sources, 2, source_of=lambda s: s,
                             error_record=lambda s, why: {"file": s, "error": why}))
    assert [[s for s, _, _ in c] for c in chunks] == [["g0.png"], ["g1.png", "g2.png"]]
    assert all(rgb.shape == (4, 4, 3) and alpha is None for c in chunks for _, rgb, alpha in c)
    assert run.failed == 1 and len(logged) == 1 and logged[0].startswith("skipped bad0.png")
    recs = read_jsonl(str(out / "records.jsonl"))
    assert len(recs) == 1 and recs[0]["file"] == "bad0.png" and recs[0]["error"]
    run.finish(processed=3)                                   # something processed: no error


def test_finish_fails_when_no_input_could_be_processed(tmp_path):
    inp, out = _folder(tmp_path, good=0, bad=2), tmp_path / "out"
    run = FolderRun(str(inp), str(out), "records.jsonl", "test", progress=False, log=lambda m: None)
    run.start(skipped=0)
    assert list(run.chunks(run.sources, 8, lambda s: s, lambda s, why: {"file": s, "error": why})) == []
    with pytest.raises(UserError, match="none of the 2 input"):
        run.finish(processed=0)


def test_output_folder_is_made_only_when_the_run_starts(tmp_path):
    inp, out = _folder(tmp_path), tmp_path / "out"
    run = FolderRun(str(inp), str(out), "records.jsonl", "test", progress=False)
    assert not out.exists()                                   # a refused run leaves nothing behind
    run.start(skipped=0)
    assert out.is_dir()


def test_is_finished_means_the_result_file_exists(tmp_path):
    folder = tmp_path / "inv" / "a"
    assert not is_finished(str(folder)) and not is_finished(None)
    folder.mkdir(parents=True)
    (folder / RESULT_FILES["w"]).write_bytes(b"")
    assert not is_finished(str(folder))                       # written first; the result file is last
    (folder / RESULT_FILES["result"]).write_text(json.dumps({"name": "a"}))
    assert is_finished(str(folder)) and os.path.basename(str(folder)) == "a"
