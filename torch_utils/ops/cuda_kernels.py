"""Optional CUDA kernels for ``bias_act`` and ``upfirdn2d`` (the fast path of StyleGAN2's ops).

``get_bias_act()`` / ``get_upfirdn2d()`` return a callable with the signature ``bias_act.py`` /
``upfirdn2d.py`` call, or None when the kernels are unavailable (then the PyTorch reference path
runs). The extensions are compiled on the first call, with ninja through
``torch.utils.cpp_extension.load``; the callers only call them for a CUDA tensor, so nothing is
compiled at import or on CPU. The build is cached per user by PyTorch: under
``$TORCH_EXTENSIONS_DIR`` when set, else ``~/.cache/torch_extensions/<python>_<cuda>/``; a build
is reused until the sources change. Any build failure is reported by one ``warnings.warn`` with
the reason, and the reference path is used from then on.

Gradients: both ops are autograd Functions whose backward passes reuse the kernels.
``bias_act``: the kernel also evaluates ``g * gain * f'(x + b)`` and ``g * h * gain * f''(x + b)``
(clamped outputs pass no gradient), which gives first and second derivatives (R1 and path-length
regularisation); a third derivative raises. ``upfirdn2d``: the gradient is ``upfirdn2d`` of the
incoming gradient with ``up`` and ``down`` swapped, the filter flipped and the padding adjusted,
itself the same Function, so derivatives of any order exist. Filters get no gradient on this path
(a filter that requires grad runs through the reference path).
"""
from __future__ import annotations

import hashlib
import math
import os
import threading
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

SOURCE_DIR = os.path.dirname(os.path.abspath(__file__))

# Extension name -> its sources (in SOURCE_DIR). Headers are listed so that an edit rebuilds.
EXTENSIONS: Dict[str, Tuple[str, ...]] = {
    "qc_bias_act": ("bias_act_ext.cpp", "bias_act_kernel.cu"),
    "qc_upfirdn2d": ("upfirdn2d_ext.cpp", "upfirdn2d_kernel.cu"),
}
HEADERS: Dict[str, Tuple[str, ...]] = {
    "qc_bias_act": ("bias_act_kernel.h",),
    "qc_upfirdn2d": ("upfirdn2d_kernel.h",),
}
# Dtypes the kernels take; the callers (bias_act.py, upfirdn2d.py) run the reference for others.
KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
NVCC_FLAGS = ["-O3"]   # no --use_fast_math: the kernels match the reference to 1e-5

_lock = threading.Lock()
_modules: Dict[str, object] = {}     # name -> loaded module, or None after a failed build
_warned: set = set()


def build_extension(name: str, verbose: bool = False):
    """Compile (or reuse the cached build of) extension ``name`` and return the loaded module.

    Raises whatever the build raises. Needs ``nvcc`` and ninja, not a GPU; without a visible GPU
    set ``TORCH_CUDA_ARCH_LIST`` (e.g. ``9.0``) so PyTorch knows what to compile for.
    """
    from torch.utils import cpp_extension  # imported late: a cost only the CUDA path pays
    sources = [os.path.join(SOURCE_DIR, s) for s in EXTENSIONS[name]]
    headers = [os.path.join(SOURCE_DIR, s) for s in HEADERS[name]]
    for path in sources + headers:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"missing source file {path}")
    # The name carries a hash of sources and headers: an edit builds into a fresh folder.
    return cpp_extension.load(name=name + "_" + _source_digest(sources + headers), sources=sources,
                              extra_include_paths=[SOURCE_DIR], extra_cflags=["-O3"],
                              extra_cuda_cflags=list(NVCC_FLAGS),
                              extra_ldflags=_cudart_link_flags(cpp_extension.CUDA_HOME), verbose=verbose)


def _cudart_lib_dir(root: Optional[str]) -> Optional[str]:
    if not root:
        return None
    for sub in ("lib64", "lib", os.path.join("targets", "x86_64-linux", "lib")):
        if os.path.isfile(os.path.join(root, sub, "libcudart.so")):
            return os.path.join(root, sub)
    return None


