"""Restoration that does no harm: a fidelity per image from the model's own reading of its input.

QC-StyleGAN explains an input as G_θ(w, q) and restores it as G_θ(w, 0) (Sec. 4.3). Two readings
of that inversion say how degraded the input is:

* the **severity**, s = RMS over pixels and channels of (G_θ(w, q) - G_θ(w, 0)) / 255: the
  degradation the model believes it removes, q read in pixels (0 at q = 0, linear in q: the
  DegradBlock gives DB(f, k q) = k DB(f, q), Sec. 3.2);
* the **detail ratio**, d = log(median |Laplacian| of the input / the same of G_θ(w, 0)), both at
  the model's resolution: how far the input's fine detail is from what the model draws for a
  clean face of that content (blur gives less, noise and JPEG blocks more).

The output keeps a share f of the input (``compose``; ``restore.py --fidelity``), per image:

    f = floor                                       when d is outside [detail_low, detail_high]
    f = 1                                           else, when s <= sharp_below
    f = floor + (1 - floor) exp(-(s - sharp_below) / scale)      else

``sharp_below`` and the detail band come from clean faces (mean + 4 standard deviations of their
severity; their mean ratio +- 4 standard deviations), so a sharp input is left as it is; the
threshold rises above the clean faces' where mildly degraded faces (large faces in photos, as
they look at the model's size) would otherwise come out worse on average. The severity
is used only where it tells the calibration's degraded faces from its clean ones (ROC AUC >=
``SEVERITY_MIN_AUC``); else ``sharp_below`` is infinite: a q that does not read the degradation
must not decide to redraw a sharp face (the session-5 encoder's did not: AUC 0.79; the shipped one's does: 0.97). Each side of
the detail band is kept only where restoring what lies beyond it helps the calibration's degraded
faces (a model that cannot undo blur leaves blurred inputs as they are). ``floor`` and
``scale`` maximise the mean PSNR gain over degraded faces (``fit_curve``, on *training* faces,
never on held-out ones: ``evaluation.calibrate_fidelity``). A model whose q reads the degradation restores through s; a
model whose q does not still restores what the detail ratio flags.
The severity depends on the inversion that produced it: a shorter PTI leaves more of the input to
q and reads it as more degraded (a sharp photo's face: 0.010 after the default 350 steps, 0.019
after ``make demo``'s 50). A calibrated curve therefore reads the severity only from inversions
that ran at least the calibration's PTI steps (``min_pti_steps``); a shorter one is judged by the
detail band alone, as a curve whose severity is not used.
A model's curve lives beside its network file as ``<network stem>-fidelity.json``
(``FidelityCurve.save``; ``load_curve`` finds it); a network without one uses
``GENERIC_CURVE`` and says so.

    python -m evaluation.calibrate_fidelity --data ../shared/datasets/utkface64.zip \\
        --count 64 --out pretrained/qc-faces64-fidelity.json
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
from typing import Callable, Optional, Tuple, Union

import numpy as np

from dnnlib.image_io import blend, match_channels, resize
from dnnlib.util import UserError, atomic_write

CURVE_SUFFIX = "-fidelity.json"
CURVE_FORMAT = "qc-stylegan-fidelity-curve"
CLEAN_SIGMAS = 4.0              # thresholds: the clean faces' mean + (detail: +-) this many standard deviations
SEVERITY_MIN_AUC = 0.8          # the severity decides only when it tells degraded from clean this well
FLOORS = tuple(np.round(np.arange(0.0, 0.951, 0.05), 2))
SCALES = tuple(np.round(np.geomspace(0.002, 0.2, 25), 5))
KEEP_QUANTILES = (0.5, 0.75, 0.9, 1.0)    # sharp_below candidates among the kept faces' severities


@dataclasses.dataclass(frozen=True)
class FidelityCurve:
    """f(s, d): the share of the input kept, from the severity s and detail ratio d (module docstring)."""
    sharp_below: float          # severity at or below which the input may be kept (f = 1)
    floor: float                # the least f, for the most degraded inputs
    scale: float                # severity over sharp_below at which f has fallen 63 % of the way to floor
    detail_low: float = -np.inf     # detail ratios of clean faces: [detail_low, detail_high]
    detail_high: float = np.inf
    min_pti_steps: float = 0.0      # the severity is read only from inversions of at least this many PTI steps

    def reads_severity(self, pti_steps: Optional[float] = None) -> bool:
        """Whether the severity of an inversion of ``pti_steps`` PTI steps decides (None: not known
        to the caller, as in the calibration's own fit: yes)."""
        return bool(np.isfinite(self.sharp_below)) and (pti_steps is None or pti_steps >= self.min_pti_steps)

    def __call__(self, severity: float, detail: Optional[float] = None, pti_steps: Optional[float] = None) -> float:
        if detail is not None and not self.detail_low <= detail <= self.detail_high:
            return float(self.floor)                  # the input's detail is not a clean face's
        if severity <= self.sharp_below or not self.reads_severity(pti_steps):
            return 1.0
        return float(self.floor + (1.0 - self.floor) * np.exp(-(severity - self.sharp_below) / self.scale))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str, calibration: Optional[dict] = None) -> None:
        with atomic_write(path, "w") as f:
            json.dump({"format": CURVE_FORMAT, "curve": self.to_dict(), "calibration": calibration or {}}, f, indent=2)
            f.write("\n")


