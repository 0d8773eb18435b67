"""Losses of QC-StyleGAN training, as a table of phases.

Nguyen et al., "Quality Controllable Image Generation and Manipulation" (NeurIPS 2022), Sec. 3.3:
two discriminators, D on sharp images (G(w, q=0) vs real) and D_degraded on degraded ones
(G(w, q), q ~ N(0, I), vs real images passed through the degradation pipeline), plus the feature
distillation loss L_KD between the frozen teacher's conv1 outputs and the student's pre-residual
features x_c in the DegradBlock blocks (Eq. 10), weight lambda_KD = 3.

On top of StyleGAN2 (Karras et al., CVPR 2020, Sec. 3.2 and App. B): non-saturating logistic
loss, lazy R1 on reals (Mescheder et al. 2018, Eq. 9; every 16 minibatches), lazy path-length
regularisation (StyleGAN2 Eq. 4; every 4 minibatches, here in both the sharp and degraded modes),
style mixing with probability 0.9. With ``q_dim = 0`` only the plain StyleGAN2-ADA phases remain.

``QCLoss(impl='fast')`` (the default) skips work the step does not need (one pair pass for the
sharp and degraded fakes of a w, D_degraded's fakes from Dmain's pair, ...); ``impl='reference'``
is the straightforward step it is tested against (docs/training-speed.md).

Each phase row names the module that learns, how often it runs and how its loss is built;
``QCLoss.accumulate(phase, ...)`` adds the phase's gradients (scaled by ``gain``) and returns
the loss terms as tensors for logging and finiteness checks.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from torch_utils import misc
from torch_utils.profiling import NULL_TIMER

from .generation import inference_format
from .options import LossOptions


@dataclasses.dataclass(frozen=True)
class Phase:
    """One row of the phase table."""
    name: str        # 'Gmain', 'Greg', 'Dmain', 'Dreg', 'Ddmain', 'Ddreg'
    module: str      # which network learns: 'G', 'D' or 'D_degraded'
    interval: int    # run every N minibatches (lazy regularisation: N > 1, gain = N)


def phase_table(degraded: bool, r1_interval: int = LossOptions.r1_interval, pl_interval: int = LossOptions.pl_interval,
                use_r1: bool = True, use_pl: bool = True, sharp: bool = True) -> List[Phase]:
    """The phases of one training step, in order. ``degraded`` adds the D_degraded rows;
    ``sharp=False`` (G's sharp path frozen, ``--train-blocks degrad``) drops the D rows."""
    rows = [Phase("Gmain", "G", 1)]
    if use_pl:
        rows.append(Phase("Greg", "G", pl_interval))
    if sharp:
        rows.append(Phase("Dmain", "D", 1))
        if use_r1:
            rows.append(Phase("Dreg", "D", r1_interval))
    if degraded:
        rows.append(Phase("Ddmain", "D_degraded", 1))
        if use_r1:
            rows.append(Phase("Ddreg", "D_degraded", r1_interval))
    return rows


# ---------------------------------------------------------------------------------------------
# Individual terms, usable on their own (and tested against direct autograd).

def r1_penalty(real_img: torch.Tensor, logits_fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """R1 (Mescheder et al. 2018, Eq. 9): ||grad_x D(x)||^2 per real image, graph kept for the
    backward pass. ``real_img`` [N, C, H, W] must require grad; returns [N]."""
    logits = logits_fn(real_img)
    (grads,) = torch.autograd.grad(outputs=[logits.sum()], inputs=[real_img], create_graph=True, only_inputs=True)
    return grads.float().square().sum(dim=[1, 2, 3])


def path_length(img: torch.Tensor, ws: torch.Tensor, noise: Optional[torch.Tensor] = None) -> torch.Tensor:
    """StyleGAN2 Eq. 4: ||J_w^T y|| with y ~ N(0, I) / sqrt(H * W), averaged over the ws copies
    (per image, graph kept). img [N, C, H, W] from ws [N, num_ws, w_dim]; returns [N]."""
    h, w = img.shape[2], img.shape[3]
    if noise is None:
        noise = torch.randn_like(img) / np.sqrt(h * w)
    (grads,) = torch.autograd.grad(outputs=[(img * noise).sum()], inputs=[ws], create_graph=True, only_inputs=True)
    return grads.float().square().sum(dim=2).mean(dim=1).sqrt()


def distillation_loss(student_feats: List[torch.Tensor], teacher_feats: List[torch.Tensor]) -> torch.Tensor:
    """Eq. 10: sum over DegradBlock blocks of the mean squared error between the student's x_c
    and the teacher's conv1 output, per image. Lists of [N, C_b, H_b, W_b]; returns [N]."""
    if len(student_feats) != len(teacher_feats):
        raise ValueError(f"{len(student_feats)} student feature maps vs {len(teacher_feats)} teacher maps")
    total = None
    for s, t in zip(student_feats, teacher_feats):
        misc.assert_shape(s, list(t.shape))
        term = (s.float() - t.float()).square().mean(dim=[1, 2, 3])
        total = term if total is None else total + term
    return total


class _RngReplay:
    """Snapshot of the RNG streams a synthesis network draws its noise from, so that the teacher
    sees the same per-pixel noise as the student (same w, same noise: KD is exactly 0 for
    student = teacher at q = 0)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)


# ---------------------------------------------------------------------------------------------

# 'reference': every image in its own full synthesis pass, plain backward (the straightforward
# step, kept as the yardstick of tests/test_loss_impls.py). 'fast': the same step with the work it
# does not need removed: one pair pass for the sharp and degraded fakes of a w (trunk shared
# below the first DegradBlock, as at inference), D_degraded's fakes taken from Dmain's pair,
# renders without autograd in the inference layout, and backward only into the parameters that
# learn.
IMPLS = ("fast", "reference")


class QCLoss:
    """StyleGAN2-ADA losses with QC-StyleGAN's second discriminator and distillation."""

    def __init__(self,
                 device: torch.device,
                 G: torch.nn.Module,                      # student generator (q_dim >= 0)
                 D: torch.nn.Module,                      # discriminator on sharp images
                 D_degraded: Optional[torch.nn.Module] = None,  # discriminator on degraded; None when q_dim = 0
                 teacher: Optional[torch.nn.Module] = None,     # frozen plain generator; None = no KD
                 augment_pipe: Optional[torch.nn.Module] = None,  # ADA pipe for every D input; None = off
                 # The loss weights; defaults: training.options.LossOptions (written once, there).
                 r1_gamma: float = LossOptions.gamma,     # R1 weight gamma (loss gamma/2 * ||grad||^2)
                 style_mixing: float = LossOptions.style_mixing,   # probability of mixing two latents
                 pl_weight: float = LossOptions.pl_weight,          # path-length weight; 0 = off
                 pl_batch_shrink: int = LossOptions.pl_batch_shrink,  # path-length batch = N / shrink
                 pl_decay: float = LossOptions.pl_decay,            # decay of the running path-length mean
                 kd_weight: float = LossOptions.kd_weight,          # lambda_KD (paper default 3); 0 = off
                 autocast_dtype: Optional[torch.dtype] = None,  # bf16 autocast for forward passes; None = off
                 noise_mode: str = "random",              # per-pixel noise while training
                 force_fp32: bool = False,                # disable the networks' CUDA float16 blocks
                 impl: str = "fast",                      # 'fast' or 'reference' (see IMPLS)
                 sharp_frozen: bool = False):             # G(w, 0) does not learn: no sharp terms
        self.device = device
        self.G, self.D, self.D_degraded, self.teacher = G, D, D_degraded, teacher
        self.augment_pipe = augment_pipe
        self.r1_gamma = float(r1_gamma)
        self.style_mixing = float(style_mixing)
        self.pl_weight = float(pl_weight)
        self.pl_batch_shrink = int(pl_batch_shrink)
        self.pl_decay = float(pl_decay)
        self.kd_weight = float(kd_weight) if teacher is not None else 0.0
        self.autocast_dtype = autocast_dtype
        self.noise_mode = noise_mode
        self.force_fp32 = bool(force_fp32)
        self.q_dim = int(getattr(G, "q_dim", 0))
        if self.q_dim > 0 and D_degraded is None:
            raise ValueError("a QC generator (q_dim > 0) needs D_degraded")
        # Running path-length means, one per mode (state saved with the run).
        self.pl_mean = {"sharp": torch.zeros([], device=device), "degraded": torch.zeros([], device=device)}
        self.kd_resolutions = list(G.synthesis.degrad_resolutions)
        self.ada_logits_hook: Optional[Callable[[torch.Tensor], None]] = None  # gets D's real logits
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got '{impl}'")
        self.impl = impl
        # With the sharp path frozen (--train-blocks degrad) the sharp adversarial and path-length
        # terms have no gradient for G: they are not computed, and ADA reads D_degraded's logits.
        self.sharp_frozen = bool(sharp_frozen) and self.q_dim > 0
        self._fakes_for_dd = _FakeStash()
        # Renders without autograd (the D phases' fakes, the teacher) use the layout inference uses
        # on this device (CPU: channels_last, non-fused modulation: 2.9x faster for the teacher
        # than its eval-mode fused default). Not under bf16 autocast, not in the reference.
        self._nograd_fmt: dict = {}
        if impl == "fast" and autocast_dtype is None:
            self._nograd_fmt = {k: v for k, v in inference_format(device).items() if k != "dtype"}
        self.timer = NULL_TIMER          # torch_utils.profiling.PhaseTimer for bench_train.py --profile

    # --- helpers ---------------------------------------------------------------------------------
    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def _render_fmt(self) -> dict:
        return self._nograd_fmt if not torch.is_grad_enabled() else {}

    def sample_q(self, n: int) -> Optional[torch.Tensor]:
        """q ~ N(0, I) [N, q_dim] (Sec. 3.3); None for plain generators."""
        if self.q_dim == 0:
            return None
        return torch.randn([n, self.q_dim], device=self.device)

    def mapping(self, z: torch.Tensor, c: torch.Tensor, update_emas: bool = False) -> torch.Tensor:
        """ws [N, num_ws, w_dim], with style mixing from a second latent at a random cut."""
        with self.timer("mapping"), self._autocast():
            ws = self.G.mapping(z, c, update_emas=update_emas)
            if self.style_mixing > 0:
                num_ws = ws.shape[1]
                cutoff = torch.empty([], dtype=torch.int64, device=ws.device).random_(1, num_ws)
                mix = torch.rand([], device=ws.device) < self.style_mixing
                cutoff = torch.where(mix, cutoff, torch.full_like(cutoff, num_ws))
                mixed = self.G.mapping(torch.randn_like(z), c, update_emas=False)
                keep = (torch.arange(num_ws, device=ws.device) < cutoff).view(1, num_ws, 1)
                ws = torch.where(keep, ws, mixed)
        return ws.float()

    def synthesis(self, ws: torch.Tensor, q: Optional[torch.Tensor], return_feats: bool = False):
        """G(ws, q) [N, C, H, W] in one full pass (and conv1's features x_c with ``return_feats``)."""
        with self.timer("synthesis sharp" if q is None else "synthesis degraded"), self._autocast():
            out = self.G.synthesis(ws, q=q, noise_mode=self.noise_mode, return_feats=return_feats,
                                   force_fp32=self.force_fp32, **self._render_fmt())
        if return_feats:
            return out[0].float(), out[1]
        return out.float()

    def synthesis_pair(self, ws: torch.Tensor, q: torch.Tensor, return_feats: bool = False):
        """(G(ws, 0), G(ws, q)), each [N, C, H, W], in one pass that shares the trunk below the first
        DegradBlock and its per-pixel noise (the generator's pair path, as at inference); with
        ``return_feats`` also the degraded half's x_c (what distillation compares)."""
        n = ws.shape[0]
        with self.timer("synthesis pair"), self._autocast():
            out = self.G.synthesis(ws, q=q, pair=True, noise_mode=self.noise_mode, return_feats=return_feats,
                                   force_fp32=self.force_fp32, **self._render_fmt())
        (sharp, degraded), feats = (out[0], [f[n:] for f in out[1]]) if return_feats else (out, None)
        return sharp.float(), degraded.float(), feats

    def teacher_feats(self, ws: torch.Tensor) -> List[torch.Tensor]:
        """The frozen teacher's conv1 outputs at the student's DegradBlock resolutions."""
        with self.timer("teacher"), torch.no_grad(), self._autocast():
            _img, feats = self.teacher.synthesis(ws, noise_mode=self.noise_mode, return_feats=True,
                                                 feat_resolutions=self.kd_resolutions, force_fp32=self.force_fp32,
                                                 **self._render_fmt())
        return [f.float() for f in feats]

    def degraded_with_kd(self, ws: torch.Tensor, q: torch.Tensor):
        """Student image G(ws, q) [N, C, H, W] and its distillation loss [N] against the teacher fed
        the same ws and the same per-pixel noise (None without a teacher or with kd_weight 0)."""
        if self.kd_weight == 0:
            return self.synthesis(ws, q), None
        before = _RngReplay(self.device)
        img, feats = self.synthesis(ws, q, return_feats=True)
        return img, self._kd_loss(ws, feats, before)

    def _kd_loss(self, ws: torch.Tensor, feats: List[torch.Tensor], before: _RngReplay) -> torch.Tensor:
        """Distillation loss [N] of the student's ``feats`` against the teacher fed ``ws`` and the
        noise drawn after ``before``; the RNG streams are left where the student's pass left them."""
        after = _RngReplay(self.device)
        before.restore()
        t_feats = self.teacher_feats(ws.detach())
        after.restore()
        return distillation_loss(feats, t_feats)

    def render_pair(self, ws: torch.Tensor, q: torch.Tensor, kd: bool):
        """The sharp and degraded fakes of one w, sharing their per-pixel noise, and (``kd``) the
        distillation loss [N] against the teacher fed the same w and noise.

        ``impl='fast'``: one pair pass (trunk computed once). ``impl='reference'``: two full passes
        with the noise replayed; the same images up to float rounding.
        """
        before = _RngReplay(self.device)
        if self.impl == "fast":
            sharp, degraded, feats = self.synthesis_pair(ws, q, return_feats=kd)
        else:
            sharp = self.synthesis(ws, None)
            before.restore()
            degraded, feats = self.synthesis(ws, q, return_feats=True)
        return sharp, degraded, self._kd_loss(ws, feats, before) if kd else None

    def run_D(self, D: torch.nn.Module, img: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if self.augment_pipe is not None:
            with self.timer("augmentation"):
                img = self.augment_pipe(img)
        with self.timer("D sharp" if D is self.D else "D degraded"), self._autocast():
            logits = D(img, c, force_fp32=self.force_fp32)
        return logits.float()

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()`` into the parameters that learn in this phase (the ones that require
        grad); ``impl='fast'`` skips gradients of inputs nobody reads (ws with a frozen mapping)."""
        with self.timer("backward"):
            if self.impl == "reference":
                loss.backward()
                return
            params = [p for net in (self.G, self.D, self.D_degraded) if net is not None
                      for p in net.parameters() if p.requires_grad]
            torch.autograd.backward(loss, inputs=params or None)

    # --- phases ----------------------------------------------------------------------------------
    def accumulate(self, phase: str, real_img: torch.Tensor, real_img_degraded: Optional[torch.Tensor],
                   real_c: torch.Tensor, gen_z: torch.Tensor, gen_c: torch.Tensor, gain: float) -> Dict[str, torch.Tensor]:
        """Add the gradients of one phase for one batch chunk.

        real_img, real_img_degraded: [N, C, H, W] float in [-1, 1]; real_c: [N, c_dim];
        gen_z: [N, z_dim]; gen_c: [N, c_dim]. Returns {term name: per-image values}.
        """
        misc.assert_shape(real_img, [None, None, None, None])
        fn = {"Gmain": self._g_main, "Greg": self._g_reg, "Dmain": self._d_main, "Dreg": self._d_reg,
              "Ddmain": self._dd_main, "Ddreg": self._dd_reg}[phase]
        if phase in ("Gmain", "Greg"):
            self._fakes_for_dd.clear()       # G changes after its phases: fakes rendered before are stale
        with self.timer(phase):
            return fn(real_img=real_img, real_img_degraded=real_img_degraded, real_c=real_c,
                      gen_z=gen_z, gen_c=gen_c, gain=gain)

    def _g_main(self, gen_z, gen_c, gain, **_):
        terms: Dict[str, torch.Tensor] = {}
        ws = self.mapping(gen_z, gen_c)
        if self.sharp_frozen:
            img = None
            img_d, kd = self.degraded_with_kd(ws, self.sample_q(gen_z.shape[0]))
        elif self.q_dim > 0:
            q = self.sample_q(gen_z.shape[0])
            img, img_d, kd = self.render_pair(ws, q, kd=self.kd_weight > 0)
        else:
            img, img_d, kd = self.synthesis(ws, None), None, None
        loss = 0
        if img is not None:
            terms["G/adv_sharp"] = F.softplus(-self.run_D(self.D, img, gen_c)).flatten()   # -log sigmoid
            loss = terms["G/adv_sharp"]
        if img_d is not None:
            terms["G/adv_degraded"] = F.softplus(-self.run_D(self.D_degraded, img_d, gen_c)).flatten()
            loss = loss + terms["G/adv_degraded"]
            if kd is not None:
                terms["G/kd"] = kd
                loss = loss + self.kd_weight * kd
        self.backward(loss.mean() * gain)
        return terms

    def _g_reg(self, gen_z, gen_c, gain, **_):
        if self.pl_weight == 0:
            return {}
        n = max(gen_z.shape[0] // self.pl_batch_shrink, 1)
        ws = self.mapping(gen_z[:n], gen_c[:n])
        if not ws.requires_grad:         # frozen mapping: differentiate w.r.t. ws all the same
            ws = ws.detach().requires_grad_(True)
        modes = [] if self.sharp_frozen else [("sharp", None)]
        if self.q_dim > 0:
            modes.append(("degraded", self.sample_q(n)))
        terms: Dict[str, torch.Tensor] = {}
        loss = 0
        for mode, q in modes:
            img = self.synthesis(ws, q)
            with self.timer("path length"):
                lengths = path_length(img, ws)
            with torch.no_grad():
                self.pl_mean[mode].copy_(self.pl_mean[mode].lerp(lengths.mean(), self.pl_decay))
            penalty = (lengths - self.pl_mean[mode]).square()
            terms[f"G/pl_{mode}"] = penalty
            # "img * 0" keeps every synthesis parameter in the graph (uniform gradient all-reduce).
            loss = loss + (img[:, 0, 0, 0] * 0 + penalty * self.pl_weight).mean()
        self.backward(loss * gain)
        return terms

    def _d_main_common(self, D, real_img, real_c, fake_img, gen_c, gain, name, report_ada):
        fake_logits = self.run_D(D, fake_img, gen_c)
        real_logits = self.run_D(D, real_img.detach(), real_c)
        if report_ada and self.ada_logits_hook is not None:
            self.ada_logits_hook(real_logits)
        terms = {f"{name}/fake": F.softplus(fake_logits).flatten(),       # -log(1 - sigmoid)
                 f"{name}/real": F.softplus(-real_logits).flatten(),      # -log sigmoid
                 f"{name}/score_real": real_logits.detach().flatten(),
                 f"{name}/score_fake": fake_logits.detach().flatten()}
        self.backward((terms[f"{name}/fake"] + terms[f"{name}/real"]).mean() * gain)
        return terms

    def _d_reg_common(self, D, real_img, real_c, gain, name):
        if self.r1_gamma == 0:
            return {}
        real = real_img.detach().requires_grad_(True)
        with self.timer("R1"):
            penalty = r1_penalty(real, lambda x: self.run_D(D, x, real_c))
        self.backward(penalty.mean() * (self.r1_gamma / 2) * gain)
        return {f"{name}/r1": penalty}

    def _d_main(self, real_img, real_c, gen_z, gen_c, gain, **_):
        """D on G(w, 0) vs reals. A QC generator renders the pair here: the degraded half is
        D_degraded's fake in the Ddmain phase of the same chunk (G does not change in between)."""
        with torch.no_grad():
            ws = self.mapping(gen_z, gen_c, update_emas=True)
            if self.q_dim > 0:
                q = self.sample_q(gen_z.shape[0])
                if self.impl == "fast":
                    fake, fake_d, _ = self.render_pair(ws, q, kd=False)
                    self._fakes_for_dd.stash(gen_z, gen_c, fake_d)
                else:                       # reference: the degraded fake is rendered in Ddmain
                    before = _RngReplay(self.device)
                    fake = self.synthesis(ws, None)
                    self._fakes_for_dd.stash(gen_z, gen_c, (ws, q, before))
            else:
                fake = self.synthesis(ws, None)
        return self._d_main_common(self.D, real_img, real_c, fake, gen_c, gain, "D", report_ada=True)

    def _d_reg(self, real_img, real_c, gain, **_):
        return self._d_reg_common(self.D, real_img, real_c, gain, "D")

    def _dd_main(self, real_img_degraded, real_c, gen_z, gen_c, gain, **_):
        """D_degraded on G(w, q) vs degraded reals, w and q those of Dmain's fakes for this chunk
        (a Ddmain without a Dmain before it maps and renders its own)."""
        stashed = self._fakes_for_dd.pop(gen_z, gen_c)
        with torch.no_grad():
            if stashed is None:
                ws = self.mapping(gen_z, gen_c)
                fake = self.synthesis(ws, self.sample_q(gen_z.shape[0]))
            elif isinstance(stashed, tuple):     # reference: replay Dmain's noise in a full pass
                ws, q, before = stashed
                now = _RngReplay(self.device)
                before.restore()
                fake = self.synthesis(ws, q)
                now.restore()
            else:
                fake = stashed
        return self._d_main_common(self.D_degraded, real_img_degraded, real_c, fake, gen_c, gain, "Dd",
                                   report_ada=self.sharp_frozen)

    def _dd_reg(self, real_img_degraded, real_c, gain, **_):
        return self._d_reg_common(self.D_degraded, real_img_degraded, real_c, gain, "Dd")


class _FakeStash:
    """Dmain's degraded fakes, per batch chunk (keyed by its latents), until Ddmain takes them."""

    def __init__(self):
        self._items: List[tuple] = []

    def stash(self, z: torch.Tensor, c: torch.Tensor, value) -> None:
        self._items.append((z.detach().clone(), c.detach().clone(), value))

    def pop(self, z: torch.Tensor, c: torch.Tensor):
        for i, (zz, cc, value) in enumerate(self._items):
            if zz.shape == z.shape and cc.shape == c.shape and torch.equal(zz, z) and torch.equal(cc, c):
                del self._items[i]
                return value
        return None

    def clear(self) -> None:
        self._items.clear()
