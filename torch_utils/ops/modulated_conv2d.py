"""Modulated convolution with weight demodulation (StyleGAN2, Karras et al. 2020, Sec. 2.2).

Eq. 1: w'_ijk = s_i * w_ijk  (style s modulates input channel i)
Eq. 3: w''_ijk = w'_ijk / sqrt(sum_{i,k} w'_ijk^2 + eps)  (demodulation, per output channel j)

Two equivalent forms: *fused* folds the per-sample weights into one grouped convolution (groups =
batch); *non-fused* scales the activations before and after a shared convolution (cheaper for big
batches and when training, and the form that works with mixed precision).

Per-image base weights ``[P, O, I, kh, kw]`` (batched pivotal tuning: each image tunes its own
copy, see ``torch_utils.misc.per_image_rows`` for the row layout) always take the non-fused form
with one grouped convolution (groups = P) over the k rows of each image: no per-sample modulated
weights are formed, and the weight gradient lands on each image's base weights directly.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..misc import assert_shape
from .conv2d_resample import conv2d_resample, conv2d_resample_per_image
from .fma import fma

DEMOD_EPS = 1e-8


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor,
                     noise: Optional[torch.Tensor] = None, up: int = 1, down: int = 1, padding=0,
                     resample_filter: Optional[torch.Tensor] = None, demodulate: bool = True,
                     flip_weight: bool = True, fused_modconv: bool = True, gain: float = 1.0) -> torch.Tensor:
    """Modulated (and demodulated) convolution: ``conv(x, s * w) * d * gain + noise``.

    Args:
        x:       [N, I, H, W] activations.
        weight:  [O, I, kh, kw] shared weight (already scaled by the equalized-lr gain or not; the
                 demodulated result does not depend on its scale), or [P, O, I, kh, kw] per image
                 (N = k * P rows, row r using ``weight[r % P]``).
        styles:  [N, I] per-sample modulation.
        noise:   broadcastable to the output [N, O, H', W'], added after demodulation and gain
                 (so a caller can fold a bias into it); or None.
        gain:    scale of the convolution's output (folded into the demodulation coefficients).
        others:  as in ``conv2d_resample``.
    Returns:
        [N, O, H', W'].
    """
    n = x.shape[0]
    per_image = weight.ndim == 5
    out_ch, in_ch, kh, kw = weight.shape[-4:]
    assert_shape(x, [n, in_ch, None, None])      # x: [N, I, H, W]
    assert_shape(styles, [n, in_ch])             # styles: [N, I]

    # Keep float16 in range: normalise weight and styles first (demodulation undoes the scale).
    if x.dtype == torch.float16 and demodulate:
        weight = weight * (1 / (in_ch * kh * kw) ** 0.5 / weight.norm(float("inf"), dim=[-3, -2, -1], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)

    dcoefs = None
    if demodulate:
        # Eq. 3 without forming the per-sample weights: sum_{i,k} (s_i w_oik)^2 = sum_i s_i^2 W2_oi.
        w2 = weight.square().sum(dim=[-2, -1])                                # [O, I] or [P, O, I]
        if per_image:                    # rows [k, P]: image p's rows against its own W2
            p = weight.shape[0]
            s2 = styles.square().reshape(n // p, p, in_ch).transpose(0, 1)    # [P, k, I]
            dcoefs = (torch.bmm(s2, w2.transpose(1, 2)) + DEMOD_EPS).rsqrt()  # [P, k, O]
            dcoefs = dcoefs.transpose(0, 1).reshape(n, out_ch)                # [N, O]
        else:
            dcoefs = (styles.square() @ w2.t() + DEMOD_EPS).rsqrt()           # [N, O]
        if gain != 1:
            dcoefs = dcoefs * gain
    elif gain != 1:
        dcoefs = torch.full([n, out_ch], float(gain), device=x.device)

    if not fused_modconv or per_image:
        conv = conv2d_resample_per_image if per_image else conv2d_resample
        x = x * styles.to(x.dtype).reshape(n, -1, 1, 1)
        x = conv(x, weight.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding,
                 flip_weight=flip_weight)
        if dcoefs is not None and noise is not None:
            return fma(x, dcoefs.to(x.dtype).reshape(n, -1, 1, 1), noise.to(x.dtype))
        if dcoefs is not None:
            return x * dcoefs.to(x.dtype).reshape(n, -1, 1, 1)
        if noise is not None:
            return x.add(noise.to(x.dtype))
        return x

    w = weight.unsqueeze(0) * styles.reshape(n, 1, in_ch, 1, 1)           # Eq. 1: [N, O, I, kh, kw]
    if dcoefs is not None:
        w = w * dcoefs.reshape(n, -1, 1, 1, 1)
    x = x.reshape(1, -1, *x.shape[2:])                                  # [1, N*I, H, W]
    w = w.reshape(-1, in_ch, kh, kw)                                    # [N*O, I, kh, kw]
    x = conv2d_resample(x, w.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding,
                        groups=n, flip_weight=flip_weight)
    x = x.reshape(n, -1, *x.shape[2:])                                  # [N, O, H', W']
    if noise is not None:
        x = x.add(noise.to(x.dtype))
    return x