# For networks without a calibration file: a sharp input (the shipped model's clean faces stay
# below 0.02) is kept, and at most 60 % of the model's restoration replaces the input.
GENERIC_CURVE = FidelityCurve(sharp_below=0.02, floor=0.4, scale=0.03)


def curve_path(network_path: str) -> str:
    """Where a network's curve lives: ``<network path without extension>-fidelity.json``."""
    return os.path.splitext(network_path)[0] + CURVE_SUFFIX


def load_curve(network_path: Optional[str], log: Optional[Callable[[str], None]] = None
               ) -> Tuple[FidelityCurve, str]:
    """The curve beside ``network_path`` (``<stem>-fidelity.json``), else ``GENERIC_CURVE`` (with a
    note through ``log``). Returns (curve, where it came from). A present but broken file is an error."""
    path = curve_path(network_path) if network_path else None
    if path is None or not os.path.isfile(path):
        if log is not None:
            log("note: no fidelity calibration beside the network; --fidelity auto uses the generic curve "
                f"{GENERIC_CURVE.to_dict()} (calibrate with python -m evaluation.calibrate_fidelity)")
        return GENERIC_CURVE, "generic"
    try:
        with open(path) as f:
            data = json.load(f)
        if data.get("format") != CURVE_FORMAT:
            raise ValueError(f"format is {data.get('format')!r}")
        curve = FidelityCurve(**{k: float(v) for k, v in data["curve"].items()})   # json keeps +-Infinity
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: not a fidelity curve ({exc})") from None
    return curve, path


def severity(reconstruction: np.ndarray, sharp: np.ndarray) -> float:
    """RMS of G(w, q) - G(w, 0), both uint8 [R, R, C], in units of the full range (0..1)."""
    d = (np.asarray(reconstruction, np.float64) - np.asarray(sharp, np.float64)) / 255.0
    return float(np.sqrt(np.mean(d * d)))


def _detail(img: np.ndarray) -> float:
    """Median |Laplacian| of the channel mean: the fine detail of a typical pixel. The median, not
    the mean: noise and JPEG blocks raise it everywhere (flat skin too), while texture the model
    does not draw (hair, wrinkles) stays in the tail; on the shipped model's calibration faces it
    flags 20 of 48 degraded faces at the clean faces' mean + 4 sd, the mean 14."""
    import cv2
    a = np.asarray(img, np.float32)
    grey = a.mean(axis=2) if a.ndim == 3 else a     # a statistic of the image, on the channel mean the curves were fitted with
    return float(np.median(np.abs(cv2.Laplacian(grey, cv2.CV_32F))))


def detail_ratio(model_in: np.ndarray, sharp: np.ndarray) -> float:
    """log(median |Laplacian| of the input / of G(w, 0)), both uint8 [R, R, C] (the input as the
    inversion saw it): > 0 where the input has more fine detail than the model's clean face."""
    return float(np.log(max(_detail(model_in), 1e-6) / max(_detail(sharp), 1e-6)))


Fidelity = Union[str, float]       # 'auto' or a fixed f in [0, 1]


def check_fidelity(value: Fidelity) -> Fidelity:
    """'auto' or a float in [0, 1]; anything else is a ``UserError`` naming ``--fidelity``."""
    if isinstance(value, str):
        if value.strip().lower() == "auto":
            return "auto"
        try:
            value = float(value)
        except ValueError:
            raise UserError(f"--fidelity must be 'auto' or a number in [0, 1], got {value!r}") from None
    if not 0.0 <= float(value) <= 1.0:
        raise UserError(f"--fidelity must be 'auto' or in [0, 1], got {value}")
    return float(value)


@dataclasses.dataclass(frozen=True)
class FidelityChoice:
    """What one image got: the share of the input kept and what it rests on (for its record)."""
    fidelity: float
    severity: Optional[float]       # None with a fixed --fidelity
    detail: Optional[float]         # the detail ratio; None with a fixed --fidelity
    q_norm: Optional[float]
    severity_used: Optional[bool] = None    # whether the curve read the severity; None with a fixed --fidelity

    def record(self) -> dict:
        r = lambda v, n: None if v is None else round(v, n)      # noqa: E731
        return {"fidelity": round(self.fidelity, 4), "severity": r(self.severity, 5), "detail": r(self.detail, 4),
                "q_norm": r(self.q_norm, 4), "severity_used": self.severity_used}


