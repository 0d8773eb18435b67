"""Small torch helpers: shape assertions, seeding, device and precision selection."""
from __future__ import annotations

import ctypes
import os
import pickle
import sys
import time
import zipfile
from typing import Optional, Sequence

import torch

from dnnlib.util import BadFileError, UserError


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


def per_image_rows(t: torch.Tensor, n: int, ndim: int) -> torch.Tensor:
    """A layer's parameter as seen by each of the ``n`` rows of a batch.

    A parameter of ``ndim`` dimensions is shared by every row and returned as is. A per-image
    parameter ``[P, *shape]`` (one copy per image: batched pivotal tuning, ``inversion/pti.py``,
    swaps such stacked copies in with ``torch.func.functional_call``) belongs to a batch of
    ``n = k * P`` rows made of k groups of P, row r being image r % P (k = 2 for the
    [sharp; degraded] halves of a pair render); it is returned as ``[n, *shape]``.
    """
    if t.ndim == ndim:
        return t
    p = t.shape[0]
    if t.ndim != ndim + 1 or p == 0 or n % p:
        raise ValueError(f"per-image parameter of shape {tuple(t.shape)} does not fit {n} rows "
                         f"(expected [P, ...] with {ndim + 1} dimensions, P dividing {n})")
    return t if n == p else t.repeat(n // p, *[1] * ndim)


def add_per_image_bias(x: torch.Tensor, b: Optional[torch.Tensor]):
    """(x, b) for ``bias_act``: a per-image bias [P, C] is added to x [N, C, ...] here (the same
    sum ``bias_act`` would make first) and None is passed on; a shared bias [C] is passed on."""
    if b is None or b.ndim == 1:
        return x, b
    b = per_image_rows(b, x.shape[0], 1)                                 # [N, C]
    return x + b.reshape(*b.shape, *[1] * (x.ndim - 2)), None


# glibc mallopt() parameters (malloc.h) and the trim threshold keep_freed_cpu_memory sets.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
KEEP_TRIM_THRESHOLD = 1 << 30     # give heap memory back to the OS only above 1 GiB free at its top
_KEPT = []


def keep_freed_cpu_memory() -> bool:
    """Keep freed CPU memory in the process for reuse instead of returning it to the OS (glibc).

    glibc serves blocks above 32 MiB (and, after frees, smaller ones) with fresh ``mmap`` pages and
    unmaps them on free, so every new tensor of that size is page-faulted in and zeroed by the
    kernel again. A batched PTI step allocates dozens of such tensors (per-image weights and their
    gradients, 64x64 activations of B images); at B = 16 this made a step about 1.7x slower on
    the development CPU (``benchmarks/RESULTS.md``). This turns ``mmap`` allocation off and raises
    the trim threshold, for the whole process: its resident memory then stays at its peak.
    Called by CPU inversion (``inversion/api.py``). Returns whether it took effect (False off
    Linux/glibc); idempotent.
    """
    if _KEPT:
        return _KEPT[0]
    ok = False
    if sys.platform.startswith("linux"):
        try:
            mallopt = ctypes.CDLL("libc.so.6").mallopt
            ok = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, KEEP_TRIM_THRESHOLD) == 1
        except (OSError, AttributeError):       # not glibc (e.g. musl): nothing to tune
            ok = False
    _KEPT.append(ok)
    return ok


