"""Restricted reading of official StyleGAN2-ADA / QC-StyleGAN network pickles.

An official ``network-snapshot-*.pkl`` is a pickle of a dict whose networks are *persistence
records*: calls of ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` where ``meta``
holds ``class_name``, ``module_src`` (source code) and ``state`` (the module's ``__dict__``).
Plain ``pickle.load`` would execute ``module_src``; this module never does. It unpickles with an
allow-list of globals and turns every persistence record and torch container into inert data
(``ModuleRecord``). Anything else (``os.system``, ``builtins.eval``, ...) is refused before it
can run, with an error naming the global. Tensor storages are read with
``torch.load(..., weights_only=True)``.

This module knows no network class: ``training/checkpoint.py`` builds our modules from records.
"""
from __future__ import annotations

import collections
import io
import pickle
from typing import Any, Dict, Iterator, Optional, Tuple

import numpy as np
import torch

from dnnlib.util import EasyDict, UserError


class UnsafePickleError(UserError):
    """The pickle references a global outside the allow-list."""


class ModuleRecord:
    """Inert stand-in for a pickled module: its class name and its ``__dict__`` state."""

    def __init__(self, class_name: str, state: Optional[dict] = None, module: str = "", version: Any = None):
        self.class_name = class_name
        self.module = module
        self.version = version
        self.state = state if state is not None else {}

    def __setstate__(self, state: dict) -> None:  # called by pickle's BUILD for torch containers
        self.state = state

    # Accessors -----------------------------------------------------------------------------
    @property
    def init_args(self) -> tuple:
        return tuple(self.state.get("_init_args", ()))

    @property
    def init_kwargs(self) -> dict:
        return dict(self.state.get("_init_kwargs", {}))

    @property
    def children(self) -> Dict[str, Any]:
        return dict(self.state.get("_modules", {}) or {})

    def named_tensors(self, prefix: str = "") -> Iterator[Tuple[str, torch.Tensor]]:
        """Parameters and buffers of this record and its children, with state_dict names."""
        for key in ("_parameters", "_buffers"):
            for name, tensor in (self.state.get(key) or {}).items():
                if tensor is not None:
                    yield prefix + name, tensor
        for name, child in self.children.items():
            if isinstance(child, ModuleRecord):
                yield from child.named_tensors(prefix + name + ".")

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return collections.OrderedDict((k, v.detach()) for k, v in self.named_tensors())

    def __repr__(self) -> str:
        return f"ModuleRecord({self.class_name})"


def _reconstruct_persistent_obj(meta: dict) -> ModuleRecord:
    """Replacement for the official persistence hook: keep the data, drop the source."""
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise UnsafePickleError("unsupported persistence record (expected type 'class')")
    return ModuleRecord(str(meta.get("class_name")), meta.get("state"), module="persistent",
                        version=meta.get("version"))


def _load_storage_from_bytes(data: bytes):
    """Safe replacement for ``torch.storage._load_from_bytes``."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _numpy_scalar(dtype: np.dtype, data: Optional[bytes] = None):
    """Safe replacement for ``numpy.core.multiarray.scalar``: decode raw bytes of one value."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise UnsafePickleError("numpy scalar with an object dtype is refused")
    if data is None:
        return dtype.type(0)
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _container(name: str):
    """A class pickle can instantiate for a torch.nn container; it becomes a ModuleRecord."""
    def __new__(cls, *args, **kwargs):  # noqa: N807 - pickle calls cls.__new__(cls)
        return ModuleRecord(name, module="torch.nn")
    return type(name + "Record", (), {"__new__": __new__})


_TORCH_CONTAINERS = ("Sequential", "ModuleList", "ModuleDict", "ParameterList", "ParameterDict")

ALLOWED_GLOBALS: Dict[Tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("dnnlib.easydict", "EasyDict"): EasyDict,
}
for _name in _TORCH_CONTAINERS:
    for _mod in ("torch.nn.modules.container", "torch.nn"):
        ALLOWED_GLOBALS[(_mod, _name)] = _container(_name)
# numpy dtypes are pickled as classes such as numpy.dtypes.Float32DType in numpy >= 1.25.
for _dt in ("Float16DType", "Float32DType", "Float64DType", "Int32DType", "Int64DType", "BoolDType",
            "UInt8DType"):
    if hasattr(np, "dtypes") and hasattr(np.dtypes, _dt):
        ALLOWED_GLOBALS[("numpy.dtypes", _dt)] = getattr(np.dtypes, _dt)


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only ``ALLOWED_GLOBALS``."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load: the pickle references the global '{module}.{name}', which is not "
                f"on the allow-list of network pickles (nothing was executed)") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refusing to load: the pickle uses persistent ids (not a network pickle)")


def load_pickle(file_or_path) -> Any:
    """Unpickle an official network pickle without executing code.

    Raises ``UnsafePickleError`` for disallowed globals and ``UserError`` for corrupt/truncated
    files.
    """
    if isinstance(file_or_path, (str, bytes)) or hasattr(file_or_path, "__fspath__"):
        with open(file_or_path, "rb") as f:
            return load_pickle(f)
    try:
        return RestrictedUnpickler(file_or_path).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, RuntimeError, OverflowError, MemoryError, UnicodeDecodeError) as exc:
        raise UserError(f"corrupt or truncated network pickle ({type(exc).__name__}: {exc})") from None
