"""The StyleGAN2-ADA discriminator (Karras et al. 2020, Fig. 7; ADA, Karras et al. 2020b).

QC-StyleGAN trains two of them (Sec. 3.3): one on sharp images (G(z, 0) vs real) and one on
degraded images (G(z, q) vs degraded real). Parameter names follow the official release.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from torch_utils.misc import assert_shape
from torch_utils.ops.upfirdn2d import downsample2d, setup_filter

from .layers import DEFAULT_RESAMPLE_FILTER, Conv2dLayer, FullyConnectedLayer, MinibatchStdLayer
from .mapping import MappingNetwork


class DiscriminatorBlock(nn.Module):
    """[fromRGB] -> conv0 -> conv1 (down 2) [+ resnet skip]."""

    def __init__(self,
                 in_channels: int,                     # 0 for the first (highest-resolution) block
                 tmp_channels: int,                    # channels of conv0
                 out_channels: int,                    # channels after downsampling
                 resolution: int,                      # input resolution
                 img_channels: int,
                 first_layer_idx: int,                 # index of this block's first layer (freezing)
                 architecture: str = "resnet",         # 'orig', 'skip' or 'resnet'
                 activation: str = "lrelu",
                 resample_filter: Sequence[float] = DEFAULT_RESAMPLE_FILTER,
                 conv_clamp: Optional[float] = None,
                 use_fp16: bool = False,
                 fp16_channels_last: bool = False,
                 freeze_layers: int = 0):              # freeze the first layers of D (layer count)
        super().__init__()
        if architecture not in ("orig", "skip", "resnet"):
            raise ValueError(f"unknown architecture '{architecture}'")
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.first_layer_idx = first_layer_idx
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.num_layers = 0

        def trainable_next() -> bool:
            trainable = self.first_layer_idx + self.num_layers >= freeze_layers
            self.num_layers += 1
            return trainable

        common = dict(activation=activation, conv_clamp=conv_clamp, channels_last=self.channels_last)
        if in_channels == 0 or architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, kernel_size=1,
                                       trainable=trainable_next(), **common)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, kernel_size=3, trainable=trainable_next(), **common)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, kernel_size=3, down=2,
                                 resample_filter=resample_filter, trainable=trainable_next(), **common)
        if architecture == "resnet":
            self.skip = Conv2dLayer(tmp_channels, out_channels, kernel_size=1, bias=False, down=2,
                                    resample_filter=resample_filter, trainable=trainable_next(),
                                    channels_last=self.channels_last)

    def forward(self, x: Optional[torch.Tensor], img: Optional[torch.Tensor], force_fp32: bool = False):
        on_cuda = (x if x is not None else img).device.type == "cuda"
        dtype = torch.float16 if (self.use_fp16 and not force_fp32 and on_cuda) else torch.float32
        memory_format = torch.channels_last if (self.channels_last and not force_fp32) else torch.contiguous_format
        if x is not None:
            assert_shape(x, [None, self.in_channels, self.resolution, self.resolution])
            x = x.to(dtype=dtype, memory_format=memory_format)
        if self.in_channels == 0 or self.architecture == "skip":
            assert_shape(img, [None, self.img_channels, self.resolution, self.resolution])
            img = img.to(dtype=dtype, memory_format=memory_format)
            y = self.fromrgb(img)
            x = x + y if x is not None else y
            img = downsample2d(img, self.resample_filter) if self.architecture == "skip" else None
        if self.architecture == "resnet":
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x)
            x = self.conv1(x, gain=math.sqrt(0.5))
            x = y.add(x)
        else:
            x = self.conv1(self.conv0(x))
        return x, img


class DiscriminatorEpilogue(nn.Module):
    """4x4 head: [fromRGB] -> minibatch-std -> conv -> fc -> out [-> projection with cmap]."""

    def __init__(self,
                 in_channels: int,
                 cmap_dim: int,                        # conditioning projection size; 0 = none
                 resolution: int,                      # 4
                 img_channels: int,
                 architecture: str = "resnet",
                 mbstd_group_size: Optional[int] = 4,  # minibatch-std group; None = whole batch
                 mbstd_num_channels: int = 1,          # 0 = no minibatch-std
                 activation: str = "lrelu",
                 conv_clamp: Optional[float] = None):
        super().__init__()
        self.in_channels = in_channels
        self.cmap_dim = cmap_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.architecture = architecture
        if architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, in_channels, kernel_size=1, activation=activation)
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, kernel_size=3,
                                activation=activation, conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution ** 2, in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x: torch.Tensor, img: Optional[torch.Tensor], cmap: Optional[torch.Tensor]) -> torch.Tensor:
        assert_shape(x, [None, self.in_channels, self.resolution, self.resolution])
        x = x.to(dtype=torch.float32, memory_format=torch.contiguous_format)
        if self.architecture == "skip":
            x = x + self.fromrgb(img.to(torch.float32))
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        x = self.out(x)                                                  # [N, 1] or [N, cmap_dim]
        if self.cmap_dim > 0:
            assert_shape(cmap, [None, self.cmap_dim])
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))   # projection
        return x


class Discriminator(nn.Module):
    """img [N, C, R, R] (+ c [N, c_dim]) -> logits [N, 1]."""

    def __init__(self,
                 c_dim: int,                           # conditioning label size; 0 = none
                 img_resolution: int,
                 img_channels: int,
                 architecture: str = "resnet",
                 channel_base: int = 32768,
                 channel_max: int = 512,
                 num_fp16_res: int = 0,
                 conv_clamp: Optional[float] = None,
                 cmap_dim: Optional[int] = None,       # None = channels at 4x4
                 block_kwargs: Optional[dict] = None,
                 mapping_kwargs: Optional[dict] = None,
                 epilogue_kwargs: Optional[dict] = None):
        super().__init__()
        self.init_kwargs = dict(c_dim=c_dim, img_resolution=img_resolution, img_channels=img_channels,
                                architecture=architecture, channel_base=channel_base,
                                channel_max=channel_max, num_fp16_res=num_fp16_res,
                                conv_clamp=conv_clamp, cmap_dim=cmap_dim,
                                block_kwargs=dict(block_kwargs or {}),
                                mapping_kwargs=dict(mapping_kwargs or {}),
                                epilogue_kwargs=dict(epilogue_kwargs or {}))
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.img_channels = img_channels
        self.block_resolutions = [2 ** i for i in range(self.img_resolution_log2, 2, -1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions + [4]}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)
        if cmap_dim is None:
            cmap_dim = channels[4]
        if c_dim == 0:
            cmap_dim = 0
        common = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp)
        layer_idx = 0
        for res in self.block_resolutions:
            in_channels = channels[res] if res < img_resolution else 0
            block = DiscriminatorBlock(in_channels, channels[res], channels[res // 2], resolution=res,
                                       first_layer_idx=layer_idx, use_fp16=(res >= fp16_resolution),
                                       **(block_kwargs or {}), **common)
            setattr(self, f"b{res}", block)
            layer_idx += block.num_layers
        if c_dim > 0:
            self.mapping = MappingNetwork(z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None,
                                          w_avg_beta=None, **(mapping_kwargs or {}))
        self.b4 = DiscriminatorEpilogue(channels[4], cmap_dim=cmap_dim, resolution=4,
                                        **(epilogue_kwargs or {}), **common)

    def forward(self, img: torch.Tensor, c: Optional[torch.Tensor] = None, **block_kwargs) -> torch.Tensor:
        assert_shape(img, [None, self.img_channels, self.img_resolution, self.img_resolution])
        x = None
        for res in self.block_resolutions:
            x, img = getattr(self, f"b{res}")(x, img, **block_kwargs)
        cmap = None
        if self.c_dim > 0:
            if c is None:
                raise ValueError(f"this discriminator is conditional (c_dim={self.c_dim}); pass c")
            cmap = self.mapping(None, c)
        return self.b4(x, img, cmap)
