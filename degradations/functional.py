"""Degradation primitives with explicit parameters: batched torch versions and per-image OpenCV
versions.

Torch functions take ``x: [N, C, H, W]`` float32 holding integer values in [0, 255] (CPU or CUDA)
and per-image parameter lists, and return a tensor of the same shape rounded and clipped to
[0, 255], as a uint8 pipeline would hold it. OpenCV functions take and return one uint8
``[H, W, C]`` image. The two agree to within rounding (checked by the tests); OpenCV is the fast
path on CPU for the filters it implements natively, torch is the reference and the GPU path.

Border handling follows OpenCV's defaults as albumentations 1.0 called them: reflect-101 for the
linear filters (GaussianBlur, Blur, MotionBlur/filter2D), replicate for the median.
"""
from __future__ import annotations

import math
import warnings
from typing import Dict, Optional, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from dnnlib.image_io import LUMA_BT601, PIXEL_RANGE, from_uint8_hwc, to_uint8_hwc

from . import kernels

_MAX = 255.0


def quantize_(x: torch.Tensor) -> torch.Tensor:
    """Round and clip to [0, 255] in place (uint8 semantics between steps)."""
    return x.round_().clamp_(0.0, _MAX)


# ---------------------------------------------------------------------------------------------
# Padding.

def border_index(n: int, pad: int, mode: str) -> np.ndarray:
    """Source indices for positions ``-pad .. n + pad - 1`` (OpenCV borderInterpolate):
    ``'reflect101'`` (gfedcb|abcdefgh|gfedcba) or ``'replicate'`` (aaaaaa|abcdefgh|hhhhhhh)."""
    i = np.arange(-pad, n + pad)
    if mode == "replicate" or n == 1:
        return np.clip(i, 0, n - 1)
    if mode != "reflect101":
        raise ValueError(f"unknown border mode {mode}")
    period = 2 * (n - 1)
    i = np.mod(i, period)
    return np.where(i >= n, period - i, i)


def pad2d(x: torch.Tensor, pad: int, mode: str = "reflect101") -> torch.Tensor:
    # x: [N, C, H, W] -> [N, C, H + 2 pad, W + 2 pad]; any pad size (repeats reflections).
    if pad == 0:
        return x
    H, W = x.shape[-2:]
    if mode == "reflect101" and pad < H and pad < W:
        return F.pad(x, (pad, pad, pad, pad), mode="reflect")
    if mode == "replicate":
        return F.pad(x, (pad, pad, pad, pad), mode="replicate")
    ih = torch.as_tensor(border_index(H, pad, mode), device=x.device)
    iw = torch.as_tensor(border_index(W, pad, mode), device=x.device)
    return x.index_select(-2, ih).index_select(-1, iw)


# ---------------------------------------------------------------------------------------------
# Linear filters (torch).

def filter_separable(x: torch.Tensor, k1d: Sequence[np.ndarray]) -> torch.Tensor:
    """Correlate image i with the separable kernel ``outer(k1d[i], k1d[i])`` (odd sizes, all the
    same size within one call), reflect-101 border."""
    # x: [N, C, H, W] float32
    N, C, H, W = x.shape
    k = len(k1d[0])
    p = k // 2
    w = torch.as_tensor(np.stack([np.asarray(v, np.float64) for v in k1d]), dtype=x.dtype, device=x.device)
    w = w.repeat_interleave(C, dim=0)                      # [N*C, k]
    xp = pad2d(x, p).reshape(1, N * C, H + 2 * p, W + 2 * p)
    y = F.conv2d(xp, w.view(N * C, 1, 1, k), groups=N * C)
    y = F.conv2d(y, w.view(N * C, 1, k, 1), groups=N * C)
    return quantize_(y.reshape(N, C, H, W))


def filter_dense(x: torch.Tensor, k2d: Sequence[np.ndarray]) -> torch.Tensor:
    """Correlate image i with the ``k x k`` kernel ``k2d[i]`` (one size per call), reflect-101."""
    # x: [N, C, H, W] float32
    N, C, H, W = x.shape
    k = k2d[0].shape[0]
    p = k // 2
    w = torch.as_tensor(np.stack(k2d), dtype=x.dtype, device=x.device)        # [N, k, k]
    w = w.repeat_interleave(C, dim=0).unsqueeze(1)                             # [N*C, 1, k, k]
    xp = pad2d(x, p).reshape(1, N * C, H + 2 * p, W + 2 * p)
    y = F.conv2d(xp, w, groups=N * C)
    return quantize_(y.reshape(N, C, H, W))


