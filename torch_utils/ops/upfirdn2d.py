"""Upsample, FIR filter, downsample (``upfirdn2d``) and the resampling helpers built on it.

StyleGAN2 (Karras et al. 2020, App. B) resamples with a separable low-pass FIR filter, by
default ``[1, 3, 3, 1]`` normalised. ``upfirdn2d`` does, in order:
  1. upsample by inserting ``up - 1`` zeros after every pixel,
  2. pad (``padding`` may be negative, which crops),
  3. correlate with the filter (convolve when ``flip_filter=False``, as the filter is flipped
     first), scaled by ``gain``,
  4. keep every ``down``-th pixel.
Filters are 2-D ``[fh, fw]`` or 1-D ``[fw]`` (separable, applied along both axes).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from . import cuda_kernels

IntPair = Union[int, Sequence[int]]


def parse_scaling(scaling: IntPair) -> Tuple[int, int]:
    """``2`` or ``[sx, sy]`` -> ``(sx, sy)``."""
    if isinstance(scaling, int):
        scaling = [scaling, scaling]
    sx, sy = (int(v) for v in scaling)
    if sx < 1 or sy < 1:
        raise ValueError(f"scaling factors must be >= 1, got {scaling}")
    return sx, sy


def parse_padding(padding: Union[int, Sequence[int]]) -> Tuple[int, int, int, int]:
    """``p``, ``[px, py]`` or ``[px0, px1, py0, py1]`` -> ``(px0, px1, py0, py1)``."""
    if isinstance(padding, int):
        padding = [padding, padding]
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        px, py = padding
        return px, px, py, py
    if len(padding) != 4:
        raise ValueError(f"padding must have 1, 2 or 4 entries, got {padding}")
    return tuple(padding)  # type: ignore[return-value]


def filter_size(f: Optional[torch.Tensor]) -> Tuple[int, int]:
    """(fw, fh) of a filter; ``None`` counts as 1x1."""
    if f is None:
        return 1, 1
    if f.ndim not in (1, 2):
        raise ValueError(f"filter must be 1-D or 2-D, got shape {tuple(f.shape)}")
    fw = f.shape[-1]
    fh = f.shape[0]
    return int(fw), int(fh)


def setup_filter(f, device: torch.device = torch.device("cpu"), normalize: bool = True,
                 flip_filter: bool = False, gain: float = 1, separable: Optional[bool] = None) -> torch.Tensor:
    """Make a filter tensor for ``upfirdn2d``.

    ``f``: list/array/tensor, 1-D (separable) or 2-D; None = ``[1]``. ``normalize`` divides by the
    sum; ``gain`` is spread over the filter's dimensions (``gain ** (ndim / 2)``) so that the full
    2-D response gains exactly ``gain``. A 1-D filter is expanded to 2-D (outer product) unless
    ``separable`` (default: 1-D filters of size >= 8 stay separable).
    """
    if f is None:
        f = 1
    f = torch.as_tensor(np.asarray(f, dtype=np.float32) if not isinstance(f, torch.Tensor) else f,
                        dtype=torch.float32)
    if f.ndim == 0:
        f = f[np.newaxis]
    if f.ndim not in (1, 2) or f.numel() == 0:
        raise ValueError(f"filter must be a non-empty 1-D or 2-D array, got shape {tuple(f.shape)}")
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if f.ndim != (1 if separable else 2):
        raise ValueError("a separable filter must be 1-D")
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


def upfirdn2d_ref(x: torch.Tensor, f: Optional[torch.Tensor], up: IntPair = 1, down: IntPair = 1,
                  padding=0, flip_filter: bool = False, gain: float = 1) -> torch.Tensor:
    """Reference upfirdn2d. x: [N, C, H, W]; f: [fh, fw], [fw] (separable) or None."""
    if x.ndim != 4:
        raise ValueError(f"x must be [N, C, H, W], got shape {tuple(x.shape)}")
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    upx, upy = parse_scaling(up)
    downx, downy = parse_scaling(down)
    px0, px1, py0, py1 = parse_padding(padding)
    n, c, h, w = x.shape
    # Padding and reshapes below return NCHW; hand back the caller's layout (channels_last stays).
    channels_last = c > 1 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)

    # 1. Zero insertion: [N, C, H, 1, W, 1] padded to [N, C, H, upy, W, upx].
    if upx > 1 or upy > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
        x = x.reshape(n, c, h * upy, w * upx)

    # 2. Pad (positive) and crop (negative).
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]

    # 3. Filter: depthwise correlation with the (flipped unless flip_filter) filter.
    f = f.to(x.dtype)
    f = f * (gain ** (f.ndim / 2))
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        x = F.conv2d(x, f[None, None].repeat(c, 1, 1, 1), groups=c)
    else:
        x = F.conv2d(x, f[None, None, None, :].repeat(c, 1, 1, 1), groups=c)
        x = F.conv2d(x, f[None, None, :, None].repeat(c, 1, 1, 1), groups=c)

    # 4. Subsample.
    if downx > 1 or downy > 1:
        x = x[:, :, ::downy, ::downx]
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def upfirdn2d(x: torch.Tensor, f: Optional[torch.Tensor], up: IntPair = 1, down: IntPair = 1,
              padding=0, flip_filter: bool = False, gain: float = 1, impl: str = "auto") -> torch.Tensor:
    """Upsample, pad, FIR-filter and downsample a batch of images (see module docstring).

    Args:
        x:           [N, C, H, W].
        f:           filter from ``setup_filter``: [fh, fw], [fw] (separable) or None (identity).
        up, down:    integer factor, or [x, y] factors.
        padding:     int, [px, py] or [px0, px1, py0, py1]; negative values crop.
        flip_filter: False = convolution (the filter is flipped), True = correlation.
        gain:        overall gain of the filter.
        impl:        'auto' (CUDA kernel when available on a CUDA tensor),
                     'ref' or 'cuda'.
    Returns:
        [N, C, (H*upy + py0 + py1 - fh + downy) // downy, (W*upx + px0 + px1 - fw + downx) // downx]
    """
    if impl not in ("auto", "ref", "cuda"):
        raise ValueError(f"impl must be auto|ref|cuda, got {impl}")
    if impl != "ref" and x.is_cuda:
        fn = cuda_kernels.get_upfirdn2d()
        # The kernel's filters get no gradient: a filter that requires grad takes the reference path.
        if fn is not None and x.dtype in cuda_kernels.KERNEL_DTYPES and not (f is not None and f.requires_grad):
            return fn(x, f, up=parse_scaling(up), down=parse_scaling(down), padding=parse_padding(padding),
                      flip_filter=flip_filter, gain=gain)
        if impl == "cuda" and fn is None:
            raise RuntimeError("upfirdn2d: the CUDA kernel is not available (see the warning above)")
    return upfirdn2d_ref(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)


# ---------------------------------------------------------------------------------------------
# Helpers that pick the padding so the output is aligned with the input.

def filter2d(x: torch.Tensor, f: Optional[torch.Tensor], padding=0, flip_filter: bool = False,
             gain: float = 1, impl: str = "auto") -> torch.Tensor:
    """Filter without resampling; output size = input size + padding."""
    px0, px1, py0, py1 = parse_padding(padding)
    fw, fh = filter_size(f)
    p = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(x: torch.Tensor, f: Optional[torch.Tensor], up: IntPair = 2, padding=0,
               flip_filter: bool = False, gain: float = 1, impl: str = "auto") -> torch.Tensor:
    """Upsample by ``up`` with the filter as interpolation kernel; output = input * up (+ padding)."""
    upx, upy = parse_scaling(up)
    px0, px1, py0, py1 = parse_padding(padding)
    fw, fh = filter_size(f)
    p = [px0 + (fw + upx - 1) // 2, px1 + (fw - upx) // 2, py0 + (fh + upy - 1) // 2, py1 + (fh - upy) // 2]
    return upfirdn2d(x, f, up=(upx, upy), padding=p, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)


def downsample2d(x: torch.Tensor, f: Optional[torch.Tensor], down: IntPair = 2, padding=0,
                 flip_filter: bool = False, gain: float = 1, impl: str = "auto") -> torch.Tensor:
    """Low-pass filter then keep every ``down``-th pixel; output = input / down (+ padding)."""
    downx, downy = parse_scaling(down)
    px0, px1, py0, py1 = parse_padding(padding)
    fw, fh = filter_size(f)
    p = [px0 + (fw - downx + 1) // 2, px1 + (fw - downx) // 2, py0 + (fh - downy + 1) // 2, py1 + (fh - downy) // 2]
    return upfirdn2d(x, f, down=(downx, downy), padding=p, flip_filter=flip_filter, gain=gain, impl=impl)
