"""Every folder CLI through the odd-input matrix (tests/_odd_inputs.py): readable files processed
(at their own size where the CLI gives images back), refused ones reported with a reason in the
CLI's JSONL, none fatal to the rest, inputs untouched, reruns resume; exit 0 when something was
processed, 1 when nothing could be; a write that fails (disk full) leaves nothing half-written
under a final name and says what failed; restore --gt works offline with the default metrics."""
import errno
import os

import numpy as np
import pytest
from click.testing import CliRunner

from _applications import save_tiny_checkpoint
from _odd_inputs import READABLE, REFUSED, SIZES, deny_reading, folder_state, make_odd_folder

import calc_metrics  # noqa: E402
import edit  # noqa: E402
import invert  # noqa: E402
import restore  # noqa: E402
from dnnlib.image_io import output_stems, read_image  # noqa: E402
from dnnlib.util import read_jsonl  # noqa: E402

FAST = ["--pti-steps", "1", "--w-steps", "1", "--perceptual", "fallback", "--device", "cpu", "--align", "none",
        "--fidelity", "0"]   # crops; fidelity 0: no note about the random network's fidelity curve
STEMS = output_stems(READABLE)          # same.jpg / same.png keep their extension


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    return make_odd_folder(tmp_path_factory.mktemp("odd") / "in")


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    path = tmp_path_factory.mktemp("net") / "G.pt"
    save_tiny_checkpoint(path)
    return str(path)


def _invoke(cmd, args):
    return CliRunner().invoke(cmd, [str(a) for a in args], catch_exceptions=False)


def _assert_errors_recorded(records, key):
    errors = {os.path.basename(r[key]): r["error"] for r in records if "error" in r}
    assert set(errors) == set(REFUSED), sorted(errors)
    for name, word in REFUSED.items():
        assert word in errors[name], (name, errors[name])


def test_restore_odd_folder(odd, net, tmp_path, monkeypatch):
    deny_reading(monkeypatch)
    before = folder_state(odd)
    out = tmp_path / "out"
    r = _invoke(restore.main, ["--network", net, "--input", odd, "--outdir", out, "--quiet"] + FAST)
    assert r.exit_code == 0, r.output + r.stderr
    assert f"{len(READABLE)} restored" in r.output and f"{len(REFUSED)} unreadable" in r.output
    for rel in READABLE:
        img = read_image(str(out / (STEMS[rel] + ".png")))
        assert img.shape[:2] == SIZES.get(rel, (20, 20)), rel          # back at the input's own size
    recs = read_jsonl(str(out / "restore.jsonl"))
    _assert_errors_recorded(recs, "source")
    assert folder_state(odd) == before                                  # inputs never modified
    mtimes = {rel: os.stat(out / (STEMS[rel] + ".png")).st_mtime_ns for rel in READABLE}
    r = _invoke(restore.main, ["--network", net, "--input", odd, "--outdir", out, "--quiet"] + FAST)
    assert r.exit_code == 0 and f"0 restored (0 from --inversions), {len(READABLE)} already there" in r.output
    assert mtimes == {rel: os.stat(out / (STEMS[rel] + ".png")).st_mtime_ns for rel in READABLE}


def test_invert_odd_folder(odd, net, tmp_path, monkeypatch):
    deny_reading(monkeypatch)
    before = folder_state(odd)
    out = tmp_path / "inv"
    args = ["run", "--network", net, "--input", odd, "--outdir", out, "--w-steps", 1, "--pti-steps", 0,
            "--perceptual", "fallback", "--device", "cpu", "--align", "none"]     # inputs taken as crops
    r = _invoke(invert.main, args)
    assert r.exit_code == 0, r.output
    assert f"inverted {len(READABLE)}, skipped 0 (done before), failed {len(REFUSED)}" in r.output
    for rel in READABLE:
        assert (out / STEMS[rel] / "result.json").is_file(), rel
    assert (out / "same.jpg").is_dir() and (out / "same.png").is_dir()         # colliding names kept apart
    _assert_errors_recorded(read_jsonl(str(out / "results.jsonl")), "name")
    assert folder_state(odd) == before
    r = _invoke(invert.main, args)
    assert f"inverted 0, skipped {len(READABLE)} (done before), failed {len(REFUSED)}" in r.output


