"""The shipped default model (``pretrained/``): where its files live and how scripts fall back to them.

Scripts that take ``--network`` use the shipped QC generator when the option is omitted, and say
so on stderr. When the network is the shipped one, ``--encoder`` falls back to the shipped encoder
and ``--direction gender`` names the shipped boundary. See ``pretrained/README.md`` (model card,
training commands, licence of the training data).
"""
from __future__ import annotations

import os
import sys
from typing import Optional

from dnnlib.util import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAINED_DIR = os.path.join(ROOT, "pretrained")
DEFAULT_NETWORK = os.path.join(PRETRAINED_DIR, "qc-faces64.pt")             # QC generator (G_ema)
DEFAULT_TEACHER = os.path.join(PRETRAINED_DIR, "stylegan2-faces64.pt")      # its plain StyleGAN2 teacher
DEFAULT_ENCODER = os.path.join(PRETRAINED_DIR, "qc-faces64-encoder.pt")     # w/q encoders for it
BOUNDARIES = {"gender": os.path.join(PRETRAINED_DIR, "qc-faces64-gender.npy")}   # InterfaceGAN normals


def _announce(what: str, path: str) -> None:
    print(f"{what} not given: using the shipped {os.path.relpath(path)}", file=sys.stderr)


def default_network_path(announce: bool = True) -> str:
    """Path of the shipped QC generator; a clear error when this checkout has none."""
    if not os.path.isfile(DEFAULT_NETWORK):
        raise UserError(f"--network not given and no shipped model at {os.path.relpath(DEFAULT_NETWORK)} "
                        "(git checkout pretrained/ or pass --network FILE)")
    if announce:
        _announce("--network", DEFAULT_NETWORK)
    return DEFAULT_NETWORK


def resolve_network(network: Optional[str], announce: bool = True) -> str:
    """``network`` when given, else the shipped model."""
    return network if network else default_network_path(announce)


def is_shipped(network: Optional[str]) -> bool:
    """Whether ``network`` (None = omitted) means the shipped QC generator: the shipped encoder and
    boundaries belong to its W space and are used with it only."""
    return not network or os.path.abspath(network) == os.path.abspath(DEFAULT_NETWORK)


def resolve_encoder(encoder: Optional[str], network: Optional[str], announce: bool = True) -> Optional[str]:
    """``encoder`` when given; else the shipped encoder when ``network`` is the shipped model (or
    omitted) and the file exists; else None (inversion then optimises from w_avg)."""
    if encoder:
        return encoder
    if is_shipped(network) and os.path.isfile(DEFAULT_ENCODER):
        if announce:
            _announce("--encoder", DEFAULT_ENCODER)
        return DEFAULT_ENCODER
    return None


def resolve_direction(direction: Optional[str]) -> Optional[str]:
    """A boundary file path, or the name of a shipped boundary (``gender``)."""
    if direction in BOUNDARIES and not os.path.exists(direction):
        path = BOUNDARIES[direction]
        if not os.path.isfile(path):
            raise UserError(f"the shipped '{direction}' boundary is missing: {os.path.relpath(path)}")
        return path
    return direction
