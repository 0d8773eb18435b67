"""Two-stage inversion with the quality code: latent optimisation, then pivotal tuning (PTI).

Stage 1 finds the pivot (w, q): the encoder's prediction, or (without an encoder, or to refine
it) Adam on w and q from (w_avg, 0) with L2 + perceptual loss on G(w, q) vs the input, the
StyleGAN2 projector's learning-rate ramp (Karras et al. 2020, Appendix D), stored noise buffers.
Images of a batch are optimised together: every loss is per image and Adam is element-wise, so
this equals one run per image.

Stage 2 (Roich et al., "Pivotal Tuning for Latent-based Editing of Real Images", 2022, Sec. 3.2)
keeps (w, q) fixed and tunes the synthesis weights on L2 + perceptual loss to the input, with
early stopping once the perceptual term is below a threshold. As in the QC-StyleGAN release, a
term (weight 1000) keeps the per-channel mean and std of the degradation residual
G(w, q) - G(w, 0) of the tuned generator at the original generator's values, so q keeps its
meaning; PTI's optional locality regulariser (Sec. 3.3) keeps renders of nearby codes unchanged.

Speed: the original generator's residual statistics are computed once per image; blocks below
``tune_blocks`` are frozen and their outputs are computed once per image, not per step.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from typing import List, Optional, Tuple

import torch
from torch import nn

from dnnlib.util import UserError
from torch_utils.misc import assert_shape

from .delta import add_delta_, make_delta
from .losses import ReconstructionLoss

NOISE_MODE = "const"
Q_INIT_STD = 0.1      # stage 1 starts q near 0, not at 0 (q = 0 is a stationary point)
Q_INIT_SEED = 0


@dataclasses.dataclass
class PTIOptions:
    """Options of both stages, with the PTI / QC-StyleGAN release defaults."""
    w_lr: float = 5e-3                 # stage 1: Adam learning rate of w
    q_lr: float = 3e-2                 # stage 1: Adam learning rate of q
    w_plus: bool = False               # stage 1 optimises one w per layer (else one w, PTI's choice)
    lr_rampup: float = 0.05            # fraction of stage-1 steps with a linear warm-up
    lr_rampdown: float = 0.25          # fraction of stage-1 steps with a cosine ramp-down
    l2_weight: float = 1.0             # both stages: weight of the L2 term (PTI: 1)
    perceptual_weight: float = 1.0     # both stages: weight of the perceptual term (PTI: 1)
    pti_lr: float = 3e-4               # stage 2: Adam learning rate of the synthesis weights
    lpips_threshold: float = 0.06      # stage 2: stop once the perceptual term is below this
    degrad_weight: float = 1000.0      # stage 2: residual mean/std term (QC release: 1000); 0 = off
    locality_weight: float = 0.0       # stage 2: PTI locality regulariser; 0 = off
    locality_alpha: float = 30.0       # distance of the locality samples from the pivot (PTI: 30)
    tune_blocks: Optional[int] = None  # stage 2 tunes the last N synthesis blocks; None = all
    delta_encoding: str = "fp16"       # 'fp16' or 'lowrank:R' (see inversion/delta.py)


# ---------------------------------------------------------------------------------------------
# Running a range of synthesis blocks (mirrors SynthesisNetwork.forward, block by block).

@dataclasses.dataclass
class SynthState:
    x: Optional[torch.Tensor] = None
    img: Optional[torch.Tensor] = None
    branched: bool = False


def w_offsets(synthesis: nn.Module) -> List[int]:
    """Index of each block's first w in ws."""
    out, idx = [], 0
    for block in synthesis.blocks():
        out.append(idx)
        idx += block.num_conv
    return out


def run_blocks(synthesis: nn.Module, ws: torch.Tensor, q: Optional[torch.Tensor], start: int, stop: int,
               state: SynthState, pair: bool, **fmt) -> SynthState:
    """Blocks ``start..stop-1`` of ``synthesis`` from ``state``; the same arithmetic as
    ``SynthesisNetwork.forward`` (tested to match it exactly). ws: [N, num_ws, w_dim]; q: [N, q_dim]."""
    n = ws.shape[0]
    blocks, offsets = synthesis.blocks(), w_offsets(synthesis)
    x, img, branched = state.x, state.img, state.branched
    for i in range(start, stop):
        block = blocks[i]
        block_ws = ws.narrow(1, offsets[i], block.num_conv + block.num_torgb)
        block_q = q if block.has_degrad_block else None
        branch = pair and block.has_degrad_block and not branched
        if branched:
            block_ws = torch.cat([block_ws, block_ws])
            block_q = torch.cat([torch.zeros_like(q), q]) if block.has_degrad_block else None
        x, img, _ = block(x, img, block_ws, q=block_q, noise_mode=NOISE_MODE, branch=branch,
                          sharp_rows=n if branched else 0, **fmt)
        branched = branched or branch
    return SynthState(x, img, branched)


