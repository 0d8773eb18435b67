"""Equalized-learning-rate layers shared by the generator and the discriminator.

Equalized learning rate (Karras et al. 2018, ProGAN Sec. 4.1): weights are stored as N(0, 1)
(divided by the lr multiplier) and scaled at run time by ``lr_multiplier / sqrt(fan_in)``.
Parameter and buffer names follow the official StyleGAN2-ADA release so its weights load by name.

Every layer also runs with per-image parameters (a leading ``[P, ...]`` copy per image, swapped in
by batched pivotal tuning through ``torch.func.functional_call``; row layout in
``torch_utils.misc.per_image_rows``).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn

from torch_utils.misc import add_per_image_bias, assert_shape
from torch_utils.ops.bias_act import ACTIVATIONS, bias_act
from torch_utils.ops.conv2d_resample import conv2d_resample, conv2d_resample_per_image
from torch_utils.ops.upfirdn2d import setup_filter

DEFAULT_RESAMPLE_FILTER = (1, 3, 3, 1)   # StyleGAN2's binomial low-pass filter


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale ``x`` to unit root-mean-square along ``dim`` (StyleGAN's PixelNorm of z)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class FullyConnectedLayer(nn.Module):
    """y = act(x @ (W * gain)^T + b * lr_multiplier)."""

    def __init__(self,
                 in_features: int,               # input width
                 out_features: int,              # output width
                 bias: bool = True,              # learn a bias?
                 activation: str = "linear",     # name in ACTIVATIONS
                 lr_multiplier: float = 1.0,     # learning-rate multiplier (0.01 in the mapping net)
                 bias_init: float = 0.0):        # initial bias value (1 for style affines)
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert_shape(x, [None, self.in_features])            # x: [N, in_features]
        w = self.weight.to(x.dtype)
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if w.ndim == 3:                                      # per-image weights [P, O, I]
            p = w.shape[0]
            xs = x.reshape(-1, p, self.in_features).transpose(0, 1)            # [P, k, I]
            y = torch.bmm(xs, w.transpose(1, 2)).transpose(0, 1).reshape(x.shape[0], -1)
            y, b = add_per_image_bias(y * self.weight_gain, b)
            return bias_act(y, b, act=self.activation)
        if self.activation == "linear" and b is not None:   # weight gain applied to the output
            return torch.addmm(b.unsqueeze(0), x, w.t(), alpha=self.weight_gain)
        return bias_act(x.matmul(w.t()) * self.weight_gain, b, act=self.activation)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, act={self.activation}"


class Conv2dLayer(nn.Module):
    """Convolution with optional FIR up/down-sampling, bias, activation and clamping."""

    def __init__(self,
                 in_channels: int,                     # input channels
                 out_channels: int,                    # output channels
                 kernel_size: int,                     # square kernel width
                 bias: bool = True,                    # learn a bias?
                 activation: str = "linear",           # name in ACTIVATIONS
                 up: int = 1,                          # upsampling factor
                 down: int = 1,                        # downsampling factor
                 resample_filter: Sequence[float] = DEFAULT_RESAMPLE_FILTER,
                 conv_clamp: Optional[float] = None,   # clamp outputs to +-conv_clamp; None = off
                 channels_last: bool = False,          # store weight in channels_last format?
                 trainable: bool = True):              # parameter (True) or buffer (False)?
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.act_gain = ACTIVATIONS[activation].def_gain
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format)
        bias_t = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = nn.Parameter(weight)
            self.bias = nn.Parameter(bias_t) if bias_t is not None else None
        else:
            self.register_buffer("weight", weight)
            self.register_buffer("bias", bias_t)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        assert_shape(x, [None, self.in_channels, None, None])   # x: [N, C_in, H, W]
        w = self.weight * self.weight_gain
        b = self.bias.to(x.dtype) if self.bias is not None else None
        conv = conv2d_resample_per_image if w.ndim == 5 else conv2d_resample
        x = conv(x, w.to(x.dtype), f=self.resample_filter, up=self.up, down=self.down,
                 padding=self.padding, flip_weight=(self.up == 1))
        x, b = add_per_image_bias(x, b)
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=act_clamp)

    def extra_repr(self) -> str:
        return (f"in={self.in_channels}, out={self.out_channels}, act={self.activation}, "
                f"up={self.up}, down={self.down}")


class MinibatchStdLayer(nn.Module):
    """Appends the std of features over groups of samples (ProGAN Sec. 3) as extra channels."""

    def __init__(self,
                 group_size: Optional[int],      # samples per group; None = whole batch
                 num_channels: int = 1):         # feature groups / extra channels
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape                                    # x: [N, C, H, W]
        g = min(self.group_size, n) if self.group_size is not None else n
        if n % g != 0:
            raise ValueError(f"minibatch-std: batch size {n} is not a multiple of the group size {g}")
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)                    # [G, N/G, F, C/F, H, W]
        y = y - y.mean(dim=0)
        y = y.square().mean(dim=0)
        y = (y + 1e-8).sqrt()
        y = y.mean(dim=[2, 3, 4])                                # [N/G, F]
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)            # [N, F, H, W]
        return torch.cat([x, y], dim=1)
