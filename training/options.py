"""Training options as data: typed groups with their defaults (written once, here), the rules each
group checks when it is built, the presets of ``configs/`` and the flat form of the files.

A run's options are one ``TrainingOptions``: ``generator`` (G's architecture, q_dim, which blocks
train), ``discriminator``, ``loss`` (R1, path length, style mixing, distillation, degraded reals),
``augment`` (ADA), ``schedule`` (length, batch, lr, EMA, ticks, snapshots, seed), ``data``,
``compute`` (processes, device, precision) and ``run`` (preset name, resume, teacher, metrics).
Every group is a frozen dataclass; building one checks its values (``UserError``, one line naming
the option); ``TrainingOptions`` then checks the rules that join two groups. What needs the file
system, the dataset or the hardware (dataset resolution, ``auto`` device and precision, network
files, ``--resume latest``, the teacher requirement, metric names) is resolved and checked by
``training.launch.resolve_options``, which returns a ``TrainingOptions``.

Defaults are StyleGAN2 config F (Karras et al. 2020), StyleGAN2-ADA (Karras et al. 2020, App. A)
and the QC-StyleGAN paper's values (Nguyen et al. 2022, Sec. 3.3: q_dim 16, lambda_KD 3). A preset
(``configs/<name>.json``) names only the options it changes; the command line beats the preset.

Flat form: every option has one flat name, unique across groups (the name of its train.py option,
``--q-dim`` -> ``q_dim``; ``--tick`` -> ``tick_kimg``). Presets, ``training_options.json`` and the
options recorded in snapshots use it (``to_flat`` / ``from_flat``), so files written before the
groups existed still load. This module imports neither torch nor the rest of training/ (train.py
reads the defaults of its help text from here, ``--help`` stays fast).
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from dnnlib.util import UserError

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
DEFAULT_PRESET = "auto"                  # --cfg when none is given
PRESET_KEYS = ("name", "description", "auto")   # what a preset file holds besides options
FINE_TUNE_BLOCKS = 3       # --train-blocks unset, fine-tuning a stock model: the top three blocks (official QC code)
TRAIN_BLOCK_WORDS = ("all", "degrad")    # --train-blocks values besides a number
AUG_MODES = ("ada", "noaug", "fixed")

TrainBlocks = Union[None, str, int]      # None | 'all' | 'degrad' | number of top synthesis blocks


def _flat_name(name: str) -> Dict[str, str]:
    """Field metadata: the option's flat name, where it is not the field's name."""
    return {"flat": name}


class OptionGroup:
    """What every group has: its flat names and the conversion from and to the flat form."""

    @classmethod
    def flat_fields(cls) -> List[Tuple[str, str]]:
        """``(flat name, field name)`` of each field, in order."""
        return [(f.metadata.get("flat", f.name), f.name) for f in dataclasses.fields(cls)]

    @classmethod
    def flat_defaults(cls) -> Dict[str, Any]:
        """Flat name -> default (read from the fields, nothing is built)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        return {flat: _default(fields[name]) for flat, name in cls.flat_fields()}

    @classmethod
    def from_flat(cls, values: Mapping[str, Any]):
        """The group from the flat names it knows in ``values`` (others are ignored; missing ones
        take their defaults); building it checks its rules."""
        return cls(**{name: values[flat] for flat, name in cls.flat_fields() if flat in values})

    def to_flat(self) -> Dict[str, Any]:
        """Flat name -> value (tuples as lists, as JSON has them)."""
        return {flat: _plain(getattr(self, name)) for flat, name in self.flat_fields()}


def _default(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, dict):
        return dict(value)
    return value


# ---------------------------------------------------------------------------------------------
# The groups.

