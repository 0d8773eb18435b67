"""From command-line options to running processes: the resolved options, run directory,
``training_options.json``, and one process per GPU (torchrun, or spawned by ``--gpus N``).

The options are a ``training.options.TrainingOptions`` (typed groups, defaults and value rules
there); presets are data (``configs/<name>.json``) and fill only the options the user left unset.
``resolve_options`` adds what needs the dataset, the hardware and the files.

Automatic resume (``--resume latest``, alias ``auto``; or ``--resume RUN_DIR``): the run folder is
the newest ``NNNNN-<description>`` under ``--outdir`` whose description matches the options (the
same command names the same folder), and training continues from its newest *complete* snapshot
(``training.checkpoint.is_complete_checkpoint``) in that folder. Without a folder or a snapshot
the run starts fresh, from ``--init FILE`` when given. Rerunning the same command after a
preemption therefore continues the run; rerunning a finished run does nothing.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
from typing import Any, List, Mapping, Optional, Tuple

import torch.distributed as tdist
import torch.multiprocessing as mp

import dnnlib
from dnnlib.util import STOP_SIGNALS, UserError
from torch_utils import distributed as dist
from torch_utils.misc import resolve_device, resolve_precision

from .checkpoint import check_network_file, is_complete_checkpoint
from .dataset import ImageDataset
from .options import DEFAULT_PRESET, DataOptions, TrainingOptions, auto_values, default_flat, load_preset
from .training_loop import training_loop

RESUME_LATEST = ("latest", "auto")      # --resume values that continue this run's newest snapshot
SNAPSHOT_RE = re.compile(r"^network-snapshot-(\d+(?:\.\d+)?)\.pt$")


def resolve_options(cli: Mapping[str, Any], metric_runner=None) -> TrainingOptions:
    """CLI values (flat names, None = unset) + preset + defaults -> checked ``TrainingOptions``.

    The preset fills what the command line leaves unset; the ``auto`` preset computes batch,
    widths, lr, gamma and EMA from the dataset's resolution (``training.options.auto_values``).
    Here is what needs more than the values: the dataset (its resolution, name and size are
    recorded), the device and precision ``auto`` stands for, ``--resume latest``, the network
    files (a truncated file fails before a run folder exists), the teacher requirement and the
    metric names. Each group checks its own values when it is built (``training.options``).

    ``metric_runner``: what checks and runs ``--metrics`` (``metrics.training_metrics.TRAINING_METRICS``,
    handed over by train.py: training never imports metrics); None = no metrics can be asked for."""
    preset = load_preset(cli.get("cfg") or DEFAULT_PRESET)
    values = {**default_flat(), **preset.values}
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and cli.get("gpus") is None:
        values["gpus"] = int(os.environ["WORLD_SIZE"])     # under torchrun: one process per GPU, all nodes
    values.update({k: v for k, v in cli.items() if v is not None and not (k == "metrics" and v == [])})
    values["cfg"] = cli.get("cfg") or preset.name
    metrics = values.pop("metrics")                        # names checked by the runner, last
    data = DataOptions.from_flat(values)
    dataset = ImageDataset(data.path, use_labels=data.cond, max_size=data.max_size, xflip=False)
    values.update(resolution=dataset.resolution, dataset_name=dataset.name, dataset_size=len(dataset))
    if preset.auto:
        for key, value in auto_values(dataset.resolution, values["gpus"]).items():
            if cli.get(key) is None:
                values[key] = value
    values["device"] = str(resolve_device(values["device"]))
    # Precision from the hardware (torch_utils.misc.resolve_precision, the one rule): the choice
    # and the CPU capability behind it are recorded in training_options.json.
    choice = resolve_precision(values["precision"], values["device"])
    values.update(precision=choice["precision"], precision_info=choice)
    if values["train_blocks"] == "degrad" and cli.get("kd_weight") is None:
        values["kd_weight"] = 0.0     # the sharp path is frozen: q = 0 is the teacher exactly (docs/training.md)
    opts = _resolve_resume(TrainingOptions.from_flat(values))
    for flag, path in (("resume", opts.run.resume), ("init", opts.run.init), ("teacher", opts.run.teacher)):
        if path and not dnnlib.util.is_url(path):
            if not os.path.isfile(path):
                raise UserError(f"--{flag} file not found: {path}")
            check_network_file(path)          # a truncated file fails before a run folder exists
    run = opts.run
    if opts.generator.q_dim > 0 and opts.loss.kd_weight > 0 and not (run.resume or run.teacher or run.auto_resume):
        raise UserError("QC training needs a teacher: pass --resume with a stock StyleGAN2 file or "
                        "--teacher FILE (or --q-dim 0 to train a plain StyleGAN2)")
    if metrics:
        if metric_runner is None:
            raise UserError("--metrics: this entry point computes no metrics (train.py does)")
        view = dnnlib.EasyDict(opts.to_flat(), metrics=metrics)   # the runner's interface: flat names
        metric_runner.check(view)      # names; a missing Inception file fails now, not at a snapshot
        opts = opts.replace(metrics=view.metrics)
    return opts


def _resolve_resume(opts: TrainingOptions) -> TrainingOptions:
    """``--resume latest|auto|RUN_DIR`` -> ``auto_resume`` (the mode or the folder) and
    ``resume = --init`` (what a fresh start loads); ``--init`` alone acts as ``--resume FILE``."""
    value, init = opts.run.resume, opts.run.init
    auto_resume = None
    if value in RESUME_LATEST:
        auto_resume = "latest"
    elif value and os.path.isdir(value):
        auto_resume = os.path.abspath(value)
    elif value and init:
        raise UserError("--init is the start of a fresh run; with --resume FILE give only one of them")
    resume = init if (auto_resume or not value) else value
    return opts.replace(resume=resume, auto_resume=auto_resume)


def list_snapshots(run_dir: str) -> List[Tuple[int, str]]:
    """``(images seen, path)`` of the ``network-snapshot-<kimg>.pt`` files in ``run_dir``, oldest first."""
    out = []
    for name in os.listdir(run_dir) if os.path.isdir(run_dir) else []:
        m = SNAPSHOT_RE.match(name)
        if m:
            out.append((int(round(float(m.group(1)) * 1000)), os.path.join(run_dir, name)))
    return sorted(out)


def latest_snapshot(run_dir: str, log=print) -> Optional[str]:
    """The newest complete snapshot of ``run_dir`` (None when there is none); damaged or cut-short
    files under a snapshot name are passed over with a note (``atomic_write`` never leaves them,
    but a copy or a full disk elsewhere can)."""
    for _nimg, path in reversed(list_snapshots(run_dir)):
        if is_complete_checkpoint(path):
            return path
        log(f"note: {os.path.basename(path)} is incomplete or damaged; passed over")
    return None


def find_run_dir(outdir: str, desc: str) -> Optional[str]:
    """The newest ``NNNNN-<desc>`` folder under ``outdir`` (None when there is none)."""
    best = None
    for d in os.listdir(outdir) if os.path.isdir(outdir) else []:
        m = re.match(r"^(\d+)-(.*)$", d)
        if m and m.group(2) == desc and os.path.isdir(os.path.join(outdir, d)):
            if best is None or int(m.group(1)) > best[0]:
                best = (int(m.group(1)), d)
    return os.path.join(outdir, best[1]) if best else None


def choose_run(outdir: str, opts: TrainingOptions) -> Tuple[str, Optional[str]]:
    """``(run directory, snapshot to continue or None)`` for these options (module docstring)."""
    desc = run_description(opts)
    auto_resume = opts.run.auto_resume
    if not auto_resume:
        return next_run_dir(outdir, desc), None
    run_dir = auto_resume if auto_resume != "latest" else find_run_dir(outdir, desc)
    if run_dir is None:
        run_dir = next_run_dir(outdir, desc)
        dist.print0(f"--resume latest: no run {desc} under {outdir} yet; starting {os.path.basename(run_dir)}")
        return run_dir, None
    snapshot = latest_snapshot(run_dir, log=dist.print0)
    if snapshot is None:
        dist.print0(f"--resume latest: {run_dir} has no complete snapshot yet; starting it afresh")
    else:
        dist.print0(f"--resume latest: continuing {run_dir} from {os.path.basename(snapshot)}")
    return run_dir, snapshot


def run_description(opts: TrainingOptions) -> str:
    """The run folder's name after ``NNNNN-``: the same options name the same folder (``--resume latest``)."""
    q_dim, kd_weight, aug, compute = opts.generator.q_dim, opts.loss.kd_weight, opts.augment, opts.compute
    desc = f"{opts.data.name}-{opts.run.cfg}-gpus{compute.gpus}-batch{opts.schedule.batch}"
    desc += f"-q{q_dim}" if q_dim else ("-plain-degradedreals" if opts.loss.degraded_reals else "-plain")
    if q_dim:
        desc += f"-kd{kd_weight:g}"
    desc += f"-{aug.aug}" + (f"{aug.target:g}" if aug.aug == "ada" else "")
    if compute.precision != "fp32" and (compute.precision_info or {}).get("requested") != "auto":
        desc += f"-{compute.precision}"       # an explicit choice; 'auto' follows the hardware
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", desc)


