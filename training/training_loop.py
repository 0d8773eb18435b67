"""The training loop: StyleGAN2-ADA training, and QC-StyleGAN fine-tuning with two discriminators
and feature distillation (Nguyen et al., NeurIPS 2022, Sec. 3.3).

``training_loop(run_dir, opts)`` runs one process (one rank) with a ``training.options.TrainingOptions``
(typed groups: ``opts.schedule.batch``, ``opts.loss.gamma``, ...); ``train.py`` resolves the options,
creates the run directory and starts one process per GPU. Each step runs the rows of
``training.loss.phase_table`` (G main/reg, D main/reg, D_degraded main/reg), then the EMA update
and the ADA adjustment; each tick logs; each snapshot writes a checkpoint with the full training
state (resume = continue the same run), a grid of fixed-seed sharp/degraded pairs, and metrics.

Determinism: every step reseeds the random streams from (seed, rank, step index), and the data
sampler is positioned by the number of images seen, so a run resumed from a snapshot repeats an
uninterrupted run exactly (same device, same number of processes). What differs between ranks
(path-length means, the ADA sign accumulator, ``w_avg`` buffers, the tick's partial statistics) is
gathered from every rank into the snapshot (``training_state['ranks']``) and given back to each.

Preemption: SIGTERM, SIGINT and SIGUSR1 (``StopSignals``) let the current step finish; rank 0's
decision is broadcast after every step, so all ranks stop at the same step, write a snapshot with
the full state and return normally (exit 0). SIGKILL at any moment loses only the work since the
last snapshot: snapshots are written atomically, and ``--resume latest`` continues the newest
complete one (``training.launch``).
"""
from __future__ import annotations

import copy
import json
import os
import resource
import signal
import time
from typing import Any, Dict, List, Mapping, Optional, Union

import numpy as np
import torch

from dnnlib.image_io import save_grid, to_uint8
from degradations import build_pipeline
from dnnlib.util import (STOP_SIGNALS, StopSignals, UserError, append_jsonl, format_time,
                         remove_stale_temp_files, rewrite_jsonl)
from torch_utils import distributed as dist
from torch_utils import training_stats
from torch_utils.profiling import NULL_TIMER

from . import checkpoint as ckpt
from .augment import AdaController, AugmentPipe
from .dataset import ImageDataset, InfiniteSampler
from .loss import QCLoss, phase_table
from .networks import Discriminator, Generator
from .options import FINE_TUNE_BLOCKS, TrainingOptions

ADAM_BETAS = (0.0, 0.99)    # StyleGAN2: beta1 = 0, beta2 = 0.99
ADAM_EPS = 1e-8
GRAD_CLAMP = 1e5            # non-finite gradient entries are replaced by 0 / +-GRAD_CLAMP (StyleGAN2-ADA)


class TrainingDiverged(UserError):
    """A loss term became NaN or infinite; the run stops, the last snapshot stays valid."""


def _ignore_stop_signals(_worker_id: int) -> None:
    """Data loader workers leave stop signals to their rank (a terminal's Ctrl-C and SLURM signal
    the whole process group; a worker dying of one would break the step being finished)."""
    for name in STOP_SIGNALS:
        sig = getattr(signal, name, None)
        if sig is not None:
            signal.signal(sig, signal.SIG_IGN)


# ---------------------------------------------------------------------------------------------
# Small helpers.

def snapshot_label(cur_nimg: int) -> str:
    """kimg for file names: '000120' for whole kimg, '000000.160' for fractions (small runs)."""
    if cur_nimg % 1000 == 0:
        return f"{cur_nimg // 1000:06d}"
    return f"{cur_nimg / 1000:010.3f}"


def step_seed(seed: int, rank: int, step: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(rank), int(step) + 1]).generate_state(1)[0])  # step >= -1


def reseed(seed: int) -> None:
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def trainable_generator_params(G: Generator, train_blocks: Any) -> List[torch.nn.Parameter]:
    """Parameters G's optimiser updates: everything for 'all', the degradation path only for
    'degrad' (see ``degradation_params``), else the top N synthesis blocks (counted from the
    highest resolution). The mapping network trains only with 'all'."""
    if train_blocks in (None, "all"):
        return list(G.parameters())
    if train_blocks == "degrad":
        return degradation_params(G)
    n = int(train_blocks)
    resolutions = G.synthesis.block_resolutions
    if not 1 <= n <= len(resolutions):
        raise UserError(f"--train-blocks must be 'all' or 1..{len(resolutions)}, got {n}")
    params: List[torch.nn.Parameter] = []
    for res in resolutions[-n:]:
        params += list(getattr(G.synthesis, f"b{res}").parameters())
    return params