@dataclasses.dataclass(frozen=True)
class GeneratorOptions(OptionGroup):
    """G: its architecture (StyleGAN2 config F), the quality code, and which blocks train. The
    widths (``channel_base``, ``channel_max``, ``conv_clamp``, ``num_fp16_res``) are D's too, as in
    every StyleGAN2 preset."""
    z_dim: int = 512                       # latent z size
    w_dim: int = 512                       # intermediate latent w size
    map: int = 8                           # mapping network layers
    q_dim: int = 16                        # quality code size (Sec. 3.1); 0 = plain StyleGAN2-ADA
    channel_base: int = 32768              # channels of a block: channel_base / resolution, at most channel_max
    channel_max: int = 512                 # the cap on any block's channels
    conv_clamp: Optional[int] = 256        # clamp of convolution outputs; None = no clamp
    num_fp16_res: int = 4                  # highest-resolution blocks in float16 under --precision fp16
    train_blocks: TrainBlocks = None       # top synthesis blocks G trains: N, 'all' or 'degrad';
                                           # None = FINE_TUNE_BLOCKS when fine-tuning a stock model, else 'all'

    def __post_init__(self) -> None:
        if self.q_dim < 0:
            raise UserError("--q-dim must be >= 0")
        tb = self.train_blocks
        if tb is not None and tb not in TRAIN_BLOCK_WORDS:
            try:
                object.__setattr__(self, "train_blocks", int(tb))     # '3' from the command line -> 3
            except (TypeError, ValueError):
                raise UserError(f"--train-blocks must be 'all', 'degrad' or a number, got {tb}") from None
        if tb == "degrad" and self.q_dim == 0:
            raise UserError("--train-blocks degrad trains the DegradBlocks: it needs --q-dim > 0")


@dataclasses.dataclass(frozen=True)
class DiscriminatorOptions(OptionGroup):
    """D and D_degraded (both built alike; their widths are the generator group's)."""
    mbstd_group: int = 4                   # minibatch-stddev group size (images per group)


@dataclasses.dataclass(frozen=True)
class LossOptions(OptionGroup):
    """The loss terms and how often the lazy ones run (training/loss.py; Sec. 3.3, StyleGAN2 App. B)."""
    gamma: float = 10.0                    # R1 weight gamma (loss gamma/2 * ||grad D(real)||^2)
    r1_interval: int = 16                  # lazy R1: every N minibatches
    pl_weight: float = 2.0                 # path-length regularisation weight; 0 = off
    pl_interval: int = 4                   # lazy path length: every N minibatches
    pl_batch_shrink: int = 2               # path-length batch = batch / N
    pl_decay: float = 0.01                 # decay of the running path-length mean
    style_mixing: float = 0.9              # probability of mixing two latents in a fake
    kd_weight: float = 3.0                 # lambda_KD, weight of the distillation loss (Eq. 10); 0 = off
    degraded_reals: bool = False           # plain runs: D sees reals degraded (the Table 1 baseline)
    degradation: str = "paper"             # registered degradation mix of D_degraded's reals (Sec. 4)


@dataclasses.dataclass(frozen=True)
class AugmentOptions(OptionGroup):
    """Discriminator augmentation (StyleGAN2-ADA): adaptive, fixed or none."""
    aug: str = "ada"                       # 'ada' (p adapts to target), 'fixed' (p = aug_p) or 'noaug'
    augpipe: str = "bgc"                   # pipeline: preset name or group letters (training/augment.py)
    aug_p: float = 0.2                     # augmentation probability of --aug fixed
    target: float = 0.6                    # ADA target for E[sign(D(real))]
    ada_interval: int = 4                  # p is adjusted every N minibatches
    ada_kimg: float = 500                  # p can go from 0 to 1 in this many kimg

    def __post_init__(self) -> None:
        if self.aug not in AUG_MODES:
            raise UserError(f"--aug must be ada, noaug or fixed, got {self.aug}")


@dataclasses.dataclass(frozen=True)
class ScheduleOptions(OptionGroup):
    """Length, batch, optimiser, EMA, logging and snapshots, seed."""
    kimg: float = 25000                    # training length, thousands of real images shown to D
    batch: int = 32                        # total batch over all processes
    batch_gpu: Optional[int] = None        # images per process per pass; None = batch / gpus (no accumulation)
    lr: float = 0.002                      # Adam learning rate of G and D
    ema_kimg: float = 10.0                 # half-life of G_ema, kimg
    ema_rampup: Optional[float] = None     # half-life at most this fraction of the images seen; None = no ramp-up
    tick_kimg: float = 4.0                 # kimg per progress tick (log line, stats.jsonl)
    snap: int = 50                         # snapshot every N ticks; 0 = only at the end
    seed: int = 0                          # random seed (weights, steps, data order)

    def __post_init__(self) -> None:
        if self.kimg <= 0:
            raise UserError("--kimg must be positive")


