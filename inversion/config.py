"""The one inversion config (QC-StyleGAN Sec. 4.2 inversion: stage 1 pivot, stage 2 PTI) and its
named presets.

``InversionConfig`` holds every setting of an inversion with its default written once, here:
stage 1 (latent optimisation), the loss weights of both stages, stage 2 (pivotal tuning, Roich et
al. 2022, with the QC release's residual-statistics term and PTI's locality regulariser), how the
per-image delta is stored, and how many images are inverted together. It is validated once, when
it is built (``UserError``, one line naming the option). Every inversion job takes one:
``invert_images(G, images, encoder, config)``, and the applications' options (``AppOptions``:
``InvertOptions``, ``RestoreOptions``, ``EditOptions`` of ``invert_folder``, ``restore_folder``,
``edit_folder``) hold one as ``inversion``; the CLIs build it with
``inversion.cli_options.inversion_options``.

Presets (``PRESETS``, data): ``ours`` is the dataclass defaults; ``official`` the official
QC-StyleGAN restoration pipeline's stage 2 (see ``OFFICIAL``). A preset fills only the settings
the caller left unset: ``resolve_config(preset, **overrides)``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional, Tuple

import torch

from dnnlib.util import UserError

from .delta import parse_encoding
from .objectives import PERCEPTUAL_KINDS

DEFAULT_W_STEPS = 300                    # stage-1 steps without an encoder ("a few hundred")
DEFAULT_BATCH = {"cpu": 8, "cuda": 32}   # images inverted together (stage 1 and PTI), by device type


@dataclasses.dataclass(frozen=True)
class InversionConfig:
    """Every setting of a two-stage inversion (Sec. 4.2; PTI), with our defaults (preset ``ours``).

    ``None`` means "decided at run time" where a field allows it (said beside it)."""
    # Stage 1: the pivot (w, q).
    w_steps: Optional[int] = None      # Adam steps on (w, q); None: 0 with an encoder, DEFAULT_W_STEPS without
    w_lr: float = 5e-3                 # Adam learning rate of w
    q_lr: float = 3e-2                 # Adam learning rate of q
    w_plus: bool = False               # one w per layer (W+); else one w for all layers (PTI's choice)
    lr_rampup: float = 0.05            # fraction of the steps with a linear warm-up (StyleGAN2 projector)
    lr_rampdown: float = 0.25          # fraction of the steps with a cosine ramp-down
    # Both stages: reconstruction loss = l2_weight * L2 + perceptual_weight * perceptual.
    l2_weight: float = 1.0             # PTI: 1
    perceptual_weight: float = 1.0     # PTI: 1
    perceptual: str = "auto"           # auto (LPIPS when its backbone is cached) | lpips | lpips-random | fallback
    # Stage 2: pivotal tuning of the synthesis weights, (w, q) kept fixed.
    pti_steps: int = 350               # at most this many steps per image; 0 = no tuning (delta None)
    pti_lr: float = 3e-4               # Adam learning rate of the tuned weights
    # An image stops once its perceptual term is below this. 0: every image runs pti_steps. PTI's
    # 0.06 (LPIPS) stopped our fallback loss at half the steps: --fidelity 0 on 12 held-out crops
    # 23.10 dB / 0.718 at 0.06, 23.82 / 0.742 at 0 (docs/inversion.md).
    lpips_threshold: float = 0.0
    degrad_weight: float = 1000.0      # residual mean/std term (QC release: 1000); 0 = off
    locality_weight: float = 0.0       # PTI Sec. 3.3 locality regulariser; 0 = off
    locality_alpha: float = 30.0       # distance of the locality samples from the pivot (PTI: 30)
    tune_blocks: Optional[int] = None  # tune the last N synthesis blocks; None = all of them
    delta_encoding: str = "fp16"       # the stored delta: 'fp16' or 'lowrank:R' (inversion/delta.py)
    # Batches.
    batch_size: Optional[int] = None   # images inverted together, each with its own tuned weights; None: by device

    def __post_init__(self):
        for name in ("w_lr", "q_lr", "pti_lr", "locality_alpha"):
            _check(name, getattr(self, name), "> 0", lambda v: v > 0)
        for name in ("l2_weight", "perceptual_weight", "lpips_threshold", "degrad_weight", "locality_weight", "pti_steps"):
            _check(name, getattr(self, name), ">= 0", lambda v: v >= 0)
        for name in ("lr_rampup", "lr_rampdown"):
            _check(name, getattr(self, name), "in [0, 1]", lambda v: 0 <= v <= 1)
        for name in ("w_steps", "tune_blocks", "batch_size"):
            value = getattr(self, name)
            if value is not None:
                low = 0 if name == "w_steps" else 1
                _check(name, value, f">= {low}", lambda v, low=low: int(v) == v and v >= low)
        if int(self.pti_steps) != self.pti_steps:
            raise UserError(f"{option_flag('pti_steps')} must be a whole number, got {self.pti_steps}")
        if self.perceptual not in PERCEPTUAL_KINDS:
            raise UserError(f"{option_flag('perceptual')} must be one of {', '.join(PERCEPTUAL_KINDS)}, "
                            f"got '{self.perceptual}'")
        parse_encoding(self.delta_encoding)

    def stage1_steps(self, with_encoder: bool) -> int:
        """Stage-1 steps: ``w_steps``, or when unset 0 with an encoder and ``DEFAULT_W_STEPS`` without."""
        if self.w_steps is not None:
            return int(self.w_steps)
        return 0 if with_encoder else DEFAULT_W_STEPS

    def batch_for(self, device: Any) -> int:
        """Images inverted together: ``batch_size``, or when unset ``DEFAULT_BATCH[device type]``."""
        return int(self.batch_size) if self.batch_size is not None else default_batch_size(device)

    def replace(self, **changes) -> "InversionConfig":
        """A copy with ``changes`` (validated); unknown names are a one-line ``UserError``."""
        unknown = sorted(set(changes) - set(FIELDS))
        if unknown:
            raise UserError(f"unknown inversion setting(s): {', '.join(unknown)} (known: {', '.join(FIELDS)})")
        return dataclasses.replace(self, **changes)

    def record(self) -> Dict[str, Any]:
        """Plain data for options files (every field, in order)."""
        return dataclasses.asdict(self)


def default_batch_size(device: Any) -> int:
    """Images inverted together when nobody says: ``DEFAULT_BATCH[device type]``."""
    return DEFAULT_BATCH.get(torch.device(device).type, DEFAULT_BATCH["cpu"])


FIELDS: Tuple[str, ...] = tuple(f.name for f in dataclasses.fields(InversionConfig))
_FLAGS = {"batch_size": "--batch", "delta_encoding": "--delta"}      # where the CLI flag is not the field name


def option_flag(name: str) -> str:
    """The CLI flag of a setting (``pti_lr`` -> ``--pti-lr``)."""
    return _FLAGS.get(name, "--" + name.replace("_", "-"))


def _check(name: str, value, rule: str, ok) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
        raise UserError(f"{option_flag(name)} must be {rule}, got {value!r}")


# ---------------------------------------------------------------------------------------------
# Presets: data, one table. A preset names the settings it fixes; the rest are the defaults.

OFFICIAL: Dict[str, Any] = dict(
    # The official QC-StyleGAN restoration pipeline, stage 2 (its PTI script): the pivot (w, q) is
    # the encoder's with no stage-1 optimisation (w_steps None -> 0 with an encoder), q is kept
    # fixed (as always here: PTI tunes weights only), the whole generator is tuned (tune_blocks
    # None: every synthesis block; the mapping network is not tuned here, which changes nothing
    # for G(w, q) at the fixed pivot, the only image its loss sees with the locality term off),
    # Adam lr 3e-4 for up to 500 steps, stop at LPIPS <= 0.002 (here: < 0.002; an exact tie is
    # the only difference), loss L2 + LPIPS(alex) + 1000 x the residual-statistics term,
    # locality regulariser off, float32 and noise const (always so here: inversion runs in float32,
    # ``pti.NOISE_MODE``). perceptual 'lpips' insists on real LPIPS (AlexNet): without its cached
    # backbone the run stops with the file to fetch, rather than tuning to a threshold measured
    # on another loss.
    w_steps=None, l2_weight=1.0, perceptual_weight=1.0, perceptual="lpips",
    pti_steps=500, pti_lr=3e-4, lpips_threshold=0.002, degrad_weight=1000.0, locality_weight=0.0, tune_blocks=None,
)
PRESETS: Dict[str, Dict[str, Any]] = {
    "ours": {},                               # the defaults of InversionConfig
    "official": OFFICIAL,
    "demo": dict(w_steps=50, pti_steps=50),   # make demo on 2 CPU cores: the encoder's (w, q) refined
                                              # (the shipped q head is weakly trained), light PTI
}
DEFAULT_PRESET = "ours"


def resolve_config(preset: str = DEFAULT_PRESET, base: Optional[InversionConfig] = None,
                   **overrides) -> InversionConfig:
    """The config of ``preset`` with ``overrides`` on top (an override beats the preset; ``None``
    means unset, i.e. the preset's value). ``base``: start from this config instead of the defaults."""
    if preset not in PRESETS:
        raise UserError(f"unknown inversion preset '{preset}' (choose from {', '.join(PRESETS)})")
    settings = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    return (base or InversionConfig()).replace(**settings)


def split_overrides(kwargs: Mapping[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Split keyword arguments into (inversion settings, the rest)."""
    inv = {k: v for k, v in kwargs.items() if k in FIELDS}
    return inv, {k: v for k, v in kwargs.items() if k not in FIELDS}


class AppOptions:
    """Base of an application's options dataclass (``apps``: ``InvertOptions``, ``RestoreOptions``,
    ``EditOptions``), each with an ``inversion: InversionConfig`` field, so that every application
    is called the same way: ``app(models, input, outdir, options)``."""

    def replace(self, **overrides):
        """A copy with ``overrides``: the options' own fields, and those named like an
        ``InversionConfig`` field (``pti_steps=2``) its ``inversion``'s (validated)."""
        inv, rest = split_overrides(overrides)
        opts = dataclasses.replace(self, **rest)
        return dataclasses.replace(opts, inversion=opts.inversion.replace(**inv)) if inv else opts
