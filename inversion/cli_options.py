"""The one group of inversion options (Sec. 4.2 inversion: stage 1 pivot, stage 2 PTI) shared by
every CLI that inverts: ``invert.py run``, ``restore.py``, ``edit.py edit`` and ``demo.py``.

``@inversion_options`` (put it directly above the function, below ``@cli_main``) adds
``--preset`` and one option per ``InversionConfig`` setting, and hands the function one argument,
``inversion``: the resolved ``InversionConfig`` (the preset, with every option the user gave on
top). No option has a default of its own: an option left out is the preset's value, so every
default is written once, in ``inversion.config``; the help texts quote it from there.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, List, Optional, Tuple

import click

from .config import DEFAULT_BATCH, DEFAULT_PRESET, DEFAULT_W_STEPS, PRESETS, InversionConfig, option_flag, resolve_config
from .objectives import PERCEPTUAL_KINDS

# (setting, click type, help); flags (w_plus) take no value. The order is the help's.
_SETTINGS: List[Tuple[str, Any, str]] = [
    ("w_steps", click.IntRange(min=0), "Stage 1: optimisation steps on (w, q)"),
    ("w_lr", float, "Stage 1: learning rate of w"),
    ("q_lr", float, "Stage 1: learning rate of q"),
    ("w_plus", None, "Stage 1: optimise one w per layer (W+)"),
    ("pti_steps", click.IntRange(min=0), "Stage 2: pivotal tuning steps at most (0 = none)"),
    ("pti_lr", float, "Stage 2: learning rate of the tuned weights"),
    ("lpips_threshold", float, "Stage 2: an image stops when its perceptual term is below this"),
    ("degrad_weight", float, "Stage 2: weight of the residual mean/std term (0 = off)"),
    ("locality_weight", float, "Stage 2: PTI locality regulariser weight (0 = off)"),
    ("tune_blocks", click.IntRange(min=1), "Stage 2: tune only the last N synthesis blocks"),
    ("delta_encoding", str, "Delta storage: fp16 or lowrank:R"),
    ("perceptual", click.Choice(PERCEPTUAL_KINDS),
     "Perceptual loss of both stages (auto: LPIPS when its backbone is in the torch hub cache, else the "
     "no-download fallback)"),
    ("batch_size", click.IntRange(min=1), "Images inverted together (stage 1 and PTI, each with its own tuned weights)"),
]
SETTINGS = tuple(name for name, _, _ in _SETTINGS)     # the settings a CLI can set
_UNSET_MEANS = {"w_steps": f"0 with an encoder, {DEFAULT_W_STEPS} without", "tune_blocks": "all",
                "batch_size": ", ".join(f"{n} on {dev.upper()}" for dev, n in DEFAULT_BATCH.items())}


def default_text(name: str) -> str:
    """'[default: ...]' of a setting: preset ``ours``'s value and where another preset differs."""
    def show(value) -> str:
        return _UNSET_MEANS.get(name, "none") if value is None else str(value)
    base = getattr(InversionConfig(), name)
    others = [f"{p}: {show(v[name])}" for p, v in PRESETS.items() if name in v and v[name] != base]
    return f"[default: {show(base)}" + "".join(f"; {o}" for o in others) + "]"


def _option(name: str, kind, help_text: str) -> Callable:
    if kind is None:
        return click.option(option_flag(name), name, is_flag=True, default=None, flag_value=True,
                            help=f"{help_text} {default_text(name)}")
    return click.option(option_flag(name), name, type=kind, default=None, help=f"{help_text} {default_text(name)}")


def config_from_options(preset: str = DEFAULT_PRESET, **values) -> InversionConfig:
    """The ``InversionConfig`` of parsed options: ``preset``, then every value given (not None)."""
    return resolve_config(preset, **values)


def inversion_options(func: Optional[Callable] = None, *, preset: str = DEFAULT_PRESET) -> Callable:
    """Decorator: the shared inversion options; ``func`` receives ``inversion=InversionConfig``.
    ``@inversion_options(preset="demo")``: another default preset (``demo.py``)."""
    if func is None:
        return functools.partial(inversion_options, preset=preset)

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        values: Dict[str, Optional[Any]] = {name: kwargs.pop(name) for name in SETTINGS}
        kwargs["inversion"] = config_from_options(kwargs.pop("preset"), **values)
        return func(*args, **kwargs)

    for name, kind, help_text in reversed(_SETTINGS):
        wrapper = _option(name, kind, help_text)(wrapper)
    return click.option("--preset", "preset", type=click.Choice(list(PRESETS)), default=preset,
                        show_default=True,
                        help="Inversion settings; an option given beats the preset. "
                             + "; ".join(f"{p}: {describe_preset(p)}" for p in PRESETS))(wrapper)


def describe_preset(preset: str) -> str:
    """The settings where ``preset`` differs from the defaults, e.g. 'pti_steps=500, ...'."""
    base = InversionConfig()
    changed = [f"{k}={v}" for k, v in PRESETS[preset].items() if getattr(base, k) != v]
    return ", ".join(changed) if changed else "the defaults"