def degradation_params(G: Generator) -> List[torch.nn.Parameter]:
    """The parameters that only the degraded mode uses (Sec. 3.2): each DegradBlock's ``convq``
    stack and the weight and bias of the widened conv1 (its first C rows, which make x_c, get
    their gradient zeroed by a hook, so Adam never moves them). Everything G(w, 0) depends on
    stays the teacher's: with ``--train-blocks degrad``, q = 0 renders the teacher exactly."""
    if not G.synthesis.degrad_resolutions:
        raise UserError("--train-blocks degrad needs a QC generator (q_dim > 0)")
    params: List[torch.nn.Parameter] = []
    for res in G.synthesis.degrad_resolutions:
        block = getattr(G.synthesis, f"b{res}")
        c = block.convq.out_channels
        for p in (block.conv1.weight, block.conv1.bias):
            keep = torch.ones_like(p)
            keep[:c] = 0                                   # rows of x_c: the sharp path
            p.requires_grad_(True)     # (a hook needs it; each phase sets requires_grad afterwards)
            p.register_hook(lambda grad, keep=keep: grad * keep.to(grad.dtype))
            params.append(p)
        params += list(block.convq.parameters())
    return params


def set_requires_grad(params: List[torch.nn.Parameter], module: torch.nn.Module, flag: bool) -> None:
    module.requires_grad_(False)
    if flag:
        for p in params:
            p.requires_grad_(True)


def make_optimizer(params, lr: float, reg_interval: Optional[int]) -> torch.optim.Adam:
    """Adam with the lazy-regularisation correction (StyleGAN2 App. B): with regularisation every
    k minibatches, lr and betas are scaled as if main and reg steps were one step (ratio k/(k+1))."""
    ratio = reg_interval / (reg_interval + 1) if reg_interval else 1.0
    betas = (ADAM_BETAS[0] ** ratio, ADAM_BETAS[1] ** ratio)
    return torch.optim.Adam(params, lr=lr * ratio, betas=betas, eps=ADAM_EPS)


