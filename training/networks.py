"""The QC-StyleGAN generator (Nguyen et al., NeurIPS 2022, Sec. 3.2) on StyleGAN2-ADA.

One ``Generator`` class covers both models: ``q_dim=0`` is the plain StyleGAN2 generator
(Karras et al. 2020); ``q_dim>0`` gives the last ``degrad_blocks`` synthesis blocks a
``DegradBlock`` (see ``training/degrad_block.py``). Parameter and buffer names and shapes are the
official ones, so official weights load by name (``training/checkpoint.py``).

Data flow: z [N, z_dim] --mapping--> ws [N, num_ws, w_dim] --synthesis(q)--> img [N, C, H, W].
"""
from __future__ import annotations

import dataclasses
import math
from typing import List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from torch_utils.misc import add_per_image_bias, assert_shape, per_image_rows
from torch_utils.ops.bias_act import ACTIVATIONS, POSITIVELY_HOMOGENEOUS, bias_act
from torch_utils.ops.modulated_conv2d import modulated_conv2d
from torch_utils.ops.upfirdn2d import setup_filter, upsample2d

from .degrad_block import DegradBlock
from .discriminator import Discriminator  # noqa: F401  (re-exported: the official module holds both)
from .layers import DEFAULT_RESAMPLE_FILTER, Conv2dLayer, FullyConnectedLayer
from .mapping import MappingNetwork

NOISE_MODES = ("random", "const", "none")


# ---------------------------------------------------------------------------------------------
# Synthesis layers.

class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally 2x up) + noise + bias + lrelu (StyleGAN2 Fig. 2d)."""

    def __init__(self,
                 in_channels: int,                     # input channels
                 out_channels: int,                    # output channels (incl. DegradBlock extras)
                 w_dim: int,                           # w size
                 resolution: int,                      # output resolution
                 kernel_size: int = 3,
                 up: int = 1,                          # 2 in a block's conv0
                 use_noise: bool = True,               # per-pixel noise input?
                 activation: str = "lrelu",
                 resample_filter: Sequence[float] = DEFAULT_RESAMPLE_FILTER,
                 conv_clamp: Optional[float] = None,   # clamp activations to +-conv_clamp; None = off
                 channels_last: bool = False):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.act_gain = ACTIVATIONS[activation].def_gain
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size])
                                   .to(memory_format=memory_format))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def make_noise(self, n: int, noise_mode: str, device: torch.device, paired: bool = False) -> Optional[torch.Tensor]:
        """The noise input: [N, 1, R, R] ('random'), [R, R] ('const') or None ('none').
        ``paired``: the batch is [sharp; degraded] halves that share their random noise."""
        if not self.use_noise or noise_mode == "none":
            return None
        strength = self.noise_strength
        if strength.ndim == 1:                   # per-image strengths [P] -> [N, 1, 1, 1]
            strength = per_image_rows(strength, n, 0).reshape(n, 1, 1, 1)
        if noise_mode == "const":
            return self.noise_const * strength
        if paired:
            half = torch.randn([n // 2, 1, self.resolution, self.resolution], device=device)
            return torch.cat([half, half]) * strength
        return torch.randn([n, 1, self.resolution, self.resolution], device=device) * strength

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random",
                fused_modconv: bool = True, gain: float = 1.0, rows: Optional[slice] = None,
                noise: Optional[torch.Tensor] = None, paired_noise: bool = False) -> torch.Tensor:
        """x: [N, I, H, W]; w: [N, w_dim] -> [N, O, R, R].

        ``rows`` computes only those output channels (exact: demodulation, bias and noise are per
        channel); ``noise`` passes a precomputed noise input (see ``make_noise``). Per-image
        parameters (``torch_utils.misc.per_image_rows``) take the per-image modulated convolution.
        """
        n = x.shape[0]
        in_res = self.resolution // self.up
        assert_shape(x, [n, self.in_channels, in_res, in_res])
        styles = self.affine(w)                                            # [N, I]
        if noise is None:
            noise = self.make_noise(n, noise_mode, x.device, paired=paired_noise)
        weight, bias = self.weight, self.bias
        if rows is not None:
            weight, bias = weight[..., rows, :, :, :], bias[..., rows]
        act_gain = self.act_gain * gain
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        if (self.activation in POSITIVELY_HOMOGENEOUS and not torch.is_grad_enabled()
                and x.dtype in (torch.bfloat16, torch.float16) and bias.ndim == 1):
            # Low-precision inference: act(y + n + b) * g == act(y * g + (n + b) * g), so the gain
            # and the bias ride along with the demodulation and the noise: one pass after the
            # convolution. (float32 keeps the reference order, which the fixtures pin down.)
            nb = bias.reshape(-1, 1, 1) if noise is None else noise + bias.reshape(-1, 1, 1)
            x = modulated_conv2d(x, weight, styles, noise=nb * act_gain, up=self.up, padding=self.padding,
                                 resample_filter=self.resample_filter, flip_weight=(self.up == 1),
                                 fused_modconv=fused_modconv, gain=act_gain)
            return bias_act(x, None, act=self.activation, gain=1, clamp=act_clamp, overwrite=True)
        x = modulated_conv2d(x, weight, styles, noise=noise, up=self.up, padding=self.padding,
                             resample_filter=self.resample_filter, flip_weight=(self.up == 1),
                             fused_modconv=fused_modconv)
        x, bias = add_per_image_bias(x, bias.to(x.dtype))
        return bias_act(x, bias, act=self.activation, gain=act_gain, clamp=act_clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv to image channels, no demodulation."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1,
                 conv_clamp: Optional[float] = None, channels_last: bool = False):
        super().__init__()
        self.in_channels = in_channels
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size])
                                   .to(memory_format=memory_format))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool = True) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain                        # [N, I]
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused_modconv=fused_modconv)
        x, bias = add_per_image_bias(x, self.bias.to(x.dtype))
        return bias_act(x, bias, clamp=self.conv_clamp)


# ---------------------------------------------------------------------------------------------
# Synthesis block and network.

@dataclasses.dataclass(frozen=True)
class RenderFormat:
    """How a render runs (not what it computes): per-pixel noise, and the activation format that
    ``SynthesisBlock.activation_format`` derives from ``force_fp32`` / ``dtype`` /
    ``channels_last``; ``fused_modconv`` None = the layers' own choice."""
    noise_mode: str = "random"                 # 'random', 'const' or 'none'
    force_fp32: bool = False
    fused_modconv: Optional[bool] = None
    dtype: Optional[torch.dtype] = None
    channels_last: Optional[bool] = None