def test_edit_from_odd_folder(odd, net, tmp_path, monkeypatch):
    deny_reading(monkeypatch)
    before = folder_state(odd)
    out = tmp_path / "edit"
    args = ["--network", net, "--input", odd, "--outdir", out, "--sefa", 0, "--strengths", "0,1",
            "--pti-steps", 0, "--w-steps", 1, "--device", "cpu", "--quiet", "--align", "none"]
    r = _invoke(edit.cli, args)
    assert r.exit_code == 0, r.output
    assert f"{len(READABLE)} edited" in r.output
    names = {rec["name"] for rec in read_jsonl(str(out / "edit.jsonl"))}
    assert names == set(STEMS.values())
    _assert_errors_recorded(read_jsonl(str(out / "inversions" / "results.jsonl")), "name")
    assert folder_state(odd) == before
    r = _invoke(edit.cli, args)
    assert r.exit_code == 0 and f"0 edited, {len(READABLE)} already there" in r.output


def test_compare_odd_folder(odd, tmp_path, monkeypatch):
    deny_reading(monkeypatch)
    before = folder_state(odd)
    out = tmp_path / "m.json"
    r = _invoke(calc_metrics.main, ["compare", "--pred", odd, "--out", out, "--quiet"])
    assert r.exit_code == 0, r.output
    assert f"{len(REFUSED)} file(s) could not be compared" in r.stderr
    recs = read_jsonl(str(tmp_path / "m.jsonl"))
    assert {rec["file"] for rec in recs if "error" not in rec} == set(READABLE)
    _assert_errors_recorded(recs, "file")
    assert folder_state(odd) == before


def test_degrade_odd_folder(odd, tmp_path, monkeypatch):
    pytest.importorskip("cv2")
    import degrade
    deny_reading(monkeypatch)
    before = folder_state(odd)
    r = _invoke(degrade.main, ["--input", odd, "--outdir", tmp_path / "d", "--quiet"])
    assert r.exit_code == 0, r.output
    assert f"{len(READABLE)} written, 0 already there, {len(REFUSED)} unreadable" in r.output
    for name in REFUSED:
        assert f"skipped {name}" in r.output
    assert folder_state(odd) == before


def test_nothing_readable_exits_1_naming_the_records(net, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_text("no")
    r = CliRunner().invoke(restore.main, ["--network", net, "--input", str(bad), "--outdir", str(tmp_path / "o"),
                                          "--quiet"] + FAST)
    assert r.exit_code == 1 and "none of the 1 input(s) could be processed" in r.stderr
    assert "restore.jsonl" in r.stderr and "Traceback" not in r.stderr


def test_restore_gt_offline_default_metrics_skip_lpips(net, tmp_path, monkeypatch):
    """No LPIPS weights anywhere: the default metric list runs PSNR/SSIM/NIQE with one note; asking
    for LPIPS is a clear error naming the file."""
    import torch
    from dnnlib.image_io import write_image
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty-hub"))
    rng = np.random.RandomState(0)
    for sub in ("in", "gt"):
        (tmp_path / sub).mkdir()
    for i in range(2):
        img = rng.randint(0, 256, (24, 24, 3)).astype(np.uint8)
        write_image(str(tmp_path / "gt" / f"{i}.png"), img)
        write_image(str(tmp_path / "in" / f"{i}.png"), img // 2)
    args = ["--network", net, "--input", tmp_path / "in", "--outdir", tmp_path / "o", "--gt", tmp_path / "gt",
            "--quiet"] + FAST
    r = _invoke(restore.main, args)
    assert r.exit_code == 0, r.output + r.stderr
    assert r.stderr.count("note: lpips skipped") == 1 and "alexnet-owt-7be5be79.pth" in r.stderr
    import json
    summary = json.load(open(tmp_path / "o" / "restore-summary.json"))
    assert set(summary["restored"]) == {"psnr", "ssim", "niqe"} and summary["restored"]["psnr"]["n"] == 2
    r = CliRunner().invoke(restore.main, [str(a) for a in args[:-len(FAST)]] + ["--outdir", str(tmp_path / "o2"),
                                                                                 "--metrics", "psnr,lpips"] + FAST)
    assert r.exit_code == 1 and "alexnet-owt-7be5be79.pth" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o2").exists()


def _fail_fsync_after(monkeypatch, n_ok):
    """Writes through atomic_write succeed ``n_ok`` times, then the disk is full."""
    from dnnlib import util
    calls = {"n": 0}
    real = os.fsync

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] > n_ok:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)
    monkeypatch.setattr(util.os, "fsync", fsync)


