"""Preemption and automatic resume: SIGTERM -> snapshot + exit 0, SIGKILL at random points,
partial or damaged snapshots never picked up, ``--resume latest`` continuing in the same run
folder to the same final weights as an uninterrupted run (the 2-rank case: test_training_ddp.py)."""
import contextlib
import io
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from dnnlib.util import read_jsonl
from training import checkpoint as ckpt
from training.launch import launch, list_snapshots, resolve_options

from _training_data import make_blobs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KIMG = 0.096          # 12 steps of 8 images; a tick (and a snapshot) every 2 steps
FINAL = "network-snapshot-000000.096.pt"


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    return make_blobs(tmp_path_factory.mktemp("data"))


def _cli(blobs, **kw):
    cli = dict(data=blobs.data, cfg="smoke", init=blobs.stock, resume="latest", workers=0, device="cpu",
               kimg=KIMG, tick_kimg=0.016, snap=1, seed=0, precision="fp32")  # fp32 pinned: 'auto' follows the CPU (bf16 on AMX); tests must not depend on which CPU runs them
    cli.update(kw)
    return cli


def _argv(cli):
    names = {"tick_kimg": "--tick"}
    argv = [sys.executable, os.path.join(ROOT, "train.py")]
    for key, value in cli.items():
        argv += [names.get(key, "--" + key.replace("_", "-")), str(value)]
    return argv


def _env():
    return dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def reference(blobs, tmp_path_factory):
    """The uninterrupted run (in-process), started the same way (--init, --resume latest)."""
    out = tmp_path_factory.mktemp("ref")
    run_dir = launch(resolve_options(_cli(blobs)), str(out))
    return run_dir