def resolve_device(name: str = "auto") -> torch.device:
    """``'auto'`` picks CUDA when available, else CPU; ``'cuda'`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but no CUDA device is available")
    return dev


def load_torch_file(path: str, what: str = "file", mmap: bool = False):
    """``torch.load(path, weights_only=True)`` on CPU with one-line errors: missing file
    (``UserError``), refused content (anything but tensors and plain data: nothing is executed) and
    corrupt or truncated bytes (``BadFileError``, exit status 2 in the CLIs). ``mmap``: map the
    file instead of reading it (only the tensors used are ever read; files in the pre-1.6 format
    are read whole)."""
    if not os.path.isfile(path):
        raise UserError(f"{what} not found: {path}")
    try:
        if mmap and zipfile.is_zipfile(path):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise BadFileError(f"{path}: refused or unreadable torch file (weights_only=True): "
                        f"{str(exc).splitlines()[0]}") from None
    except Exception as exc:  # torch raises many kinds for corrupt files (KeyError, RuntimeError, ...)
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise BadFileError(f"{path}: corrupt or truncated {what} ({type(exc).__name__}: {detail})") from None


# ---------------------------------------------------------------------------------------------
# Precision: the one rule every script uses (train.py --precision, generate.py --dtype).
#
# CUDA: StyleGAN2-ADA's mixed precision (float16 in the highest-resolution blocks).
# CPU: bfloat16 only where the hardware computes it natively (AMX, or AVX-512 BF16), confirmed by
# a sub-second matmul timing; elsewhere bf16 is emulated (26x slower than float32 on an AVX2-only
# AMD EPYC) and float32 is chosen.

TRAINING_PRECISIONS = ("auto", "fp32", "bf16", "fp16")
BF16_MATMUL_SIZE = 256          # square matmul timed to confirm native bf16 (about a millisecond in fp32)
BF16_NATIVE_MAX_RATIO = 1.0     # bf16 counts as native when a bf16 matmul is no slower than fp32
# What 'auto' picks on CPU can be forced, for tests of either branch on any machine (make test-isa)
# and for users who want the same choice everywhere: QC_AUTO_PRECISION=bf16 or fp32.
AUTO_PRECISION_ENV = "QC_AUTO_PRECISION"
AUTO_PRECISION_CHOICES = {"bf16": "bf16", "bfloat16": "bf16", "fp32": "fp32", "float32": "fp32"}


def cpu_bf16_features() -> dict:
    """What the CPU reports: torch's vector capability ('AVX2', 'AVX512', ...) and whether it has
    AMX tiles or AVX-512 BF16 instructions (the two ways bf16 runs natively on x86)."""
    def probe(name: str) -> bool:
        fn = getattr(torch.cpu, name, None)
        try:
            return bool(fn()) if fn is not None else False
        except Exception:       # a probe that fails counts as absent
            return False
    return {"capability": str(torch.backends.cpu.get_cpu_capability()),
            "amx": probe("_is_amx_tile_supported"), "avx512_bf16": probe("_is_avx512_bf16_supported")}


_SLOWDOWN_CACHE: dict = {}


def measure_bf16_slowdown(size: int = BF16_MATMUL_SIZE, repeats: int = 3) -> float:
    """Seconds of a bf16 matmul / seconds of the same float32 matmul on this CPU (best of
    ``repeats`` after a warm-up; well under a second even where bf16 is emulated). Cached."""
    if size in _SLOWDOWN_CACHE:
        return _SLOWDOWN_CACHE[size]
    gen = torch.Generator().manual_seed(0)
    a = torch.randn([size, size], generator=gen)
    b = torch.randn([size, size], generator=gen)
    best = {}
    for dtype in (torch.float32, torch.bfloat16):
        x, y = a.to(dtype), b.to(dtype)
        torch.mm(x, y)                                   # warm-up (kernel selection, packing)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(x, y)
            times.append(time.perf_counter() - start)
        best[dtype] = min(times)
    ratio = best[torch.bfloat16] / max(best[torch.float32], 1e-9)
    _SLOWDOWN_CACHE[size] = ratio
    return ratio


def cpu_has_native_bf16(features: Optional[dict] = None) -> bool:
    """AMX or AVX-512 BF16 reported, and a bf16 matmul timed no slower than float32."""
    features = cpu_bf16_features() if features is None else features
    if not (features.get("amx") or features.get("avx512_bf16")):
        return False
    return measure_bf16_slowdown() <= BF16_NATIVE_MAX_RATIO


_WARNED: set = set()


def auto_precision_override() -> Optional[str]:
    """'bf16' or 'fp32' when ``$QC_AUTO_PRECISION`` forces what ``auto`` picks on CPU, else None
    (unset or empty: the hardware decides). Another value is a ``UserError``."""
    value = os.environ.get(AUTO_PRECISION_ENV, "").strip().lower()
    if not value:
        return None
    if value not in AUTO_PRECISION_CHOICES:
        raise UserError(f"${AUTO_PRECISION_ENV} must be one of bf16, fp32 (or empty), got '{value}'")
    return AUTO_PRECISION_CHOICES[value]


def resolve_precision(requested: str, device) -> dict:
    """The training precision for ``requested`` ('auto', 'fp32', 'bf16', 'fp16') on ``device``.

    Returns {'precision': 'fp32'|'bf16'|'fp16', 'requested', 'device', 'cpu_capability',
    'cpu_bf16_native' (None on CUDA), 'bf16_slowdown' (measured, or None), 'auto_override'
    (``$QC_AUTO_PRECISION`` when it decided 'auto' on CPU, else None)}; training logs and
    ``training_options.json`` record it. Forcing bf16 on a CPU that emulates it prints one warning
    line with the measured slowdown (not when ``$QC_AUTO_PRECISION`` forces it: a deliberate
    test setting); fp16 without CUDA is a ``UserError``.
    """
    if requested not in TRAINING_PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(TRAINING_PRECISIONS)}, got {requested}")
    device = torch.device(device)
    features = cpu_bf16_features()
    info = {"requested": requested, "device": device.type, "cpu_capability": features["capability"],
            "cpu_bf16_native": None, "bf16_slowdown": None, "auto_override": None}
    if device.type == "cuda":
        info["precision"] = "fp16" if requested == "auto" else requested
        return info
    if requested == "fp16":
        raise UserError("--precision fp16 needs CUDA; on CPU use auto, bf16 or fp32")
    native = cpu_has_native_bf16(features)
    info["cpu_bf16_native"] = native
    override = auto_precision_override() if requested == "auto" else None
    if native or requested == "bf16" or override == "bf16":
        info["bf16_slowdown"] = round(measure_bf16_slowdown(), 2)
    if override is not None:
        info["auto_override"] = override
        info["precision"] = override
        return info
    info["precision"] = ("bf16" if native else "fp32") if requested == "auto" else requested
    if requested == "bf16" and not native and "bf16" not in _WARNED:
        _WARNED.add("bf16")
        print(f"warning: bf16 is emulated on this CPU ({features['capability']}, no AMX or AVX-512 BF16): "
              f"a bf16 matmul ran {info['bf16_slowdown']:g}x slower than float32; use --precision auto or fp32",
              file=sys.stderr)
    return info


AUTOCAST_PRECISIONS = ("auto", "fp32", "bf16")


def resolve_autocast_precision(requested: str, device) -> str:
    """'fp32' or 'bf16' for networks trained under ``torch.autocast`` with float32 master weights
    (the encoders: ``invert.py train-encoder --precision``). On CPU the rule of
    ``resolve_precision`` (bf16 where native, ``$QC_AUTO_PRECISION`` honoured); on CUDA 'auto' is
    bf16 where the GPU supports it (no loss scaling needed), else fp32."""
    if requested not in AUTOCAST_PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(AUTOCAST_PRECISIONS)}, got {requested}")
    device = torch.device(device)
    if device.type == "cuda":
        if requested == "auto":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return requested
    return resolve_precision(requested, device)["precision"]


def resolve_inference_dtype(requested: str, device) -> str:
    """``--dtype`` of the inference scripts: 'auto' -> 'bfloat16' on a CPU with native bf16, else
    'float32' (on CUDA 'float32' keeps the networks' per-block float16, as StyleGAN2-ADA does).
    Other names pass through; forcing 'bfloat16' on an emulating CPU warns as ``resolve_precision``."""
    names = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
    if requested == "auto":
        if torch.device(device).type == "cuda":
            return "float32"
        return names[resolve_precision("auto", device)["precision"]]
    if requested == "bfloat16" and torch.device(device).type == "cpu":
        resolve_precision("bf16", device)          # the warning, if emulated
    return requested
