"""Small torch helpers: shape assertions, seeding, device selection."""
from __future__ import annotations

import random
from typing import Optional, Sequence

import numpy as np
import torch


def assert_shape(tensor: torch.Tensor, ref_shape: Sequence[Optional[int]]) -> None:
    """Raise ``AssertionError`` unless ``tensor.shape`` matches ``ref_shape`` (None = any size)."""
    if tensor.ndim != len(ref_shape):
        raise AssertionError(f"wrong number of dimensions: got {tensor.ndim}, expected {len(ref_shape)}"
                             f" (shape {tuple(tensor.shape)} vs {list(ref_shape)})")
    for idx, (size, ref) in enumerate(zip(tensor.shape, ref_shape)):
        if ref is None:
            continue
        if isinstance(ref, torch.Tensor):
            ref = int(ref)
        if int(size) != int(ref):
            raise AssertionError(f"wrong size for dimension {idx}: got {size}, expected {ref}"
                                 f" (shape {tuple(tensor.shape)} vs {list(ref_shape)})")


def is_vmapped(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is a per-sample view inside ``torch.func.vmap`` (batched PTI): ops whose
    CUDA kernels are autograd Functions without a vmap rule take their reference path then."""
    return bool(torch._C._functorch.is_batchedtensor(tensor))      # pylint: disable=protected-access


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    """``'auto'`` picks CUDA when available, else CPU; ``'cuda'`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from dnnlib.util import UserError
        raise UserError("--device cuda was asked for, but no CUDA device is available")
    return dev


def load_torch_file(path: str, what: str = "file"):
    """``torch.load(path, weights_only=True)`` on CPU with one-line errors: missing file
    (``UserError``), refused content (anything but tensors and plain data: nothing is executed) and
    corrupt or truncated bytes (``BadFileError``, exit status 2 in the CLIs)."""
    import os
    import pickle
    from dnnlib.util import BadFileError, UserError
    if not os.path.isfile(path):
        raise UserError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise BadFileError(f"{path}: refused or unreadable torch file (weights_only=True): "
                        f"{str(exc).splitlines()[0]}") from None
    except Exception as exc:  # torch raises many kinds for corrupt files (KeyError, RuntimeError, ...)
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise BadFileError(f"{path}: corrupt or truncated {what} ({type(exc).__name__}: {detail})") from None
