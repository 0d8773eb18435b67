"""Reconstruction losses for inversion: L2 + a perceptual term, with no download at run time.

The perceptual term is LPIPS (Zhang et al., CVPR 2018) through the ``lpips`` package whenever its
torchvision backbone weights are in the torch hub cache (``metrics.lpips_metric``). Without them
it falls back to a loss that needs no pretrained network (``FallbackPerceptual``): L1 on the bands
of a Laplacian pyramid (Burt & Adelson 1983; Bojanowski et al. 2018, "Lap1") plus 1 - MS-SSIM
(Wang et al. 2003). The fallback is announced once per process, and the name of the loss that ran
(``PerceptualLoss.name``) goes into every results file.

All losses take images in the generator's range: ``[N, C, H, W]`` float, about [-1, 1], and
return one value per image ``[N]`` so batched inversion stays per image.
"""
from __future__ import annotations

import os
import warnings
from typing import List

import torch
import torch.nn.functional as F

from dnnlib.util import UserError
from metrics.lpips_metric import BACKBONE_FILES, LPIPS, hub_checkpoint_dir
from torch_utils.misc import assert_shape

PERCEPTUAL_KINDS = ("auto", "lpips", "lpips-random", "fallback")

# Fallback: Laplacian-pyramid L1 + (1 - MS-SSIM), each term ~[0, 1] on natural images.
LAP_LEVELS = 5
LAP_WEIGHT = 1.0
MSSSIM_WEIGHT = 1.0
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_C1 = (0.01 * 2) ** 2        # K1 * L with L = 2 (images in [-1, 1])
SSIM_C2 = (0.03 * 2) ** 2
MSSSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)   # Wang et al. 2003, five scales
MSSSIM_EPS = 1e-4                # floor of each scale's term (x**w needs x > 0)

_ANNOUNCED = set()


def _announce(message: str) -> None:
    if message not in _ANNOUNCED:
        _ANNOUNCED.add(message)
        warnings.warn(message, stacklevel=3)


# ---------------------------------------------------------------------------------------------
# Fallback perceptual loss.

def _gaussian_kernel(size: int, sigma: float, device, dtype) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return g / g.sum()                                                   # [size]