def filter_taps(x: torch.Tensor, ksize: Sequence[int], taps: Sequence[Sequence[tuple]]) -> torch.Tensor:
    """Mean of the shifted copies given by each image's kernel taps ``(row, col)``: a motion blur
    kernel is a line of equal weights, so this costs one add per tap instead of k*k."""
    # x: [N, C, H, W] float32
    N, C, H, W = x.shape
    out = torch.zeros_like(x)
    for i in range(N):
        p = int(ksize[i]) // 2
        xp = pad2d(x[i:i + 1], p)[0]
        acc = out[i]
        for r, c in taps[i]:
            acc.add_(xp[:, r:r + H, c:c + W])
        acc.div_(len(taps[i]))
    return quantize_(out)


def box_blur(x: torch.Tensor, ksize: int) -> torch.Tensor:
    """Mean over ``ksize x ksize`` windows (cv2.blur), reflect-101, via running sums (exact for
    integer inputs)."""
    # x: [N, C, H, W] float32
    H, W = x.shape[-2:]
    p = ksize // 2
    xp = pad2d(x, p).double()
    c = F.pad(xp.cumsum(-1), (1, 0))
    s = c[..., ksize:] - c[..., :-ksize]
    c = F.pad(s.cumsum(-2), (0, 0, 1, 0))
    s = c[..., ksize:, :] - c[..., :-ksize, :]
    return quantize_((s / (ksize * ksize)).to(x.dtype))


# ---------------------------------------------------------------------------------------------
# Median (torch): exact for integer values in [0, 255].

def median_blur(x: torch.Tensor, ksize: int, level_chunk: int = 16) -> torch.Tensor:
    """Median over ``ksize x ksize`` windows with replicated borders (cv2.medianBlur).

    Small kernels sort the unfolded windows; large ones count, for each grey level v, the window
    pixels <= v (running sums) and take the first level whose count reaches half the window.
    """
    # x: [N, C, H, W] float32, integer values in [0, 255]
    N, C, H, W = x.shape
    p = ksize // 2
    xp = pad2d(x, p, mode="replicate")
    if ksize <= 7:
        win = F.unfold(xp.reshape(N * C, 1, H + 2 * p, W + 2 * p), ksize)      # [N*C, k*k, H*W]
        return win.median(dim=1).values.reshape(N, C, H, W)
    half = (ksize * ksize + 1) // 2
    out = torch.zeros_like(x)
    xq = xp.round().to(torch.int16)
    for v0 in range(0, 255, level_chunk):
        levels = torch.arange(v0, min(v0 + level_chunk, 255), device=x.device, dtype=torch.int16)
        ind = (xq.unsqueeze(2) <= levels.view(1, 1, -1, 1, 1)).to(torch.int32)  # [N, C, L, Hp, Wp]
        c = F.pad(ind.cumsum(-1), (1, 0))
        s = c[..., ksize:] - c[..., :-ksize]
        c = F.pad(s.cumsum(-2), (0, 0, 1, 0))
        s = c[..., ksize:, :] - c[..., :-ksize, :]                              # [N, C, L, H, W]
        out += (s < half).sum(dim=2).to(x.dtype)
    return out


# ---------------------------------------------------------------------------------------------
# Noise: drawn on the CPU from a per-image seed, so CPU and CUDA runs agree and replay exactly.

def gaussian_noise_field(seed: int, shape, gray: bool) -> torch.Tensor:
    """Standard normal noise ``[C, H, W]`` (the same value in every channel when ``gray``)."""
    C, H, W = shape
    g = torch.Generator().manual_seed(int(seed))
    n = torch.randn((1 if gray else C, H, W), generator=g)
    return n.expand(C, H, W) if gray else n


def add_gaussian_noise(x: torch.Tensor, var: Sequence[float], gray: Sequence[bool], seeds: Sequence[int]) -> torch.Tensor:
    """``y = x + sqrt(var_i) * n_i`` with ``n_i`` standard normal per pixel (and per channel
    unless grey), clipped (albumentations GaussNoise: variance on the 0-255 scale)."""
    # x: [N, C, H, W] float32
    N, C, H, W = x.shape
    noise = torch.empty((N, C, H, W))
    for i in range(N):
        noise[i] = gaussian_noise_field(seeds[i], (C, H, W), bool(gray[i]))
    sigma = torch.tensor([math.sqrt(float(v)) for v in var], dtype=torch.float32).view(N, 1, 1, 1)
    noise.mul_(sigma)
    return quantize_(x + noise.to(x.device))


