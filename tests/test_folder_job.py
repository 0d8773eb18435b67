"""dnnlib.folder_job: the resumable folder job under degrade.py, calc_metrics.py compare,
invert.py run, restore.py and edit.py --input (resume, overwrite check, options file, chunks with
unreadable files recorded, the exit rule)."""
import json

import numpy as np
import pytest

from dnnlib.folder_job import FolderJob, changed_options, require_progress
from dnnlib.image_io import write_image
from dnnlib.util import UserError, append_jsonl, read_jsonl


def _folder(tmp_path, good=3, bad=1):
    inp = tmp_path / "in"
    inp.mkdir()
    for i in range(good):
        write_image(str(inp / f"g{i}.png"), np.full((4, 4, 3), i, np.uint8))
    for i in range(bad):
        (inp / f"bad{i}.png").write_bytes(b"not an image")
    return inp


def _job(inp, out, **kw):
    return FolderJob.of_input(str(inp), str(out), "records.jsonl", "test", progress=False, **kw)


def test_chunks_read_in_batches_and_record_unreadable_files(tmp_path):
    inp, out = _folder(tmp_path), tmp_path / "out"
    logged = []
    job = _job(inp, out, log=logged.append)
    assert job.sources == ["bad0.png", "g0.png", "g1.png", "g2.png"]
    job.start()
    chunks = list(job.chunks(job.sources, 2, source_of=lambda s: s,
                             error_record=lambda s, why: {"file": s, "error": why}))
    assert [[s for s, _ in c] for c in chunks] == [["g0.png"], ["g1.png", "g2.png"]]
    assert all(rgb.shape == (4, 4, 3) and alpha is None for c in chunks for _, (rgb, alpha) in c)
    assert [e for e, _ in job.failed] == ["bad0.png"] and len(logged) == 1 and logged[0].startswith("skipped bad0.png")
    recs = read_jsonl(str(out / "records.jsonl"))
    assert len(recs) == 1 and recs[0]["file"] == "bad0.png" and recs[0]["error"] == job.failed[0][1]
    job.finish(processed=3)                                   # something processed: no error


def test_a_reader_of_the_callers_own_records_its_refusals_too(tmp_path):
    """compare reads a pair per entry: its own reader's UserError is a failure like a bad file."""
    inp = _folder(tmp_path, good=2, bad=0)

    def read(name):
        if name == "g1.png":
            raise UserError("size differs from the ground truth")
        return name.upper()

    job = FolderJob(str(inp), ["g0.png", "g1.png"], None, progress=False, log=lambda m: None)
    job.start()
    assert [c for c in job.chunks(job.sources, 1, lambda s: s, read=read)] == [[("g0.png", "G0.PNG")]]
    assert job.failed == [("g1.png", "size differs from the ground truth")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]            # no folder, no records of its own


def test_finish_fails_when_no_input_could_be_processed(tmp_path):
    inp, out = _folder(tmp_path, good=0, bad=2), tmp_path / "out"
    job = _job(inp, out, log=lambda m: None)
    job.start()
    assert list(job.chunks(job.sources, 8, lambda s: s, lambda s, why: {"file": s, "error": why})) == []
    with pytest.raises(UserError, match=r"none of the 2 input\(s\) could be processed; the reasons are in .*records.jsonl"):
        job.finish(processed=0)


def test_the_exit_rule():
    require_progress(1, 5, "x")                              # something processed: fine
    require_progress(0, 0, "x")                              # nothing to do: fine
    require_progress(3, 0, "x")
    with pytest.raises(UserError, match="the reasons are in the messages above"):
        require_progress(0, 1, "the messages above")


def test_output_folder_is_made_only_when_the_run_starts(tmp_path):
    inp, out = _folder(tmp_path), tmp_path / "out"
    job = _job(inp, out)
    assert not out.exists()                                   # a refused run leaves nothing behind
    job.start()
    assert out.is_dir()


def test_resume_skips_what_an_earlier_run_recorded_and_wrote(tmp_path):
    inp, out = _folder(tmp_path, good=4, bad=0), tmp_path / "out"
    job = _job(inp, out)
    out.mkdir()
    write_image(str(out / "g0.png"), np.zeros((4, 4, 3), np.uint8))
    write_image(str(out / "g2.png"), np.zeros((4, 4, 3), np.uint8))
    append_jsonl(job.records, {"file": "g0.png", "psnr": 1.0})        # recorded and written: finished
    append_jsonl(job.records, {"file": "g1.png", "psnr": 1.0})        # recorded, its file gone: again
    append_jsonl(job.records, {"file": "g2.png", "error": "unreadable"})   # failed before: again
    append_jsonl(job.records, {"file": "g0.png", "psnr": 2.0})        # a rerun's line replaces the old one
    assert job.finished() == {"g0.png"}
    assert job.latest_records()["g0.png"]["psnr"] == 2.0 and "g2.png" not in job.latest_records()
    done = job.finished()
    todo = job.pending(job.sources, done=lambda s: s in done)
    assert todo == ["g1.png", "g2.png", "g3.png"] and (job.total, job.skipped) == (4, 1)


def test_an_output_may_never_overwrite_an_input(tmp_path):
    inp = _folder(tmp_path, good=1, bad=0)
    job = FolderJob.of_input(str(inp / "g0.png"), str(inp), "records.jsonl", progress=False)   # a file, its folder
    with pytest.raises(UserError, match="output g0.png would overwrite an input; choose another --outdir"):
        job.refuse_overwrite(["g0.png"])
    job.refuse_overwrite(["g0_restored.png"])


def test_options_file_written_and_compared_with_the_earlier_runs(tmp_path):
    inp, out = _folder(tmp_path), tmp_path / "out"
    notes = []
    job = _job(inp, out, log=notes.append, options_file="job_options.json")
    job.start({"seed": 1, "copies": [1, 2]})
    assert json.loads((out / "job_options.json").read_text()) == {"seed": 1, "copies": [1, 2]}
    assert (out / "job_options.json").read_text().endswith("}\n") and notes == []
    _job(inp, out, log=notes.append, options_file="job_options.json").start({"seed": 1, "copies": [1, 2]})
    assert notes == []                                        # the same options again: nothing to say
    _job(inp, out, log=notes.append, options_file="job_options.json").start({"seed": 2, "copies": [1, 2]})
    assert len(notes) == 1 and "differs in seed;" in notes[0] and "job_options.json" in notes[0]
    assert json.loads((out / "job_options.json").read_text())["seed"] == 2      # this run's options recorded


def test_changed_options():
    assert changed_options(None, {"a": 1}) == []
    assert changed_options({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 4}) == ["b", "c"]
    assert changed_options({"a": 1, "gone": 0}, {"a": 1}) == ["gone"]
