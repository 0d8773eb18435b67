"""The official release's intermediate pSp outputs as a source of pivots (w, q) (QC-StyleGAN
Sec. 4.3: stage 1 of the restoration is the pSp encoder, stage 2 PTI around its pivot).

The release's ``restoration/pSp/scripts/inference.py`` writes, per image, under its ``--out_path``::

    latent/NNNN.pt     codes [w_dim + q_dim] = encoder(x) + latent_avg (a tensor, maybe tagged cuda:0)
    org/NNNN.png       the encoder's input: the image resized to 256 x 256
    inverted/NNNN.png  G(w, q) of the untuned generator

and its PTI pairs ``org/`` images with ``latent/`` files by sorted order. ``read_official_outputs``
does the same, refusing folders whose counts differ (the release would pair them wrongly or fail
half way); an image's name is its ``org/`` file's stem (``0000``), so ``restore.py --input
DIR/org --inversions DIR`` finds each image's pivot. Files are read with ``weights_only=True``.
"""
from __future__ import annotations

import dataclasses
import os
from typing import List

import torch

from dnnlib.image_io import list_images
from dnnlib.util import UserError
from torch_utils.misc import load_torch_file

LATENT_DIR = "latent"      # the release's names
IMAGES_DIR = "org"


@dataclasses.dataclass
class OfficialPivot:
    name: str                  # the org/ image's stem, e.g. '0000'
    image: str                 # path of the org/ image paired with it
    w: torch.Tensor            # [w_dim] float32: the same w for every layer
    q: torch.Tensor            # [q_dim] float32


def is_official_outputs(path: str) -> bool:
    """Whether ``path`` is a folder the release's pSp inference wrote (``latent/`` and ``org/``)."""
    return bool(path) and os.path.isdir(os.path.join(path, LATENT_DIR)) and os.path.isdir(os.path.join(path, IMAGES_DIR))


def read_official_outputs(root: str, w_dim: int, q_dim: int) -> List[OfficialPivot]:
    """The pivots of a release pSp output folder, paired by sorted order (module docstring);
    ``UserError`` for unequal counts, a code of the wrong size or a name used twice."""
    latent_dir, images_dir = os.path.join(root, LATENT_DIR), os.path.join(root, IMAGES_DIR)
    latents = sorted(f for f in os.listdir(latent_dir) if f.endswith(".pt") and not f.startswith("."))
    images = list_images(images_dir)
    if len(latents) != len(images):
        raise UserError(f"{root}: {len(latents)} files in {LATENT_DIR}/ but {len(images)} images in {IMAGES_DIR}/; "
                        f"the release pairs them by sorted order, so the counts must be equal")
    out, seen = [], set()
    for lat, img in zip(latents, images):
        path = os.path.join(latent_dir, lat)
        codes = load_torch_file(path, "pSp latent")
        if not isinstance(codes, torch.Tensor) or codes.numel() != w_dim + q_dim:
            size = codes.numel() if isinstance(codes, torch.Tensor) else type(codes).__name__
            raise UserError(f"{path}: expected a tensor of {w_dim} + {q_dim} codes (w, q), got {size}")
        codes = codes.detach().float().reshape(-1).clone()           # [w_dim + q_dim]
        name = os.path.splitext(img)[0]
        if name in seen:
            raise UserError(f"{images_dir}: two images named {name}")
        seen.add(name)
        out.append(OfficialPivot(name=name, image=os.path.join(images_dir, img), w=codes[:w_dim], q=codes[w_dim:]))
    return out


def pivot_ws(pivot: OfficialPivot, num_ws: int) -> torch.Tensor:
    """w [w_dim] -> ws [num_ws, w_dim], as the release feeds its generator."""
    return pivot.w.unsqueeze(0).repeat(num_ws, 1)