def _cudart_link_flags(torch_cuda_home: Optional[str]) -> List[str]:
    """``-L`` for libcudart when PyTorch's guess of the CUDA root has none.

    PyTorch takes the CUDA root from ``CUDA_HOME``/``CUDA_PATH`` or else from the location of
    ``nvcc``; where ``nvcc`` is a wrapper script (``/usr/local/bin/nvcc``) that guess has no
    ``lib64`` and linking fails with ``cannot find -lcudart``. Then look in ``/usr/local/cuda``.
    """
    if _cudart_lib_dir(torch_cuda_home):
        return []
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        lib_dir = _cudart_lib_dir(root)
        if lib_dir:
            return ["-L" + lib_dir]
    return []


def _source_digest(paths: Sequence[str]) -> str:
    """Short hash of the sources, so a changed header or kernel gets its own build folder."""
    h = hashlib.sha1()
    for path in paths:
        with open(path, "rb") as fh:
            h.update(fh.read())
    return h.hexdigest()[:10]


def _get_module(name: str):
    """The loaded extension, building it on first use; None (after one warning) if it fails."""
    with _lock:
        if name in _modules:
            return _modules[name]
        try:
            module = build_extension(name)
        except Exception as exc:  # any build/load failure means "use the reference path"
            module = None
            if name not in _warned:
                _warned.add(name)
                reason = _failure_reason(exc)
                warnings.warn(f"could not build the CUDA extension '{name}' ({reason}); "
                              "falling back to the PyTorch reference implementation", RuntimeWarning,
                              stacklevel=3)
        _modules[name] = module
        return module


def _failure_reason(exc: BaseException, limit: int = 400) -> str:
    """One line: the exception's first line plus the first compiler/linker error line, if any."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    reason = f"{type(exc).__name__}: {lines[0] if lines else ''}"
    errors = [ln for ln in lines[1:] if "error" in ln.lower() or "cannot find" in ln.lower()]
    if errors:
        reason += f" -- {errors[0]}"
    return reason if len(reason) <= limit else reason[:limit] + "..."


def reset_cache() -> None:
    """Forget loaded modules and failures (tests; a later call builds/loads again)."""
    with _lock:
        _modules.clear()
        _warned.clear()


# ---------------------------------------------------------------------------------------------
# bias_act

# Activation name (bias_act.ACTIVATIONS) -> its id in bias_act_kernel.cu (the kernel's switch).
KERNEL_ACT_IDS: Dict[str, int] = {"linear": 1, "relu": 2, "lrelu": 3, "tanh": 4, "sigmoid": 5, "elu": 6,
                                  "selu": 7, "softplus": 8, "swish": 9}
_MODE_FORWARD, _MODE_GRAD, _MODE_GRAD2 = 0, 1, 2


class _BiasActConfig:
    """The non-tensor arguments of one bias_act call."""
    __slots__ = ("dim", "act", "alpha", "gain", "clamp")

    def __init__(self, dim: int, act: int, alpha: float, gain: float, clamp: float):
        self.dim, self.act, self.alpha, self.gain, self.clamp = dim, act, alpha, gain, clamp


def _run_bias_act(module, x, b, g, h, mode: int, cfg: _BiasActConfig) -> torch.Tensor:
    empty = x.new_empty([0])
    return module.bias_act(x, b if b is not None else empty, g if g is not None else empty,
                           h if h is not None else empty, cfg.dim, cfg.act, mode, cfg.alpha, cfg.gain,
                           cfg.clamp)


def _sum_to_bias(t: torch.Tensor, dim: int) -> torch.Tensor:
    # [..., C (at dim), ...] -> [C]
    return t.sum(dim=[i for i in range(t.ndim) if i != dim])


def _make_bias_act_function(module):
    class BiasActGrad(torch.autograd.Function):
        """dx = dy * gain * f'(x + b) * mask, differentiable once more (second order)."""

        @staticmethod
        def forward(ctx, dy, x, b, cfg):
            ctx.cfg = cfg
            ctx.save_for_backward(dy, x, b)
            return _run_bias_act(module, x, b, dy, None, _MODE_GRAD, cfg)

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, ddx):
            dy, x, b = ctx.saved_tensors
            cfg = ctx.cfg
            d_dy = d_x = d_b = None
            if ctx.needs_input_grad[0]:
                d_dy = _run_bias_act(module, x, b, ddx, None, _MODE_GRAD, cfg)
            if ctx.needs_input_grad[1] or (b is not None and ctx.needs_input_grad[2]):
                d_x = _run_bias_act(module, x, b, ddx, dy, _MODE_GRAD2, cfg)
                if b is not None and ctx.needs_input_grad[2]:
                    d_b = _sum_to_bias(d_x, cfg.dim)
            return d_dy, d_x, d_b, None

    class BiasAct(torch.autograd.Function):
        """y = clamp(f(x + b) * gain)."""

        @staticmethod
        def forward(ctx, x, b, cfg):
            ctx.cfg = cfg
            ctx.save_for_backward(x, b)
            return _run_bias_act(module, x, b, None, None, _MODE_FORWARD, cfg)

        @staticmethod
        def backward(ctx, dy):
            x, b = ctx.saved_tensors
            cfg = ctx.cfg
            dx = BiasActGrad.apply(dy, x, b, cfg)
            db = _sum_to_bias(dx, cfg.dim) if b is not None and ctx.needs_input_grad[1] else None
            return dx, db, None

    return BiasAct