def next_run_dir(outdir: str, desc: str) -> str:
    ids = [int(m.group(1)) for m in (re.match(r"^(\d+)-", d) for d in
                                      (os.listdir(outdir) if os.path.isdir(outdir) else [])) if m]
    return os.path.join(outdir, f"{max(ids, default=-1) + 1:05d}-{desc}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(local_rank: int, world: int, port: int, run_dir: str, opts: TrainingOptions,
            metric_runner=None) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(local_rank),
                      LOCAL_RANK=str(local_rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
    run_process(run_dir, opts, metric_runner)


class _Tee:
    """Write to a stream and to the run's ``log.txt`` (appended: a resumed run continues it)."""

    def __init__(self, stream, log_file):
        self.stream, self.log_file = stream, log_file

    def write(self, text):
        self.stream.write(text)
        try:
            self.log_file.write(text)
            self.log_file.flush()
        except (OSError, ValueError):      # a full disk must not stop training over its log
            pass
        return len(text)

    def flush(self):
        self.stream.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)


def run_process(run_dir: str, opts: TrainingOptions, metric_runner=None) -> dict:
    """One rank: join the process group (if any), train, leave the group. Rank 0 copies its
    output into ``run_dir/log.txt``."""
    dist.init_from_env(opts.compute.device)
    saved = sys.stdout, sys.stderr
    log_file = None
    try:
        if dist.get_rank() == 0:
            log_file = open(os.path.join(run_dir, "log.txt"), "a", encoding="utf-8")
            sys.stdout, sys.stderr = _Tee(saved[0], log_file), _Tee(saved[1], log_file)
        return training_loop(run_dir, opts, metric_runner=metric_runner)
    finally:
        sys.stdout, sys.stderr = saved
        if log_file is not None:
            log_file.close()
        dist.destroy()