def choose(setting: Fidelity, curve: FidelityCurve, reconstruction: Optional[np.ndarray],
           sharp: np.ndarray, q_norm: Optional[float], model_in: Optional[np.ndarray] = None,
           pti_steps: Optional[float] = None) -> FidelityChoice:
    """The fidelity of one image: ``setting`` itself when fixed, else the curve at its severity
    and (given the input as the inversion saw it, ``model_in``) its detail ratio; ``pti_steps``:
    the PTI steps its inversion ran (the severity is read only from inversions as long as the
    curve's calibration; None: not checked)."""
    if setting != "auto":
        return FidelityChoice(float(setting), None, None, q_norm)
    if reconstruction is None:
        raise ValueError("--fidelity auto needs the reconstruction G(w, q)")
    s = severity(reconstruction, sharp)
    d = detail_ratio(model_in, sharp) if model_in is not None else None
    return FidelityChoice(curve(s, d, pti_steps), s, d, q_norm, curve.reads_severity(pti_steps))


def compose(image: np.ndarray, model_in: np.ndarray, model_out: np.ndarray, fidelity: float) -> np.ndarray:
    """The restored image at the input's size (aligned crops; ``photos`` pastes faces the same way).

    image: uint8 [H, W, C], the input; model_in / model_out: uint8 [R, R, C'], what the inversion
    saw (``api.prepare_image``) and G_θ(w, 0). ``fidelity`` 0: the paper's restoration, model_out
    resized to H x W (Lanczos), nothing of the input kept. f > 0: the input plus (1 - f) times what
    the model changed, upsampled: ``image + (1 - f) up(model_out - model_in)``, so the output keeps
    the input's detail above the model's resolution (the band the model never saw) and takes
    (1 - f) of the model's restoration below it; at H = W = R this is ``(1 - f) model_out + f image``.
    """
    h, w, c = image.shape
    if fidelity == 0:
        return match_channels(resize(np.asarray(model_out), h, w), c)
    if model_out.shape[:2] == (h, w) and model_out.shape[2] == c:
        return blend(model_out, image, fidelity)
    change = match_channels(model_out.astype(np.float32) - model_in.astype(np.float32), c)
    change = _resize_float(change, h, w)
    return np.clip(np.rint(image.astype(np.float32) + (1.0 - fidelity) * change), 0, 255).astype(np.uint8)


def _resize_float(img: np.ndarray, h: int, w: int) -> np.ndarray:
    import cv2
    out = cv2.resize(np.ascontiguousarray(img, np.float32), (w, h), interpolation=cv2.INTER_LANCZOS4)
    return out[:, :, None] if out.ndim == 2 else out


# ---------------------------------------------------------------------------------------------
# Calibration (on training faces).

def _psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB of float [N, ...] images in 0..255."""
    mse = ((a - b) ** 2).reshape(len(a), -1).mean(1)
    return 10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))


def roc_auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a positive score > a negative one) + half the ties (the ROC AUC; Mann-Whitney U / n1 n2)."""
    p = np.asarray(positive, np.float64)[:, None]
    n = np.asarray(negative, np.float64)[None, :]
    return float((p > n).mean() + 0.5 * (p == n).mean())


