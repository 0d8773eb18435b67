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

Batches (``PivotalTuner.tune_batch``): B images are tuned in one optimisation, each with its
own copy of the tuned tensors (stacked along a leading batch dimension), its own Adam moments and
its own early stopping. One step renders all B in one call of the network's own block loop
(``SynthesisNetwork.run_blocks``) with the stacked copies swapped in by
``torch.func.functional_call``: the layers take per-image parameters
(``torch_utils.misc.per_image_rows``) and each modulated convolution becomes one grouped
convolution over the images' own base weights. Images that reach their threshold leave the batch
at once and are handed to the caller. Every loss term is per image and Adam is element-wise, so
each image gets what ``PivotalTuner.tune`` (the one-image reference path) gives it, up to float
rounding (``tests/test_inversion_batch.py``).

Speed: the original generator's residual statistics are computed once per image; blocks below
``tune_blocks`` are frozen and their outputs are computed once per image, not per step; the
pivots are fixed, so the mapping network does not run during PTI (except for the locality
regulariser's random codes).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from typing import Callable, List, Optional, Tuple

import torch
from torch import nn
from torch.func import functional_call
from torch.optim.adam import adam as adam_update

from dnnlib.util import UserError
from torch_utils.misc import assert_shape
from training.networks import SynthesisState

from .config import InversionConfig
from .delta import add_delta_, make_delta
from .objectives import ReconstructionLoss

NOISE_MODE = "const"
Q_INIT_STD = 0.1      # stage 1 starts q near 0, not at 0 (q = 0 is a stationary point)
Q_INIT_SEED = 0
LOCALITY_SEED = 0     # stage 2: the locality samples' z come from this seed, the same for every image
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
FUSED_ADAM_DEVICES = ("cpu", "cuda")   # where torch.optim.Adam has a fused kernel (one pass per tensor)


PTIOptions = InversionConfig     # the former name of the stage options (now ``inversion.config``)


@dataclasses.dataclass
class TuneResult:
    """Stage 2 for one image (``PivotalTuner.tune`` / ``tune_batch``).

    delta:      the tuned tensors as a compact delta (``inversion.delta``), None when no step ran.
    degraded:   [1, C, R, R] G_tuned(w, q) (or G_tuned(w) without q), rendered from base + delta.
    sharp:      [1, C, R, R] G_tuned(w, 0), or None without q.
    steps:      optimisation steps run (an image stopped early ran fewer than asked).
    perceptual: its last perceptual term (NaN when no step ran).
    seconds:    wall time of the steps it took part in, shared among the images of each step, and
                of its final render (``tune_batch``; 0 from ``tune``).
    """
    delta: Optional[dict]
    degraded: torch.Tensor
    sharp: Optional[torch.Tensor]
    steps: int
    perceptual: float = float("nan")
    seconds: float = 0.0


# ---------------------------------------------------------------------------------------------
# Stage 1: latent optimisation.

def _lr_ramp(t: float, rampup: float, rampdown: float) -> float:
    """StyleGAN2 projector schedule at progress t in [0, 1]."""
    ramp = min(1.0, (1.0 - t) / rampdown) if rampdown > 0 else 1.0
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return ramp * (min(1.0, t / rampup) if rampup > 0 else 1.0)


def optimize_latents(G: nn.Module, target: torch.Tensor, loss_fn: ReconstructionLoss, steps: int,
                     opts: InversionConfig, ws_init: Optional[torch.Tensor] = None,
                     q_init: Optional[torch.Tensor] = None,
                     on_step: Optional[Callable[[str, int, int], None]] = None
                     ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Stage 1 for a batch. target: [N, C, R, R] in [-1, 1]; ws_init [N, num_ws, w_dim] (default
    w_avg), q_init [N, q_dim] (default ``Q_INIT_STD`` * seeded N(0, 1), the same start for every
    image, so an image's result does not depend on its batch). ``on_step('stage1', k, steps)``
    after each step k (progress reports). Returns (ws [N, num_ws, w_dim], q [N, q_dim] or None)."""
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
            q_init = (Q_INIT_STD * torch.randn([1, G.q_dim], generator=gen)).expand(n, G.q_dim).to(dev)
        q = q_init.detach().clone().requires_grad_(True)
        groups.append({"params": [q], "lr": opts.q_lr, "base_lr": opts.q_lr})
    if steps <= 0:
        return w.detach().expand(n, G.num_ws, G.w_dim).clone(), (q.detach() if q is not None else None)
    optimizer = torch.optim.Adam(groups, betas=ADAM_BETAS, eps=ADAM_EPS)
    for step in range(steps):
        ramp = _lr_ramp(step / steps, opts.lr_rampup, opts.lr_rampdown)
        for g in optimizer.param_groups:
            g["lr"] = g["base_lr"] * ramp
        img = G.synthesis(w.expand(n, G.num_ws, G.w_dim), q, noise_mode=NOISE_MODE)
        loss = loss_fn(img, target).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if on_step is not None:
            on_step("stage1", step + 1, steps)
    return w.detach().expand(n, G.num_ws, G.w_dim).clone(), (q.detach() if q is not None else None)


# ---------------------------------------------------------------------------------------------
# Stage 2: pivotal tuning.

def residual_stats(sharp: torch.Tensor, degraded: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of the degradation residual G(w, q) - G(w, 0), the statistics the
    QC release's PTI keeps at the original generator's. sharp, degraded: [N, C, H, W] (or
    [C, H, W]) -> (mean, std), each [N, C] (or [C]); differentiable (the stage-2 loss)."""
    r = degraded - sharp
    return r.mean(dim=[-2, -1]), r.std(dim=[-2, -1])


def _adam_step_(params: List[torch.Tensor], grads: List[torch.Tensor], m: List[torch.Tensor],
                v: List[torch.Tensor], step: int, lr: float) -> None:
    """One Adam update in place of all ``params`` (``torch.optim.Adam``'s arithmetic through its
    functional form, fused into one pass per tensor on CPU and CUDA), element-wise, so stacked
    [B, ...] tensors are B independent optimisers; ``step`` counts from 0 (updates done so far).
    The rows of a batch always share their step count: images only leave a batch.
    Gradients are made contiguous first: the CPU fused kernel (torch 2.14) reads a strided gradient
    (e.g. of a weight used transposed) in memory order, i.e. as the wrong elements."""
    dev = params[0].device
    grads = [g.contiguous() for g in grads]
    steps = [torch.tensor(float(step), device=dev) for _ in params]      # incremented by the update
    adam_update(params, grads, m, v, [], steps, fused=dev.type in FUSED_ADAM_DEVICES, amsgrad=False,
                beta1=ADAM_BETAS[0], beta2=ADAM_BETAS[1], lr=lr, weight_decay=0.0, eps=ADAM_EPS, maximize=False)


class _BlockRunner(nn.Module):
    """The tuned blocks as one module call, so ``functional_call`` can swap the stacked per-image
    tensors in (parameter names are ``synthesis.<name>``, as in the generator)."""

    def __init__(self, synthesis: nn.Module):
        super().__init__()
        self.synthesis = synthesis

    def forward(self, ws, q, state: SynthesisState, start: int, pair: bool) -> torch.Tensor:
        return self.synthesis.run_blocks(ws, q, start=start, state=state, pair=pair, noise_mode=NOISE_MODE).img


@dataclasses.dataclass
class _Rows:
    """The images of a batch still being tuned. Per-image tensors (row j = image ``index[j]`` of the
    caller's batch): ws [B, num_ws, w_dim], q [B, q_dim] or None, target [B, C, R, R], ref_stats
    ([B, C], [B, C]) or None, params/m/v: name -> [B, *shape]; the frozen blocks' output x / img
    as [k, B, ...] or None (k = 2 once the frozen blocks have split into [sharp; degraded], else 1)."""
    index: List[int]
    ws: torch.Tensor
    q: Optional[torch.Tensor]
    target: torch.Tensor
    x: Optional[torch.Tensor]
    img: Optional[torch.Tensor]
    ref_stats: Optional[Tuple[torch.Tensor, torch.Tensor]]
    params: dict
    m: dict
    v: dict
    seconds: List[float]

    def keep(self, mask: torch.Tensor) -> "_Rows":
        """The rows where ``mask`` [B] (bool, CPU) is True."""
        flags = mask.tolist()
        idx = torch.nonzero(mask).flatten().to(self.ws.device)
        sel = lambda t, dim=0: None if t is None else t.detach().index_select(dim, idx)      # noqa: E731
        ref = None if self.ref_stats is None else (sel(self.ref_stats[0]), sel(self.ref_stats[1]))
        return _Rows([i for i, k in zip(self.index, flags) if k], sel(self.ws), sel(self.q), sel(self.target),
                     sel(self.x, 1), sel(self.img, 1), ref, {k: sel(t) for k, t in self.params.items()},
                     {k: sel(t) for k, t in self.m.items()}, {k: sel(t) for k, t in self.v.items()},
                     [s for s, k in zip(self.seconds, flags) if k])

    def frozen(self, rows: Optional[slice] = None, branched: bool = False) -> SynthesisState:
        """The frozen blocks' output for these rows (all by default) in the network's batch layout."""
        def join(t):
            if t is None:
                return None
            t = t if rows is None else t[:, rows]
            return t.reshape(-1, *t.shape[2:])                                   # [k, B, ...] -> [k*B, ...]
        return SynthesisState(join(self.x), join(self.img), branched)


def _split_rows(t: Optional[torch.Tensor], n: int) -> Optional[torch.Tensor]:
    """A frozen batch tensor [k*N, ...] (k = 2 once branched: [sharp N; degraded N]) -> [k, N, ...]."""
    return None if t is None else t.reshape(-1, n, *t.shape[1:])


class PivotalTuner:
    """Stage 2 for one generator: keeps a working copy of the synthesis network that is reset to
    the base weights before each image. ``tune`` is the one-image reference path; ``tune_batch``
    tunes B images together (per-image tensors, Adam state and early stopping) and gives each
    image what ``tune`` would, up to float rounding."""

    def __init__(self, G: nn.Module, loss_fn: ReconstructionLoss, opts: InversionConfig):
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
        self.runner = _BlockRunner(self.work)

    @property
    def tuned_numel(self) -> int:
        """Tuned values per image (a batch holds 4 float32 copies per image: tensors, gradients and
        the two Adam moments)."""
        return sum(p.numel() for p in self.params)

    def _reset(self) -> None:
        with torch.no_grad():
            for name, p in zip(self.names, self.params):
                p.copy_(self.base_params[name])

    def render(self, synthesis: nn.Module, ws: torch.Tensor, q: Optional[torch.Tensor],
               frozen: SynthesisState) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
        """(sharp or None, degraded-or-plain image) of the tuned blocks from the frozen state."""
        n = ws.shape[0]
        pair = q is not None
        img = synthesis.run_blocks(ws, q, start=self.start, state=frozen, pair=pair, noise_mode=NOISE_MODE).img
        if pair:
            return img[:n], img[n:]
        return None, img

    def _loss(self, sharp: Optional[torch.Tensor], degraded: torch.Tensor, target: torch.Tensor,
              ref_stats) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per-image stage-2 loss [N] (reconstruction + residual statistics) and perceptual term [N]."""
        loss, terms = self.loss_fn(degraded, target, return_terms=True)
        if ref_stats is not None:
            mean, std = residual_stats(sharp, degraded)
            loss = loss + self.opts.degrad_weight * ((mean - ref_stats[0]).square().mean(dim=1)
                                                     + (std - ref_stats[1]).square().mean(dim=1))
        return loss, terms["perceptual"]

    def _locality_codes(self, ws: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """PTI Sec. 3.3: a code ``alpha`` away from each pivot, towards a random mapped code (one z
        per step from ``gen``, shared by the images of a batch). ws: [N, num_ws, w_dim]."""
        z = torch.randn([1, self.G.z_dim], generator=gen).to(ws.device)
        c = torch.zeros([1, self.G.c_dim], device=ws.device)
        direction = self.G.mapping(z, c) - ws
        return ws + self.opts.locality_alpha * direction / direction.norm(dim=2, keepdim=True).clamp(min=1e-8)

    def _locality_loss(self, ws: torch.Tensor, gen: torch.Generator, params: Optional[dict] = None) -> torch.Tensor:
        """Renders of the locality codes stay as the base generator draws them (L2 + perceptual),
        per image [N]; ``params``: per-image tuned tensors (``tune_batch``), else the working copy's."""
        ws_loc = self._locality_codes(ws, gen)
        with torch.no_grad():
            ref = self.base(ws_loc, None, noise_mode=NOISE_MODE)
        if params is None:
            img = self.work(ws_loc, None, noise_mode=NOISE_MODE)
        else:
            img = functional_call(self.runner, params, (ws_loc, None, SynthesisState(), 0, False))
        return self.loss_fn(img, ref)

    def _frozen(self, ws: torch.Tensor, q: Optional[torch.Tensor]):
        with torch.no_grad():
            frozen = self.base.run_blocks(ws, q, stop=self.start, pair=q is not None, noise_mode=NOISE_MODE)
            ref_stats = None
            if q is not None and self.opts.degrad_weight > 0:
                ref_stats = residual_stats(*self.render(self.base, ws, q, frozen))
        return frozen, ref_stats

    def _final(self, delta: Optional[dict], ws, q, frozen: SynthesisState) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
        """Render from base + the stored delta, so the saved files reproduce these images exactly."""
        self._reset()
        if delta is not None:
            add_delta_(self.work, delta, prefix="synthesis.")
        with torch.no_grad():
            out = self.render(self.work, ws, q, frozen)
        self._reset()
        return out

    def tune(self, ws: torch.Tensor, q: Optional[torch.Tensor], target: torch.Tensor, steps: int) -> TuneResult:
        """ws: [1, num_ws, w_dim]; q: [1, q_dim] or None; target: [1, C, R, R] in [-1, 1]."""
        assert_shape(ws, [1, self.G.num_ws, self.G.w_dim])
        assert_shape(target, [1, self.G.img_channels, self.G.img_resolution, self.G.img_resolution])
        opts = self.opts
        self._reset()
        frozen, ref_stats = self._frozen(ws, q)
        gen = torch.Generator().manual_seed(LOCALITY_SEED)
        for p in self.params:
            p.requires_grad_(True)
        optimizer = torch.optim.Adam(self.params, lr=opts.pti_lr, betas=ADAM_BETAS, eps=ADAM_EPS)
        steps_run, last_p = 0, float("nan")
        for step in range(steps):
            sharp, degraded = self.render(self.work, ws, q, frozen)
            loss, perceptual = self._loss(sharp, degraded, target, ref_stats)
            last_p = float(perceptual.detach()[0])
            if last_p < opts.lpips_threshold:       # PTI: stop once close enough
                break
            loss = loss.sum()
            if opts.locality_weight > 0:
                loss = loss + opts.locality_weight * self._locality_loss(ws, gen).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps_run = step + 1
        for p in self.params:
            p.requires_grad_(False)
        tuned = {name: p for name, p in zip(self.names, self.params)}
        delta = make_delta(self.base_params, tuned, opts.delta_encoding) if steps_run > 0 else None
        sharp, degraded = self._final(delta, ws, q, frozen)
        return TuneResult(delta, degraded, sharp, steps_run, last_p)

    # -- batches --------------------------------------------------------------------------------

    def _render_rows(self, rows: _Rows, branched: bool) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
        """All rows, each through its own tuned tensors: (sharp [B, C, R, R] or None, degraded)."""
        pair = rows.q is not None
        img = functional_call(self.runner, rows.params, (rows.ws, rows.q, rows.frozen(branched=branched),
                                                         self.start, pair))
        b = rows.ws.shape[0]
        return (img[:b], img[b:]) if pair else (None, img)

    def tune_batch(self, ws: torch.Tensor, q: Optional[torch.Tensor], target: torch.Tensor, steps: int,
                   on_done=None, on_step: Optional[Callable[[str, int, int], None]] = None) -> List[TuneResult]:
        """Tune B images at once. ws: [B, num_ws, w_dim]; q: [B, q_dim] or None; target:
        [B, C, R, R] in [-1, 1].

        Each image stops on its own (perceptual term below ``lpips_threshold``, or ``steps`` run)
        and leaves the batch; ``on_done(i, result)`` is called at that moment (i: its row in the
        input). Returns the ``TuneResult``s in input order (``seconds`` filled in: the wall time of
        the steps it took part in, shared among the images of each step, and of its final render).
        ``on_step('pti', k, steps)`` after each step k.
        """
        n = ws.shape[0]
        assert_shape(ws, [n, self.G.num_ws, self.G.w_dim])
        assert_shape(target, [n, self.G.img_channels, self.G.img_resolution, self.G.img_resolution])
        opts = self.opts
        self._reset()
        frozen, ref_stats = self._frozen(ws, q)
        branched = frozen.branched
        with torch.no_grad():
            params = {k: self.base_params[k].detach().unsqueeze(0).repeat(n, *[1] * self.base_params[k].ndim)
                      for k in self.names}
        rows = _Rows(list(range(n)), ws, q, target, _split_rows(frozen.x, n), _split_rows(frozen.img, n),
                     ref_stats, params, {k: torch.zeros_like(t) for k, t in params.items()},
                     {k: torch.zeros_like(t) for k, t in params.items()}, [0.0] * n)
        gen = torch.Generator().manual_seed(LOCALITY_SEED)
        results: List[Optional[TuneResult]] = [None] * n
        last_p = torch.full([n], float("nan"))

        def finish(j: int, steps_run: int) -> None:
            t0 = time.perf_counter()
            i = rows.index[j]
            tuned = {k: t[j].detach() for k, t in rows.params.items()}
            delta = make_delta(self.base_params, tuned, opts.delta_encoding) if steps_run > 0 else None
            one = slice(j, j + 1)
            sharp, degraded = self._final(delta, rows.ws[one], None if rows.q is None else rows.q[one],
                                          rows.frozen(one, branched))
            res = TuneResult(delta, degraded, sharp, steps_run, float(last_p[j]),
                             rows.seconds[j] + time.perf_counter() - t0)
            results[i] = res
            if on_done is not None:
                on_done(i, res)

        for step in range(steps):
            t0 = time.perf_counter()
            for t in rows.params.values():
                t.requires_grad_(True)
            sharp, degraded = self._render_rows(rows, branched)
            loss, perceptual = self._loss(sharp, degraded, rows.target, rows.ref_stats)
            last_p = perceptual.detach().cpu()
            done = last_p < opts.lpips_threshold     # PTI: stop once close enough (no update this step)
            go = ~done
            grads = None
            if bool(go.any()):
                if opts.locality_weight > 0:
                    loss = loss + opts.locality_weight * self._locality_loss(rows.ws, gen, rows.params)
                total = loss[go.to(loss.device)].sum()
                grads = dict(zip(rows.params, torch.autograd.grad(total, list(rows.params.values()))))
            for t in rows.params.values():
                t.requires_grad_(False)
            dt = (time.perf_counter() - t0) / len(rows.index)
            rows.seconds = [s + dt for s in rows.seconds]
            for j in torch.nonzero(done).flatten().tolist():
                finish(j, step)
            if grads is None:
                return results
            t0 = time.perf_counter()
            if bool(done.any()):                     # finished images leave the batch
                idx = torch.nonzero(go).flatten().to(loss.device)
                grads = {k: g.index_select(0, idx) for k, g in grads.items()}
                rows, last_p = rows.keep(go), last_p[go]
            with torch.no_grad():
                names = list(rows.params)
                _adam_step_([rows.params[k] for k in names], [grads[k] for k in names],
                            [rows.m[k] for k in names], [rows.v[k] for k in names], step, opts.pti_lr)
            dt = (time.perf_counter() - t0) / len(rows.index)
            rows.seconds = [s + dt for s in rows.seconds]
            if on_step is not None:
                on_step("pti", step + 1, steps)
        for j in range(len(rows.index)):
            finish(j, steps)
        return results