def poisson_noise_field(x: torch.Tensor, photons: float, seed: int, gray: bool) -> torch.Tensor:
    """Shot noise for one image ``x: [C, H, W]`` (CPU): counts ~ Poisson(x / 255 * photons),
    returned on the 0-255 scale. Grey: one luminance count field added to every channel."""
    g = torch.Generator().manual_seed(int(seed))
    scale = float(photons) / _MAX
    if gray:
        wr, wg, wb = LUMA_BT601                      # BT.601 luma
        lum = (wr * x[0] + wg * x[1] + wb * x[2]).unsqueeze(0) if x.shape[0] == 3 else x[:1]
        n = torch.poisson(lum.double() * scale, generator=g) / scale - lum.double()
        return (x.double() + n).float()
    return (torch.poisson(x.double() * scale, generator=g) / scale).float()


def add_poisson_noise(x: torch.Tensor, photons: Sequence[float], gray: Sequence[bool], seeds: Sequence[int]) -> torch.Tensor:
    # x: [N, C, H, W] float32; variance of the output at value v is v * 255 / photons.
    xc = x.detach().cpu()
    out = torch.stack([poisson_noise_field(xc[i], photons[i], seeds[i], bool(gray[i])) for i in range(x.shape[0])])
    return quantize_(out.to(x.device))


# ---------------------------------------------------------------------------------------------
# Resolution.

INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "area")


def scaled_size(n: int, scale: float) -> int:
    """Size cv2.resize gives for a factor (``fx``): rounded to nearest, at least 1."""
    return max(1, int(round(n * float(scale))))


def nearest_down_up_index(n: int, scale: float) -> np.ndarray:
    """Source index of each output pixel for nearest down by ``scale`` then up to ``n``, with
    OpenCV's INTER_NEAREST rule ``src = floor(dst * src_size / dst_size)`` in each step."""
    m = scaled_size(n, scale)
    up = np.minimum(np.floor(np.arange(n) * (1.0 / (n / m))).astype(np.int64), m - 1)  # as OpenCV computes it
    down = np.minimum(np.floor(np.arange(m) * (1.0 / float(scale))).astype(np.int64), n - 1)
    return down[up]


def downscale(x: torch.Tensor, scales: Sequence[float], interpolation: Sequence[str]) -> torch.Tensor:
    """Downscale image i by ``scales[i]`` then upscale back to the input size (a low-resolution
    capture). Nearest uses one gather per image row/column map; other modes ``F.interpolate``."""
    # x: [N, C, H, W] float32
    N, C, H, W = x.shape
    out = torch.empty_like(x)
    near = [i for i in range(N) if interpolation[i] == "nearest"]
    if near:
        rows = torch.as_tensor(np.stack([nearest_down_up_index(H, scales[i]) for i in near]), device=x.device)
        cols = torch.as_tensor(np.stack([nearest_down_up_index(W, scales[i]) for i in near]), device=x.device)
        idx = torch.as_tensor(near, device=x.device)
        xs = x.index_select(0, idx)
        xs = xs.gather(2, rows.view(-1, 1, H, 1).expand(-1, C, H, W))
        xs = xs.gather(3, cols.view(-1, 1, 1, W).expand(-1, C, H, W))
        out.index_copy_(0, idx, xs)
    for i in range(N):
        mode = interpolation[i]
        if mode == "nearest":
            continue
        size = (scaled_size(H, scales[i]), scaled_size(W, scales[i]))
        kw = {} if mode == "area" else {"align_corners": False}
        if mode == "area":
            small = F.adaptive_avg_pool2d(x[i:i + 1], size)
            up_mode, up_kw = "bilinear", {"align_corners": False}   # cv2 INTER_AREA upsamples bilinearly
        else:
            small = F.interpolate(x[i:i + 1], size=size, mode=mode, **kw)
            up_mode, up_kw = mode, kw
        small = quantize_(small)
        out[i:i + 1] = F.interpolate(small, size=(H, W), mode=up_mode, **up_kw)
    return quantize_(out)


# ---------------------------------------------------------------------------------------------
# JPEG: real libjpeg (OpenCV) on CPU, nvJPEG through torchvision on CUDA when it works.

def jpeg_cv2(img: np.ndarray, quality: int) -> np.ndarray:
    """Encode ``img`` (uint8 [H, W, 3] RGB) as a baseline JPEG at ``quality`` (4:2:0 chroma) and
    decode it back."""
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img[:, :, ::-1]), [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise RuntimeError("cv2.imencode failed")
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1])


