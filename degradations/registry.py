"""Registered degradation ops: parameter ranges, validation, sampling, relative scaling, and the
batched (torch) and per-image (OpenCV) application of one step.

An op is configured by ranges (``{"ksize": [3, 31]}``), draws one plain-dict *entry* per image
(``{"op": "gaussian_blur", "ksize": 7, "sigma": None}``), and applies entries. Entries hold every
number needed to redo the step (noise carries its own seed), so a list of them replays exactly.
Register a new op by subclassing ``Op`` and decorating it with ``@register_op``.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from dnnlib.image_io import PIXEL_RANGE, from_uint8_hwc, to_uint8_hwc
from dnnlib.util import UserError

from degradations import functional as Fn
from degradations import kernels

REFERENCE_RESOLUTION = 256  # the release's ranges are in pixels of 256x256 images


# ---------------------------------------------------------------------------------------------
# Random draws.

class Sampler:
    """Scalar draws from a ``torch.Generator`` (float64 uniforms fetched in blocks)."""

    def __init__(self, generator: torch.Generator, block: int = 64):
        self.generator = generator
        self.block = block
        self._buf: List[float] = []

    def uniform(self, lo: float = 0.0, hi: float = 1.0) -> float:
        if not self._buf:
            u = torch.rand(self.block, generator=self.generator, dtype=torch.float64,
                           device=self.generator.device)
            self._buf = u.cpu().tolist()[::-1]
        return lo + (hi - lo) * self._buf.pop()

    def randint(self, lo: int, hi: int) -> int:
        """Uniform integer in [lo, hi] (both included)."""
        return min(hi, lo + int(math.floor(self.uniform() * (hi - lo + 1))))

    def choice(self, n: int, weights: Optional[Sequence[float]] = None) -> int:
        if weights is None:
            return self.randint(0, n - 1)
        u = self.uniform() * float(sum(weights))
        acc = 0.0
        for i, w in enumerate(weights):
            acc += w
            if u < acc:
                return i
        return n - 1

    def seed(self) -> int:
        return self.randint(0, 2 ** 31 - 2)


# ---------------------------------------------------------------------------------------------
# Parameters.

@dataclass
class Param:
    kind: str                       # 'ksize' (odd ints), 'float', 'int', 'choice', 'prob'
    default: Any                    # range [lo, hi], scalar, choice list, or None (= derived)
    bounds: Tuple[float, float] = (-math.inf, math.inf)   # allowed values
    pixels: bool = False            # a length in pixels: scaled by R/256 in relative mode
    optional: bool = False          # None allowed
    choices: Tuple[str, ...] = ()
    help: str = ""


def _as_range(path: str, name: str, value: Any) -> Tuple[float, float]:
    if isinstance(value, bool):
        raise UserError(f"{path}: '{name}' must be a number or [lo, hi], got {value!r}")
    if isinstance(value, (int, float)):
        return (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        lo, hi = value
        if lo > hi:
            raise UserError(f"{path}: '{name}' range [{lo}, {hi}] has lo > hi")
        return (lo, hi)
    raise UserError(f"{path}: '{name}' must be a number or [lo, hi], got {value!r}")


def largest_odd_at_most(v: float) -> int:
    k = int(math.floor(v))
    return k if k % 2 == 1 else k - 1


# ---------------------------------------------------------------------------------------------
# Op base class and registry.

OPS: Dict[str, "Op"] = {}


def register_op(cls):
    OPS[cls.name] = cls()
    return cls


def get_op(name: str, path: str = "op") -> "Op":
    if name not in OPS:
        raise UserError(f"{path}: unknown op '{name}' (known: {', '.join(sorted(OPS))})")
    return OPS[name]


class Op:
    name = ""
    params: Dict[str, Param] = {}
    doc = ""

    # -- configuration -----------------------------------------------------------------------
    def configure(self, cfg: Dict[str, Any], path: str) -> Dict[str, Any]:
        """Validate ``cfg`` (op parameters only) and fill defaults; ranges become [lo, hi]."""
        unknown = set(cfg) - set(self.params)
        if unknown:
            raise UserError(f"{path}: unknown parameter(s) {sorted(unknown)} for op '{self.name}' "
                            f"(allowed: {', '.join(sorted(self.params)) or 'none'})")
        out = {}
        for pname, spec in self.params.items():
            value = cfg.get(pname, spec.default)
            out[pname] = self._check_param(path, pname, spec, value)
        self.check(out, path)
        return out

    def _check_param(self, path: str, pname: str, spec: Param, value: Any) -> Any:
        if value is None:
            if spec.optional:
                return None
            raise UserError(f"{path}: '{pname}' is required for op '{self.name}'")
        if spec.kind == "choice":
            vals = [value] if isinstance(value, str) else value
            if not isinstance(vals, (list, tuple)) or not vals or any(v not in spec.choices for v in vals):
                raise UserError(f"{path}: '{pname}' must be one of {list(spec.choices)} or a list of "
                                f"them, got {value!r}")
            return list(vals)
        if spec.kind == "prob":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise UserError(f"{path}: '{pname}' must be a probability in [0, 1], got {value!r}")
            return float(value)
        lo, hi = _as_range(path, pname, value)
        if lo < spec.bounds[0] or hi > spec.bounds[1]:
            raise UserError(f"{path}: '{pname}' range [{lo}, {hi}] outside the allowed "
                            f"[{spec.bounds[0]}, {spec.bounds[1]}]")
        if spec.kind in ("ksize", "int"):
            if lo != int(lo) or hi != int(hi):
                raise UserError(f"{path}: '{pname}' must be integers, got [{lo}, {hi}]")
            lo, hi = int(lo), int(hi)
            if spec.kind == "ksize" and (lo % 2 == 0 or hi % 2 == 0):
                raise UserError(f"{path}: kernel sizes must be odd, got '{pname}' [{lo}, {hi}]")
            return [lo, hi]
        return [float(lo), float(hi)]

    def check(self, cfg: Dict[str, Any], path: str) -> None:
        """Extra cross-parameter checks (subclasses)."""

    def relative(self, cfg: Dict[str, Any], resolution: int) -> Dict[str, Any]:
        """Ranges for ``resolution`` in relative mode: kernel sizes scaled by R/256 (largest odd
        value, at least 3), other pixel lengths scaled by R/256."""
        f = resolution / REFERENCE_RESOLUTION
        out = dict(cfg)
        for pname, spec in self.params.items():
            v = cfg[pname]
            if v is None or not spec.pixels:
                continue
            if spec.kind == "ksize":
                lo, hi = (max(3, largest_odd_at_most(k * f)) for k in v)
                out[pname] = [min(lo, hi), hi]
            else:
                out[pname] = [v[0] * f, v[1] * f]
        return out

    # -- sampling ----------------------------------------------------------------------------
    def draw(self, spec: Param, value: Any, s: Sampler) -> Any:
        if value is None:
            return None
        if spec.kind == "ksize":
            lo, hi = value
            return lo + 2 * s.randint(0, (hi - lo) // 2)
        if spec.kind == "int":
            return s.randint(*value)
        if spec.kind == "float":
            return value[0] if value[0] == value[1] else s.uniform(*value)
        if spec.kind == "choice":
            return value[0] if len(value) == 1 else value[s.choice(len(value))]
        if spec.kind == "prob":
            return value > 0 and (value >= 1 or s.uniform() < value)
        raise AssertionError(spec.kind)

    def sample(self, cfg: Dict[str, Any], s: Sampler) -> Dict[str, Any]:
        entry = {"op": self.name}
        for pname, spec in self.params.items():
            entry[pname] = self.draw(spec, cfg[pname], s)
        return entry

    def check_entry(self, entry: Dict[str, Any]) -> None:
        missing = [k for k in self.entry_keys() if k not in entry]
        if missing:
            raise UserError(f"record entry for op '{self.name}' lacks {missing}: {entry}")

    def entry_keys(self) -> List[str]:
        return list(self.params)

    # -- application -------------------------------------------------------------------------
    def group_key(self, entry: Dict[str, Any]) -> Any:
        """Entries with equal keys are applied in one torch call."""
        return None

    def apply_torch_group(self, x: torch.Tensor, entries: List[Dict[str, Any]]) -> torch.Tensor:
        raise NotImplementedError

    def apply_torch(self, x: torch.Tensor, entries: List[Dict[str, Any]]) -> torch.Tensor:
        # x: [N, 3, H, W] float32, integer values in [0, 255]
        groups = defaultdict(list)
        for i, e in enumerate(entries):
            groups[self.group_key(e)].append(i)
        if len(groups) == 1:
            return self.apply_torch_group(x, entries)
        out = torch.empty_like(x)
        for idx in groups.values():
            t = torch.as_tensor(idx, device=x.device)
            out.index_copy_(0, t, self.apply_torch_group(x.index_select(0, t), [entries[i] for i in idx]))
        return out

    def apply_cv2(self, img: np.ndarray, entry: Dict[str, Any]) -> np.ndarray:
        """One uint8 [H, W, C] image (defaults to the torch version)."""
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()
        return to_uint8_hwc(self.apply_torch(x, [entry]), PIXEL_RANGE)[0]


# ---------------------------------------------------------------------------------------------
# Blur.

_KSIZE_BOUNDS = (1, 255)


@register_op
class GaussianBlur(Op):
    """Isotropic Gaussian blur (albumentations GaussianBlur / cv2.GaussianBlur): odd kernel size;
    sigma drawn from a range, or derived from the size like OpenCV when null."""
    name = "gaussian_blur"
    params = {
        "ksize": Param("ksize", [3, 7], _KSIZE_BOUNDS, pixels=True),
        "sigma": Param("float", None, (0.0, 1000.0), pixels=True, optional=True),
    }

    def group_key(self, e):
        return e["ksize"]

    def kernel(self, e):
        return kernels.gaussian_kernel1d(e["ksize"], e["sigma"])

    def apply_torch_group(self, x, entries):
        return Fn.filter_separable(x, [self.kernel(e) for e in entries])

    def apply_cv2(self, img, e):
        return Fn.cv2_gaussian(img, e["ksize"], e["sigma"])


@register_op
class AnisoGaussianBlur(Op):
    """Anisotropic Gaussian blur: sigma_x along ``angle`` (degrees, counter-clockwise),
    sigma_y across it, in a ``ksize`` kernel."""
    name = "aniso_gaussian_blur"
    params = {
        "ksize": Param("ksize", [7, 21], _KSIZE_BOUNDS, pixels=True),
        "sigma_x": Param("float", [0.5, 4.0], (1e-3, 1000.0), pixels=True),
        "sigma_y": Param("float", [0.5, 4.0], (1e-3, 1000.0), pixels=True),
        "angle": Param("float", [0.0, 180.0], (-360.0, 360.0)),
    }

    def group_key(self, e):
        return e["ksize"]

    def kernel(self, e):
        return kernels.aniso_gaussian_kernel2d(e["ksize"], e["sigma_x"], e["sigma_y"], e["angle"])

    def apply_torch_group(self, x, entries):
        return Fn.filter_dense(x, [self.kernel(e) for e in entries])

    def apply_cv2(self, img, e):
        return Fn.cv2_filter2d(img, self.kernel(e))


@register_op
class MotionBlur(Op):
    """Motion blur (albumentations MotionBlur): a one-pixel line of equal weights in a ``ksize``
    kernel. Without ``length``/``angle`` its two ends are random points of the kernel (the
    release's meaning); with them it is a centred segment of that length and angle."""
    name = "motion_blur"
    params = {
        "ksize": Param("ksize", [3, 7], _KSIZE_BOUNDS, pixels=True),
        "length": Param("float", None, (1.0, 255.0), pixels=True, optional=True),
        "angle": Param("float", None, (-360.0, 360.0), optional=True),
    }

    def check(self, cfg, path):
        if (cfg["length"] is None) != (cfg["angle"] is None):
            raise UserError(f"{path}: motion_blur takes both 'length' and 'angle' or neither")

    def sample(self, cfg, s):
        k = self.draw(self.params["ksize"], cfg["ksize"], s)
        if cfg["length"] is not None:
            length = self.draw(self.params["length"], cfg["length"], s)
            angle = self.draw(self.params["angle"], cfg["angle"], s)
            line = kernels.motion_line_from_angle(k, length, angle)
        else:
            # albumentations 1.0: xs, xe random; if equal, two distinct ys, else ys, ye random.
            xs, xe = s.randint(0, k - 1), s.randint(0, k - 1)
            if xs == xe:
                ys = s.randint(0, k - 1)
                ye = s.randint(0, k - 2)
                ye = ye + 1 if ye >= ys else ye
            else:
                ys, ye = s.randint(0, k - 1), s.randint(0, k - 1)
            line = [xs, ys, xe, ye]
        return {"op": self.name, "ksize": k, "line": line}

    def entry_keys(self):
        return ["ksize", "line"]

    def apply_torch(self, x, entries):
        taps = [kernels.motion_taps(e["ksize"], e["line"]) for e in entries]
        return Fn.filter_taps(x, [e["ksize"] for e in entries], taps)

    def apply_cv2(self, img, e):
        return Fn.cv2_motion(img, e["ksize"], kernels.motion_taps(e["ksize"], e["line"]))


class _SquareKernelOp(Op):
    """A filter of one odd kernel size ``ksize``, images of one size applied together;
    ``torch_fn`` / ``cv2_fn``: its batched and per-image primitives."""
    params = {"ksize": Param("ksize", [3, 7], _KSIZE_BOUNDS, pixels=True)}
    torch_fn = None                # (x, ksize) -> x
    cv2_fn = None                  # (img, ksize) -> img

    def group_key(self, e):
        return e["ksize"]

    def apply_torch_group(self, x, entries):
        return self.torch_fn(x, entries[0]["ksize"])

    def apply_cv2(self, img, e):
        return self.cv2_fn(img, e["ksize"])


@register_op
class MedianBlur(_SquareKernelOp):
    """Median blur (albumentations MedianBlur / cv2.medianBlur), odd kernel size."""
    name = "median_blur"
    torch_fn = staticmethod(Fn.median_blur)
    cv2_fn = staticmethod(Fn.cv2_median)

    def apply_torch_group(self, x, entries):
        if not x.is_cuda and entries[0]["ksize"] > 7:
            # The counting median is a GPU algorithm; on CPU OpenCV gives the same numbers faster.
            u8 = to_uint8_hwc(x, PIXEL_RANGE)
            return from_uint8_hwc(np.stack([Fn.cv2_median(v, entries[0]["ksize"]) for v in u8]), PIXEL_RANGE,
                                  x.dtype, x.device)
        return super().apply_torch_group(x, entries)


@register_op
class BoxBlur(_SquareKernelOp):
    """Box (mean) blur (albumentations Blur / cv2.blur), odd kernel size."""
    name = "box_blur"
    torch_fn = staticmethod(Fn.box_blur)
    cv2_fn = staticmethod(Fn.cv2_box)


# ---------------------------------------------------------------------------------------------
# Noise.

def _noise_params(level: str, spec: Param) -> Dict[str, Param]:
    """A noise op's parameters: its level (first), and the probability of grey noise."""
    return {level: spec, "gray_p": Param("prob", 0.0)}


class _NoiseOp(Op):
    """Noise at one sampled level (the first parameter), grey (the same field in every channel)
    with probability ``gray_p``; ``torch_fn`` / ``cv2_fn``: its batched and per-image primitives."""
    torch_fn = None                # (x, levels, grays, seeds) -> x
    cv2_fn = None                  # (img, level, gray, seed) -> img

    @property
    def level(self) -> str:
        return next(iter(self.params))

    def sample(self, cfg, s):
        value = self.draw(self.params[self.level], cfg[self.level], s)
        gray = bool(self.draw(self.params["gray_p"], cfg["gray_p"], s))
        return {"op": self.name, self.level: value, "gray": gray, "seed": s.seed()}

    def entry_keys(self):
        return [self.level, "gray", "seed"]

    def apply_torch(self, x, entries):
        return self.torch_fn(x, [e[self.level] for e in entries], [e["gray"] for e in entries],
                             [e["seed"] for e in entries])

    def apply_cv2(self, img, e):
        return self.cv2_fn(img, e[self.level], e["gray"], e["seed"])


@register_op
class GaussianNoise(_NoiseOp):
    """Additive Gaussian noise (albumentations GaussNoise): ``var`` is the variance on the 0-255
    scale, sigma = sqrt(var) per pixel and channel (the same value in all channels with
    probability ``gray_p``), clipped to [0, 255]."""
    name = "gaussian_noise"
    params = _noise_params("var", Param("float", [10.0, 50.0], (0.0, 65025.0)))
    torch_fn = staticmethod(Fn.add_gaussian_noise)
    cv2_fn = staticmethod(Fn.cv2_gaussian_noise)


@register_op
class PoissonNoise(_NoiseOp):
    """Poisson (shot) noise: counts ~ Poisson(v / 255 * photons), so the output variance at value
    v is v * 255 / photons; grey with probability ``gray_p`` (one luminance field)."""
    name = "poisson_noise"
    params = _noise_params("photons", Param("float", [50.0, 1000.0], (1e-3, 1e9)))
    torch_fn = staticmethod(Fn.add_poisson_noise)
    cv2_fn = staticmethod(Fn.cv2_poisson_noise)


# ---------------------------------------------------------------------------------------------
# Resolution and compression.

@register_op
class Downscale(Op):
    """Downscale by ``scale`` then upscale back to the input size (albumentations Downscale; the
    release used nearest both ways). Relative mode raises the floor of ``scale`` to
    min(0.9, lo * 256 / R)."""
    name = "downscale"
    params = {
        "scale": Param("float", [0.25, 0.25], (1e-3, 1.0)),
        "interpolation": Param("choice", "nearest", choices=Fn.INTERPOLATIONS),
    }

    def relative(self, cfg, resolution):
        out = dict(cfg)
        lo, hi = cfg["scale"]
        floor = min(0.9, lo * REFERENCE_RESOLUTION / resolution)
        lo = max(lo, floor)
        out["scale"] = [lo, max(hi, lo)]
        return out

    def apply_torch(self, x, entries):
        return Fn.downscale(x, [e["scale"] for e in entries], [e["interpolation"] for e in entries])

    def apply_cv2(self, img, e):
        return Fn.cv2_downscale(img, e["scale"], e["interpolation"])


@register_op
class Jpeg(Op):
    """Real JPEG compression at an integer ``quality`` (albumentations ImageCompression):
    libjpeg through OpenCV on CPU, nvJPEG through torchvision for CUDA tensors."""
    name = "jpeg"
    params = {"quality": Param("int", [30, 50], (1, 100))}

    def apply_torch(self, x, entries):
        return Fn.jpeg(x, [e["quality"] for e in entries])

    def apply_cv2(self, img, e):
        return Fn.jpeg_cv2(img, e["quality"])