def _blur(x: torch.Tensor, kernel: torch.Tensor, padding: str = "reflect") -> torch.Tensor:
    # x: [N, C, H, W]; separable depthwise blur with a 1-D kernel
    c, k = x.shape[1], kernel.numel()
    if padding == "reflect":
        x = F.pad(x, [k // 2] * 4, mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(x, kernel.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def laplacian_pyramid(x: torch.Tensor, levels: int = LAP_LEVELS) -> List[torch.Tensor]:
    """Band-pass images of a Laplacian pyramid, finest first, plus the low-pass residual.
    x: [N, C, H, W] -> list of [N, C, H/2^j, W/2^j]; stops early when the image gets below 4 px."""
    kernel = _gaussian_kernel(5, 1.0, x.device, x.dtype)
    bands = []
    for _ in range(levels - 1):
        if min(x.shape[-2:]) < 8:
            break
        low = _blur(x, kernel)
        down = low[:, :, ::2, ::2]
        up = F.interpolate(down, size=x.shape[-2:], mode="bilinear", align_corners=False)
        bands.append(x - up)
        x = down
    bands.append(x)
    return bands


def laplacian_l1(x: torch.Tensor, y: torch.Tensor, levels: int = LAP_LEVELS) -> torch.Tensor:
    """Lap1: sum over pyramid levels j of 2^(-2j) * L1(band_j) * (pixels at level 0 / level j),
    i.e. each band's mean absolute difference weighted by 2^j (coarse bands carry more energy per
    pixel once normalised). x, y: [N, C, H, W] -> [N]."""
    loss = 0
    for j, (bx, by) in enumerate(zip(laplacian_pyramid(x, levels), laplacian_pyramid(y, levels))):
        loss = loss + (bx - by).abs().mean(dim=[1, 2, 3]) * (2.0 ** j) / (2.0 ** levels)
    return loss


def ms_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """MS-SSIM (Wang et al. 2003, Eq. 7) on images in [-1, 1], Gaussian window 11 / sigma 1.5,
    'valid' positions (a smaller window below 11 px); as many of the five scales as the image
    allows (the window must fit), with the published scale weights renormalised. Contrast-structure
    terms are clamped below at a small positive value (negative ones make the power undefined).
    x, y: [N, C, H, W] -> [N]."""
    size = min(SSIM_WINDOW, (min(x.shape[-2:]) - 1) // 2 * 2 + 1)     # smaller window for tiny images
    kernel = _gaussian_kernel(size, SSIM_SIGMA, x.device, x.dtype)
    scales = 1
    while scales < len(MSSSIM_WEIGHTS) and min(x.shape[-2:]) // (2 ** scales) >= size:
        scales += 1
    weights = torch.tensor(MSSSIM_WEIGHTS[:scales], device=x.device, dtype=x.dtype)
    weights = weights / weights.sum()
    terms = []
    for j in range(scales):
        mu_x, mu_y = _blur(x, kernel, "valid"), _blur(y, kernel, "valid")
        sxx = _blur(x * x, kernel, "valid") - mu_x ** 2
        syy = _blur(y * y, kernel, "valid") - mu_y ** 2
        sxy = _blur(x * y, kernel, "valid") - mu_x * mu_y
        cs = (2 * sxy + SSIM_C2) / (sxx + syy + SSIM_C2)
        if j == scales - 1:
            lum = (2 * mu_x * mu_y + SSIM_C1) / (mu_x ** 2 + mu_y ** 2 + SSIM_C1)
            cs = lum * cs
        terms.append(cs.mean(dim=[1, 2, 3]).clamp(min=MSSSIM_EPS))
        if j < scales - 1:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return torch.prod(torch.stack(terms, dim=1) ** weights, dim=1)


class FallbackPerceptual(torch.nn.Module):
    """No-download perceptual loss: ``LAP_WEIGHT * Lap1 + MSSSIM_WEIGHT * (1 - MS-SSIM)``."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return LAP_WEIGHT * laplacian_l1(x, y) + MSSSIM_WEIGHT * (1 - ms_ssim(x, y))


# ---------------------------------------------------------------------------------------------
# LPIPS (package) or fallback.

class _LPIPSModule(torch.nn.Module):
    def __init__(self, backbone: str, device):
        super().__init__()
        self.model = LPIPS(net="alex", backbone=backbone, device=device).model

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < 32:           # AlexNet's strides need at least 32x32 input
            x = F.interpolate(x, size=[32, 32], mode="bilinear", align_corners=False)
            y = F.interpolate(y, size=[32, 32], mode="bilinear", align_corners=False)
        return self.model(x, y).reshape(-1)


def lpips_available() -> bool:
    """True when the AlexNet backbone weights LPIPS needs are in the torch hub cache."""
    return os.path.isfile(os.path.join(hub_checkpoint_dir(), BACKBONE_FILES["alex"]))


class PerceptualLoss(torch.nn.Module):
    """The perceptual term of the inversion losses; ``name`` says which one runs.

    ``kind``: 'auto' (LPIPS when its backbone weights are cached, else the fallback, announced
    once), 'lpips' (required: a missing backbone is an error naming the file), 'lpips-random'
    (LPIPS with seeded random backbone weights: tests only, not a perceptual metric) or 'fallback'.
    """

    def __init__(self, kind: str = "auto", device="cpu"):
        super().__init__()
        if kind not in PERCEPTUAL_KINDS:
            raise UserError(f"unknown perceptual loss '{kind}' (expected one of {', '.join(PERCEPTUAL_KINDS)})")
        if kind == "auto":
            if lpips_available():
                kind = "lpips"
            else:
                _announce(f"LPIPS backbone {BACKBONE_FILES['alex']} is not in {hub_checkpoint_dir()}/; "
                          f"inversion uses the no-download fallback (Laplacian-pyramid L1 + MS-SSIM)")
                kind = "fallback"
        self.name = {"lpips": "lpips-alex", "lpips-random": "lpips-alex-random-backbone",
                     "fallback": "lap1+msssim"}[kind]
        self.kind = kind
        if kind == "fallback":
            self.impl = FallbackPerceptual()
        else:
            self.impl = _LPIPSModule("imagenet" if kind == "lpips" else "random", device)
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # x, y: [N, C, H, W] in about [-1, 1] -> [N]
        assert_shape(y, list(x.shape))
        if x.shape[1] == 1:
            x, y = x.repeat(1, 3, 1, 1), y.repeat(1, 3, 1, 1)
        return self.impl(x.float(), y.float())


class ReconstructionLoss(torch.nn.Module):
    """``l2_weight * MSE + perceptual_weight * perceptual`` per image (pSp/PTI: 1 and 0.8)."""

    def __init__(self, perceptual: PerceptualLoss, l2_weight: float = 1.0, perceptual_weight: float = 0.8):
        super().__init__()
        self.perceptual = perceptual
        self.l2_weight = float(l2_weight)
        self.perceptual_weight = float(perceptual_weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor, return_terms: bool = False):
        # x, y: [N, C, H, W] in about [-1, 1] -> [N] (and the terms {'l2': [N], 'perceptual': [N]})
        l2 = (x - y).square().mean(dim=[1, 2, 3])
        p = self.perceptual(x, y) if self.perceptual_weight else torch.zeros_like(l2)
        total = self.l2_weight * l2 + self.perceptual_weight * p
        return (total, {"l2": l2, "perceptual": p}) if return_terms else total
