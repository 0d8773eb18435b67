"""From command-line options to running processes: presets, validation, run directory,
``training_options.json``, and one process per GPU (torchrun, or spawned by ``--gpus N``).

Presets are data (``configs/<name>.json``); a preset fills only the options the user left unset.

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
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

import dnnlib
from dnnlib.util import STOP_SIGNALS, UserError
from torch_utils import distributed as dist
from torch_utils.misc import resolve_device, resolve_precision

from .checkpoint import check_network_file, is_complete_checkpoint
from .dataset import ImageDataset
from .training_loop import training_loop

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
DEGRADATION = "paper"          # the registered degradation mix used by training (Sec. 4)

# Options that are not preset values, with their defaults.
RUN_DEFAULTS = dict(gpus=1, seed=0, workers=2, device="auto", precision="auto", cond=False, mirror=False,
                    max_size=None, resume=None, init=None, teacher=None, metrics=[], aug_p=0.2, batch_gpu=None,
                    degradation=DEGRADATION, inception=None, degraded_reals=False)
RESUME_LATEST = ("latest", "auto")      # --resume values that continue this run's newest snapshot
SNAPSHOT_RE = re.compile(r"^network-snapshot-(\d+(?:\.\d+)?)\.pt$")


def list_configs():
    return sorted(os.path.splitext(f)[0] for f in os.listdir(CONFIG_DIR) if f.endswith(".json"))


def load_config(name: str) -> Dict[str, Any]:
    path = name if name.endswith(".json") and os.path.isfile(name) else os.path.join(CONFIG_DIR, f"{name}.json")
    if not os.path.isfile(path):
        raise UserError(f"unknown config '{name}' (choose from {', '.join(list_configs())}, or a JSON path)")
    with open(path, "r", encoding="utf-8") as f:
        return json.load(f)


def _auto_values(resolution: int, gpus: int) -> Dict[str, Any]:
    """StyleGAN2-ADA's 'auto' config, computed from resolution and GPU count."""
    batch = max(min(gpus * min(4096 // resolution, 32), 64), gpus)
    return dict(batch=batch, mbstd_group=min(batch // gpus, 4),
                channel_base=32768 if resolution >= 512 else 16384,
                lr=0.002 if resolution >= 1024 else 0.0025, gamma=0.0002 * resolution ** 2 / batch,
                ema_kimg=batch * 10 / 32)


def resolve_options(cli: Dict[str, Any], metric_runner=None) -> dnnlib.EasyDict:
    """CLI values (None = unset) + preset + run defaults -> validated options.

    ``metric_runner``: what checks and runs ``--metrics`` (``metrics.training_metrics.TRAINING_METRICS``,
    handed over by train.py: training never imports metrics); None = no metrics can be asked for."""
    cfg_name = cli.get("cfg") or "auto"
    config = load_config(cfg_name)
    opts = dnnlib.EasyDict(RUN_DEFAULTS)
    opts.update({k: v for k, v in config.items() if k not in ("name", "description", "auto")})
    opts.cfg = config.get("name", cfg_name)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and cli.get("gpus") is None:
        opts.gpus = int(os.environ["WORLD_SIZE"])     # under torchrun: one process per GPU, all nodes
    for key, value in cli.items():
        if value is not None and not (key == "metrics" and value == []):
            opts[key] = value
    if not opts.get("data"):
        raise UserError("--data is required")
    dataset = ImageDataset(opts.data, use_labels=opts.cond, max_size=opts.max_size, xflip=False)
    opts.resolution = dataset.resolution
    opts.dataset_name = dataset.name
    opts.dataset_size = len(dataset)
    if config.get("auto"):
        for key, value in _auto_values(dataset.resolution, opts.gpus).items():
            if cli.get(key) is None:
                opts[key] = value
    # Validation with clear messages.
    opts.device = str(resolve_device(opts.device))
    # Precision from the hardware (torch_utils.misc.resolve_precision, the one rule): the choice
    # and the CPU capability behind it are recorded in training_options.json.
    choice = resolve_precision(opts.precision, opts.device)
    opts.precision = choice["precision"]
    opts.precision_info = choice
    if opts.aug not in ("ada", "noaug", "fixed"):
        raise UserError(f"--aug must be ada, noaug or fixed, got {opts.aug}")
    if opts.batch is None or opts.batch < 1 or opts.batch % opts.gpus:
        raise UserError(f"--batch {opts.batch} must be a positive multiple of --gpus {opts.gpus}")
    if opts.kimg <= 0:
        raise UserError("--kimg must be positive")
    if opts.q_dim < 0:
        raise UserError("--q-dim must be >= 0")
    tb = opts.train_blocks
    if tb is not None and tb not in ("all", "degrad"):
        try:
            opts.train_blocks = int(tb)
        except ValueError:
            raise UserError(f"--train-blocks must be 'all', 'degrad' or a number, got {tb}") from None
    if opts.degraded_reals and opts.q_dim > 0:
        raise UserError("--degraded-reals is for plain runs (--q-dim 0); a QC run already shows "
                        "D_degraded degraded reals")
    if tb == "degrad":
        if opts.q_dim == 0:
            raise UserError("--train-blocks degrad trains the DegradBlocks: it needs --q-dim > 0")
        if cli.get("kd_weight") is None:
            opts.kd_weight = 0.0     # the sharp path is frozen: q = 0 is the teacher exactly (docs/training.md)
    _resolve_resume(opts)
    for path_opt in ("resume", "init", "teacher"):
        if opts.get(path_opt) and not dnnlib.util.is_url(opts[path_opt]):
            if not os.path.isfile(opts[path_opt]):
                raise UserError(f"--{path_opt} file not found: {opts[path_opt]}")
            check_network_file(opts[path_opt])          # a truncated file fails before a run folder exists
    if opts.q_dim > 0 and opts.kd_weight > 0 and not (opts.resume or opts.teacher or opts.auto_resume):
        raise UserError("QC training needs a teacher: pass --resume with a stock StyleGAN2 file or "
                        "--teacher FILE (or --q-dim 0 to train a plain StyleGAN2)")
    if opts.metrics:
        if metric_runner is None:
            raise UserError("--metrics: this entry point computes no metrics (train.py does)")
        metric_runner.check(opts)      # names; a missing Inception file fails now, not at a snapshot
    else:
        opts.metrics = []
    return opts


def _resolve_resume(opts) -> None:
    """``--resume latest|auto|RUN_DIR`` -> ``opts.auto_resume`` (the mode or the folder) and
    ``opts.resume = --init`` (what a fresh start loads); ``--init`` alone acts as ``--resume FILE``."""
    value = opts.get("resume")
    opts.auto_resume = None
    if value in RESUME_LATEST:
        opts.auto_resume = "latest"
    elif value and os.path.isdir(value):
        opts.auto_resume = os.path.abspath(value)
    elif value and opts.get("init"):
        raise UserError("--init is the start of a fresh run; with --resume FILE give only one of them")
    if opts.auto_resume or not value:
        opts.resume = opts.get("init")


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


def choose_run(outdir: str, opts) -> Tuple[str, Optional[str]]:
    """``(run directory, snapshot to continue or None)`` for these options (module docstring)."""
    desc = run_description(opts)
    if not opts.get("auto_resume"):
        return next_run_dir(outdir, desc), None
    run_dir = opts.auto_resume if opts.auto_resume != "latest" else find_run_dir(outdir, desc)
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


def run_description(opts) -> str:
    desc = f"{opts.dataset_name}-{opts.cfg}-gpus{opts.gpus}-batch{opts.batch}"
    desc += f"-q{opts.q_dim}" if opts.q_dim else ("-plain-degradedreals" if opts.get("degraded_reals") else "-plain")
    if opts.q_dim:
        desc += f"-kd{opts.kd_weight:g}"
    desc += f"-{opts.aug}" + (f"{opts.target:g}" if opts.aug == "ada" else "")
    if opts.precision != "fp32" and opts.get("precision_info", {}).get("requested") != "auto":
        desc += f"-{opts.precision}"       # an explicit choice; 'auto' follows the hardware
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", desc)


def next_run_dir(outdir: str, desc: str) -> str:
    ids = [int(m.group(1)) for m in (re.match(r"^(\d+)-", d) for d in
                                      (os.listdir(outdir) if os.path.isdir(outdir) else [])) if m]
    return os.path.join(outdir, f"{max(ids, default=-1) + 1:05d}-{desc}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(local_rank: int, world: int, port: int, run_dir: str, opts: dict, metric_runner=None) -> None:
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


def run_process(run_dir: str, opts: dict, metric_runner=None) -> dict:
    """One rank: join the process group (if any), train, leave the group. Rank 0 copies its
    output into ``run_dir/log.txt``."""
    dist.init_from_env(opts["device"])
    saved = sys.stdout, sys.stderr
    log_file = None
    try:
        if dist.get_rank() == 0:
            log_file = open(os.path.join(run_dir, "log.txt"), "a", encoding="utf-8")
            sys.stdout, sys.stderr = _Tee(saved[0], log_file), _Tee(saved[1], log_file)
        return training_loop(run_dir, dnnlib.EasyDict(opts), metric_runner=metric_runner)
    finally:
        sys.stdout, sys.stderr = saved
        if log_file is not None:
            log_file.close()
        dist.destroy()


def launch(opts: dnnlib.EasyDict, outdir: str, dry_run: bool = False, metric_runner=None) -> Optional[str]:
    """Create (or, with ``--resume latest``, find) the run directory (rank 0), write
    ``training_options.json`` and train. Under torchrun (WORLD_SIZE set) this process is one
    rank; otherwise ``--gpus N > 1`` spawns N local processes. ``metric_runner`` computes
    ``opts.metrics`` at snapshots (see ``resolve_options``). Returns the run directory."""
    under_torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1
    world = int(os.environ["WORLD_SIZE"]) if under_torchrun else opts.gpus
    if under_torchrun and world != opts.gpus:
        opts.gpus = world     # torchrun decides the process count
    run_dir, snapshot = _agree_run_dir(outdir, under_torchrun, opts)
    if snapshot is not None:
        opts.resume = snapshot
    if dry_run:
        dist.print0(json.dumps(opts, indent=2))
        dist.print0(f"run directory would be: {run_dir}" + (f" (continuing {os.path.basename(snapshot)})"
                                                             if snapshot else ""))
        dist.destroy()
        return None
    if dist.get_rank() == 0:
        os.makedirs(run_dir, exist_ok=True)
        with dnnlib.util.atomic_write(os.path.join(run_dir, "training_options.json"), "w") as f:
            json.dump(opts, f, indent=2)
    if under_torchrun or world == 1:
        run_process(run_dir, dict(opts), metric_runner)
    else:
        _spawn(world, run_dir, dict(opts), metric_runner)
    return run_dir


def _spawn(world: int, run_dir: str, opts: dict, metric_runner=None) -> None:
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


def _agree_run_dir(outdir: str, under_torchrun: bool, opts) -> Tuple[str, Optional[str]]:
    """Rank 0 picks the run directory (and the snapshot to continue); under torchrun both are
    broadcast to every rank."""
    if under_torchrun:
        dist.init_from_env(opts.device)
    holder = list(choose_run(outdir, opts)) if dist.get_rank() == 0 else [None, None]
    if under_torchrun:
        tdist.broadcast_object_list(holder, src=0)
    return holder[0], holder[1]