def _bias_act_callable(module) -> Callable[..., torch.Tensor]:
    function = _make_bias_act_function(module)

    def bias_act_cuda(x: torch.Tensor, b: Optional[torch.Tensor] = None, dim: int = 1, act: str = "linear",
                      alpha: float = 0.0, gain: float = 1.0, clamp: float = -1.0) -> torch.Tensor:
        """bias_act on the CUDA kernel; alpha and gain already resolved, clamp < 0 = none."""
        if act not in KERNEL_ACT_IDS:
            raise ValueError(f"unknown activation '{act}' (known: {', '.join(KERNEL_ACT_IDS)})")
        dim = dim % x.ndim if x.ndim else 0
        if b is not None:
            if b.ndim != 1 or b.shape[0] != x.shape[dim]:
                raise ValueError(f"bias shape {tuple(b.shape)} does not match x.shape[{dim}]={x.shape[dim]}")
            b = b.to(x.dtype)
        if act == "linear" and clamp < 0 and gain == 1:   # nothing for a kernel to do
            return x if b is None else x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
        if x.dtype not in KERNEL_DTYPES:
            raise TypeError(f"bias_act kernel: unsupported dtype {x.dtype}")
        cfg = _BiasActConfig(dim, KERNEL_ACT_IDS[act], float(alpha), float(gain), float(clamp))
        return function.apply(x, b, cfg)

    return bias_act_cuda


# ---------------------------------------------------------------------------------------------
# upfirdn2d

def _make_upfirdn2d_function(module):
    class UpFirDn2d(torch.autograd.Function):
        """One pass with a 2-D correlation filter ``fk`` (already flipped and scaled).

        cfg = (upx, upy, downx, downy, px0, px1, py0, py1).
        """

        @staticmethod
        def forward(ctx, x, fk, cfg):
            ctx.cfg = cfg
            ctx.in_hw = tuple(x.shape[2:])
            ctx.save_for_backward(fk)
            upx, upy, downx, downy, px0, px1, py0, py1 = cfg
            return module.upfirdn2d(x, fk, upx, upy, downx, downy, px0, px1, py0, py1)

        @staticmethod
        def backward(ctx, dy):
            (fk,) = ctx.saved_tensors
            upx, upy, downx, downy, px0, px1, py0, py1 = ctx.cfg
            in_h, in_w = ctx.in_hw
            out_h, out_w = dy.shape[2:]
            fh, fw = fk.shape
            # The adjoint: zero-insert by `down`, correlate with the flipped filter, keep every
            # `up`-th pixel; leading pad f - 1 - p0, trailing pad so the result is H x W again.
            cfg_t = (downx, downy, upx, upy,
                     fw - 1 - px0, in_w * upx - out_w * downx + px0 - upx + 1,
                     fh - 1 - py0, in_h * upy - out_h * downy + py0 - upy + 1)
            dx = UpFirDn2d.apply(dy, fk.flip([0, 1]), cfg_t) if ctx.needs_input_grad[0] else None
            return dx, None, None

    return UpFirDn2d


