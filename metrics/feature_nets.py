"""Pluggable feature extractors for FID/KID.

A feature net maps uint8 images ``[N, C, H, W]`` (any size, C = 1 or 3) to float32 features
``[N, D]``; ``.name`` identifies it in cache keys. Three kinds:

- ``InceptionTorchScript``: StyleGAN2-ADA's ``inception-2015-12-05.pt`` (TorchScript, resizes
  internally; called as ``net(images, return_features=True)``).
- ``InceptionStateDict``: the pytorch-fid / torch-fidelity state-dict ports loaded into
  ``metrics.inception.InceptionV3FID``, resized to 299 the way the tool that published the file
  does (pytorch-fid: ``F.interpolate`` bilinear; torch-fidelity and the TF graph: TF1 bilinear).
- ``RandomFeatureNet``: a small seeded random CNN for tests (``--inception random``); its numbers
  are not FID.

``load_feature_net(spec)`` picks one: ``spec`` is a file, ``'random'``, or None to search the
usual cache locations (``cache_candidates()``).
"""
from __future__ import annotations

import os
import zipfile
from typing import List, Optional

import torch
from torch import nn

from dnnlib.util import UserError, cache_dir
from metrics.inception import FEATURE_DIM, RESIZERS, InceptionV3FID
from torch_utils.misc import assert_shape

TORCHSCRIPT_NAME = "inception-2015-12-05.pt"                      # StyleGAN2-ADA (TorchScript)
PYTORCH_FID_NAME = "pt_inception-2015-12-05-6726825d.pth"         # pytorch-fid (state dict)
TORCH_FIDELITY_NAME = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity (state dict)
TORCHSCRIPT_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
RANDOM_SPECS = ("random", "random-test")


def _to_rgb(x: torch.Tensor) -> torch.Tensor:
    # x: [N, C, H, W] uint8, C in {1, 3}
    assert_shape(x, [None, None, None, None])
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    if x.shape[1] != 3:
        raise UserError(f"feature nets take 1- or 3-channel images, got {x.shape[1]} channels")
    return x


class FeatureNet(nn.Module):
    name = "abstract"
    feature_dim = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class RandomFeatureNet(FeatureNet):
    """Small seeded random CNN (tests only): three strided 3x3 convolutions with ReLU, global
    average pooling. images: [N, C, H, W] uint8 -> [N, 64] float32."""

    def __init__(self, seed: int = 0, width: int = 64):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        chans = [3, 32, width, width]
        self.convs = nn.ModuleList()
        for cin, cout in zip(chans[:-1], chans[1:]):
            conv = nn.Conv2d(cin, cout, 3, stride=2, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * (2 / (cin * 9)) ** 0.5)
                conv.bias.copy_(torch.randn(conv.bias.shape, generator=gen) * 0.1)
            self.convs.append(conv)
        self.feature_dim = width
        self.name = f"random-test-s{seed}-w{width}"
        self.requires_grad_(False).eval()

    def forward(self, images):
        x = _to_rgb(images).to(torch.float32) / 127.5 - 1
        for conv in self.convs:
            x = torch.relu(conv(x))
        return x.mean(dim=(2, 3))


class InceptionStateDict(FeatureNet):
    """Inception-v3 FID network from a state dict; ``resize`` is 'tf1' or 'torch'."""

    feature_dim = FEATURE_DIM

    def __init__(self, state_dict: Optional[dict] = None, resize: str = "tf1", name: str = "inception"):
        super().__init__()
        if resize not in RESIZERS:
            raise UserError(f"unknown Inception resize mode '{resize}' (expected {', '.join(RESIZERS)})")
        self.net = InceptionV3FID()
        if state_dict is not None:
            self.net.load_state_dict(state_dict)
        self.resize = resize
        self.name = f"{name}-{resize}"
        self.requires_grad_(False).eval()

    def forward(self, images):
        x = _to_rgb(images).to(torch.float32)
        x = RESIZERS[self.resize](x)
        # TF graph / torch-fidelity: (x - 128) / 128; pytorch-fid: 2 * (x / 255) - 1.
        x = (x - 128) / 128 if self.resize == "tf1" else x / 127.5 - 1
        return self.net(x)


