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