def launch(opts: TrainingOptions, outdir: str, dry_run: bool = False, metric_runner=None) -> Optional[str]:
    """Create (or, with ``--resume latest``, find) the run directory (rank 0), write
    ``training_options.json`` (the flat form, ``TrainingOptions.to_flat``) and train. Under
    torchrun (WORLD_SIZE set) this process is one rank; otherwise ``--gpus N > 1`` spawns N local
    processes. ``metric_runner`` computes ``opts.run.metrics`` at snapshots (see
    ``resolve_options``). ``--dry-run`` prints the options by group. Returns the run directory."""
    under_torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1
    world = int(os.environ["WORLD_SIZE"]) if under_torchrun else opts.compute.gpus
    if under_torchrun and world != opts.compute.gpus:
        opts = opts.replace(gpus=world)     # torchrun decides the process count
    run_dir, snapshot = _agree_run_dir(outdir, under_torchrun, opts)
    if snapshot is not None:
        opts = opts.replace(resume=snapshot)
    if dry_run:
        dist.print0(json.dumps(opts.to_dict(), indent=2))
        dist.print0(f"run directory would be: {run_dir}" + (f" (continuing {os.path.basename(snapshot)})"
                                                             if snapshot else ""))
        dist.destroy()
        return None
    if dist.get_rank() == 0:
        os.makedirs(run_dir, exist_ok=True)
        with dnnlib.util.atomic_write(os.path.join(run_dir, "training_options.json"), "w") as f:
            json.dump(opts.to_flat(), f, indent=2)
    if under_torchrun or world == 1:
        run_process(run_dir, opts, metric_runner)
    else:
        _spawn(world, run_dir, opts, metric_runner)
    return run_dir


def _spawn(world: int, run_dir: str, opts: TrainingOptions, metric_runner=None) -> None:
    """``--gpus N`` on one machine: N processes; SIGTERM/SIGINT/SIGUSR1 to this parent are passed
    on to them, so they stop together after a snapshot (see dnnlib.util.StopSignals)."""
    ctx = mp.spawn(_worker, args=(world, _free_port(), run_dir, opts, metric_runner), nprocs=world, join=False)

    def forward(signum, _frame):
        for p in ctx.processes:
            if p.is_alive():
                os.kill(p.pid, signum)
    previous = {}
    for sig in (getattr(signal, name) for name in STOP_SIGNALS if hasattr(signal, name)):
        try:
            previous[sig] = signal.signal(sig, forward)
        except ValueError:        # not the main thread
            pass
    try:
        while not ctx.join():
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _agree_run_dir(outdir: str, under_torchrun: bool, opts: TrainingOptions) -> Tuple[str, Optional[str]]:
    """Rank 0 picks the run directory (and the snapshot to continue); under torchrun both are
    broadcast to every rank."""
    if under_torchrun:
        dist.init_from_env(opts.compute.device)
    holder = list(choose_run(outdir, opts)) if dist.get_rank() == 0 else [None, None]
    if under_torchrun:
        tdist.broadcast_object_list(holder, src=0)
    return holder[0], holder[1]
