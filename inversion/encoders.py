"""pSp-style encoders for QC-StyleGAN inversion (Richardson et al., CVPR 2021; QC-StyleGAN Sec. 4.2).

Two encoders read the (degraded) image: a content encoder to w (one w broadcast to every layer,
or W+ with one code per layer) and a quality encoder to q. Each is a ResNet backbone (He et al.
2016, BasicBlock layout with torchvision's parameter names, so ``--backbone-weights`` can load a
torchvision resnet18/34 file when the user has one; nothing is downloaded) followed by a head on
pooled features of the last three stages (a small feature pyramid, as pSp's map2style reads
coarse-to-fine features). Predictions are offsets: ``ws = w_avg + head(...)``, ``q = 0 + head(...)``;
the content head's last layer starts at zero, so an untrained encoder returns w_avg; the quality
head's starts small but not zero (image losses have zero gradient in q at exactly q = 0).

Checkpoints are plain tensors and data read with ``torch.load(weights_only=True)``::

    {'format': 'qc-stylegan-encoder', 'version': 1, 'kwargs': {...}, 'state_dict': {...},
     'training_state': {...} | None, 'metadata': {...}}

``load_encoder`` also takes the official release's pSp file (``ffhq_psp.pt``; ``official_psp``),
told apart by its content; ``export_encoder`` converts it to this format with
``'architecture': 'official-psp'`` and ``'version': 2`` (it then loads without reading the
release's generator and optimiser; code that knows only version 1 refuses it with a clear error).
"""
from __future__ import annotations

import copy
import io
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from dnnlib.util import BadFileError, UserError, atomic_write
from torch_utils.misc import assert_shape, load_torch_file

from . import official_psp

FORMAT_TAG = "qc-stylegan-encoder"
FORMAT_VERSION = 2             # newest version this code reads
OWN_ARCHITECTURE = "qc-resnet"  # InversionEncoder (files without an 'architecture' entry)
ARCHITECTURE_VERSIONS = {OWN_ARCHITECTURE: 1, official_psp.ARCHITECTURE: 2}   # version written per architecture
RESNET_DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAXPOOL_MIN_RESOLUTION = 128   # below this the stem's max-pool is skipped (keeps 32-64 px images usable)
HEAD_HIDDEN = 512
Q_HEAD_INIT_STD = 1e-3         # q = 0 exactly is a stationary point of image losses (DegradBlock ReLUs)


# ---------------------------------------------------------------------------------------------
# Backbone (torchvision parameter names).