_warned: Dict[str, bool] = {}


def _warn_once(key: str, msg: str) -> None:
    if not _warned.get(key):
        _warned[key] = True
        warnings.warn(msg, RuntimeWarning, stacklevel=3)


def jpeg(x: torch.Tensor, quality: Sequence[int], impl: str = "auto") -> torch.Tensor:
    """JPEG round trip of each image at its quality. ``impl``: 'cv2' (libjpeg on CPU),
    'torchvision' (nvJPEG on CUDA), 'auto' (torchvision for CUDA tensors, falling back to cv2
    with one warning when unavailable)."""
    # x: [N, C, H, W] float32, C = 3
    if impl == "auto":
        impl = "torchvision" if x.is_cuda else "cv2"
    if impl == "torchvision":
        try:
            import torchvision.io as tvio   # here: +6 s of import (all of torchvision), paid only by the CUDA path
            xs = [v for v in quantize_(x.clone()).to(torch.uint8)]
            out = []
            for v, q in zip(xs, quality):
                enc = tvio.encode_jpeg(v, quality=int(q))
                out.append(tvio.decode_jpeg(enc, device=x.device))
            return torch.stack(out).to(x.dtype)
        except Exception as exc:  # old torchvision, no nvJPEG, CPU tensor...
            _warn_once("jpeg", f"torchvision JPEG unavailable ({exc}); using OpenCV on the CPU")
    u8 = to_uint8_hwc(x, PIXEL_RANGE)
    out = np.stack([jpeg_cv2(u8[i], int(quality[i])) for i in range(u8.shape[0])])
    return from_uint8_hwc(out, PIXEL_RANGE, x.dtype, x.device)


# ---------------------------------------------------------------------------------------------
# Per-image OpenCV versions (uint8 [H, W, C] in and out).

def cv2_gaussian(img: np.ndarray, ksize: int, sigma: Optional[float]) -> np.ndarray:
    k = kernels.gaussian_kernel1d(ksize, sigma)
    return cv2.sepFilter2D(img, -1, k, k, borderType=cv2.BORDER_REFLECT_101)


def cv2_filter2d(img: np.ndarray, k2d: np.ndarray) -> np.ndarray:
    return cv2.filter2D(img, -1, k2d.astype(np.float32), borderType=cv2.BORDER_REFLECT_101)


def cv2_motion(img: np.ndarray, ksize: int, taps: Sequence[tuple]) -> np.ndarray:
    """Motion blur as the mean of shifted copies (one add per line pixel, integer sums)."""
    p = ksize // 2
    H, W = img.shape[:2]
    xp = cv2.copyMakeBorder(img, p, p, p, p, cv2.BORDER_REFLECT_101)
    acc = np.zeros(img.shape, np.uint16)
    for r, c in taps:
        acc += xp[r:r + H, c:c + W]
    return np.clip(np.rint(acc / len(taps)), 0, 255).astype(np.uint8)


def cv2_median(img: np.ndarray, ksize: int) -> np.ndarray:
    return cv2.medianBlur(np.ascontiguousarray(img), int(ksize))


def cv2_box(img: np.ndarray, ksize: int) -> np.ndarray:
    return cv2.blur(img, (int(ksize), int(ksize)), borderType=cv2.BORDER_REFLECT_101)


_CV2_INTERP = {"nearest": 0, "bilinear": 1, "bicubic": 2, "area": 3}


def cv2_downscale(img: np.ndarray, scale: float, interpolation: str) -> np.ndarray:
    H, W = img.shape[:2]
    if interpolation == "nearest":
        return np.ascontiguousarray(img[nearest_down_up_index(H, scale)][:, nearest_down_up_index(W, scale)])
    flag = _CV2_INTERP[interpolation]
    small = cv2.resize(img, (scaled_size(W, scale), scaled_size(H, scale)), interpolation=flag)
    up_flag = cv2.INTER_LINEAR if interpolation == "area" else flag
    return cv2.resize(small, (W, H), interpolation=up_flag)


def cv2_gaussian_noise(img: np.ndarray, var: float, gray: bool, seed: int) -> np.ndarray:
    H, W, C = img.shape
    n = gaussian_noise_field(seed, (C, H, W), gray).permute(1, 2, 0).numpy()
    y = img.astype(np.float32) + n * np.float32(math.sqrt(float(var)))
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def cv2_poisson_noise(img: np.ndarray, photons: float, gray: bool, seed: int) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float()
    y = poisson_noise_field(x, photons, seed, gray).permute(1, 2, 0).numpy()
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)
