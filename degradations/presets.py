"""Named pipelines as data (JSON-compatible specs).

``paper`` is the degradation mix of the official QC-StyleGAN training (paper Sec. 4 and the
release's albumentations 1.0 pipeline): one of three families chosen uniformly per image, each
family the same three steps (blur, Gaussian noise, downscale-or-JPEG) with different
probabilities. The Table-2 presets (``blur``, ``superres``, ``noise``, ``jpeg``, ``multiple``)
build restoration test sets from clean images with the same ranges, one degradation type each;
``multiple`` applies all three steps.
"""
from __future__ import annotations

import copy
from typing import Any, Dict

# The release's ranges (pixels of 256x256 images).
BLUR_KSIZE = [3, 31]
BOX_KSIZE = [3, 25]
NOISE_VAR = [10, 650]
DOWNSCALE = [0.1, 0.9]
JPEG_QUALITY = [30, 50]

# Step probabilities (blur, noise, compression) of each family of the paper mix.
PAPER_FAMILIES = {
    "blur": (1.0, 0.5, 0.5),
    "noise": (0.5, 1.0, 0.5),
    "compression": (0.5, 0.5, 1.0),
}


def blur_step(p: float = 1.0) -> Dict[str, Any]:
    return {"one_of": [{"op": "gaussian_blur", "ksize": BLUR_KSIZE},
                       {"op": "motion_blur", "ksize": BLUR_KSIZE},
                       {"op": "median_blur", "ksize": BLUR_KSIZE},
                       {"op": "box_blur", "ksize": BOX_KSIZE}], "p": p}


def noise_step(p: float = 1.0) -> Dict[str, Any]:
    return {"op": "gaussian_noise", "var": NOISE_VAR, "p": p}


def downscale_op() -> Dict[str, Any]:
    return {"op": "downscale", "scale": DOWNSCALE, "interpolation": "nearest"}


def jpeg_op() -> Dict[str, Any]:
    return {"op": "jpeg", "quality": JPEG_QUALITY}


def compression_step(p: float = 1.0) -> Dict[str, Any]:
    return {"one_of": [downscale_op(), jpeg_op()], "p": p}


def paper_spec() -> Dict[str, Any]:
    families = [{"name": name, "steps": [blur_step(pb), noise_step(pn), compression_step(pc)]}
                for name, (pb, pn, pc) in PAPER_FAMILIES.items()]
    return {"name": "paper", "steps": [{"one_of": families}]}


PRESETS = {
    "paper": paper_spec,
    "blur": lambda: {"name": "blur", "steps": [blur_step()]},
    "superres": lambda: {"name": "superres", "steps": [downscale_op()]},
    "noise": lambda: {"name": "noise", "steps": [noise_step()]},
    "jpeg": lambda: {"name": "jpeg", "steps": [jpeg_op()]},
    "multiple": lambda: {"name": "multiple", "steps": [blur_step(), noise_step(), compression_step()]},
    # The official pSp encoder stage's stronger mix: blur kernel 5-31, noise variance 200-650,
    # downscale 0.2-0.9 or JPEG 30-50, each step with probability 0.8.
    "psp": lambda: {"name": "psp", "steps": [
        {"one_of": [{"op": "gaussian_blur", "ksize": [5, 31]}, {"op": "motion_blur", "ksize": [5, 31]},
                    {"op": "median_blur", "ksize": [5, 31]}, {"op": "box_blur", "ksize": [5, 25]}], "p": 0.8},
        {"op": "gaussian_noise", "var": [200, 650], "p": 0.8},
        {"one_of": [{"op": "downscale", "scale": [0.2, 0.9], "interpolation": "nearest"},
                    {"op": "jpeg", "quality": [30, 50]}], "p": 0.8}]},
}


def preset_spec(name: str) -> Dict[str, Any]:
    return copy.deepcopy(PRESETS[name]())