# What a DegradBlock block does with a pair render (SynthesisNetwork's docstring):
# 'none': one render of the batch; 'split': this block splits the batch [N] after conv1 into
# [sharp N; degraded N]; 'halves': the batch already is [sharp N/2; degraded N/2] (q = 0 for the
# first half; random noise shared by the halves).
PAIR_MODES = ("none", "split", "halves")


class SynthesisBlock(nn.Module):
    """One resolution: [const |] conv0 (up) -> conv1 [-> DegradBlock] -> ToRGB (skip/resnet/orig)."""

    def __init__(self,
                 in_channels: int,                     # 0 for the 4x4 block (learned constant input)
                 out_channels: int,
                 w_dim: int,
                 resolution: int,
                 img_channels: int,
                 is_last: bool,
                 architecture: str = "skip",           # 'orig', 'skip' or 'resnet'
                 resample_filter: Sequence[float] = DEFAULT_RESAMPLE_FILTER,
                 conv_clamp: Optional[float] = None,
                 use_fp16: bool = False,               # float16 for this block on CUDA
                 fp16_channels_last: bool = False,
                 q_dim: int = 0,                       # >0: this block carries a DegradBlock
                 degrad_channels: int = 16,            # L
                 degrad_layers: int = 3,               # P
                 **layer_kwargs):
        super().__init__()
        if architecture not in ("orig", "skip", "resnet"):
            raise ValueError(f"unknown architecture '{architecture}'")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        self.q_dim = q_dim
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.num_conv = 0
        self.num_torgb = 0
        common = dict(conv_clamp=conv_clamp, channels_last=self.channels_last, **layer_kwargs)
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2,
                                        resample_filter=resample_filter, **common)
            self.num_conv += 1
        if q_dim > 0:
            self.convq = DegradBlock(out_channels, q_dim, degrad_channels, degrad_layers)
        extra = self.convq.extra_channels if q_dim > 0 else 0
        self.conv1 = SynthesisLayer(out_channels, out_channels + extra, w_dim, resolution, **common)
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp,
                                    channels_last=self.channels_last)
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=2,
                                    resample_filter=resample_filter, channels_last=self.channels_last)

    @property
    def has_degrad_block(self) -> bool:
        return self.q_dim > 0

    def activation_format(self, device: torch.device, force_fp32: bool = False,
                          dtype: Optional[torch.dtype] = None, channels_last: Optional[bool] = None):
        """The one rule for this block's activation dtype and memory format.

        Default: float16 (optionally channels_last) for the ``use_fp16`` blocks on CUDA, float32
        otherwise (StyleGAN2-ADA's mixed precision). ``dtype`` overrides it for every block (e.g.
        bfloat16 inference on CPU); ``force_fp32`` wins over both. Weights are cast to the
        activations' dtype inside each layer; images are accumulated in float32.
        """
        if force_fp32:
            return torch.float32, torch.contiguous_format
        if dtype is None:
            dtype = torch.float16 if (self.use_fp16 and device.type == "cuda") else torch.float32
        if channels_last is None:
            channels_last = self.channels_last and dtype == torch.float16
        return dtype, (torch.channels_last if channels_last else torch.contiguous_format)

    def forward(self, x: Optional[torch.Tensor], img: Optional[torch.Tensor], ws: torch.Tensor,
                q: Optional[torch.Tensor] = None, fmt: RenderFormat = RenderFormat(), pair: str = "none"):
        """Run the block.

        x: [N, in_channels, R/2, R/2] or None; img: [N, C_img, R/2, R/2] or None;
        ws: [N, num_conv + num_torgb, w_dim]; q: [N, q_dim] or None (= zeros); ``pair``: one of
        ``PAIR_MODES`` ('split' and 'halves' only in DegradBlock blocks, except that 'halves'
        passes through the others unchanged).
        Returns (x, img, x_c): [N', out, R, R], [N', C_img, R, R] and conv1's features before the
        DegradBlock residual [N', out, R, R], where N' = 2N for 'split', else N.
        """
        if pair not in PAIR_MODES:
            raise ValueError(f"pair must be one of {PAIR_MODES}, got '{pair}'")
        branch = pair == "split"
        n = ws.shape[0]
        assert_shape(ws, [n, self.num_conv + self.num_torgb, self.w_dim])
        w_iter = iter(ws.unbind(dim=1))
        dtype, memory_format = self.activation_format(ws.device, fmt.force_fp32, fmt.dtype, fmt.channels_last)
        fused_modconv = fmt.fused_modconv
        if fused_modconv is None:
            fused_modconv = (not self.training) and (dtype == torch.float32 or n == 1)
        layer = dict(noise_mode=fmt.noise_mode, fused_modconv=fused_modconv, paired_noise=pair == "halves")

        if self.in_channels == 0:
            const = self.const.to(dtype=dtype)
            x = const.unsqueeze(0).repeat([n, 1, 1, 1]) if const.ndim == 3 else per_image_rows(const, n, 3)
            x = x.contiguous(memory_format=memory_format)
        else:
            assert_shape(x, [n, self.in_channels, self.resolution // 2, self.resolution // 2])
            x = x.to(dtype=dtype, memory_format=memory_format)

        resnet = self.in_channels != 0 and self.architecture == "resnet"
        y_skip = self.skip(x, gain=math.sqrt(0.5)) if resnet else None
        if self.in_channels != 0:
            x = self.conv0(x, next(w_iter), **layer)
        x, x_c = self._conv1_and_degradation(x, next(w_iter), q, pair,
                                             gain=(math.sqrt(0.5) if resnet else 1.0), layer=layer)
        if y_skip is not None:
            x = torch.cat([y_skip, y_skip]).add(x) if branch else y_skip.add(x)

        if img is not None:
            assert_shape(img, [n, self.img_channels, self.resolution // 2, self.resolution // 2])
            img = upsample2d(img, self.resample_filter)
            if branch:
                img = torch.cat([img, img])
        if self.is_last or self.architecture == "skip":
            w = next(w_iter)
            y = self.torgb(x, torch.cat([w, w]) if branch else w, fused_modconv=fused_modconv)
            y = y.to(dtype=torch.float32, memory_format=torch.contiguous_format)
            img = img.add(y) if img is not None else y
        return x, img, x_c

    def _conv1_and_degradation(self, x: torch.Tensor, w: torch.Tensor, q: Optional[torch.Tensor],
                               pair: str, gain: float, layer: dict):
        """conv1, then the DegradBlock residual where q can be non-zero. Returns (x, x_c)."""
        c = self.out_channels
        if not self.has_degrad_block:
            if pair == "split":
                raise ValueError("pair='split' is only valid in a DegradBlock block")
            x = self.conv1(x, w, gain=gain, **layer)
            return x, x
        if q is None:                        # q = 0: the extra channels are not needed
            x = self.conv1(x, w, gain=gain, rows=slice(0, c), **layer)
            return x, x
        if pair == "split":                  # x: [N], out: [sharp N; degraded N]
            y = self.conv1(x, w, gain=gain, **layer)
            x_c = y[:, :c]
            return torch.cat([x_c, x_c + self.convq.residual(y[:, c:], q)]), torch.cat([x_c, x_c])
        if pair == "halves":                 # x: [sharp k; degraded k]; q[:k] == 0
            sharp_rows = x.shape[0] // 2
            noise = self.conv1.make_noise(x.shape[0], layer["noise_mode"], x.device, paired=True)
            noise_deg = noise[sharp_rows:] if (noise is not None and noise.ndim == 4) else noise
            x_c = self.conv1(x, w, gain=gain, rows=slice(0, c), noise=noise, **layer)
            r1 = self.conv1(x[sharp_rows:], w[sharp_rows:], gain=gain, rows=slice(c, None),
                            noise=noise_deg, **layer)
            res = self.convq.residual(r1, q[sharp_rows:])
            return torch.cat([x_c[:sharp_rows], x_c[sharp_rows:] + res]), x_c
        return self.convq(self.conv1(x, w, gain=gain, **layer), q)


@dataclasses.dataclass
class SynthesisState:
    """What passes from one synthesis block to the next (``SynthesisNetwork.run_blocks``).

    x: features [N', C, R, R] or None (before the first block); img: the image so far
    [N', C_img, R, R] or None; branched: True once a pair render has split the batch into its
    [sharp N; degraded N] halves (then N' = 2N, else N' = N).
    """
    x: Optional[torch.Tensor] = None
    img: Optional[torch.Tensor] = None
    branched: bool = False


class SynthesisNetwork(nn.Module):
    """ws [N, num_ws, w_dim] (+ q [N, q_dim]) -> img [N, img_channels, R, R].

    Pair render (the one path for sharp + degraded images, ``pair=True``): G(w, 0) and G(w, q)
    share every block below the first DegradBlock block, which splits the batch after its conv1
    (``SynthesisBlock`` ``pair='split'``) into [sharp N; degraded N]; from there each block gets
    the ws twice and q as [0; q], and runs its DegradBlock on the degraded half only
    (``pair='halves'``; random noise is shared by the halves). ``run_blocks`` is the block loop:
    ``forward`` runs it over all blocks, and pivotal tuning (``inversion/pti.py``) runs the
    frozen blocks once and the tuned ones at every step from the saved ``SynthesisState``.
    """

    def __init__(self,
                 w_dim: int,                       # intermediate latent size
                 img_resolution: int,              # output resolution (power of two)
                 img_channels: int,                # output channels
                 q_dim: int = 0,                   # quality code size; 0 = plain StyleGAN2
                 channel_base: int = 32768,        # channels at resolution r: min(base / r, max)
                 channel_max: int = 512,
                 num_fp16_res: int = 0,            # highest resolutions that run in float16 on CUDA
                 degrad_blocks: int = 2,           # M: last blocks that carry a DegradBlock
                 degrad_channels: int = 16,        # L: channels per q entry
                 degrad_layers: int = 3,           # P: 1x1 convs in the DegradBlock projection
                 **block_kwargs):
        super().__init__()
        if img_resolution < 4 or img_resolution & (img_resolution - 1):
            raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.img_channels = img_channels
        self.q_dim = q_dim
        self.block_resolutions = [2 ** i for i in range(2, self.img_resolution_log2 + 1)]
        if q_dim > 0 and not 1 <= degrad_blocks <= len(self.block_resolutions):
            raise ValueError(f"degrad_blocks must be in 1..{len(self.block_resolutions)}")
        # The one rule for "which blocks carry q": the last M blocks.
        self.degrad_resolutions = self.block_resolutions[-degrad_blocks:] if q_dim > 0 else []
        # Distillation compares these blocks' conv1 features (the same blocks in a plain teacher).
        self.feature_resolutions = self.block_resolutions[-degrad_blocks:]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)
        self.num_ws = 0
        for res in self.block_resolutions:
            in_channels = channels[res // 2] if res > 4 else 0
            carries_q = res in self.degrad_resolutions
            block = SynthesisBlock(in_channels, channels[res], w_dim=w_dim, resolution=res,
                                   img_channels=img_channels, is_last=(res == img_resolution),
                                   use_fp16=(res >= fp16_resolution),
                                   q_dim=q_dim if carries_q else 0,
                                   degrad_channels=degrad_channels, degrad_layers=degrad_layers,
                                   **block_kwargs)
            self.num_ws += block.num_conv
            if res == img_resolution:
                self.num_ws += block.num_torgb
            setattr(self, f"b{res}", block)

    def blocks(self) -> List[SynthesisBlock]:
        return [getattr(self, f"b{res}") for res in self.block_resolutions]

    def w_offsets(self) -> List[int]:
        """Index in ws of each block's first w (blocks share the ToRGB w with the next conv0)."""
        out, idx = [], 0
        for block in self.blocks():
            out.append(idx)
            idx += block.num_conv
        return out

    def run_blocks(self, ws: torch.Tensor, q: Optional[torch.Tensor] = None, start: int = 0,
                   stop: Optional[int] = None, state: Optional[SynthesisState] = None, pair: bool = False,
                   noise_mode: str = "const", feats: Optional[dict] = None,
                   feat_resolutions: Optional[Sequence[int]] = None, **block_kwargs) -> SynthesisState:
        """Blocks ``start..stop-1`` (indices into ``blocks()``; stop None = to the end) from ``state``
        (None = the start). ws: [N, num_ws, w_dim]; q: [N, q_dim] or None (= zeros); ``pair``:
        render the sharp and degraded images together (see the class docstring). ``feats``: a dict
        that receives conv1's features before the DegradBlock residual, ``{resolution: x_c}``, for
        the blocks in ``feat_resolutions`` (default ``self.feature_resolutions``). Other keywords
        (``force_fp32``, ``fused_modconv``, ``dtype``, ``channels_last``) go to every block.
        Returns the state after block ``stop-1``: its ``img`` is the image once the last block ran."""
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got '{noise_mode}'")
        n = ws.shape[0]
        assert_shape(ws, [n, self.num_ws, self.w_dim])                   # ws: [N, num_ws, w_dim]
        if q is not None:
            if self.q_dim == 0:
                raise ValueError("this generator has no quality code (q_dim=0); pass q=None")
            assert_shape(q, [n, self.q_dim])                             # q: [N, q_dim]
            q = q.to(torch.float32)
        if pair and q is None:
            raise ValueError("pair=True needs q")
        blocks, offsets = self.blocks(), self.w_offsets()
        stop = len(blocks) if stop is None else stop
        wanted = set(self.feature_resolutions if feat_resolutions is None else feat_resolutions)
        state = state if state is not None else SynthesisState()
        x, img, branched = state.x, state.img, state.branched
        fmt = RenderFormat(noise_mode=noise_mode, **block_kwargs)
        for i in range(start, stop):
            block = blocks[i]
            block_ws = ws.narrow(1, offsets[i], block.num_conv + block.num_torgb)
            block_q = q if block.has_degrad_block else None
            branch = pair and block.has_degrad_block and not branched
            if branched:
                # After the split the batch is [sharp; degraded], so q is [0; q].
                block_ws = torch.cat([block_ws, block_ws])
                block_q = torch.cat([torch.zeros_like(q), q]) if block.has_degrad_block else None
            x, img, x_c = block(x, img, block_ws, q=block_q, fmt=fmt,
                                pair="split" if branch else ("halves" if branched else "none"))
            branched = branched or branch
            if feats is not None and block.resolution in wanted:
                feats[block.resolution] = x_c
        return SynthesisState(x, img, branched)

    def forward(self, ws: torch.Tensor, q: Optional[torch.Tensor] = None, noise_mode: str = "const",
                return_feats: bool = False, pair: bool = False, force_fp32: bool = False,
                fused_modconv: Optional[bool] = None, feat_resolutions: Optional[Sequence[int]] = None,
                dtype: Optional[torch.dtype] = None, channels_last: Optional[bool] = None):
        """Render images.

        Args:
            ws:           [N, num_ws, w_dim].
            q:            [N, q_dim] quality code; None = zeros (the sharp image).
            noise_mode:   'random', 'const' (the stored noise) or 'none'.
            return_feats: also return conv1's features before the DegradBlock residual (x_c) of the
                          blocks in ``feat_resolutions`` (default ``self.feature_resolutions``:
                          the DegradBlock blocks, or the same last M blocks of a plain generator,
                          which is what distillation compares).
            pair:         render the sharp (q=0) and degraded (q) images together, sharing the
                          trunk below the first DegradBlock; returns (img_sharp, img_degraded).
            dtype, channels_last: activation format for every block (default: per block, see
                          ``SynthesisBlock.activation_format``); images are always float32.
        """
        feats = {} if return_feats else None
        state = self.run_blocks(ws, q, pair=pair, noise_mode=noise_mode, feats=feats,
                                feat_resolutions=feat_resolutions, force_fp32=force_fp32,
                                fused_modconv=fused_modconv, dtype=dtype, channels_last=channels_last)
        img = state.img
        if pair:
            n = ws.shape[0]
            img = (img[:n], img[n:])
        if return_feats:
            return img, list(feats.values())
        return img


# ---------------------------------------------------------------------------------------------
# Generator.

class Generator(nn.Module):
    """QC-StyleGAN generator: ``G(z, c, q)``; ``q_dim=0`` is plain StyleGAN2-ADA."""

    def __init__(self,
                 z_dim: int,                           # input latent size
                 c_dim: int,                           # conditioning label size (0 = unconditional)
                 w_dim: int,                           # intermediate latent size
                 img_resolution: int,                  # output resolution
                 img_channels: int,                    # output channels
                 q_dim: int = 0,                       # quality code size (16 in the paper; 0 = plain)
                 mapping_kwargs: Optional[dict] = None,    # MappingNetwork options
                 synthesis_kwargs: Optional[dict] = None,  # SynthesisNetwork options
                 **extra_synthesis_kwargs):
        super().__init__()
        self.init_kwargs = dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution,
                                img_channels=img_channels, q_dim=q_dim,
                                mapping_kwargs=dict(mapping_kwargs or {}),
                                synthesis_kwargs=dict(synthesis_kwargs or {}, **extra_synthesis_kwargs))
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.q_dim = q_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        synthesis_kwargs = dict(synthesis_kwargs or {}, **extra_synthesis_kwargs)
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution,
                                          img_channels=img_channels, q_dim=q_dim, **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws,
                                      **(mapping_kwargs or {}))

    @property
    def degrad_resolutions(self) -> List[int]:
        """Resolutions of the blocks that carry a DegradBlock (empty for plain StyleGAN2)."""
        return list(self.synthesis.degrad_resolutions)

    def forward(self, z: torch.Tensor, c: Optional[torch.Tensor] = None, q: Optional[torch.Tensor] = None,
                truncation_psi: float = 1, truncation_cutoff: Optional[int] = None,
                update_emas: bool = False, **synthesis_kwargs):
        """z: [N, z_dim]; c: [N, c_dim] or None; q: [N, q_dim] or None (= zeros).
        Returns img [N, img_channels, R, R] (or what ``SynthesisNetwork.forward`` returns for
        ``return_feats`` / ``pair``)."""
        if c is None:
            if self.c_dim > 0:
                raise ValueError(f"this generator is conditional (c_dim={self.c_dim}); pass c")
            c = torch.zeros([z.shape[0], 0], device=z.device)
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, q=q, **synthesis_kwargs)