def assert_same(a, b, where="state"):
    """Recursive bit-exact comparison of checkpoint contents (tensors with torch.equal)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), (where, set(a) ^ set(b))
        for k in a:
            if k != "elapsed_sec":                  # wall time, not state
                assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def assert_same_snapshot(path_a, path_b):
    a = torch.load(path_a, map_location="cpu", weights_only=True)
    b = torch.load(path_b, map_location="cpu", weights_only=True)
    assert_same(a["networks"], b["networks"], "networks")
    assert_same(a["training_state"], b["training_state"], "training_state")


def _run_dir(outdir):
    dirs = [d for d in os.listdir(outdir) if d[:5].isdigit()]
    assert len(dirs) == 1, dirs          # resuming never starts a second run folder
    return os.path.join(outdir, dirs[0])


def _assert_logs_like_reference(run_dir, reference):
    ref = read_jsonl(os.path.join(reference, "stats.jsonl"))
    got = read_jsonl(os.path.join(run_dir, "stats.jsonl"))
    assert [s["Progress/kimg"] for s in got] == [s["Progress/kimg"] for s in ref]      # no duplicated ticks
    assert [s["Progress/tick"] for s in got] == [s["Progress/tick"] for s in ref]
    assert not [f for f in os.listdir(run_dir) if f.endswith(".tmp")]


def test_sigterm_snapshots_exits_0_and_resume_latest_matches(blobs, reference, tmp_path, capsys):
    out = tmp_path / "runs"
    # One data-loader worker: the signal goes to the whole process group, as a scheduler sends it.
    argv = _argv(_cli(blobs, outdir=out, workers=1))
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                            cwd=ROOT, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            dirs = list(out.glob("0*/stats.jsonl"))
            if dirs and read_jsonl(str(dirs[0])):
                break
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, stderr[-3000:]
    note = [ln for ln in stdout.splitlines() if ln.startswith("stopped by SIGTERM")]
    assert len(note) == 1 and "--resume latest" in note[0], stdout[-2000:]
    run_dir = _run_dir(out)
    stopped_at = list_snapshots(run_dir)[-1][0]
    assert stopped_at < KIMG * 1000 and stopped_at % 8 == 0              # a whole step, before the end
    state = ckpt.load_network(list_snapshots(run_dir)[-1][1])["training_state"]
    assert state["cur_nimg"] == stopped_at and state["ranks"][0]["pl_mean"].keys() == {"sharp", "degraded"}

    # The same command again (in-process here: train.py's library call, to spare a torch start).
    assert launch(resolve_options(_cli(blobs)), str(out)) == run_dir     # workers do not change the data
    assert f"continuing {run_dir}" in capsys.readouterr().out
    assert _run_dir(out) == run_dir
    assert_same_snapshot(os.path.join(reference, FINAL), os.path.join(run_dir, FINAL))
    _assert_logs_like_reference(run_dir, reference)
    log = open(os.path.join(run_dir, "log.txt")).read()
    assert "stopped by SIGTERM" in log and log.count("training 00000-") == 2     # appended, not replaced
    # A finished run given the same command again does nothing.
    launch(resolve_options(_cli(blobs)), str(out))
    assert "nothing to do" in capsys.readouterr().out


def _sigkill_trial(blobs, reference, out, rng):
    """Kill -9 the process group after a random number of ticks plus a random delay, then
    run the same command to the end: same final state as the reference."""
    argv = _argv(_cli(blobs, outdir=out))
    ticks, delay = rng.randint(0, 5), rng.uniform(0.0, 0.4)
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(), cwd=ROOT,
                            start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            stats = list(out.glob("0*/stats.jsonl"))
            if (ticks == 0 and list(out.glob("0*"))) or (stats and len(read_jsonl(str(stats[0]))) >= ticks > 0):
                break
            time.sleep(0.01)
        time.sleep(delay)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    launch(resolve_options(_cli(blobs)), str(out))          # the same command again, in-process
    run_dir = _run_dir(out)
    assert_same_snapshot(os.path.join(reference, FINAL), os.path.join(run_dir, FINAL))
    _assert_logs_like_reference(run_dir, reference)


def test_sigkill_at_a_random_point_resumes_bit_exact(blobs, reference, tmp_path):
    _sigkill_trial(blobs, reference, tmp_path / "runs", random.Random(20))


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(5))
def test_sigkill_five_seeded_trials(blobs, reference, tmp_path, trial):
    _sigkill_trial(blobs, reference, tmp_path / "runs", random.Random(1000 + trial))


def test_partial_and_damaged_snapshots_are_never_picked_up(blobs, reference, tmp_path):
    """What a kill mid-write leaves (a hidden temporary; atomic_write renames only complete
    files) and a damaged file under a snapshot name (e.g. a copy cut short): the resume takes
    the newest complete snapshot and still ends exactly where the uninterrupted run does."""
    out = tmp_path / "runs"
    run_dir = launch(resolve_options(_cli(blobs, kimg=0.048)), str(out))
    snaps = list_snapshots(run_dir)
    assert [n for n, _ in snaps] == [16, 32, 48]
    data = open(snaps[-1][1], "rb").read()
    with open(snaps[-1][1], "wb") as f:
        f.write(data[: len(data) // 2])                                  # damaged 0.048
    with open(os.path.join(run_dir, ".network-snapshot-000000.064.pt.x1y2.tmp"), "wb") as f:
        f.write(data[: len(data) // 3])                                  # killed while writing 0.064
    with open(os.path.join(run_dir, "stats.jsonl"), "a") as f:
        f.write('{"Progress/tick": 9, "Progr')                           # killed while logging
    assert not ckpt.is_complete_checkpoint(snaps[-1][1]) and ckpt.is_complete_checkpoint(snaps[-2][1])
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert launch(resolve_options(_cli(blobs)), str(out)) == run_dir
    log = buf.getvalue()
    assert "network-snapshot-000000.048.pt is incomplete or damaged; passed over" in log
    assert "continuing" in log and "network-snapshot-000000.032.pt" in log and "resuming at 0.032 kimg" in log
    assert_same_snapshot(os.path.join(reference, FINAL), os.path.join(run_dir, FINAL))
    _assert_logs_like_reference(run_dir, reference)


def test_resume_latest_without_a_run_or_snapshot_starts_fresh(blobs, tmp_path):
    opts = resolve_options(_cli(blobs, kimg=0.016))
    assert opts.run.auto_resume == "latest" and opts.run.resume == blobs.stock      # a fresh start loads --init
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        launch(opts, str(tmp_path), dry_run=True)
    assert "no run" in buf.getvalue() and "00000-blobs16-smoke" in buf.getvalue()
    os.makedirs(tmp_path / "00003-elsewhere")                   # another description: not this run
    run = tmp_path / "00002-blobs16-smoke-gpus1-batch8-q4-kd3-ada0.6"
    os.makedirs(run)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        launch(resolve_options(_cli(blobs, kimg=0.016)), str(tmp_path), dry_run=True)
    assert f"{run} has no complete snapshot yet" in buf.getvalue() and f"would be: {run}" in buf.getvalue()
    from dnnlib.util import BadFileError, UserError
    with pytest.raises(UserError, match="only one of them"):
        resolve_options(_cli(blobs, resume=blobs.stock))
    cut = tmp_path / "cut.pt"
    cut.write_bytes(open(blobs.stock, "rb").read()[:1000])
    with pytest.raises(BadFileError, match="corrupt or truncated"):      # before any run folder is made
        resolve_options(_cli(blobs, init=str(cut)))
