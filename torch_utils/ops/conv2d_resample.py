"""2-D convolution with FIR-filtered up/down-sampling (StyleGAN2, Karras et al. 2020, App. B).

Meaning (the "naive" formulation, also used by the tests):

    up > 1:   y = conv(filter(zero_insert(x, up), f, gain=up^2), w)
    down > 1: y = subsample(filter(conv(x, w), f), down)

with paddings chosen so the output is ``H * up / down`` for ``padding = k // 2``. The
implementation reorders these linear, shift-invariant steps for speed (a strided transposed
convolution for up, a strided convolution for down); the result is the same.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .upfirdn2d import filter_size, parse_padding, upfirdn2d


def _transpose_weight(w: torch.Tensor, groups: int) -> torch.Tensor:
    """[O, I/g, kh, kw] -> the [I, O/g, kh, kw] layout ``conv_transpose2d`` expects."""
    o, ig, kh, kw = w.shape
    w = w.reshape(groups, o // groups, ig, kh, kw).transpose(1, 2)
    return w.reshape(groups * ig, o // groups, kh, kw)


def conv2d_resample(x: torch.Tensor, w: torch.Tensor, f: Optional[torch.Tensor] = None, up: int = 1,
                    down: int = 1, padding=0, groups: int = 1, flip_weight: bool = True,
                    flip_filter: bool = False) -> torch.Tensor:
    """Convolve ``x`` with ``w``, upsampling or downsampling through the FIR filter ``f``.

    Args:
        x:           [N, C_in, H, W].
        w:           [C_out, C_in / groups, kh, kw].
        f:           low-pass filter (``setup_filter``), required when up or down > 1.
        up, down:    integer factors (not both > 1).
        padding:     int, [px, py] or [px0, px1, py0, py1], before resampling is accounted for.
        groups:      as in ``torch.nn.functional.conv2d``.
        flip_weight: True = correlation (as ``F.conv2d``), False = true convolution.
        flip_filter: passed to ``upfirdn2d``.
    Returns:
        [N, C_out, H', W'].
    """
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(f"x and w must be 4-D, got {tuple(x.shape)} and {tuple(w.shape)}")
    if x.shape[1] != w.shape[1] * groups:
        raise ValueError(f"x has {x.shape[1]} channels, w expects {w.shape[1] * groups}")
    up, down = int(up), int(down)
    if up < 1 or down < 1 or (up > 1 and down > 1):
        raise ValueError(f"need up >= 1, down >= 1, not both > 1 (got up={up}, down={down})")
    if (up > 1 or down > 1) and f is None:
        raise ValueError("a resampling filter is required when up or down > 1")
    kw, kh = w.shape[3], w.shape[2]
    fw, fh = filter_size(f)
    px0, px1, py0, py1 = parse_padding(padding)
    if not flip_weight:
        w = w.flip([2, 3])   # from here on, always correlate with w
    channels_last = x.shape[1] > 1 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    y = _conv2d_resample(x, w, f, up, down, (px0, px1, py0, py1), groups, flip_filter, kw, kh, fw, fh)
    # Transposed convolutions and padding may return NCHW: keep the caller's channels_last.
    return y.contiguous(memory_format=torch.channels_last) if channels_last else y


def conv2d_resample_per_image(x: torch.Tensor, w: torch.Tensor, **kwargs) -> torch.Tensor:
    """``conv2d_resample`` with one weight per image, as one grouped convolution (groups = P).

    x: [N, C_in, H, W] with N = k * P rows, row r being image r % P (``misc.per_image_rows``);
    w: [P, C_out, C_in, kh, kw]. Row r is convolved with ``w[r % P]``. Returns [N, C_out, H', W'].
    """
    if w.ndim != 5:
        raise ValueError(f"per-image weights must be 5-D [P, O, I, kh, kw], got {tuple(w.shape)}")
    p, o, i, kh, kw = w.shape
    n = x.shape[0]
    if n % p:
        raise ValueError(f"{n} rows do not split into groups of {p} images")
    if (kh, kw) == (1, 1) and kwargs.get("up", 1) == 1 and kwargs.get("down", 1) == 1 and \
            parse_padding(kwargs.get("padding", 0)) == (0, 0, 0, 0) and kwargs.get("flip_weight", True):
        # A plain 1x1 convolution per image is a batched matmul (grouped 1x1 convolutions take a
        # slow per-group path on CPU): [P, O, I] @ [P, I, k*H*W].
        k, h, wd = n // p, x.shape[2], x.shape[3]
        xs = x.reshape(k, p, i, h * wd).permute(1, 2, 0, 3).reshape(p, i, k * h * wd)
        y = torch.bmm(w.reshape(p, o, i), xs).reshape(p, o, k, h * wd).permute(2, 0, 1, 3)
        return y.reshape(n, o, h, wd)
    y = conv2d_resample(x.reshape(n // p, p * i, *x.shape[2:]), w.reshape(p * o, i, kh, kw), groups=p, **kwargs)
    return y.reshape(n, o, *y.shape[2:])                             # [k, P*O, H', W'] -> [N, O, H', W']


def _conv2d_resample(x, w, f, up, down, padding, groups, flip_filter, kw, kh, fw, fh):
    px0, px1, py0, py1 = padding

    if up > 1:
        # Padding that the zero-inserted, filtered signal would need, then the same result from a
        # full strided transposed convolution (length (H-1)*up + k) cropped/padded by upfirdn2d.
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
        if kw == 1 and kh == 1:
            x = F.conv2d(x, w, groups=groups)
            return upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up * up, flip_filter=flip_filter)
        x = F.conv_transpose2d(x, _transpose_weight(w, groups).flip([2, 3]), stride=up, groups=groups)
        pad = [px0 - (kw - 1), px1 + up - 1 - (kw - 1), py0 - (kh - 1), py1 + up - 1 - (kh - 1)]
        return upfirdn2d(x, f, padding=pad, gain=up * up, flip_filter=flip_filter)

    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2
        if kw == 1 and kh == 1:
            x = upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
            return F.conv2d(x, w, groups=groups)
        x = upfirdn2d(x, f, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return F.conv2d(x, w, stride=down, groups=groups)

    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return F.conv2d(x, w, padding=[py0, px0], groups=groups)
    x = upfirdn2d(x, None, padding=[px0, px1, py0, py1])
    return F.conv2d(x, w, groups=groups)
