"""Encoder training for inversion (pSp, Richardson et al. 2021; QC-StyleGAN Sec. 4.2).

Two kinds of rows, mixed in any proportion per batch (``mode``):

* ``real``: sharp real images are degraded with a registered pipeline (default ``psp``, the pSp
  stage's stronger mix), encoded to (w, q), and rendered in both domains with the frozen
  generator: G(w, q) vs the degraded image and G(w, 0) vs the sharp one, each
  ``l2_weight * L2 + lpips_weight * perceptual`` (defaults 1 and 0.8), plus
  ``w_norm_weight * ||w - w_avg||^2`` (pSp's W-norm regulariser); ``clean_frac`` of the rows
  skip the pipeline (input = sharp target), so the encoder also learns what a sharp real face's q
  is (G(w, q) = G(w, 0): no degradation to draw), and ``clean_q_weight * MSE(q, 0)`` on those rows
  says it outright (q = 0 is the sharp image, Sec. 3.2; logged as ``q_clean``);
  ``q_readout_weight * MSE(A q, s)`` makes q read the degradation linearly: ``s`` is the row's
  severity vector (``degradations.severity``: blur spread, noise std, JPEG, downscale; 0 for a
  sharp row) and ``A`` a bias-free linear map trained with the encoder (kept in the training state,
  not in exported files; logged as ``q_readout``). Bias-free, as the DegradBlock is linear in q
  (DB(f, kq) = k DB(f, q), Sec. 3.2): q = 0 reads as no degradation. The paper's encoder learns q
  from reconstruction alone; this term is ours, for the Sec. 4.6 probe (a linear classifier of
  blur level on q) at a scale where reconstruction alone leaves the level unread;
* ``synthetic``: the generator's own samples with known targets: z ~ N(0, I) -> w, q ~ N(0, I),
  input G(w, q); loss ``latent_weight * (MSE(w) + MSE(q))``. Needs no dataset and no pretrained
  backbone. ``q_scale = (lo, hi)`` draws q = k * N(0, I) with k ~ U(lo, hi) per row instead: since
  DB(f, kq) = k DB(f, q) (Sec. 3.2) the renders then span sharp (k = 0) to the training mode
  (k = 1), so the encoder also learns how degraded an input is, sharp faces included (q = N(0, I)
  alone never shows it a sharp face).

Run folder: ``training_options.json``, ``stats.jsonl`` (one line per log interval: the loss terms'
means, and with synthetic rows ``q_r2``, 1 - MSE(q) / Var(q) of the known q: how much of q the
encoder reads),
``val-<step>.png`` (rows: input, G(w, q), G(w, 0)), ``encoder-<step>.pt`` snapshots and
``encoder.pt`` (latest, with optimiser state and step). ``precision`` ('auto', the default: bf16
where the CPU computes it natively or the GPU supports it, else fp32) runs the encoder's and the
generator's passes under bf16 autocast; weights, optimiser and losses stay float32 (1.7x faster
steps on an AVX-512 BF16 EPYC: benchmarks/bench_encoder_train.py). Running the same command again resumes
from ``encoder.pt``; every step draws its randomness from (seed, step), so a resumed run repeats
an uninterrupted one. SIGTERM / SIGINT / SIGUSR1 (``dnnlib.util.StopSignals``) finish the current
step, write ``encoder.pt`` and return (``stopped`` = the signal's name), as ``train.py`` does.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, NamedTuple, Optional

import numpy as np
import torch

import dnnlib
from degradations import build_pipeline
from degradations.severity import SEVERITY_AXES, severity_vector
from dnnlib.image_io import save_grid, to_uint8
from dnnlib.util import StopSignals, UserError, append_jsonl, atomic_write, rewrite_jsonl
from torch_utils.misc import resolve_autocast_precision

from .encoders import InversionEncoder, load_encoder, read_encoder_file, save_encoder
from .objectives import PerceptualLoss, ReconstructionLoss

MODES = ("synthetic", "real", "mixed")
LATEST = "encoder.pt"
ADAM_BETAS = (0.9, 0.999)

DEFAULTS = dnnlib.EasyDict(
    mode="synthetic",          # 'synthetic', 'real' or 'mixed'
    synthetic_frac=0.5,        # mixed: share of synthetic rows per batch
    steps=10000,               # optimisation steps in total (resume counts the steps done)
    batch=8,
    lr=1e-4,                   # Adam (pSp: 1e-4)
    w_plus=True,               # W+ (one w per layer) or W
    depth=18, width=64,        # ResNet backbone
    backbone_weights=None,     # torchvision resnet file (depth 18/34, width 64)
    init=None,                 # encoder file to start from (a fresh run only; its architecture wins)
    degradations="psp",        # pipeline for real rows
    clean_frac=0.0,            # real rows: share left sharp (input = target: teaches q ~ 0 on sharp real faces)
    clean_q_weight=0.0,        # those sharp rows: weight of MSE(q, 0) (q = 0 is the sharp image, Sec. 3.2)
    q_readout_weight=0.0,      # real rows: weight of MSE(A q, severity) (q reads the degradation linearly)
    l2_weight=1.0, lpips_weight=0.8, w_norm_weight=0.005, latent_weight=1.0,
    perceptual="auto",
    truncation_psi=1.0,        # synthetic rows: truncation of the sampled w
    q_scale=(1.0, 1.0),        # synthetic rows: q = k * N(0, I), k ~ U(lo, hi) per row (Eq. 3's DB(f, kq) = k DB(f, q))
    log_steps=50, snap_steps=1000, val_images=8,
    seed=0, device="cpu",
    precision="auto",          # 'auto' | 'fp32' | 'bf16': autocast of the networks' passes (master weights fp32)
)


class RealRows(NamedTuple):
    """A batch of real rows (images [n, C, R, R] in [-1, 1])."""
    degraded: torch.Tensor      # the encoder's input (the sharp image on kept rows)
    sharp: torch.Tensor         # the target of G(w, 0)
    kept: torch.Tensor          # [n] bool: rows ``clean_frac`` left sharp
    severity: torch.Tensor      # [n, len(SEVERITY_AXES)] float32 (``degradations.severity``; 0 on kept rows)


def step_seed(seed: int, step: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(step) + 1]).generate_state(1)[0])   # step >= -1


class EncoderTrainer:
    """State of one encoder-training run (networks, optimiser, data, losses)."""

    def __init__(self, run_dir: str, G: torch.nn.Module, opts: dict, dataset=None):
        self.run_dir, self.opts = run_dir, dnnlib.EasyDict({**DEFAULTS, **opts})
        o = self.opts
        if o.mode not in MODES:
            raise UserError(f"unknown mode '{o.mode}' (expected one of {', '.join(MODES)})")
        o.q_scale = tuple(float(v) for v in o.q_scale)
        if len(o.q_scale) != 2 or not 0 <= o.q_scale[0] <= o.q_scale[1]:
            raise UserError(f"q_scale must be two numbers 0 <= lo <= hi, got {o.q_scale}")
        if not 0 <= o.clean_frac <= 1:
            raise UserError(f"clean_frac must be in [0, 1], got {o.clean_frac}")
        if o.clean_q_weight < 0:
            raise UserError(f"clean_q_weight must be >= 0, got {o.clean_q_weight}")
        if o.q_readout_weight < 0:
            raise UserError(f"q_readout_weight must be >= 0, got {o.q_readout_weight}")
        if o.mode != "synthetic" and dataset is None:
            raise UserError(f"mode '{o.mode}' needs --data (or use --mode synthetic)")
        self.device = torch.device(o.device)
        # Decided on each start, so a run resumed on another machine takes that machine's best.
        self.precision = resolve_autocast_precision(o.precision, self.device)
        self.G = G.eval().requires_grad_(False).to(self.device)
        self.dataset = dataset if o.mode != "synthetic" else None
        self.n_syn = {"synthetic": o.batch, "real": 0, "mixed": int(round(o.batch * o.synthetic_frac))}[o.mode]
        self.pipe = None
        if self.dataset is not None:
            self.pipe = build_pipeline(o.degradations, resolution=G.img_resolution)
            if self.dataset.resolution != G.img_resolution:
                raise UserError(f"dataset resolution {self.dataset.resolution} differs from the network's "
                                f"{G.img_resolution} (convert it with dataset_tool.py --resolution)")
        fresh = not os.path.isfile(os.path.join(run_dir, LATEST))
        saved = None if fresh else read_encoder_file(os.path.join(run_dir, LATEST))
        if o.init and not fresh:
            # The same command again: a run that started from --init has that file's architecture,
            # which is the run's own snapshot's (the command line's --width etc. do not apply).
            kw = saved["kwargs"]
            o.w_plus, o.depth, o.width = kw["w_plus"], kw["depth"], kw["width"]
        if o.init and fresh:
            # Fine-tune another run's encoder (e.g. the shipped one for a new generator of the same
            # shapes): its architecture and weights, this generator's w_avg.
            self.E = load_encoder(o.init, generator=G)
            if not isinstance(self.E, InversionEncoder):
                raise UserError(f"--init {o.init}: only encoders trained by train-encoder can be trained further "
                                f"(not the official pSp file)")
            self.E = self.E.train().requires_grad_(True)
            o.w_plus, o.depth, o.width = self.E.init_kwargs["w_plus"], self.E.init_kwargs["depth"], self.E.init_kwargs["width"]
            self.E.w_avg.copy_(G.mapping.w_avg.detach().cpu())
            self.E = self.E.to(self.device)
        else:
            with torch.random.fork_rng(devices=[]):     # initial weights from --seed, not the caller's RNG
                torch.manual_seed(o.seed)
                self.E = InversionEncoder.for_generator(G, w_plus=o.w_plus, depth=o.depth, width=o.width)
            self.E = self.E.to(self.device)
        if o.backbone_weights and not (o.init and fresh):
            self.E.load_backbone_weights(o.backbone_weights)
        # q -> severity (bias-free: q = 0 reads as sharp); only with real rows and a quality encoder
        self.readout = None
        if o.q_readout_weight > 0 and self.dataset is not None and G.q_dim > 0:
            self.readout = torch.nn.Linear(G.q_dim, len(SEVERITY_AXES), bias=False).to(self.device)
            torch.nn.init.zeros_(self.readout.weight)
        params = list(self.E.parameters()) + (list(self.readout.parameters()) if self.readout is not None else [])
        self.optimizer = torch.optim.Adam(params, lr=o.lr, betas=ADAM_BETAS)
        self.step = 0
        perc = PerceptualLoss(o.perceptual, device=self.device).to(self.device)
        self.recon = ReconstructionLoss(perc, o.l2_weight, o.lpips_weight)
        if saved is not None:
            self._resume(saved)

    # -- state ------------------------------------------------------------------------------
    def _resume(self, payload: dict) -> None:
        """Continue from the run's ``encoder.pt`` (``payload``: ``read_encoder_file`` of it)."""
        path = os.path.join(self.run_dir, LATEST)
        state = payload.get("training_state") or {}
        if payload["kwargs"] != self.E.init_kwargs:
            raise UserError(f"{path}: was trained with other encoder settings ({payload['kwargs']}); "
                            f"use a new --outdir")
        had_readout = "q_readout" in state
        if had_readout != (self.readout is not None):
            raise UserError(f"{path}: was trained {'with' if had_readout else 'without'} --q-readout-weight; "
                            f"resume it the same way or use a new --outdir")
        self.E.load_state_dict(payload["state_dict"])
        if self.readout is not None:
            self.readout.weight.data.copy_(state["q_readout"])
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state.get("step", 0))
        # lines logged after this snapshot (a killed run) are written again by the resumed steps
        rewrite_jsonl(os.path.join(self.run_dir, "stats.jsonl"), lambda r: r.get("step", 0) <= self.step)

    def save(self) -> str:
        state = {"step": self.step, "optimizer": self.optimizer.state_dict()}
        if self.readout is not None:
            state["q_readout"] = self.readout.weight.detach().cpu().clone()
        meta = {"perceptual_loss": self.recon.perceptual.name, "precision": self.precision,
                "options": _plain_opts(self.opts)}
        snap = os.path.join(self.run_dir, f"encoder-{self.step:06d}.pt")
        save_encoder(snap, self.E, training_state=state, metadata=meta)
        save_encoder(os.path.join(self.run_dir, LATEST), self.E, training_state=state, metadata=meta)
        return snap

    # -- data -------------------------------------------------------------------------------
    def synthetic_rows(self, n: int, gen: torch.Generator):
        """n samples of G with their (ws, q): input [n, C, R, R] in [-1, 1]."""
        G = self.G
        z = torch.randn([n, G.z_dim], generator=gen).to(self.device)
        c = torch.zeros([n, G.c_dim], device=self.device)
        if G.c_dim > 0:
            c[torch.arange(n), torch.randint(G.c_dim, [n], generator=gen)] = 1
        q = torch.randn([n, G.q_dim], generator=gen).to(self.device) if G.q_dim > 0 else None
        lo, hi = self.opts.q_scale
        if q is not None and (lo, hi) != (1.0, 1.0):
            # Severity from sharp (k = 0) to the training mode (k = 1): DB(f, kq) = k DB(f, q).
            q = q * (lo + (hi - lo) * torch.rand([n, 1], generator=gen)).to(self.device)
        with torch.no_grad():
            ws = G.mapping(z, c, truncation_psi=self.opts.truncation_psi)
            img = G.synthesis(ws, q, noise_mode="const")
        return img, ws, q

    def real_rows(self, n: int, gen: torch.Generator) -> RealRows:
        """n dataset images, degraded by the pipeline (``clean_frac`` of them left sharp)."""
        idx = torch.randint(len(self.dataset), [n], generator=gen).tolist()
        sharp = torch.from_numpy(np.stack([self.dataset[i][0] for i in idx])).float().to(self.device)
        x = sharp if sharp.shape[1] == 3 else sharp.repeat(1, 3, 1, 1)
        y, records = self.pipe(x, generator=gen)
        severity = torch.from_numpy(np.stack([severity_vector(r) for r in records]))
        keep = torch.zeros([n], dtype=torch.bool)
        if self.opts.clean_frac > 0:
            keep = torch.rand([n], generator=gen) < self.opts.clean_frac     # these rows stay sharp
            y = torch.where(keep.view(-1, 1, 1, 1).to(y.device), x.to(y.dtype), y)
            severity[keep] = 0
        if sharp.shape[1] == 1:
            y = y.mean(dim=1, keepdim=True)
        return RealRows(y / 127.5 - 1, sharp / 127.5 - 1, keep.to(self.device), severity.to(self.device))

    # -- one step ---------------------------------------------------------------------------
    def _autocast(self):
        """The networks' passes in bf16 (``precision``); losses and master weights stay float32."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def train_step(self) -> Dict[str, float]:
        o, G = self.opts, self.G
        gen = torch.Generator().manual_seed(step_seed(o.seed, self.step))
        torch.manual_seed(step_seed(o.seed + 1, self.step))
        self.E.train()
        inputs, terms = [], {}
        n_syn, n_real = self.n_syn, o.batch - self.n_syn
        if n_real:
            degraded, sharp, kept, severity = self.real_rows(n_real, gen)   # the pipeline in float32, as at test time
        with self._autocast():
            if n_syn:
                img, ws_t, q_t = self.synthetic_rows(n_syn, gen)
                inputs.append(img.float())
            if n_real:
                inputs.append(degraded)
            ws, q = self.E(torch.cat(inputs))
            ws_r, q_r = ws[n_syn:], (q[n_syn:] if q is not None else None)
            if n_real and q_r is not None:
                img_sharp, img_deg = G.synthesis(ws_r, q_r, noise_mode="const", pair=True)
            elif n_real:
                img_sharp, img_deg = G.synthesis(ws_r, None, noise_mode="const"), None
        ws, q = ws.float(), (q.float() if q is not None else None)
        loss = torch.zeros([], device=self.device)
        if n_syn:
            latent = (ws[:n_syn] - ws_t).square().mean()
            if q is not None:
                q_err = (q[:n_syn] - q_t).square().mean()
                latent = latent + q_err
                # The campaign's q curve (issue 31): R^2 of the known q, this batch (q_t ~ N(0, I)).
                terms["q_r2"] = float(1 - q_err.detach() / q_t.var().clamp(min=1e-8))
            terms["latent"] = float(latent.detach())
            loss = loss + o.latent_weight * latent
        if n_real:
            ws_r = ws[n_syn:]
            rec_deg = (self.recon(img_deg.float(), degraded).mean() if img_deg is not None
                       else torch.zeros([], device=self.device))
            rec_sharp = self.recon(img_sharp.float(), sharp).mean()
            w_norm = (ws_r - self.E.w_avg).square().sum(dim=2).mean()
            terms.update(rec_degraded=float(rec_deg.detach()), rec_sharp=float(rec_sharp.detach()), w_norm=float(w_norm.detach()))
            loss = loss + rec_deg + rec_sharp + o.w_norm_weight * w_norm
            if q is not None and bool(kept.any()):
                # A sharp input's quality code is known: q = 0 renders the sharp image (Sec. 3.2).
                q_clean = q[n_syn:][kept].square().mean()
                terms["q_clean"] = float(q_clean.detach())
                loss = loss + o.clean_q_weight * q_clean
            if self.readout is not None:
                q_readout = (self.readout(q[n_syn:]) - severity).square().mean()
                terms["q_readout"] = float(q_readout.detach())
                loss = loss + o.q_readout_weight * q_readout
        if not torch.isfinite(loss):
            raise UserError(f"encoder training diverged at step {self.step} (loss {float(loss)}); "
                            f"lower --lr and resume from {LATEST}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        terms["loss"] = float(loss.detach())
        return terms

    # -- validation images ------------------------------------------------------------------
    def save_validation(self, path: str) -> None:
        """Rows: input, G(w, q), G(w, 0) of a fixed batch."""
        n = self.opts.val_images
        gen = torch.Generator().manual_seed(step_seed(self.opts.seed, -1))
        img = self.synthetic_rows(n, gen)[0] if self.dataset is None else self.real_rows(n, gen).degraded
        self.E.eval()
        with torch.no_grad():
            ws, q = self.E(img)
            if q is not None:
                sharp, deg = self.G.synthesis(ws, q, noise_mode="const", pair=True)
            else:
                sharp = deg = self.G.synthesis(ws, None, noise_mode="const")
        save_grid(path, [to_uint8(img), to_uint8(deg), to_uint8(sharp)], cols=n)


def _plain_opts(opts: dict) -> dict:
    """The options as JSON values (numbers, strings, pairs as lists); other objects are left out."""
    scalar = (str, int, float, bool, type(None))
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in opts.items()
            if isinstance(v, scalar) or (isinstance(v, tuple) and all(isinstance(x, scalar) for x in v))}


@dataclass(frozen=True)
class EncoderRun:
    """What one ``train_encoder`` call did."""
    encoder: str                    # path of the run's encoder.pt
    step: int                       # steps done in all (resumed runs count the earlier ones)
    history: List[Dict[str, Any]]   # the stats.jsonl lines this call wrote
    trainer: EncoderTrainer         # its networks and state (tests read the encoder from it)
    stopped: Optional[str]          # the signal's name when SIGTERM/SIGINT/SIGUSR1 stopped it, else None


def train_encoder(run_dir: str, G: torch.nn.Module, opts: dict, dataset=None,
                  progress_fn: Optional[Callable[[Dict[str, Any]], None]] = None) -> EncoderRun:
    """Train (or resume) an encoder in ``run_dir`` until ``opts['steps']``."""
    os.makedirs(run_dir, exist_ok=True)
    trainer = EncoderTrainer(run_dir, G, opts, dataset)
    o = trainer.opts
    opts_path = os.path.join(run_dir, "training_options.json")
    if not os.path.isfile(opts_path):
        with atomic_write(opts_path, "w") as f:
            json.dump(_plain_opts(o), f, indent=2)
    history, acc, t0 = [], {}, time.perf_counter()
    if trainer.step == 0:
        trainer.save_validation(os.path.join(run_dir, "val-init.png"))
    signals = StopSignals().install()
    try:
        while trainer.step < o.steps and not signals.requested:
            for k, v in trainer.train_step().items():
                acc.setdefault(k, []).append(v)
            done = trainer.step >= o.steps
            if trainer.step % o.log_steps == 0 or done:
                now = time.perf_counter()
                line = {"step": trainer.step, **{k: float(np.mean(v)) for k, v in acc.items()},
                        "sec_per_step": (now - t0) / len(acc["loss"]),
                        "perceptual_loss": trainer.recon.perceptual.name, "precision": trainer.precision,
                        "timestamp": time.time()}
                append_jsonl(os.path.join(run_dir, "stats.jsonl"), line)
                history.append(line)
                if progress_fn is not None:
                    progress_fn(line)
                acc, t0 = {}, time.perf_counter()
            if trainer.step % o.snap_steps == 0 or done:
                trainer.save()
                trainer.save_validation(os.path.join(run_dir, f"val-{trainer.step:06d}.png"))
    finally:
        signals.restore()
    if signals.requested or not os.path.isfile(os.path.join(run_dir, LATEST)):
        trainer.save()
    return EncoderRun(encoder=os.path.join(run_dir, LATEST), step=trainer.step, history=history,
                      trainer=trainer, stopped=signals.requested)