def _leftovers(root):
    return [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(".tmp")]


def test_full_disk_leaves_no_half_written_output(net, tmp_path, monkeypatch):
    from dnnlib.image_io import write_image
    rng = np.random.RandomState(0)
    for name in ("a.png", "b.png"):
        write_image(str(tmp_path / "in" / name), rng.randint(0, 256, (20, 20, 3)).astype(np.uint8))
    _fail_fsync_after(monkeypatch, 2)            # restore_options.json and a.png fit; b.png does not
    out = tmp_path / "o"
    r = CliRunner().invoke(restore.main, ["--network", net, "--input", str(tmp_path / "in"), "--outdir", str(out),
                                          "--quiet", "--batch", "1"] + FAST)
    assert r.exit_code == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: cannot write ") and "b.png: No space left on device" in r.stderr
    assert sorted(os.listdir(out)) == ["a.png", "restore.jsonl", "restore_options.json"]   # no b.png, no temp
    assert not _leftovers(out)
    monkeypatch.undo()                                                   # space again: the rerun finishes
    r = CliRunner().invoke(restore.main, ["--network", net, "--input", str(tmp_path / "in"), "--outdir", str(out),
                                          "--quiet"] + FAST)
    assert r.exit_code == 0 and "1 restored" in r.output and "1 already there" in r.output


def test_full_disk_during_a_snapshot_keeps_the_last_one(tmp_path, monkeypatch):
    from _training_data import make_blobs
    from dnnlib.util import UserError
    from training.checkpoint import is_complete_checkpoint
    from training.launch import latest_snapshot, resolve_options
    from training.training_loop import training_loop
    blobs = make_blobs(tmp_path / "data")
    opts = resolve_options(dict(data=blobs.data, cfg="smoke", resume=blobs.stock, workers=0, device="cpu",
                                kimg=0.032, tick_kimg=0.016, snap=1))
    import training.training_loop as tl
    real_snapshot = tl.Trainer.snapshot

    def snapshot(self, outputs=True):
        if self.cur_nimg > 16:
            _fail_fsync_after(monkeypatch, 0)
        return real_snapshot(self, outputs)
    monkeypatch.setattr(tl.Trainer, "snapshot", snapshot)
    run = tmp_path / "run"
    with pytest.raises(UserError, match=r"cannot write .*network-snapshot-000000\.032\.pt: No space left"):
        training_loop(str(run), opts)
    assert latest_snapshot(str(run)).endswith("network-snapshot-000000.016.pt")
    assert is_complete_checkpoint(str(run / "network-snapshot-000000.016.pt")) and not _leftovers(run)


def test_jsonl_after_a_writer_killed_mid_line(tmp_path):
    from dnnlib.util import append_jsonl, rewrite_jsonl
    path = tmp_path / "r.jsonl"
    append_jsonl(str(path), {"file": "a"})
    with open(path, "a") as f:
        f.write('{"file": "b", "psn')                  # killed mid-line
    append_jsonl(str(path), {"file": "c"})
    assert [r["file"] for r in read_jsonl(str(path))] == ["a", "c"]
    assert rewrite_jsonl(str(path), lambda r: r["file"] != "a") == 2      # 'a' and the cut line
    assert path.read_text() == '{"file": "c"}\n'