def reduce_gradients(params: List[torch.nn.Parameter]) -> None:
    """Average gradients over ranks (one flat all_reduce) and sanitise non-finite entries."""
    if not params:
        return
    world = dist.get_world_size()
    grads = [p.grad.flatten() if p.grad is not None else torch.zeros(p.numel(), device=p.device) for p in params]
    flat = torch.cat(grads)
    if world > 1:
        dist.all_reduce_sum(flat)
        flat /= world
    torch.nan_to_num(flat, nan=0, posinf=GRAD_CLAMP, neginf=-GRAD_CLAMP, out=flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


@torch.no_grad()
def update_ema(G_ema: torch.nn.Module, G: torch.nn.Module, beta: float, trained: set) -> None:
    """G_ema <- lerp(G, G_ema, beta) for the parameters named in ``trained``; frozen parameters
    and all buffers are copied unchanged."""
    ema_params = dict(G_ema.named_parameters())
    for name, p in G.named_parameters():
        if name in trained:
            ema_params[name].copy_(p.detach().lerp(ema_params[name], beta))
        else:
            ema_params[name].copy_(p.detach())
    ema_buffers = dict(G_ema.named_buffers())
    for name, b in G.named_buffers():
        ema_buffers[name].copy_(b)


def module_summary(nets: Dict[str, torch.nn.Module], trainable: Dict[str, List[torch.nn.Parameter]]) -> str:
    lines = []
    for name, net in nets.items():
        if net is None:
            continue
        total = sum(p.numel() for p in net.parameters())
        train = sum(p.numel() for p in trainable.get(name, [])) if name in trainable else 0
        lines.append(f"  {name:<11} {total:>12,d} parameters, {train:>12,d} trained")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Networks.

def build_networks(opts: TrainingOptions, dataset: ImageDataset) -> Dict[str, torch.nn.Module]:
    """Fresh G (the generator group), D and D_degraded (the discriminator group, G's widths)."""
    g = opts.generator
    fp16_res = g.num_fp16_res if opts.compute.precision == "fp16" else 0
    G = Generator(z_dim=g.z_dim, c_dim=dataset.label_dim, w_dim=g.w_dim,
                  img_resolution=dataset.resolution, img_channels=dataset.num_channels, q_dim=g.q_dim,
                  mapping_kwargs=dict(num_layers=g.map),
                  synthesis_kwargs=dict(channel_base=g.channel_base, channel_max=g.channel_max,
                                        num_fp16_res=fp16_res, conv_clamp=g.conv_clamp))
    d_kwargs = dict(c_dim=dataset.label_dim, img_resolution=dataset.resolution, img_channels=dataset.num_channels,
                    channel_base=g.channel_base, channel_max=g.channel_max, num_fp16_res=fp16_res,
                    conv_clamp=g.conv_clamp, epilogue_kwargs=dict(mbstd_group_size=opts.discriminator.mbstd_group))
    D = Discriminator(**d_kwargs)
    D_degraded = Discriminator(**d_kwargs) if g.q_dim > 0 else None
    return {"G": G, "D": D, "D_degraded": D_degraded}


def init_from_file(opts: TrainingOptions, dataset: ImageDataset, nets: Dict[str, torch.nn.Module]) -> Dict[str, Any]:
    """Networks (and the teacher) from ``opts.run.resume``: our checkpoint, a StyleGAN2-ADA pickle,
    an official QC-StyleGAN pickle or a bare generator state_dict. Stock generators are widened
    into QC ones when ``q_dim > 0`` and become the default teacher."""
    resume, q_dim = opts.run.resume, opts.generator.q_dim
    loaded = ckpt.load_network(resume)
    src_G = loaded.get("G") or loaded.get("G_ema")
    if src_G is None:
        raise UserError(f"{resume} holds no generator")
    if src_G.img_resolution != dataset.resolution or src_G.img_channels != dataset.num_channels:
        raise UserError(f"{resume} generates {src_G.img_resolution}px x{src_G.img_channels}, the dataset "
                        f"is {dataset.resolution}px x{dataset.num_channels}")
    if src_G.c_dim != dataset.label_dim:
        raise UserError(f"{resume} has c_dim={src_G.c_dim}, the dataset's labels {dataset.label_dim}")
    out: Dict[str, Any] = {"training_state": loaded.get("training_state"), "teacher": loaded.get("G_teacher")}
    stock = src_G.q_dim == 0
    if stock and q_dim > 0:
        out["training_state"] = None          # a new QC run starts from the stock model
        out["teacher"] = out["teacher"] or copy.deepcopy(ckpt.pick_generator(loaded, resume))
        for key in ("G", "G_ema"):
            src = loaded.get(key) or src_G
            loaded[key] = ckpt.widen_generator(src, q_dim=q_dim)
    elif src_G.q_dim != q_dim:
        raise UserError(f"{resume} has q_dim={src_G.q_dim}, the options ask for --q-dim {q_dim}")
    out["G"] = loaded.get("G") or loaded["G_ema"]
    out["G_ema"] = loaded.get("G_ema") or copy.deepcopy(out["G"])
    out["D"] = loaded.get("D") or nets["D"]
    if q_dim > 0:
        out["D_degraded"] = loaded.get("D_degraded") or copy.deepcopy(out["D"])
    else:
        out["D_degraded"] = None
    if loaded.get("D") is None:
        dist.print0(f"note: {resume} has no discriminator; D starts from scratch")
    return out


# ---------------------------------------------------------------------------------------------
# Images: degradation of reals, grids.

class RealDegrader:
    """Real images -> degraded reals for D_degraded, with the registered ``paper`` pipeline at the
    dataset's resolution (relative mode below 256, as the library decides)."""

    def __init__(self, name: str, resolution: int):
        self.pipe = build_pipeline(name, resolution=resolution)

    def __call__(self, real_u8: torch.Tensor, seed: int) -> torch.Tensor:
        # real_u8: [N, C, H, W] uint8 -> [N, C, H, W] float32 in [-1, 1]
        x = real_u8.float()
        gray = x.shape[1] == 1
        if gray:
            x = x.repeat(1, 3, 1, 1)
        y, _records = self.pipe(x, generator=torch.Generator().manual_seed(seed))
        if gray:
            y = y.mean(dim=1, keepdim=True)
        return y / 127.5 - 1


def grid_shape(resolution: int) -> tuple:
    """(pairs per row, rows) of the fixed-seed grid."""
    return int(np.clip(2048 // (2 * resolution), 2, 8)), int(np.clip(1024 // resolution, 2, 8))


# ---------------------------------------------------------------------------------------------

class Trainer:
    """One rank's training state and the operations on it (step, tick, snapshot)."""

    def __init__(self, run_dir: str, opts: TrainingOptions, metric_runner=None):
        # metric_runner: computes opts.run.metrics at snapshots (metrics.training_metrics; handed over
        # by train.py, since training never imports metrics); None = no metrics.
        self.run_dir, self.opts = run_dir, opts
        if opts.run.metrics and metric_runner is None:
            raise UserError("metrics were asked for, but no metric runner was given (train.py passes one)")
        self.metric_runner = metric_runner
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        device = opts.compute.device
        self.device = torch.device(device if device != "cuda" else f"cuda:{dist.get_local_rank()}")
        batch = opts.schedule.batch
        if batch % self.world:
            raise UserError(f"--batch {batch} is not divisible by the {self.world} processes")
        self.batch_rank = batch // self.world
        self.batch_gpu = min(opts.schedule.batch_gpu or self.batch_rank, self.batch_rank)
        if self.batch_rank % self.batch_gpu:
            raise UserError(f"--batch-gpu {self.batch_gpu} must divide the per-process batch {self.batch_rank}")
        data = opts.data
        self.dataset = ImageDataset(data.path, use_labels=data.cond, max_size=data.max_size, xflip=data.mirror)
        self._setup_networks()
        self._setup_training()
        self.cur_nimg = self.batch_idx = self.cur_tick = 0
        self.tick_start_nimg, self.elapsed_sec = 0, 0.0
        self.stats = training_stats.Collector()
        if self.state is not None:
            self._load_state(self.state)
        self.timer = NULL_TIMER          # bench_train.py --profile sets a PhaseTimer (also loss.timer)

    # --- setup ---------------------------------------------------------------------------------
    def _setup_networks(self):
        opts = self.opts
        reseed(step_seed(opts.schedule.seed, 0, -1))      # same initial weights on every rank
        nets = build_networks(opts, self.dataset)
        self.state = None
        teacher = None
        if opts.run.resume:
            loaded = init_from_file(opts, self.dataset, nets)
            nets.update({k: loaded[k] for k in ("G", "D", "D_degraded")})
            self.G_ema_init = loaded["G_ema"]
            self.state = loaded["training_state"]
            teacher = loaded["teacher"]
        else:
            self.G_ema_init = copy.deepcopy(nets["G"])
        if opts.run.teacher:
            teacher = ckpt.load_generator(opts.run.teacher)
        if nets["G"].q_dim > 0 and opts.loss.kd_weight > 0 and teacher is None:
            raise UserError("QC training needs a teacher: pass --teacher FILE, or --resume a stock "
                            "StyleGAN2 file (it becomes the teacher), or --kd-weight 0")
        if teacher is not None:
            if teacher.num_ws != nets["G"].num_ws or teacher.img_resolution != nets["G"].img_resolution:
                raise UserError("the teacher's architecture does not match the generator "
                                f"(num_ws {teacher.num_ws} vs {nets['G'].num_ws})")
        dev = self.device
        self.G = nets["G"].train().to(dev)
        self.D = nets["D"].train().to(dev)
        self.D_degraded = nets["D_degraded"].train().to(dev) if nets["D_degraded"] is not None else None
        self.G_ema = self.G_ema_init.eval().to(dev).requires_grad_(False)
        self.teacher = teacher.eval().to(dev).requires_grad_(False) if teacher is not None else None
        for net in (self.G, self.D, self.D_degraded, self.G_ema):
            dist.broadcast_module(net)

    def _setup_training(self):
        opts, loss, aug, lr = self.opts, self.opts.loss, self.opts.augment, self.opts.schedule.lr
        self.train_blocks = opts.generator.train_blocks
        if self.train_blocks is None and self.state is not None:   # a continued run keeps its choice
            self.train_blocks = self.state.get("train_blocks")
        if self.train_blocks is None:   # official QC code: the top blocks when fine-tuning a stock model
            fine_tune = opts.run.resume and self.G.q_dim > 0 and self.teacher is not None
            self.train_blocks = FINE_TUNE_BLOCKS if fine_tune else "all"
        g_params = trainable_generator_params(self.G, self.train_blocks)
        ids = {id(p) for p in g_params}
        self.g_trained_names = {name for name, p in self.G.named_parameters() if id(p) in ids}
        for net in (self.G, self.D, self.D_degraded):
            if net is not None:
                net.requires_grad_(False)     # each phase enables its own module's parameters
        self.params = {"G": g_params, "D": list(self.D.parameters())}
        self.modules = {"G": self.G, "D": self.D}
        if self.D_degraded is not None:
            self.params["D_degraded"] = list(self.D_degraded.parameters())
            self.modules["D_degraded"] = self.D_degraded
        use_pl, use_r1 = loss.pl_weight > 0, loss.gamma > 0
        sharp_frozen = self.train_blocks == "degrad"      # G(w, 0) cannot change: no sharp D phases
        self.phases = phase_table(self.D_degraded is not None, loss.r1_interval, loss.pl_interval, use_r1, use_pl,
                                  sharp=not sharp_frozen)
        self.optimizers = {
            "G": make_optimizer(g_params, lr, loss.pl_interval if use_pl else None),
            "D": make_optimizer(self.params["D"], lr, loss.r1_interval if use_r1 else None)}
        if self.D_degraded is not None:
            self.optimizers["D_degraded"] = make_optimizer(self.params["D_degraded"], lr,
                                                           loss.r1_interval if use_r1 else None)
        self.augment_pipe = None
        self.ada = None
        if aug.aug != "noaug":
            self.augment_pipe = AugmentPipe(aug.augpipe, p=aug.aug_p if aug.aug == "fixed" else 0.0).to(self.device)
            if aug.aug == "ada":
                self.ada = AdaController(self.augment_pipe, target=aug.target, interval=aug.ada_interval,
                                         speed_kimg=aug.ada_kimg)
        precision = opts.compute.precision
        autocast = torch.bfloat16 if precision == "bf16" else None
        self.loss = QCLoss(self.device, self.G, self.D, self.D_degraded, teacher=self.teacher,
                           augment_pipe=self.augment_pipe, r1_gamma=loss.gamma, style_mixing=loss.style_mixing,
                           pl_weight=loss.pl_weight, pl_batch_shrink=loss.pl_batch_shrink, pl_decay=loss.pl_decay,
                           kd_weight=loss.kd_weight, autocast_dtype=autocast,
                           force_fp32=precision != "fp16", sharp_frozen=sharp_frozen)
        if self.ada is not None:
            self.loss.ada_logits_hook = self.ada.accumulate
        # Degraded reals feed D_degraded; with --degraded-reals (plain runs) they replace the reals:
        # a StyleGAN2 trained on degraded images, the baseline of the paper's Table 1.
        self.degraded_reals = loss.degraded_reals
        self.degrader = RealDegrader(loss.degradation, self.dataset.resolution) \
            if self.D_degraded is not None or self.degraded_reals else None

    # --- state ---------------------------------------------------------------------------------
    def rank_state(self) -> dict:
        """What differs between ranks (module docstring); RNG streams and the sampler position
        need nothing: both follow from (seed, rank, step) and the images seen."""
        return {
            "pl_mean": {k: v.detach().cpu().clone() for k, v in self.loss.pl_mean.items()},
            "ada_accumulator": self.ada._sum.clone() if self.ada is not None else None,
            "buffers": {f"{net}.{n}": b.detach().cpu().clone() for net, m in (("G", self.G), ("G_ema", self.G_ema))
                        for n, b in m.named_buffers() if n.endswith("_avg")},
            "stats": self.stats.state_dict(),
        }

    def training_state(self, ranks: Optional[List[dict]] = None) -> dict:
        ranks = ranks if ranks is not None else [self.rank_state()]
        return {
            "cur_nimg": self.cur_nimg, "batch_idx": self.batch_idx, "cur_tick": self.cur_tick,
            "tick_start_nimg": self.tick_start_nimg, "elapsed_sec": float(self.elapsed_sec),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "augment_p": float(self.augment_pipe.p) if self.augment_pipe is not None else 0.0,
            "ada_accumulator": ranks[0]["ada_accumulator"],     # rank 0's (files of earlier versions)
            "pl_mean": ranks[0]["pl_mean"],
            "ranks": ranks, "world_size": len(ranks),
            "train_blocks": self.train_blocks, "seed": self.opts.schedule.seed,
        }

    def _load_state(self, state: dict) -> None:
        self.cur_nimg, self.batch_idx = int(state["cur_nimg"]), int(state["batch_idx"])
        self.cur_tick = int(state.get("cur_tick", 0))
        self.tick_start_nimg = int(state.get("tick_start_nimg", self.cur_nimg))
        self.elapsed_sec = float(state.get("elapsed_sec", 0.0))
        for key, opt in self.optimizers.items():
            if key in state["optimizers"]:
                opt.load_state_dict(state["optimizers"][key])
        if self.augment_pipe is not None:
            self.augment_pipe.p.fill_(float(state.get("augment_p", 0.0)))
        ranks = state.get("ranks")
        if ranks and len(ranks) == self.world:
            mine = ranks[self.rank]
        else:
            mine = {"pl_mean": state.get("pl_mean", {}), "ada_accumulator": state.get("ada_accumulator")}
            if ranks:
                dist.print0(f"note: the snapshot was written by {len(ranks)} process(es), this run has {self.world}: "
                            f"every rank continues from rank 0's running means (not bit-exact)")
        if self.ada is not None and mine.get("ada_accumulator") is not None:
            self.ada._sum.copy_(mine["ada_accumulator"])
        for k, v in (mine.get("pl_mean") or {}).items():
            self.loss.pl_mean[k].copy_(v)
        nets = {"G": self.G, "G_ema": self.G_ema}
        for key, value in (mine.get("buffers") or {}).items():
            net, name = key.split(".", 1)
            dict(nets[net].named_buffers())[name].copy_(value)
        self.stats.load_state_dict(mine.get("stats") or {})
        dist.print0(f"resuming at {self.cur_nimg / 1000:.3f} kimg (step {self.batch_idx})")

    # --- data ----------------------------------------------------------------------------------
    def data_iterator(self):
        workers = self.opts.data.workers
        sampler = InfiniteSampler(len(self.dataset), rank=self.rank, world=self.world, seed=self.opts.schedule.seed,
                                  start=self.cur_nimg)
        loader = torch.utils.data.DataLoader(self.dataset, sampler=sampler, batch_size=self.batch_rank,
                                             num_workers=workers, pin_memory=self.device.type == "cuda",
                                             prefetch_factor=2 if workers > 0 else None,
                                             persistent_workers=False,
                                             worker_init_fn=_ignore_stop_signals if workers > 0 else None)
        return iter(loader)

    # --- one step ------------------------------------------------------------------------------
    def step(self, data_iter) -> None:
        opts, dev = self.opts, self.device
        seed = step_seed(opts.schedule.seed, self.rank, self.batch_idx)
        reseed(seed)
        with self.timer("data loading"):
            real_u8, real_c = next(data_iter)
            real_u8 = real_u8.to(dev)           # one host-to-device copy for both uses below
            real = real_u8.float() / 127.5 - 1
        real_deg = None
        if self.degrader is not None:
            with self.timer("degradation of reals"):
                real_deg = self.degrader(real_u8, seed % (1 << 31)).to(dev)
            if self.degraded_reals:
                real, real_deg = real_deg, None
        real_c = real_c.to(dev)
        gen_z = torch.randn([self.batch_rank, self.G.z_dim], device=dev)
        gen_c = torch.from_numpy(np.stack([self.dataset.get_label(np.random.randint(len(self.dataset)))
                                           for _ in range(self.batch_rank)])).to(dev)
        chunks = range(0, self.batch_rank, self.batch_gpu)
        for phase in self.phases:
            if self.batch_idx % phase.interval:
                continue
            module, params, opt = self.modules[phase.module], self.params[phase.module], self.optimizers[phase.module]
            set_requires_grad(params, module, True)
            opt.zero_grad(set_to_none=True)
            for s in chunks:
                sl = slice(s, s + self.batch_gpu)
                terms = self.loss.accumulate(phase.name, real[sl], real_deg[sl] if real_deg is not None else None,
                                             real_c[sl], gen_z[sl], gen_c[sl], gain=phase.interval)
                self._check_finite(terms, phase.name)
                for name, values in terms.items():
                    self.stats.report(f"Loss/{name}", values)
            set_requires_grad(params, module, False)
            with self.timer("optimiser"):
                reduce_gradients(params)
                opt.step()
        with self.timer("EMA"):
            self._update_ema()
        self.cur_nimg += opts.schedule.batch
        self.batch_idx += 1
        if self.ada is not None and self.batch_idx % opts.augment.ada_interval == 0:
            self.ada.adjust(dist.all_reduce_sum)

    def _check_finite(self, terms: Dict[str, torch.Tensor], phase: str) -> None:
        if not terms:
            return
        finite = torch.stack([torch.isfinite(v.detach()).all() for v in terms.values()])
        if bool(finite.all()):
            return
        bad = [name for name, ok in zip(terms, finite.tolist()) if not ok]
        raise TrainingDiverged(f"non-finite loss term {', '.join(bad)} (phase {phase}) at {self.cur_nimg / 1000:.3f} "
                               f"kimg; stopping. The last snapshot in {self.run_dir} is intact")

    def _update_ema(self) -> None:
        schedule = self.opts.schedule
        ema_nimg = schedule.ema_kimg * 1000
        if schedule.ema_rampup:
            ema_nimg = min(ema_nimg, self.cur_nimg * schedule.ema_rampup)
        beta = 0.5 ** (schedule.batch / max(ema_nimg, 1e-8))
        update_ema(self.G_ema, self.G, beta, self.g_trained_names)

    # --- outputs -------------------------------------------------------------------------------
    def grid_latents(self):
        pairs, rows = grid_shape(self.dataset.resolution)
        n = pairs * rows
        gen = torch.Generator().manual_seed(0)
        z = torch.randn([n, self.G.z_dim], generator=gen)
        q = torch.randn([n, self.G.q_dim], generator=gen) if self.G.q_dim > 0 else None
        c = torch.from_numpy(np.stack([self.dataset.get_label(i % len(self.dataset)) for i in range(n)]))
        return z, c, q, pairs

    @torch.no_grad()
    def save_fakes(self, path: str) -> None:
        z, c, q, pairs = self.grid_latents()
        tiles = []
        for i in range(0, z.shape[0], self.batch_gpu):
            zz, cc = z[i:i + self.batch_gpu].to(self.device), c[i:i + self.batch_gpu].to(self.device)
            ws = self.G_ema.mapping(zz, cc)
            sharp = self.G_ema.synthesis(ws, noise_mode="const", force_fp32=True)
            if q is not None:
                deg = self.G_ema.synthesis(ws, q=q[i:i + self.batch_gpu].to(self.device), noise_mode="const",
                                           force_fp32=True)
                tiles.append(torch.stack([to_uint8(sharp), to_uint8(deg)], dim=1).flatten(0, 1))
            else:
                tiles.append(to_uint8(sharp))
        save_grid(path, tiles, cols=pairs * (2 if q is not None else 1))

    def save_reals(self, path: str) -> None:
        pairs, rows = grid_shape(self.dataset.resolution)
        n = min(pairs * rows, len(self.dataset))
        imgs = torch.from_numpy(np.stack([self.dataset[i][0] for i in range(n)]))
        if self.degrader is not None:
            deg = to_uint8(self.degrader(imgs, 0))
            imgs = torch.stack([imgs, deg], dim=1).flatten(0, 1)
        save_grid(path, [imgs], cols=pairs * (2 if self.degrader is not None else 1))

    def snapshot(self, outputs: bool = True) -> str:
        """Checkpoint with the full state of every rank (written atomically by rank 0), then,
        with ``outputs``, the fixed-seed grid and the metrics (a preemption snapshot skips them)."""
        label = snapshot_label(self.cur_nimg)
        path = os.path.join(self.run_dir, f"network-snapshot-{label}.pt")
        for name, net in (("G", self.G), ("D", self.D), ("D_degraded", self.D_degraded)):
            if net is not None and not dist.check_consistent(net):
                raise UserError(f"{name} differs between ranks at {self.cur_nimg / 1000:.3f} kimg")
        ranks = dist.gather_objects(self.rank_state())
        if self.rank == 0:
            nets = {"G": self.G, "G_ema": self.G_ema, "D": self.D, "D_degraded": self.D_degraded,
                    "G_teacher": self.teacher}
            ckpt.save_checkpoint(path, nets=nets, training_state=self.training_state(ranks),
                                 metadata={"training_options": json.loads(json.dumps(self.opts.to_flat()))})
            if outputs:
                self.save_fakes(os.path.join(self.run_dir, f"fakes{label}.png"))
        dist.barrier()          # no rank runs ahead of a snapshot that is not on disk yet
        if outputs:
            self.run_metrics(path)
        return path

    def run_metrics(self, snapshot_path: str) -> None:
        """The configured generator metrics on G_ema, appended to ``metric-<name>.jsonl``."""
        run, data = self.opts.run, self.opts.data
        if not run.metrics:
            return
        dataset_kwargs = dict(path=data.path, use_labels=data.cond, max_size=data.max_size)
        results = self.metric_runner.run(list(run.metrics), G=self.G_ema, dataset_kwargs=dataset_kwargs,
                                         run_dir=self.run_dir, snapshot_pkl=snapshot_path, kimg=self.cur_nimg / 1000,
                                         num_gpus=self.world, rank=self.rank, device=self.device,
                                         degradation=self.opts.loss.degradation, feature_net=run.inception)
        for name, values in results.items():
            dist.print0(f"{name}: {values}")


# ---------------------------------------------------------------------------------------------

def _memory_gb(device: torch.device) -> tuple:
    cpu = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20     # kB -> GB (Linux)
    gpu = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else 0.0
    return cpu, gpu


def prepare_run_dir(run_dir: str, cur_nimg: int) -> None:
    """Rank 0, before training in ``run_dir`` (fresh or continued): temporary files of writes
    killed midway are removed, and log lines past the starting point (ticks and metrics the
    continued run redoes, or a line cut short) are dropped, so ``stats.jsonl`` and the metric
    files read as one uninterrupted run."""
    for name in remove_stale_temp_files(run_dir):
        print(f"note: removed {name}, left by an interrupted write")
    past = lambda r: round(float(r.get("Progress/kimg", r.get("kimg")) or 0) * 1000) > cur_nimg
    for name in sorted(os.listdir(run_dir)) if os.path.isdir(run_dir) else []:
        if name == "stats.jsonl" or (name.startswith("metric-") and name.endswith(".jsonl")):
            dropped = rewrite_jsonl(os.path.join(run_dir, name), lambda r: not past(r))
            if dropped:
                print(f"note: {name}: dropped {dropped} line(s) past {cur_nimg / 1000:.3f} kimg (redone now)")


def training_loop(run_dir: str, opts: Union[TrainingOptions, Mapping[str, Any]], progress_fn=None,
                  metric_runner=None) -> dict:
    """Train until ``opts.schedule.kimg`` thousand images, or until a stop signal (``StopSignals``);
    returns a summary (final snapshot path, kimg, augment p, mean sec/kimg, ``stopped``: the
    signal's name or None). ``opts``: the options, or their flat form (``training_options.json``,
    also an older run's). ``progress_fn(trainer)`` is called after every tick (tests);
    ``metric_runner`` computes ``opts.run.metrics`` at snapshots (see ``Trainer``)."""
    if not isinstance(opts, TrainingOptions):
        opts = TrainingOptions.from_flat(opts)
    signals = StopSignals().install()
    try:
        return _train(run_dir, opts, progress_fn, signals, metric_runner)
    finally:
        signals.restore()


def _train(run_dir: str, opts: TrainingOptions, progress_fn, signals: StopSignals, metric_runner=None) -> dict:
    # 'auto' precision is decided by each process from a timing; every rank takes rank 0's choice.
    precision = dist.gather_objects(opts.compute.precision)[0]
    if precision != opts.compute.precision:
        print(f"note: rank {dist.get_rank()} chose {opts.compute.precision}; training in rank 0's {precision}")
        opts = opts.replace(precision=precision)
    trainer = Trainer(run_dir, opts, metric_runner)
    info = opts.compute.precision_info or {}
    dist.print0(f"training {os.path.basename(run_dir)} on {trainer.device} ({trainer.world} process(es)), "
                f"batch {opts.schedule.batch}, train_blocks {trainer.train_blocks}, precision {precision} "
                f"(asked {info.get('requested', precision)}, CPU {info.get('cpu_capability', '?')})")
    dist.print0(module_summary({"G": trainer.G, "D": trainer.D, "D_degraded": trainer.D_degraded,
                                "G_teacher": trainer.teacher},
                               {m: p for m, p in trainer.params.items() if any(ph.module == m for ph in trainer.phases)}))
    if trainer.rank == 0:
        prepare_run_dir(run_dir, trainer.cur_nimg)
    if trainer.rank == 0 and trainer.cur_nimg == 0:
        trainer.save_reals(os.path.join(run_dir, "reals.png"))
        trainer.save_fakes(os.path.join(run_dir, "fakes_init.png"))
    schedule = opts.schedule
    total_nimg = int(round(schedule.kimg * 1000))
    data_iter = trainer.data_iterator()
    start_time = time.time() - trainer.elapsed_sec
    tick_start_time = time.time()
    last_snapshot, snapshot_nimg, sec_per_kimg, stopped = None, None, [], None
    done = trainer.cur_nimg >= total_nimg
    if done:
        dist.print0(f"already at {trainer.cur_nimg / 1000:.3f} kimg of {schedule.kimg:g}: nothing to do")
    while not done:
        trainer.step(data_iter)
        done = trainer.cur_nimg >= total_nimg
        stop = dist.broadcast_flag(signals.requested is not None)      # rank 0 decides, every step
        if done or trainer.cur_nimg >= trainer.tick_start_nimg + schedule.tick_kimg * 1000:
            if _tick(trainer, run_dir, schedule.snap, start_time, tick_start_time, sec_per_kimg, done):
                last_snapshot, snapshot_nimg = trainer.snapshot(), trainer.cur_nimg
            if progress_fn is not None:
                progress_fn(trainer)
            tick_start_time = time.time()
        if stop and not done:
            trainer.elapsed_sec = time.time() - start_time
            if snapshot_nimg != trainer.cur_nimg:
                last_snapshot, snapshot_nimg = trainer.snapshot(outputs=False), trainer.cur_nimg
            stopped = signals.requested or "a stop signal on rank 0"
            dist.print0(f"stopped by {stopped} at {trainer.cur_nimg / 1000:.3f} kimg (step {trainer.batch_idx}); "
                        f"snapshot {os.path.basename(last_snapshot)}; continue with --resume latest")
            break
    if not stopped and last_snapshot is None and trainer.cur_nimg >= total_nimg:
        last_snapshot = os.path.join(run_dir, f"network-snapshot-{snapshot_label(trainer.cur_nimg)}.pt")
        if not os.path.isfile(last_snapshot):
            last_snapshot = trainer.snapshot()
    if not stopped:
        dist.print0("done.")
    return {"snapshot": last_snapshot, "kimg": trainer.cur_nimg / 1000, "stopped": stopped,
            "augment_p": float(trainer.augment_pipe.p) if trainer.augment_pipe is not None else 0.0,
            "sec_per_kimg": float(np.mean(sec_per_kimg)) if sec_per_kimg else None, "trainer": trainer}


def _tick(trainer: Trainer, run_dir: str, snap: int, start_time: float, tick_start_time: float,
          sec_per_kimg: List[float], done: bool) -> bool:
    """End of a tick: log line, ``stats.jsonl``; True when a snapshot is due."""
    trainer.cur_tick += 1
    now = time.time()
    tick_kimg = (trainer.cur_nimg - trainer.tick_start_nimg) / 1000
    spk = (now - tick_start_time) / max(tick_kimg, 1e-8)
    sec_per_kimg.append(spk)
    cpu_gb, gpu_gb = _memory_gb(trainer.device)
    p = float(trainer.augment_pipe.p) if trainer.augment_pipe is not None else 0.0
    stats = trainer.stats.reduce(dist.all_reduce_sum)
    stats.update({"Progress/tick": trainer.cur_tick, "Progress/kimg": trainer.cur_nimg / 1000,
                  "Progress/augment": p, "Timing/sec_per_tick": now - tick_start_time,
                  "Timing/sec_per_kimg": spk, "Timing/total_sec": now - start_time,
                  "Resources/cpu_mem_gb": cpu_gb, "Resources/peak_gpu_mem_gb": gpu_gb,
                  "timestamp": now})
    dist.print0(f"tick {trainer.cur_tick:<5d} kimg {trainer.cur_nimg / 1000:<9.3f} "
                f"time {format_time(now - start_time):<9s} sec/kimg {spk:<8.2f} augment {p:<6.3f} "
                f"cpumem {cpu_gb:<5.2f} gpumem {gpu_gb:<5.2f}")
    if trainer.rank == 0:
        append_jsonl(os.path.join(run_dir, "stats.jsonl"), stats)
        _tensorboard(run_dir, stats, trainer.cur_nimg)
    trainer.tick_start_nimg = trainer.cur_nimg           # the snapshot records the next tick's start
    trainer.elapsed_sec = now - start_time
    return done or bool(snap and trainer.cur_tick % snap == 0)


_TB_WRITERS: Dict[str, Any] = {}


def _tensorboard(run_dir: str, stats: dict, cur_nimg: int) -> None:
    """Scalars to TensorBoard when it is installed (optional)."""
    if run_dir not in _TB_WRITERS:
        try:       # optional dependency: imported only when a run logs (and absent without tensorboard)
            from torch.utils.tensorboard import SummaryWriter
            _TB_WRITERS[run_dir] = SummaryWriter(run_dir)
        except Exception:       # tensorboard not installed
            _TB_WRITERS[run_dir] = None
    writer = _TB_WRITERS[run_dir]
    if writer is None:
        return
    for name, value in stats.items():
        if isinstance(value, dict):
            writer.add_scalar(name, value["mean"], global_step=cur_nimg // 1000)
        elif isinstance(value, (int, float)) and name != "timestamp":
            writer.add_scalar(name, value, global_step=cur_nimg // 1000)
    writer.flush()
