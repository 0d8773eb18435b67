"""LPIPS (Zhang et al., CVPR 2018) through the ``lpips`` package, offline.

The package ships its learned linear heads (``lpips/weights/v0.1/<net>.pth``); the backbone is
torchvision's ImageNet classifier, which torchvision would download. Here the backbone weights
are read only from the torch hub cache (``torch.hub.get_dir()/checkpoints``), and their absence is
reported up front with the exact file name and folder. ``backbone='random'`` (tests, debugging)
builds the same network with seeded random backbone weights and never touches the network; its
numbers are not LPIPS.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import warnings

import numpy as np
import torch

from dnnlib.util import UserError
from torch_utils.misc import assert_shape, load_torch_file

# Backbone checkpoints as torchvision names them (ImageNet weights, IMAGENET1K_V1).
BACKBONE_FILES = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
}
BACKBONE_URLS = {
    "alex": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    "vgg": "https://download.pytorch.org/models/vgg16-397923af.pth",
}
RANDOM_SEED = 0


def hub_checkpoint_dir() -> str:
    return os.path.join(torch.hub.get_dir(), "checkpoints")


def backbone_path(net: str) -> str:
    """Where the ImageNet backbone for ``net`` must be; raises ``UserError`` when it is missing."""
    if net not in BACKBONE_FILES:
        raise UserError(f"unknown LPIPS network '{net}' (expected one of {', '.join(BACKBONE_FILES)})")
    folder = hub_checkpoint_dir()
    path = os.path.join(folder, BACKBONE_FILES[net])
    if not os.path.isfile(path):
        raise UserError(f"LPIPS-{net} needs the torchvision ImageNet weights {BACKBONE_FILES[net]} in "
                        f"{folder}/ (download {BACKBONE_URLS[net]} on a machine with internet and copy "
                        f"it there; set TORCH_HOME to use another cache)")
    return path


@contextlib.contextmanager
def _quiet():
    """Silence the package's banner and torchvision's deprecation warnings."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


class LPIPS:
    """LPIPS distance between RGB images; ``net`` is 'alex' (default) or 'vgg'.

    ``backbone='imagenet'`` loads the torchvision weights from the hub cache; ``'random'`` uses
    seeded random backbone weights (debug only).
    """

    def __init__(self, net: str = "alex", backbone: str = "imagenet", device="cpu"):
        import lpips   # here, not at the top: +6 s of import (torchvision models), paid only when LPIPS is used
        if backbone not in ("imagenet", "random"):
            raise UserError(f"unknown LPIPS backbone '{backbone}' (expected 'imagenet' or 'random')")
        path = backbone_path(net) if backbone == "imagenet" else None
        if net not in BACKBONE_FILES:
            raise UserError(f"unknown LPIPS network '{net}' (expected one of {', '.join(BACKBONE_FILES)})")
        with _quiet(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            model = lpips.LPIPS(net=net, pnet_rand=True, pretrained=True, verbose=False)
        if path is not None:
            self._load_backbone(model, path)
        self.net, self.backbone = net, backbone
        self.device = torch.device(device)
        self.model = model.eval().requires_grad_(False).to(self.device)

    @staticmethod
    def _load_backbone(model, path: str) -> None:
        # torchvision names the layers 'features.<i>.<param>'; lpips splits the same layers into
        # slices named 'slice<k>.<i>.<param>', keeping the index i.
        state = load_torch_file(path, "LPIPS backbone weights")
        own = model.net.state_dict()
        mapped = {}
        for key in own:
            m = re.fullmatch(r"slice\d+\.(\d+)\.(weight|bias)", key)
            src = f"features.{m.group(1)}.{m.group(2)}" if m else None
            if src not in state or state[src].shape != own[key].shape:
                raise UserError(f"{path} does not look like the torchvision backbone LPIPS expects "
                                f"(missing or mismatched '{src}')")
            mapped[key] = state[src]
        model.net.load_state_dict(mapped)

    @torch.no_grad()
    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """LPIPS per image pair. x, y: [N, 3, H, W] float in [0, 255] -> [N]."""
        assert_shape(x, [None, 3, None, None])
        assert_shape(y, list(x.shape))
        x = x.to(self.device, torch.float32) / 127.5 - 1
        y = y.to(self.device, torch.float32) / 127.5 - 1
        return self.model(x, y).reshape(-1)

    def __call__(self, pred: np.ndarray, gt: np.ndarray) -> float:
        """LPIPS of two uint8 RGB images ``[H, W, 3]``."""
        if np.shape(pred) != np.shape(gt):
            raise UserError(f"images differ in shape: {np.shape(pred)} vs {np.shape(gt)}")
        if np.ndim(pred) != 3 or np.shape(pred)[2] != 3:
            raise UserError(f"LPIPS needs RGB images [H, W, 3], got shape {np.shape(pred)}")
        to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).permute(2, 0, 1)[None]
        return float(self.distance(to_t(pred), to_t(gt))[0])
