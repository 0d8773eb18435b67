"""The shipped default model: where it lives and how scripts fall back to it.

Scripts that take ``--network`` use the shipped model when the option is omitted, and say so.
"""
from __future__ import annotations

import os
import sys

from dnnlib.util import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAINED_DIR = os.path.join(ROOT, "pretrained")
DEFAULT_NETWORK = os.path.join(PRETRAINED_DIR, "qc-utkface64.pt")
# Until a model is shipped, the demo can use the official-format fixture of this workplace.
FIXTURE_NETWORK = os.path.join(os.path.dirname(ROOT), "shared", "fixtures", "qc_stylegan", "network.pkl")


def default_network_path(announce: bool = True, allow_fixture: bool = False) -> str:
    """Path of the shipped model (or, with ``allow_fixture``, the reference fixture)."""
    for path, what in ((DEFAULT_NETWORK, "the shipped model"),
                       (FIXTURE_NETWORK if allow_fixture else None, "the reference fixture (random weights; no shipped model yet)")):
        if path and os.path.isfile(path):
            if announce:
                print(f"--network not given: using {what} {os.path.relpath(path)}", file=sys.stderr)
            return path
    raise UserError(f"--network not given and no shipped model at {os.path.relpath(DEFAULT_NETWORK)}")