class InceptionTorchScript(FeatureNet):
    """StyleGAN2-ADA's TorchScript Inception (takes uint8 images of any size)."""

    feature_dim = FEATURE_DIM

    def __init__(self, module, name: str):
        super().__init__()
        self.module = module
        self.name = name

    def forward(self, images):
        return self.module(_to_rgb(images), return_features=True).to(torch.float32)


# ---------------------------------------------------------------------------------------------
# Loading.

def cache_candidates() -> List[str]:
    """Files searched, in order, when no ``--inception`` is given."""
    hub = os.path.join(torch.hub.get_dir(), "checkpoints")
    return [
        os.path.join(cache_dir(), TORCHSCRIPT_NAME),
        os.path.join(cache_dir(), "downloads", TORCHSCRIPT_NAME),
        os.path.join(hub, PYTORCH_FID_NAME),
        os.path.join(hub, TORCH_FIDELITY_NAME),
    ]


def _is_torchscript(path: str) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist())


def _clean_state_dict(obj, path: str) -> dict:
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path} is neither a TorchScript Inception nor an Inception-v3 state dict")
    out = {}
    for key, value in obj.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if key.startswith(("fc.", "AuxLogits.")):
            continue
        out[key] = value
    expected = InceptionV3FID().state_dict()
    missing = [k for k in expected if k not in out]
    wrong = [k for k in expected if k in out and out[k].shape != expected[k].shape]
    if missing or wrong:
        bad = (missing + wrong)[:3]
        raise UserError(f"{path} is not an Inception-v3 FID state dict ({len(missing)} missing, "
                        f"{len(wrong)} mismatched parameters, e.g. {', '.join(bad)})")
    return {k: out[k] for k in expected}


def load_inception(path: str, resize: str = "auto") -> FeatureNet:
    """Load a TorchScript or state-dict Inception from ``path``.

    ``resize='auto'`` follows the tool that published the file: 'torch' for pytorch-fid's
    ``pt_inception-*`` file, 'tf1' otherwise (torch-fidelity, TF graph conventions).
    """
    if not os.path.isfile(path):
        raise UserError(f"Inception file not found: {path}")
    base = os.path.basename(path)
    if _is_torchscript(path):
        try:
            module = torch.jit.load(path, map_location="cpu").eval()
        except Exception as exc:
            raise UserError(f"cannot load TorchScript Inception {path}: {exc}") from None
        return InceptionTorchScript(module, name=f"ts-{os.path.splitext(base)[0]}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"cannot read {path} as a TorchScript module or a state dict ({exc})") from None
    state = _clean_state_dict(obj, path)
    if resize == "auto":
        resize = "torch" if base.startswith("pt_inception") else "tf1"
    return InceptionStateDict(state, resize=resize, name=f"sd-{os.path.splitext(base)[0]}")


def missing_inception_message() -> str:
    return (f"FID/KID need the Inception-v3 weights, which cannot be downloaded here. Pass "
            f"--inception FILE, or put {TORCHSCRIPT_NAME} (StyleGAN2-ADA: {TORCHSCRIPT_URL}) in "
            f"{cache_dir()}/, or {PYTORCH_FID_NAME} (pytorch-fid) or {TORCH_FIDELITY_NAME} "
            f"(torch-fidelity) in {os.path.join(torch.hub.get_dir(), 'checkpoints')}/")


def load_feature_net(spec=None, device="cpu", resize: str = "auto") -> FeatureNet:
    """``spec``: a FeatureNet (returned as is), a file path, 'random' (test net), or None
    (search ``cache_candidates()``; ``UserError`` naming the files when none exists)."""
    if isinstance(spec, FeatureNet):
        net = spec
    elif isinstance(spec, str) and spec in RANDOM_SPECS:
        net = RandomFeatureNet()
    elif spec is not None:
        net = load_inception(os.fspath(spec), resize=resize)
    else:
        found = [p for p in cache_candidates() if os.path.isfile(p)]
        if not found:
            raise UserError(missing_inception_message())
        net = load_inception(found[0], resize=resize)
    return net.to(device)
