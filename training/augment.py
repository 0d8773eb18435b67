"""Adaptive discriminator augmentation (ADA).

Karras et al., "Training Generative Adversarial Networks with Limited Data" (NeurIPS 2020):
Sec. 2 (non-leaking augmentations applied to every image D sees, each transformation with
probability p), Sec. 3 (adaptive p from the overfitting heuristic r_t = E[sign(D_real)]), and
Appendix B (the 18 transformations in six groups and their parameter distributions).

Written from the paper's description. Differences from the authors' code, stated once here:
geometric resampling uses bilinear ``grid_sample`` at 2x (box) supersampling with reflection padding
(the paper uses a symmetric-wavelet upsampling filter), and the image-space filter works in the
Fourier domain with radial bands (the paper uses a separable wavelet filter bank). Every
operation is differentiable with respect to the images, since G's loss backpropagates through it.
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F

from torch_utils import misc

from .options import AugmentOptions

# ---------------------------------------------------------------------------------------------
# Groups (Appendix B) and named pipelines. Values are per-transformation probability multipliers.

GROUPS: Dict[str, Dict[str, float]] = {
    "b": dict(xflip=1, rotate90=1, xint=1),                       # pixel blitting
    "g": dict(scale=1, rotate=1, aniso=1, xfrac=1),               # general geometric
    "c": dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1),  # color
    "f": dict(imgfilter=1),                                       # image-space filtering
    "n": dict(noise=1),                                           # additive noise
    "o": dict(cutout=1),                                          # cutout
}
PIPELINES = {
    "blit": "b", "geom": "g", "color": "c", "filter": "f", "noise": "n", "cutout": "o",
    "bg": "bg", "bgc": "bgc", "bgcf": "bgcf", "bgcfn": "bgcfn", "bgcfnc": "bgcfno",
}

# Parameter distributions of Appendix B (in units of the image side / [-1, 1] pixel values).
XINT_MAX = 0.125          # integer translation: uniform in [-0.125, 0.125] of the side
SCALE_STD = 0.2           # isotropic scaling: lognormal(0, (0.2 ln 2)^2)
ROTATE_MAX = 1.0          # rotation: uniform in [-pi, pi] (times ROTATE_MAX)
ANISO_STD = 0.2           # anisotropic scaling: lognormal(0, (0.2 ln 2)^2)
XFRAC_STD = 0.125         # fractional translation: normal(0, 0.125^2) of the side
BRIGHTNESS_STD = 0.2      # brightness: normal(0, 0.2^2), additive
CONTRAST_STD = 0.5        # contrast: lognormal(0, (0.5 ln 2)^2)
HUE_MAX = 1.0             # hue rotation: uniform in [-pi, pi] about the luma axis
SATURATION_STD = 1.0      # saturation: lognormal(0, (1 ln 2)^2)
FILTER_BANDS = (0.0, 0.125, 0.25, 0.5, 1.0)   # band edges as fractions of Nyquist
FILTER_EXPECTED_POWER = (10.0, 1.0, 1.0, 1.0)  # natural-image power per band (before normalising)
FILTER_STD = 1.0          # band amplification: lognormal(0, (1 ln 2)^2)
NOISE_STD = 0.1           # additive noise: sigma ~ |normal(0, 0.1^2)|
CUTOUT_SIZE = 0.5         # cutout: square of half the side, centre uniform


def pipeline_spec(name: str) -> Dict[str, float]:
    """'bgc' -> {'xflip': 1, ..., 'saturation': 1}. Accepts a preset name or group letters."""
    letters = PIPELINES.get(name, name)
    spec: Dict[str, float] = {}
    for letter in letters:
        if letter not in GROUPS:
            raise ValueError(f"unknown augmentation pipeline '{name}' (presets: {', '.join(PIPELINES)})")
        spec.update(GROUPS[letter])
    return spec


# ---------------------------------------------------------------------------------------------
# 3x3 (2D homogeneous) and 4x4 (3D homogeneous, colour) matrices, batched.

def _eye(n: int, batch: int, device) -> torch.Tensor:
    return torch.eye(n, device=device).unsqueeze(0).repeat(batch, 1, 1)


def _translate2d(tx, ty):
    m = _eye(3, tx.shape[0], tx.device)
    m[:, 0, 2], m[:, 1, 2] = tx, ty
    return m


def _scale2d(sx, sy):
    m = _eye(3, sx.shape[0], sx.device)
    m[:, 0, 0], m[:, 1, 1] = sx, sy
    return m


def _rotate2d(theta):
    m = _eye(3, theta.shape[0], theta.device)
    c, s = torch.cos(theta), torch.sin(theta)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s, s, c
    return m


def _translate3d(t):
    m = _eye(4, t.shape[0], t.device)
    m[:, :3, 3] = t  # t: [N, 3]
    return m


def _scale3d(s):
    m = _eye(4, s.shape[0], s.device)
    m[:, 0, 0] = m[:, 1, 1] = m[:, 2, 2] = s
    return m


def _rotate3d(axis, theta):
    """Rotation by ``theta`` [N] about the unit vector ``axis`` [3] (Rodrigues)."""
    x, y, z = (float(a) for a in axis)
    c, s = torch.cos(theta), torch.sin(theta)
    cc = 1 - c
    m = _eye(4, theta.shape[0], theta.device)
    m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] = x * x * cc + c, x * y * cc - z * s, x * z * cc + y * s
    m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = y * x * cc + z * s, y * y * cc + c, y * z * cc - x * s
    m[:, 2, 0], m[:, 2, 1], m[:, 2, 2] = z * x * cc - y * s, z * y * cc + x * s, z * z * cc + c
    return m


# ---------------------------------------------------------------------------------------------

class AugmentPipe(torch.nn.Module):
    """The ADA pipeline. ``p`` is a buffer (saved with the module); each transformation of the
    spec is applied to each image independently with probability ``p * multiplier``.

    ``forward(images)``: images [N, C, H, W] float in about [-1, 1] -> same shape and dtype.
    """

    def __init__(self,
                 spec: str = AugmentOptions.augpipe,   # preset name ('bgc', ...) or group letters
                 p: float = 0.0,            # initial probability
                 ):
        super().__init__()
        self.spec_name = spec
        self.spec = pipeline_spec(spec)
        self.register_buffer("p", torch.tensor(float(p)))

    def extra_repr(self) -> str:
        return f"spec={self.spec_name!r}, p={float(self.p):.4f}"

    def _prob(self, name: str) -> float:
        return float(self.p) * float(self.spec.get(name, 0))

    @staticmethod
    def _gate(value: torch.Tensor, prob: float, neutral: float, gen: Optional[torch.Generator]) -> torch.Tensor:
        """Keep ``value`` [N] with probability ``prob``, else replace it by ``neutral``."""
        keep = torch.rand(value.shape, device=value.device, generator=gen) < prob
        return torch.where(keep, value, torch.full_like(value, neutral))

    def forward(self, images: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        # images: [N, C, H, W] float, C in {1, 3}, about [-1, 1]
        misc.assert_shape(images, [None, None, None, None])
        n, c, h, w = images.shape
        if c not in (1, 3):
            raise ValueError(f"AugmentPipe expects 1 or 3 channels, got {c}")
        if float(self.p) <= 0:
            return images
        dtype = images.dtype
        x = images.float()
        x = self._blit(x, generator)
        x = self._geom(x, generator)
        x = self._color(x, generator)
        for name, stage in (("imgfilter", self._filter), ("noise", self._noise), ("cutout", self._cutout)):
            prob = self._prob(name)
            if prob > 0:   # a stage at probability 0 draws no random numbers
                x = stage(x, prob, generator)
        return x.to(dtype)

    # --- helpers: random draws on the image's device -----------------------------------------
    def _rand(self, n, dev, gen):
        return torch.rand([n], device=dev, generator=gen)

    def _randn(self, n, dev, gen):
        return torch.randn([n], device=dev, generator=gen)

    # --- pixel blitting (exact resampling with nearest neighbour) ----------------------------
    def _blit(self, x: torch.Tensor, gen) -> torch.Tensor:
        n, _, h, w = x.shape
        dev = x.device
        m = _eye(3, n, dev)
        active = False
        if self._prob("xflip") > 0:   # x-flip: scale x by 1 - 2i, i in {0, 1}
            i = self._gate(torch.floor(self._rand(n, dev, gen) * 2), self._prob("xflip"), 0, gen)
            m = m @ _scale2d(1 - 2 * i, torch.ones_like(i))
            active = True
        if self._prob("rotate90") > 0:  # rotation by i * 90 degrees, i in {0, 1, 2, 3}
            i = self._gate(torch.floor(self._rand(n, dev, gen) * 4), self._prob("rotate90"), 0, gen)
            m = m @ _rotate2d(i * (math.pi / 2))
            active = True
        if self._prob("xint") > 0:  # integer translation, uniform in [-XINT_MAX, XINT_MAX] of the side
            t = (torch.rand([n, 2], device=dev, generator=gen) * 2 - 1) * XINT_MAX
            keep = (self._rand(n, dev, gen) < self._prob("xint")).float().unsqueeze(1)
            t = t * keep
            tx = torch.round(t[:, 0] * w) * (2.0 / w)   # whole pixels, in [-1, 1] grid units
            ty = torch.round(t[:, 1] * h) * (2.0 / h)
            m = m @ _translate2d(tx, ty)
            active = True
        if not active:
            return x
        grid = F.affine_grid(m[:, :2, :], list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="nearest", padding_mode="reflection", align_corners=False)

    # --- general geometric transformations ---------------------------------------------------
    def _geom(self, x: torch.Tensor, gen) -> torch.Tensor:
        n, _, h, w = x.shape
        dev = x.device
        m = _eye(3, n, dev)
        active = False
        if self._prob("scale") > 0:  # isotropic scaling
            s = torch.exp2(self._randn(n, dev, gen) * SCALE_STD)
            s = self._gate(s, self._prob("scale"), 1, gen)
            m = m @ _scale2d(s, s)
            active = True
        p_rot = 1 - math.sqrt(max(0.0, 1 - self._prob("rotate")))  # two rotations: P(any) = p
        if self._prob("rotate") > 0:  # pre-rotation
            theta = (self._rand(n, dev, gen) * 2 - 1) * math.pi * ROTATE_MAX
            m = m @ _rotate2d(-self._gate(theta, p_rot, 0, gen))
            active = True
        if self._prob("aniso") > 0:  # anisotropic scaling
            s = torch.exp2(self._randn(n, dev, gen) * ANISO_STD)
            s = self._gate(s, self._prob("aniso"), 1, gen)
            m = m @ _scale2d(s, 1 / s)
            active = True
        if self._prob("rotate") > 0:  # post-rotation
            theta = (self._rand(n, dev, gen) * 2 - 1) * math.pi * ROTATE_MAX
            m = m @ _rotate2d(-self._gate(theta, p_rot, 0, gen))
        if self._prob("xfrac") > 0:  # fractional translation
            t = torch.randn([n, 2], device=dev, generator=gen) * XFRAC_STD
            keep = (self._rand(n, dev, gen) < self._prob("xfrac")).float().unsqueeze(1)
            t = t * keep * 2  # fractions of the side -> [-1, 1] grid units
            m = m @ _translate2d(t[:, 0], t[:, 1])
            active = True
        if not active:
            return x
        # Supersample 2x (box), resample bilinearly with reflection, box-filter back down; exact
        # for the identity transform.
        up = F.interpolate(x, scale_factor=2, mode="nearest")
        grid = F.affine_grid(m[:, :2, :], list(up.shape), align_corners=False)
        out = F.grid_sample(up, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        return F.avg_pool2d(out, 2)

    # --- colour transformations (4x4 matrix on homogeneous RGB) ------------------------------
    def _color(self, x: torch.Tensor, gen) -> torch.Tensor:
        n, c, h, w = x.shape
        dev = x.device
        luma = torch.tensor([1.0, 1.0, 1.0], device=dev) / math.sqrt(3)
        v = torch.cat([luma, torch.zeros(1, device=dev)])
        vv = torch.outer(v, v).unsqueeze(0)                        # projector onto the luma axis
        m = _eye(4, n, dev)
        active = False
        if self._prob("brightness") > 0:  # additive brightness
            b = self._gate(self._randn(n, dev, gen) * BRIGHTNESS_STD, self._prob("brightness"), 0, gen)
            m = _translate3d(b.unsqueeze(1).expand(n, 3)) @ m
            active = True
        if self._prob("contrast") > 0:  # contrast: scale about 0
            s = self._gate(torch.exp2(self._randn(n, dev, gen) * CONTRAST_STD), self._prob("contrast"), 1, gen)
            m = _scale3d(s) @ m
            active = True
        if self._prob("lumaflip") > 0:  # luma flip: Householder reflection of the luma axis
            i = self._gate(torch.floor(self._rand(n, dev, gen) * 2), self._prob("lumaflip"), 0, gen)
            m = (_eye(4, n, dev) - 2 * vv * i.view(n, 1, 1)) @ m
            active = True
        if self._prob("hue") > 0 and c == 3:  # hue rotation about the luma axis
            theta = self._gate((self._rand(n, dev, gen) * 2 - 1) * math.pi * HUE_MAX, self._prob("hue"), 0, gen)
            m = _rotate3d(luma.tolist(), theta) @ m
            active = True
        if self._prob("saturation") > 0 and c == 3:  # saturation: scale off-luma components
            s = self._gate(torch.exp2(self._randn(n, dev, gen) * SATURATION_STD), self._prob("saturation"), 1, gen)
            m = (vv + (_eye(4, n, dev) - vv) * s.view(n, 1, 1)) @ m
            active = True
        if not active:
            return x
        if c == 3:
            flat = x.reshape(n, 3, h * w)
            flat = m[:, :3, :3] @ flat + m[:, :3, 3:]
            return flat.reshape(n, 3, h, w)
        # Grayscale: the luma channel is transformed by the matrix's action on (y, y, y).
        gain = m[:, :3, :3].sum(dim=2).mean(dim=1).view(n, 1, 1, 1)
        offset = m[:, :3, 3].mean(dim=1).view(n, 1, 1, 1)
        return x * gain + offset

    # --- image-space filtering (band amplification, energy normalised) -----------------------
    def _filter(self, x: torch.Tensor, prob: float, gen) -> torch.Tensor:
        n, c, h, w = x.shape
        dev = x.device
        nb = len(FILTER_EXPECTED_POWER)
        expected = torch.tensor(FILTER_EXPECTED_POWER, device=dev)
        expected = expected / expected.sum()
        gains = torch.ones([n, nb], device=dev)
        for band in range(nb):  # each band amplified independently, then power renormalised
            t = torch.ones([n, nb], device=dev)
            t[:, band] = self._gate(torch.exp2(self._randn(n, dev, gen) * FILTER_STD), prob, 1, gen)
            t = t / (expected * t.square()).sum(dim=1, keepdim=True).sqrt()
            gains = gains * t
        fy = torch.fft.fftfreq(h, device=dev).abs().view(h, 1) * 2   # fraction of Nyquist
        fx = torch.fft.rfftfreq(w, device=dev).view(1, -1) * 2
        radius = torch.sqrt(fy.square() + fx.square()).clamp(max=1.0)
        band_index = torch.bucketize(radius, torch.tensor(FILTER_BANDS[1:-1], device=dev), right=True)
        response = gains[:, band_index]                              # [N, H, W//2+1]
        spectrum = torch.fft.rfft2(x) * response.unsqueeze(1)
        return torch.fft.irfft2(spectrum, s=(h, w))

    # --- additive RGB noise --------------------------------------------------------------------
    def _noise(self, x: torch.Tensor, prob: float, gen) -> torch.Tensor:
        n = x.shape[0]
        sigma = self._gate(self._randn(n, x.device, gen).abs() * NOISE_STD, prob, 0, gen)
        return x + torch.randn(x.shape, device=x.device, generator=gen) * sigma.view(n, 1, 1, 1)

    # --- cutout ----------------------------------------------------------------------------------
    def _cutout(self, x: torch.Tensor, prob: float, gen) -> torch.Tensor:
        n, _, h, w = x.shape
        dev = x.device
        size = self._gate(torch.full([n], CUTOUT_SIZE, device=dev), prob, 0, gen)
        center = torch.rand([n, 2], device=dev, generator=gen)
        cx = (torch.arange(w, device=dev, dtype=torch.float32) + 0.5) / w
        cy = (torch.arange(h, device=dev, dtype=torch.float32) + 0.5) / h
        outside_x = (cx.view(1, 1, w) - center[:, 0].view(n, 1, 1)).abs() >= size.view(n, 1, 1) / 2
        outside_y = (cy.view(1, h, 1) - center[:, 1].view(n, 1, 1)).abs() >= size.view(n, 1, 1) / 2
        mask = (outside_x | outside_y).to(x.dtype).unsqueeze(1)     # [N, 1, H, W]
        return x * mask


# ---------------------------------------------------------------------------------------------

class AdaController:
    """Adaptive p (ADA Sec. 3): every ``interval`` steps, ``r_t = E[sign(D(real))]`` over the
    images seen since the last adjustment, and ``p += sign(r_t - target) * images / (speed_kimg *
    1000)``, clamped at 0, so p can go 0 -> 1 in ``speed_kimg`` thousand images.

    ``accumulate(real_logits)`` collects signs on this rank; ``adjust(reduce_fn)`` sums the
    counts over ranks (``reduce_fn``: tensor -> summed tensor, identity on one process) and
    updates ``pipe.p``. Returns the r_t used, or None when nothing was collected.
    """

    def __init__(self,
                 pipe: AugmentPipe,                              # the pipeline whose p adapts
                 target: float = AugmentOptions.target,          # target for E[sign(D(real))]
                 interval: int = AugmentOptions.ada_interval,    # adjust every N steps
                 speed_kimg: float = AugmentOptions.ada_kimg):   # p can go 0 -> 1 in this many kimg
        self.pipe, self.target, self.interval, self.speed_kimg = pipe, float(target), int(interval), float(speed_kimg)
        self._sum = torch.zeros([2], dtype=torch.float64)  # [sum of signs, count]

    def accumulate(self, real_logits: torch.Tensor) -> None:
        signs = torch.sign(real_logits.detach().float()).cpu().double()
        self._sum += torch.stack([signs.sum(), torch.tensor(float(signs.numel()), dtype=torch.float64)])

    def adjust(self, reduce_fn=None) -> Optional[float]:
        total = self._sum.clone() if reduce_fn is None else reduce_fn(self._sum.clone())
        self._sum.zero_()
        if float(total[1]) == 0:
            return None
        r_t = float(total[0] / total[1])
        step = float(np.sign(r_t - self.target)) * float(total[1]) / (self.speed_kimg * 1000)
        self.pipe.p.copy_((self.pipe.p + step).clamp(min=0))
        return r_t