def fit_curve(severities: np.ndarray, restored: np.ndarray, inputs: np.ndarray, clean: np.ndarray,
              is_clean: np.ndarray, details: Optional[np.ndarray] = None,
              keep: Optional[np.ndarray] = None) -> Tuple[FidelityCurve, dict]:
    """Fit the curve on calibration faces: severities [N], uint8 images [N, R, R, C] (restored
    G(w, 0), inputs at the model's size, their clean originals), ``is_clean`` [N] bool (input ==
    clean), ``details`` [N] detail ratios (None: computed from inputs and restored). sharp_below:
    the clean inputs' mean severity + ``CLEAN_SIGMAS`` standard deviations (infinite when the
    severity's AUC, degraded vs clean, is below ``SEVERITY_MIN_AUC``); the detail band: their
    mean ratio +- as many (each at least their whole range, so every clean calibration face is
    kept as it is: the margin is for clean faces the calibration did not see), each side opened
    (+-inf) where that serves the degraded faces better; floor, scale and the sides: the grid
    point of best mean PSNR gain over the degraded faces.

    ``keep`` [N] bool marks degraded faces that restoration must not make worse on average (mildly
    degraded faces, as large faces in photos look at the model's size: ``evaluation.
    calibrate_fidelity``): they are left out of the gain that is maximised and of the AUC, and
    ``sharp_below`` may then rise from the clean faces' value to quantiles of their severities (or
    infinity): the best gain over the other degraded faces among the curves whose mean gain on the
    kept faces is >= 0. Returns the curve and the fit's numbers."""
    s = np.asarray(severities, np.float64)
    r, x, c = (np.asarray(a, np.float64) for a in (restored, inputs, clean))
    is_clean = np.asarray(is_clean, bool)
    keep = np.zeros(len(s), bool) if keep is None else np.asarray(keep, bool) & ~is_clean
    target = ~is_clean & ~keep                 # the degraded faces whose gain is maximised
    if not is_clean.any() or not target.any():
        raise UserError("calibration needs clean and degraded faces")
    if details is None:
        details = [detail_ratio(a, b) for a, b in zip(inputs, restored)]
    dr = np.asarray(details, np.float64)
    k = CLEAN_SIGMAS
    auc = roc_auc(s[target], s[is_clean])
    from_clean = float(max(s[is_clean].mean() + k * s[is_clean].std(ddof=1), s[is_clean].max()))
    thresholds = [from_clean]
    if auc < SEVERITY_MIN_AUC:
        thresholds = [float("inf")]          # q does not read the degradation: only the detail band decides
    elif keep.any():
        above = s[keep][s[keep] > from_clean]
        thresholds += sorted({float(np.quantile(above, p)) for p in KEEP_QUANTILES} if len(above) else set())
        thresholds.append(float("inf"))
    spread = k * dr[is_clean].std(ddof=1)
    low = float(min(dr[is_clean].mean() - spread, dr[is_clean].min()))
    high = float(max(dr[is_clean].mean() + spread, dr[is_clean].max()))
    base = _psnr(x, c)
    kept_as_is = _psnr(np.clip(np.rint(x), 0, 255), c) - base     # the gain of f = 1 (0 for uint8 inputs)
    gains: dict = {}                           # f per face (bytes) -> gain per face: grid points often repeat f

    def gain_of(f: np.ndarray) -> np.ndarray:
        key = f.tobytes()
        if key not in gains:
            g, m = kept_as_is.copy(), f < 1    # only the faces the curve changes are blended
            if m.any():
                fm = f[m][:, None, None, None]
                g[m] = _psnr(np.clip(np.rint((1 - fm) * r[m] + fm * x[m]), 0, 255), c[m]) - base[m]
            gains[key] = g
        return gains[key]

    best = None
    bands = [(low, high), (-np.inf, high), (low, np.inf), (-np.inf, np.inf)]   # ties: the first (both sides)
    for sharp_below in thresholds:               # ties: the lower threshold
        for (band_low, band_high), floor, scale in itertools.product(bands, FLOORS, SCALES):
            curve = FidelityCurve(sharp_below, float(floor), float(scale), float(band_low), float(band_high))
            f = np.array([curve(v, d) for v, d in zip(s, dr)])
            gain = gain_of(f)
            if keep.any() and gain[keep].mean() < 0:
                continue
            score = float(gain[target].mean())     # clean faces sit inside both thresholds: f = 1
            if best is None or score > best[0]:
                best = (score, curve, gain, f)
    if best is None:                             # nothing restores without loss on the kept faces: keep all
        curve = FidelityCurve(float("inf"), 1.0, 1.0, -np.inf, np.inf)
        best = (0.0, curve, np.zeros(len(s)), np.ones(len(s)))
    score, curve, gain, f = best
    fixed = {str(v): float((_psnr(np.clip(np.rint((1 - v) * r + v * x), 0, 255), c) - base)[target].mean())
             for v in (0.0, 0.25, 0.5)}
    report = {"faces": int(len(s)), "clean": int(is_clean.sum()), "keep": int(keep.sum()),
              "sharp_below_from_clean": from_clean,
              "severity_clean": {"median": float(np.median(s[is_clean])), "max": float(s[is_clean].max())},
              "severity_degraded": {"median": float(np.median(s[target])), "min": float(s[target].min())},
              "severity_auc": auc, "severity_used": bool(np.isfinite(curve.sharp_below)),
              "detail_clean": [float(dr[is_clean].min()), float(dr[is_clean].max())],
              "detail_band_from_clean": [low, high],
              "degraded_flagged": int(sum(curve(sv, v) < 1 for v, sv in zip(dr[target], s[target]))),
              "psnr_gain_db": {"clean": float(gain[is_clean].mean()), "degraded": score,
                               **({"keep": float(gain[keep].mean())} if keep.any() else {})},
              "mean_fidelity": {"clean": float(f[is_clean].mean()), "degraded": float(f[target].mean()),
                                **({"keep": float(f[keep].mean())} if keep.any() else {})},
              "fixed_fidelity_gain_db_degraded": fixed}
    return curve, report