class BasicBlock(nn.Module):
    """3x3 conv-BN-ReLU, 3x3 conv-BN, identity or 1x1 projection shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                            nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNetBackbone(nn.Module):
    """ResNet-18/34 trunk (no classifier). Returns the pooled features of layer2..layer4."""

    def __init__(self,
                 depth: int = 18,            # 18 or 34 (torchvision layouts)
                 width: int = 64,            # channels of layer1 (64 = torchvision; smaller for tests)
                 maxpool: bool = True,       # the stem's 3x3/2 max-pool
                 in_channels: int = 3):
        super().__init__()
        if depth not in RESNET_DEPTHS:
            raise UserError(f"unsupported ResNet depth {depth} (choose from {', '.join(map(str, RESNET_DEPTHS))})")
        self.depth, self.width = depth, width
        self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if maxpool else nn.Identity()
        channels = [width, width * 2, width * 4, width * 8]
        c_in = width
        for i, (c, n) in enumerate(zip(channels, RESNET_DEPTHS[depth])):
            blocks = [BasicBlock(c_in if j == 0 else c, c, stride=(2 if (i > 0 and j == 0) else 1)) for j in range(n)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            c_in = c
        self.feature_channels = channels[1:]

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        # x: [N, C, H, W] normalised -> pooled [N, 2w], [N, 4w], [N, 8w]
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        feats = []
        for name in ("layer2", "layer3", "layer4"):
            x = getattr(self, name)(x)
            feats.append(x.mean(dim=[2, 3]))
        return feats

    def load_torchvision(self, state: Dict[str, torch.Tensor], what: str) -> None:
        """Copy a torchvision resnet18/34 state_dict (the classifier ``fc`` is ignored)."""
        own = self.state_dict()
        src = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing = [k for k in own if k not in src]
        bad = [k for k in own if k in src and tuple(src[k].shape) != tuple(own[k].shape)]
        if missing or bad:
            raise UserError(f"{what} is not a torchvision resnet{self.depth} with width {self.width} "
                            f"(missing {missing[:3]}, mismatched {bad[:3]}); use --depth 18/34 and --width 64")
        self.load_state_dict({k: src[k] for k in own})


class LatentHead(nn.Module):
    """Concatenated pooled features -> hidden -> outputs; the last layer starts at zero (or, with
    ``init_std > 0``, small random weights)."""

    def __init__(self, in_features: int, out_features: int, hidden: int = HEAD_HIDDEN, init_std: float = 0.0):
        super().__init__()
        self.fc0 = nn.Linear(in_features, hidden)
        self.fc1 = nn.Linear(hidden, out_features)
        nn.init.normal_(self.fc1.weight, std=init_std) if init_std > 0 else nn.init.zeros_(self.fc1.weight)
        nn.init.zeros_(self.fc1.bias)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.fc1(F.leaky_relu(self.fc0(torch.cat(list(feats), dim=1)), 0.2))


# ---------------------------------------------------------------------------------------------
# The encoder pair.

class InversionEncoder(nn.Module):
    """Content encoder (image -> ws) and quality encoder (image -> q) for one generator."""

    def __init__(self,
                 img_resolution: int,               # generator resolution (input size)
                 img_channels: int,                 # 1 or 3
                 num_ws: int,                       # generator's number of w layers
                 w_dim: int,
                 q_dim: int,                        # 0: no quality encoder (plain StyleGAN2)
                 w_plus: bool = True,               # one w per layer (W+) or one w for all (W)
                 depth: int = 18,                   # ResNet-18 or -34
                 width: int = 64,                   # backbone width (64 = torchvision)
                 hidden: int = HEAD_HIDDEN):        # head hidden size
        super().__init__()
        self.init_kwargs = dict(img_resolution=img_resolution, img_channels=img_channels, num_ws=num_ws,
                                w_dim=w_dim, q_dim=q_dim, w_plus=w_plus, depth=depth, width=width, hidden=hidden)
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.num_ws, self.w_dim, self.q_dim, self.w_plus = num_ws, w_dim, q_dim, w_plus
        maxpool = img_resolution >= MAXPOOL_MIN_RESOLUTION
        self.content = ResNetBackbone(depth, width, maxpool)
        self.content_head = LatentHead(sum(self.content.feature_channels), (num_ws if w_plus else 1) * w_dim, hidden)
        if q_dim > 0:
            self.quality = ResNetBackbone(depth, width, maxpool)
            self.quality_head = LatentHead(sum(self.quality.feature_channels), q_dim, hidden, Q_HEAD_INIT_STD)
        self.register_buffer("w_avg", torch.zeros([w_dim]))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    @classmethod
    def for_generator(cls, G: nn.Module, **kwargs) -> "InversionEncoder":
        """An encoder sized for ``G``, starting at (G's w_avg, q = 0)."""
        E = cls(G.img_resolution, G.img_channels, G.num_ws, G.w_dim, G.q_dim, **kwargs)
        E.w_avg.copy_(G.mapping.w_avg.detach().cpu())
        return E

    def check_generator(self, G: nn.Module, what: str = "encoder") -> None:
        """UserError unless this encoder was made for a generator shaped like ``G``."""
        for attr in ("img_resolution", "num_ws", "w_dim", "q_dim"):
            if getattr(self, attr) != getattr(G, attr):
                raise BadFileError(f"{what} was trained for another generator: shape mismatch in {attr} "
                                   f"(encoder {getattr(self, attr)}, network {getattr(G, attr)})")

    def normalise(self, img: torch.Tensor) -> torch.Tensor:
        # img: [N, C, R, R] in about [-1, 1] -> ImageNet-normalised [N, 3, R, R]
        x = (img.float() + 1) / 2
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        return (x - self.mean) / self.std

    def forward(self, img: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """img: [N, C, R, R] in about [-1, 1] -> (ws [N, num_ws, w_dim], q [N, q_dim] or None)."""
        n = img.shape[0]
        assert_shape(img, [n, self.img_channels, self.img_resolution, self.img_resolution])
        x = self.normalise(img)
        dw = self.content_head(self.content(x)).view(n, -1, self.w_dim)
        ws = self.w_avg + dw.expand(n, self.num_ws, self.w_dim)          # offsets from w_avg
        q = self.quality_head(self.quality(x)) if self.q_dim > 0 else None   # offsets from q = 0
        return ws, q

    def load_backbone_weights(self, path: str) -> None:
        """Initialise both backbones from a torchvision ResNet file (``--backbone-weights``)."""
        state = load_torch_file(path, "backbone weights")
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        self.content.load_torchvision(state, path)
        if self.q_dim > 0:
            self.quality.load_torchvision(state, path)


# ---------------------------------------------------------------------------------------------
# Files.

def save_encoder(path: str, E: InversionEncoder, training_state: Optional[dict] = None,
                 metadata: Optional[dict] = None) -> None:
    """Write an encoder checkpoint atomically (see the module docstring for the format)."""
    payload = {"format": FORMAT_TAG, "version": ARCHITECTURE_VERSIONS[OWN_ARCHITECTURE], "kwargs": copy.deepcopy(E.init_kwargs),
               "state_dict": {k: v.detach().cpu().clone() for k, v in E.state_dict().items()},
               "training_state": training_state, "metadata": dict(metadata or {})}
    buf = io.BytesIO()
    torch.save(payload, buf)
    with atomic_write(path, "wb") as f:
        f.write(buf.getvalue())


def read_encoder_file(path: str) -> Dict[str, Any]:
    """The payload of an encoder file in our format (see the module docstring): one of ours, or the
    official release's pSp file converted in memory (``official_psp.read_official_file``: only its
    encoder is kept). ``UserError`` for a missing file, ``BadFileError`` for a foreign, corrupt,
    truncated or newer one."""
    raw = load_torch_file(path, "encoder file", mmap=True)      # mapped: an official file's extras are never read
    if official_psp.is_official_file(raw):
        try:
            enc = official_psp.extract_encoder(raw, path)
        finally:
            raw.clear()
        return {"format": FORMAT_TAG, "version": ARCHITECTURE_VERSIONS[official_psp.ARCHITECTURE],
                "architecture": official_psp.ARCHITECTURE,
                "kwargs": {"w_dim": enc.w_dim, "q_dim": enc.q_dim, "num_ws": enc.num_ws},
                "state_dict": enc.state_dict, "training_state": None,
                "metadata": {"converted_from": "official pSp file", "official_opts": enc.opts}}
    if not isinstance(raw, dict) or raw.get("format") != FORMAT_TAG:
        raise BadFileError(f"{path}: not an encoder checkpoint (train one with 'invert.py train-encoder', or give "
                           f"the official release's ffhq_psp.pt)")
    if not isinstance(raw.get("version"), int) or raw["version"] > FORMAT_VERSION:
        raise BadFileError(f"{path}: encoder format version {raw.get('version')} is newer than this code "
                           f"supports ({FORMAT_VERSION})")
    arch = raw.get("architecture", OWN_ARCHITECTURE)
    if arch not in ARCHITECTURE_VERSIONS:
        raise BadFileError(f"{path}: unknown encoder architecture '{arch}' (known: {', '.join(ARCHITECTURE_VERSIONS)})")
    return copy.deepcopy(raw)          # in memory, not backed by the mapped file (training resumes from it)


def export_encoder(src: str, dst: str, half: bool = False, metadata: Optional[dict] = None) -> int:
    """Write a release copy of an encoder file (ours, or the official pSp file converted to our
    format): no optimiser/training state, metadata merged, and with ``half`` the weights stored as
    float16 (BatchNorm statistics and latent_avg stay float32; loading casts back to float32).
    Returns the file size in bytes."""
    payload = read_encoder_file(src)
    state = payload["state_dict"]
    if half:
        state = {k: v.half() if v.is_floating_point() and not k.endswith(("running_mean", "running_var", "latent_avg"))
                 else v for k, v in state.items()}
    out = {**payload, "state_dict": state, "training_state": None,
           "metadata": {**dict(payload.get("metadata") or {}), **dict(metadata or {}),
                        "weights_dtype": "float16" if half else "float32"}}
    buf = io.BytesIO()
    torch.save(out, buf)
    with atomic_write(dst, "wb") as f:
        f.write(buf.getvalue())
    return os.path.getsize(dst)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def load_encoder(path: str, device: Any = "cpu", generator: Optional[nn.Module] = None,
                 log: Optional[Callable[[str], None]] = None) -> nn.Module:
    """Load an encoder file (ours or the official pSp file, told apart by content), in eval mode
    with gradients off, on ``device``. With ``generator``: check it was made for that generator's
    shapes (``BadFileError`` naming the mismatch, before any output is written); the official
    encoder takes G's num_ws (its w goes to every layer) and, when its ``latent_avg[:w_dim]`` is not
    G's ``w_avg`` (a mismatched pair), ``log`` says so in one line (default: stderr)."""
    payload = read_encoder_file(path)
    arch = payload.get("architecture", OWN_ARCHITECTURE)
    kwargs = dict(payload["kwargs"])
    try:
        if arch == official_psp.ARCHITECTURE:
            if generator is not None:
                kwargs.update(num_ws=generator.num_ws, img_resolution=generator.img_resolution)
            E = official_psp.build_encoder(payload["state_dict"], **kwargs)
        else:
            E = InversionEncoder(**kwargs)
            E.load_state_dict(payload["state_dict"])
    except (TypeError, RuntimeError, KeyError) as exc:
        raise BadFileError(f"{path}: does not match the encoder architecture ({str(exc).splitlines()[0]})") from None
    if generator is not None:
        E.check_generator(generator, what=f"{path}: this encoder")
        if arch == official_psp.ARCHITECTURE:
            diff = official_psp.w_avg_mismatch(E, generator)
            if diff is not None:
                (log or _stderr)(f"warning: {path}: latent_avg differs from the network's w_avg (max |diff| "
                                 f"{diff:.3g}): this encoder was trained with another generator")
    return E.eval().requires_grad_(False).to(device)


def encode_images(E: nn.Module, images: Sequence[Any], prepared: torch.Tensor):
    """Stage 1 of the inversion: the encoder's (ws [N, num_ws, w_dim], q [N, q_dim] or None).
    ``prepared``: the images as the inversion prepared them, [N, C, R, R] at G's resolution in
    [-1, 1] (what our encoders read); ``images``: the uint8 originals, which an encoder with
    ``reads_originals`` (the official pSp encoder: its own resize from the original) reads instead."""
    if getattr(E, "reads_originals", False):
        return E.encode_images(images, prepared)
    return E(prepared)