def split_pair(img: torch.Tensor, n: int) -> Tuple[torch.Tensor, torch.Tensor]:
    return img[:n], img[n:]


# ---------------------------------------------------------------------------------------------
# Stage 1: latent optimisation.

def _lr_ramp(t: float, rampup: float, rampdown: float) -> float:
    """StyleGAN2 projector schedule at progress t in [0, 1]."""
    ramp = min(1.0, (1.0 - t) / rampdown) if rampdown > 0 else 1.0
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return ramp * (min(1.0, t / rampup) if rampup > 0 else 1.0)


def optimize_latents(G: nn.Module, target: torch.Tensor, loss_fn: ReconstructionLoss, steps: int,
                     opts: PTIOptions, ws_init: Optional[torch.Tensor] = None,
                     q_init: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Stage 1 for a batch. target: [N, C, R, R] in [-1, 1]; ws_init [N, num_ws, w_dim] (default
    w_avg), q_init [N, q_dim] (default
    ``Q_INIT_STD`` * seeded N(0, 1)). Returns (ws [N, num_ws, w_dim], q [N, q_dim] or None)."""
    n = target.shape[0]
    assert_shape(target, [n, G.img_channels, G.img_resolution, G.img_resolution])
    dev = target.device
    if ws_init is None:
        ws_init = G.mapping.w_avg.detach().to(dev).expand(n, G.num_ws, G.w_dim)
    w_plus = opts.w_plus or not torch.equal(ws_init, ws_init[:, :1].expand_as(ws_init))
    w = (ws_init if w_plus else ws_init[:, :1]).detach().clone().requires_grad_(True)
    groups = [{"params": [w], "lr": opts.w_lr, "base_lr": opts.w_lr}]
    q = None
    if G.q_dim > 0:
        if q_init is None:     # not exactly 0: the DegradBlock's ReLU stack has zero gradient there
            gen = torch.Generator().manual_seed(Q_INIT_SEED)
            q_init = Q_INIT_STD * torch.randn([n, G.q_dim], generator=gen).to(dev)
        q = q_init.detach().clone().requires_grad_(True)
        groups.append({"params": [q], "lr": opts.q_lr, "base_lr": opts.q_lr})
    if steps <= 0:
        return w.detach().expand(n, G.num_ws, G.w_dim).clone(), (q.detach() if q is not None else None)
    optimizer = torch.optim.Adam(groups, betas=(0.9, 0.999))
    for step in range(steps):
        ramp = _lr_ramp(step / steps, opts.lr_rampup, opts.lr_rampdown)
        for g in optimizer.param_groups:
            g["lr"] = g["base_lr"] * ramp
        img = G.synthesis(w.expand(n, G.num_ws, G.w_dim), q, noise_mode=NOISE_MODE)
        loss = loss_fn(img, target).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return w.detach().expand(n, G.num_ws, G.w_dim).clone(), (q.detach() if q is not None else None)


# ---------------------------------------------------------------------------------------------
# Stage 2: pivotal tuning.

def _residual_stats(sharp: torch.Tensor, degraded: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    # sharp, degraded: [N, C, H, W] -> per-channel mean and std of the residual, each [N, C]
    r = degraded - sharp
    return r.mean(dim=[2, 3]), r.std(dim=[2, 3])


class PivotalTuner:
    """Stage 2 for one generator: keeps a working copy of the synthesis network that is reset to
    the base weights before each image; ``tune`` returns the image's delta and its renders."""

    def __init__(self, G: nn.Module, loss_fn: ReconstructionLoss, opts: PTIOptions):
        self.G, self.loss_fn, self.opts = G, loss_fn, opts
        self.base = G.synthesis
        self.work = copy.deepcopy(G.synthesis).eval().requires_grad_(False)
        blocks = self.work.blocks()
        k = len(blocks) if opts.tune_blocks is None else int(opts.tune_blocks)
        if not 1 <= k <= len(blocks):
            raise UserError(f"tune_blocks must be in 1..{len(blocks)}, got {opts.tune_blocks}")
        self.start = len(blocks) - k                     # first tuned block
        self.names = [f"synthesis.{name}" for name, _ in self.work.named_parameters()
                      if int(name.split(".")[0][1:]) in self.work.block_resolutions[self.start:]]
        work_params = dict(self.work.named_parameters())
        self.params = [work_params[n[len("synthesis."):]] for n in self.names]
        self.base_params = {f"synthesis.{k}": v for k, v in self.base.named_parameters()}

    def _reset(self) -> None:
        with torch.no_grad():
            for name, p in zip(self.names, self.params):
                p.copy_(self.base_params[name])

    def render(self, synthesis: nn.Module, ws: torch.Tensor, q: Optional[torch.Tensor],
               frozen: SynthState) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
        """(sharp or None, degraded-or-plain image) from the cached frozen state."""
        n = ws.shape[0]
        pair = q is not None
        state = run_blocks(synthesis, ws, q, self.start, len(synthesis.blocks()), frozen, pair)
        if pair:
            return split_pair(state.img, n)
        return None, state.img

    def _locality_loss(self, ws: torch.Tensor, q: Optional[torch.Tensor]) -> torch.Tensor:
        """PTI Sec. 3.3: renders at a code ``alpha`` away from the pivot, towards a random
        mapped code, stay as the base generator draws them (L2 + perceptual)."""
        z = torch.randn([1, self.G.z_dim], device=ws.device)
        c = torch.zeros([1, self.G.c_dim], device=ws.device)
        w_rand = self.G.mapping(z, c)
        direction = w_rand - ws
        ws_loc = ws + self.opts.locality_alpha * direction / direction.norm(dim=2, keepdim=True).clamp(min=1e-8)
        with torch.no_grad():
            ref = self.base(ws_loc, None, noise_mode=NOISE_MODE)
        img = self.work(ws_loc, None, noise_mode=NOISE_MODE)
        return self.loss_fn(img, ref).sum()

    def tune(self, ws: torch.Tensor, q: Optional[torch.Tensor], target: torch.Tensor, steps: int) -> dict:
        """ws: [1, num_ws, w_dim]; q: [1, q_dim] or None; target: [1, C, R, R] in [-1, 1].

        Returns {'delta', 'degraded' [1, C, R, R] (G_tuned(w, q), or G_tuned(w) without q),
        'sharp' [1, C, R, R] or None, 'steps' run, 'perceptual' (last value)}.
        """
        assert_shape(ws, [1, self.G.num_ws, self.G.w_dim])
        assert_shape(target, [1, self.G.img_channels, self.G.img_resolution, self.G.img_resolution])
        opts = self.opts
        self._reset()
        with torch.no_grad():
            frozen = run_blocks(self.base, ws, q, 0, self.start, SynthState(), q is not None)
            ref_stats = None
            if q is not None and opts.degrad_weight > 0:
                ref_stats = _residual_stats(*self.render(self.base, ws, q, frozen))
        for p in self.params:
            p.requires_grad_(True)
        optimizer = torch.optim.Adam(self.params, lr=opts.pti_lr, betas=(0.9, 0.999))
        steps_run, last_p = 0, float("nan")
        for step in range(steps):
            sharp, degraded = self.render(self.work, ws, q, frozen)
            loss, terms = self.loss_fn(degraded, target, return_terms=True)
            last_p = float(terms["perceptual"].detach())
            if last_p < opts.lpips_threshold:       # PTI: stop once close enough
                break
            loss = loss.sum()
            if ref_stats is not None:
                mean, std = _residual_stats(sharp, degraded)
                loss = loss + opts.degrad_weight * ((mean - ref_stats[0]).square().mean()
                                                    + (std - ref_stats[1]).square().mean())
            if opts.locality_weight > 0:
                loss = loss + opts.locality_weight * self._locality_loss(ws, q)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps_run = step + 1
        for p in self.params:
            p.requires_grad_(False)
        tuned = {name: p for name, p in zip(self.names, self.params)}
        delta = make_delta(self.base_params, tuned, opts.delta_encoding) if steps_run > 0 else None
        # Render from base + the stored delta, so the saved files reproduce these images exactly.
        self._reset()
        if delta is not None:
            add_delta_(self.work, delta, prefix="synthesis.")
        with torch.no_grad():
            sharp, degraded = self.render(self.work, ws, q, frozen)
        self._reset()
        return {"delta": delta, "degraded": degraded, "sharp": sharp, "steps": steps_run, "perceptual": last_p}


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0