def _upfirdn2d_callable(module) -> Callable[..., torch.Tensor]:
    function = _make_upfirdn2d_function(module)

    def upfirdn2d_cuda(x: torch.Tensor, f: Optional[torch.Tensor], up: Tuple[int, int] = (1, 1),
                       down: Tuple[int, int] = (1, 1), padding: Tuple[int, int, int, int] = (0, 0, 0, 0),
                       flip_filter: bool = False, gain: float = 1) -> torch.Tensor:
        """upfirdn2d on the CUDA kernel: x [N, C, H, W]; f [fh, fw], [fw] (separable) or None."""
        if x.ndim != 4:
            raise ValueError(f"x must be [N, C, H, W], got shape {tuple(x.shape)}")
        if x.dtype not in KERNEL_DTYPES:
            raise TypeError(f"upfirdn2d kernel: unsupported dtype {x.dtype}")
        if f is not None and f.requires_grad:
            raise ValueError("upfirdn2d kernel: filters get no gradient here (use the reference path)")
        upx, upy = (int(v) for v in up)
        downx, downy = (int(v) for v in down)
        px0, px1, py0, py1 = (int(v) for v in padding)
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        if f is None:
            f = torch.ones([1, 1], dtype=acc, device=x.device)
        if f.ndim not in (1, 2):
            raise ValueError(f"filter must be 1-D or 2-D, got shape {tuple(f.shape)}")
        fk = f.to(device=x.device, dtype=acc)
        if not flip_filter:
            fk = fk.flip(list(range(fk.ndim)))   # convolution = correlation with the flipped filter
        if fk.ndim == 2:
            return function.apply(x, fk * gain, (upx, upy, downx, downy, px0, px1, py0, py1))
        # Separable: along x, then along y, each with sqrt(gain) (as the reference does).
        fk = fk * math.sqrt(gain)
        x = function.apply(x, fk[None, :].contiguous(), (upx, 1, downx, 1, px0, px1, 0, 0))
        return function.apply(x, fk[:, None].contiguous(), (1, upy, 1, downy, 0, 0, py0, py1))

    return upfirdn2d_cuda


# ---------------------------------------------------------------------------------------------
# Entry points used by bias_act.py / upfirdn2d.py (only for CUDA tensors).

def get_bias_act() -> Optional[Callable[..., torch.Tensor]]:
    """The CUDA ``bias_act`` callable, building the extension on first use; None if unavailable."""
    module = _get_module("qc_bias_act")
    return None if module is None else _cached_callable("qc_bias_act", module, _bias_act_callable)


def get_upfirdn2d() -> Optional[Callable[..., torch.Tensor]]:
    """The CUDA ``upfirdn2d`` callable, building the extension on first use; None if unavailable."""
    module = _get_module("qc_upfirdn2d")
    return None if module is None else _cached_callable("qc_upfirdn2d", module, _upfirdn2d_callable)


_callables: Dict[str, Tuple[object, Callable]] = {}


def _cached_callable(name: str, module, factory) -> Callable:
    entry = _callables.get(name)
    if entry is None or entry[0] is not module:
        entry = (module, factory(module))
        _callables[name] = entry
    return entry[1]