@dataclasses.dataclass(frozen=True)
class DataOptions(OptionGroup):
    """The training images, and what ``resolve_options`` records about them."""
    path: Optional[str] = dataclasses.field(default=None, metadata=_flat_name("data"))  # ZIP or folder
    cond: bool = False                     # class-conditional: labels from dataset.json
    mirror: bool = False                   # add x-flipped copies
    max_size: Optional[int] = None         # use at most this many images; None = all
    workers: int = 2                       # data loader processes per rank; 0 = in-process
    resolution: Optional[int] = None       # recorded: image size, pixels; None = not read yet
    name: Optional[str] = dataclasses.field(default=None, metadata=_flat_name("dataset_name"))  # recorded
    size: Optional[int] = dataclasses.field(default=None, metadata=_flat_name("dataset_size"))  # recorded: images

    def __post_init__(self) -> None:
        if not self.path:
            raise UserError("--data is required")


@dataclasses.dataclass(frozen=True)
class ComputeOptions(OptionGroup):
    """Processes, device and precision (``auto`` is decided by ``resolve_options``)."""
    gpus: int = 1                          # processes, one per GPU (torchrun: its world size)
    device: str = "auto"                   # 'auto', 'cpu' or 'cuda'; resolved to 'cpu' / 'cuda'
    precision: str = "auto"                # 'auto', 'fp32', 'bf16' or 'fp16'; resolved (misc.resolve_precision)
    precision_info: Optional[Dict[str, Any]] = None   # recorded: resolve_precision's choice and the CPU behind it

    def __post_init__(self) -> None:
        if self.gpus < 1:
            raise UserError(f"--gpus must be >= 1, got {self.gpus}")


@dataclasses.dataclass(frozen=True)
class RunOptions(OptionGroup):
    """Where the run starts from and what it computes besides training."""
    cfg: str = DEFAULT_PRESET              # the preset's name (or the --cfg JSON path): part of the run folder's name
    resume: Optional[str] = None           # the file a start loads (resolved: --init under --resume latest)
    init: Optional[str] = None             # what a fresh start loads under --resume latest
    auto_resume: Optional[str] = None      # 'latest', a run folder, or None (resolve_options)
    teacher: Optional[str] = None          # distillation teacher file; None = the stock generator of resume
    metrics: Tuple[str, ...] = ()          # checked metric names computed at snapshots
    inception: Optional[str] = None        # Inception weights for FID/KID; None = the cache

    def __post_init__(self) -> None:
        if isinstance(self.metrics, str):
            raise UserError(f"metrics must be a list of metric names, got '{self.metrics}' "
                            "(resolve_options parses the --metrics string)")
        object.__setattr__(self, "metrics", tuple(self.metrics or ()))


GROUPS: Tuple[Tuple[str, type], ...] = (
    ("generator", GeneratorOptions), ("discriminator", DiscriminatorOptions), ("loss", LossOptions),
    ("augment", AugmentOptions), ("schedule", ScheduleOptions), ("data", DataOptions),
    ("compute", ComputeOptions), ("run", RunOptions))


def _option_index() -> Dict[str, Tuple[str, str]]:
    index: Dict[str, Tuple[str, str]] = {}
    for group, cls in GROUPS:
        for flat, name in cls.flat_fields():
            if flat in index:
                raise TypeError(f"option '{flat}' is in both {index[flat][0]} and {group}")
            index[flat] = (group, name)
    return index


OPTIONS: Dict[str, Tuple[str, str]] = _option_index()   # flat name -> (group, field)


