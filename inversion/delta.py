"""Per-image generator deltas: what pivotal tuning changed, stored compactly.

PTI (Roich et al., 2022) tunes the synthesis weights per image; the official release saves a whole
generator per image. We store only the differences ``tuned - base`` of the tuned tensors:

* ``'fp16'``: each difference as float16 (differences are small, so float16 keeps them to ~1e-3
  of their own size; the base weights stay float32);
* ``'lowrank:R'``: each difference of a weight with two or more dimensions reshaped to
  ``[out, rest]`` and truncated to its best rank-R approximation (SVD), factors in float16;
  vectors and scalars stay float16 differences.

A delta is plain data (``torch.save``/``weights_only`` safe)::

    {'format': 'qc-stylegan-delta', 'version': 1, 'encoding': 'fp16' | 'lowrank:R',
     'tensors': {param_name: {'diff': fp16} | {'u': fp16 [O, r], 'v': fp16 [r, K], 'shape': [...]}},
     'base_checksums': {param_name: [sum, sum of squares]}}

``apply_delta`` checks the checksums so a delta is not silently applied to another network.
"""
from __future__ import annotations

import copy
import io
import re
from typing import Mapping, Optional

import torch
from torch import nn

from dnnlib.util import UserError, atomic_write
from torch_utils.misc import load_torch_file

FORMAT_TAG = "qc-stylegan-delta"
FORMAT_VERSION = 1
CHECKSUM_RTOL = 1e-4


def parse_encoding(encoding: str) -> Optional[int]:
    """'fp16' -> None; 'lowrank:R' -> R."""
    if encoding == "fp16":
        return None
    m = re.fullmatch(r"lowrank:(\d+)", str(encoding))
    if not m or int(m.group(1)) < 1:
        raise UserError(f"unknown delta encoding '{encoding}' (expected 'fp16' or 'lowrank:R', R >= 1)")
    return int(m.group(1))


def _checksum(t: torch.Tensor) -> list:
    t = t.detach().double()
    return [float(t.sum()), float(t.square().sum())]


def make_delta(base: Mapping[str, torch.Tensor], tuned: Mapping[str, torch.Tensor],
               encoding: str = "fp16") -> dict:
    """Encode ``tuned - base`` for every name in ``tuned`` (names as in ``G.named_parameters()``)."""
    rank = parse_encoding(encoding)
    tensors, sums = {}, {}
    for name, t in tuned.items():
        b = base[name]
        diff = (t.detach().float() - b.detach().float()).cpu()
        if not torch.any(diff != 0):
            continue
        if rank is not None and diff.ndim >= 2 and min(diff.shape[0], diff[0].numel()) > rank:
            mat = diff.reshape(diff.shape[0], -1)
            u, s, vh = torch.linalg.svd(mat, full_matrices=False)
            tensors[name] = {"u": (u[:, :rank] * s[:rank]).half(), "v": vh[:rank].half(),
                             "shape": list(diff.shape)}
        else:
            tensors[name] = {"diff": diff.half()}
        sums[name] = _checksum(b)
    return {"format": FORMAT_TAG, "version": FORMAT_VERSION, "encoding": str(encoding),
            "tensors": tensors, "base_checksums": sums}


def decode_entry(entry: Mapping) -> torch.Tensor:
    """The float32 difference of one delta entry."""
    if "diff" in entry:
        return entry["diff"].float()
    return (entry["u"].float() @ entry["v"].float()).reshape(entry["shape"])


def delta_nbytes(delta: Optional[Mapping]) -> int:
    if not delta:
        return 0
    return sum(t.numel() * t.element_size() for e in delta["tensors"].values()
               for t in e.values() if isinstance(t, torch.Tensor))


def _check_format(delta: Mapping, what: str = "delta") -> None:
    if not isinstance(delta, Mapping) or delta.get("format") != FORMAT_TAG:
        raise UserError(f"{what}: not a generator delta")
    if not isinstance(delta.get("version"), int) or delta["version"] > FORMAT_VERSION:
        raise UserError(f"{what}: delta version {delta.get('version')} is newer than this code supports")


def add_delta_(module: nn.Module, delta: Mapping, what: str = "delta", prefix: str = "") -> None:
    """Add ``delta`` to ``module``'s parameters in place (``prefix`` is stripped from the names,
    e.g. 'synthesis.' when ``module`` is a synthesis network)."""
    _check_format(delta, what)
    params = dict(module.named_parameters())
    with torch.no_grad():
        for name, entry in delta["tensors"].items():
            key = name[len(prefix):] if prefix and name.startswith(prefix) else name
            if key not in params:
                raise UserError(f"{what}: the network has no parameter '{name}'")
            p = params[key]
            ref = delta["base_checksums"].get(name)
            if ref is not None:
                got = _checksum(p)
                if any(abs(g - r) > CHECKSUM_RTOL * max(1.0, abs(r)) for g, r in zip(got, ref)):
                    raise UserError(f"{what}: '{name}' of this network differs from the one the delta was "
                                    f"made for (use the same --network file)")
            d = decode_entry(entry)
            if tuple(d.shape) != tuple(p.shape):
                raise UserError(f"{what}: shape mismatch for '{name}': {tuple(d.shape)} vs {tuple(p.shape)}")
            p.add_(d.to(p.device, p.dtype))


def apply_delta(G: nn.Module, delta: Optional[Mapping]) -> nn.Module:
    """A copy of ``G`` with the tuned tensors applied (``G`` itself is not changed); ``delta=None``
    returns a plain copy."""
    G2 = copy.deepcopy(G)
    if delta:
        add_delta_(G2, delta)
    return G2


def save_delta(path: str, delta: Mapping) -> None:
    buf = io.BytesIO()
    torch.save(dict(delta), buf)
    with atomic_write(path, "wb") as f:
        f.write(buf.getvalue())


def load_delta(path: str) -> dict:
    delta = load_torch_file(path, "delta file")
    _check_format(delta, path)
    return delta