@dataclasses.dataclass(frozen=True)
class TrainingOptions:
    """Every option of a training run, in groups (module docstring). Built by
    ``training.launch.resolve_options``; ``from_flat`` reads the flat form of files."""
    generator: GeneratorOptions
    discriminator: DiscriminatorOptions
    loss: LossOptions
    augment: AugmentOptions
    schedule: ScheduleOptions
    data: DataOptions
    compute: ComputeOptions
    run: RunOptions

    def __post_init__(self) -> None:
        """The rules that join two groups."""
        batch, gpus = self.schedule.batch, self.compute.gpus
        if batch is None or batch < 1 or batch % gpus:
            raise UserError(f"--batch {batch} must be a positive multiple of --gpus {gpus}")
        if self.loss.degraded_reals and self.generator.q_dim > 0:
            raise UserError("--degraded-reals is for plain runs (--q-dim 0); a QC run already shows "
                            "D_degraded degraded reals")

    @classmethod
    def from_flat(cls, values: Mapping[str, Any]) -> "TrainingOptions":
        """Options from the flat form (``training_options.json``, a snapshot's recorded options,
        also those of older versions: a missing option takes its default). An unknown name is a
        ``UserError``."""
        unknown = sorted(set(values) - set(OPTIONS))
        if unknown:
            raise UserError(f"unknown training option(s): {', '.join(unknown)} (known: {', '.join(OPTIONS)})")
        return cls(**{group: group_cls.from_flat(values) for group, group_cls in GROUPS})

    def to_flat(self) -> Dict[str, Any]:
        """Flat name -> value, every option (what ``training_options.json`` and snapshots hold)."""
        flat: Dict[str, Any] = {}
        for group, _cls in GROUPS:
            flat.update(getattr(self, group).to_flat())
        return flat

    def to_dict(self) -> Dict[str, Dict[str, Any]]:
        """Group -> field -> value (``--dry-run`` prints it)."""
        return {group: {name: _plain(getattr(getattr(self, group), name)) for _flat, name in cls.flat_fields()}
                for group, cls in GROUPS}

    def replace(self, **changes: Any) -> "TrainingOptions":
        """A copy with ``changes`` given by flat name (checked again, like any new options)."""
        return TrainingOptions.from_flat({**self.to_flat(), **changes})


def default_flat() -> Dict[str, Any]:
    """Flat name -> default of every option (the one place defaults are written: the fields)."""
    out: Dict[str, Any] = {}
    for _group, cls in GROUPS:
        out.update(cls.flat_defaults())
    return out


def default_text(name: str) -> str:
    """An option's default as train.py's help shows it (booleans 0/1, floats shortest)."""
    value = default_flat()[name]
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# ---------------------------------------------------------------------------------------------
# Presets: data in configs/, each naming only the options it changes.

@dataclasses.dataclass(frozen=True)
class Preset:
    """One preset file."""
    name: str                              # its "name" (else what --cfg said)
    description: str                       # one line for people
    auto: bool                             # StyleGAN2-ADA 'auto': batch, widths, lr, gamma, EMA from the data
    values: Dict[str, Any]                 # flat name -> value, only what the preset changes

    def get(self, name: str) -> Any:
        """The preset's value of an option, else its default (``auto`` values are not known here)."""
        return self.values[name] if name in self.values else default_flat()[name]


def list_presets() -> List[str]:
    """Names of the presets in ``configs/``."""
    return sorted(os.path.splitext(f)[0] for f in os.listdir(CONFIG_DIR) if f.endswith(".json"))


def preset_path(name: str) -> str:
    """``configs/<name>.json``, or ``name`` itself when it is a JSON file."""
    if name.endswith(".json") and os.path.isfile(name):
        return name
    path = os.path.join(CONFIG_DIR, f"{name}.json")
    if not os.path.isfile(path):
        raise UserError(f"unknown config '{name}' (choose from {', '.join(list_presets())}, or a JSON path)")
    return path


def load_preset(name: str) -> Preset:
    """The preset ``name`` (a name in ``configs/`` or a JSON path). Its options are flat names;
    an unknown name is a ``UserError`` (values are checked when the options are built)."""
    path = preset_path(name)
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except ValueError as e:
        raise UserError(f"config {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"config {path} must hold a JSON object (option name -> value)")
    values = {k: v for k, v in data.items() if k not in PRESET_KEYS}
    unknown = sorted(set(values) - set(OPTIONS))
    if unknown:
        raise UserError(f"config {path}: unknown option(s) {', '.join(unknown)}; a preset maps option names "
                        f"to values, as configs/*.json (known: {', '.join(OPTIONS)})")
    return Preset(name=data.get("name", name), description=data.get("description", ""),
                  auto=bool(data.get("auto", False)), values=values)


def auto_values(resolution: int, gpus: int) -> Dict[str, Any]:
    """StyleGAN2-ADA's 'auto' config, computed from resolution and GPU count (the ``auto`` preset)."""
    batch = max(min(gpus * min(4096 // resolution, 32), 64), gpus)
    return dict(batch=batch, mbstd_group=min(batch // gpus, 4),
                channel_base=32768 if resolution >= 512 else 16384,
                lr=0.002 if resolution >= 1024 else 0.0025, gamma=0.0002 * resolution ** 2 / batch,
                ema_kimg=batch * 10 / 32)
