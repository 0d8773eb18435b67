"""The explorer's state and rendering, without HTTP (QC-StyleGAN, Nguyen et al., NeurIPS 2022).

A view (``ViewParams``) names one sharp / degraded pair G(w, 0) | G(w, q):

* ``src``: ``seed:N`` (z and q from seed N with ``training.generation``'s conventions, so the
  images are ``generate.py``'s) or ``upload:ID`` (an inverted upload: its w, q and PTI delta);
* ``trunc``: truncation psi of a seed's w;
* ``q``: an explicit code ``[q_dim]``; else the q of ``q_seed`` (default: the seed itself, as
  ``generate.py``) for a seed, or the upload's inverted q;
* ``ref`` / ``alpha`` (Sec. 4.4): q(α) = (1 - α) q + α q_ref, ``degradation_synthesis.interpolate_q``;
  α = 1 transfers the reference's degradation exactly;
* ``scale`` (Eq. 10): q is multiplied by it; 0 renders the sharp image;
* ``direction`` / ``strength`` (Sec. 4.5): w + strength Δw with q kept (``editing.edit_ws``).

Every pair is rendered by ``training.generation.render_batch`` (generate.py's library call) in
the precision ``inference_format`` picks for ``dtype`` (generate.py's ``--dtype``). Renders run
one at a time; a render request tagged with a ``slot`` is dropped (``Superseded``) when a newer
request for the same slot arrived while it waited, so moved sliders never pile up work.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
import threading
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch

from dnnlib.image_io import encode_image
from dnnlib.util import UserError
from apps.degradation_synthesis import interpolate_q
from apps.directions import get_direction
from apps.editing import edit_ws
from apps.latents import Latent, generator_for
from inversion.models import load_models
from inversion.pretrained import BOUNDARIES, is_shipped
from torch_utils.misc import resolve_inference_dtype
from training.generation import Job, inference_format, render_batch, seed_to_q, seed_to_z

SEED_PREFIX = "seed:"
UPLOAD_PREFIX = "upload:"
KINDS = ("sharp", "degraded")
CACHE_SIZE = 64                     # rendered pairs kept (PNG bytes: a few KB each at 64 x 64)
MAX_SEED = 2 ** 32 - 1              # numpy RandomState's range
MAX_ABS = 100.0                     # largest |value| accepted for trunc, scale, strength, q entries
Q_DIRECTIONS_SUFFIX = "-q-directions.json"   # named degradation directions beside a network file


class Superseded(Exception):
    """A newer request for the same image slot arrived before this one started."""


@dataclasses.dataclass(frozen=True)
class ViewParams:
    src: str = "seed:0"                       # 'seed:N' or 'upload:ID'
    trunc: float = 1.0                        # truncation psi (seed sources)
    q: Optional[Tuple[float, ...]] = None     # explicit q [q_dim]; None: q_seed's / the upload's
    q_seed: Optional[int] = None              # seed of q (None: the image seed, generate.py's default, or the upload's q)
    ref: Optional[str] = None                 # degradation reference ('seed:N' / 'upload:ID'), or None
    alpha: float = 1.0                        # with ref: 0 = own q, 1 = ref's q (transfer)
    scale: float = 1.0                        # Eq. 10: q * scale; 0 = sharp
    direction: Optional[str] = None           # edit direction name, or None
    strength: float = 0.0                     # edit strength α (w + α Δw)

    def sharp_key(self) -> tuple:
        """What the sharp image depends on (not q)."""
        return (self.src, self.trunc, self.direction if self.strength else None, self.strength if self.direction else 0.0)


def _number(query: Mapping[str, str], key: str, default: float, lo: float = -MAX_ABS, hi: float = MAX_ABS) -> float:
    raw = query.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise UserError(f"{key} must be a number, got '{raw}'") from None
    if not math.isfinite(value) or not lo <= value <= hi:
        raise UserError(f"{key} must be in [{lo:g}, {hi:g}], got {raw}")
    return value


def _seed(raw: str, what: str) -> int:
    try:
        seed = int(raw)
    except ValueError:
        raise UserError(f"{what} must be an integer seed, got '{raw}'") from None
    if not 0 <= seed <= MAX_SEED:
        raise UserError(f"{what} must be in 0..{MAX_SEED}, got {seed}")
    return seed


def parse_view(query: Mapping[str, str], q_dim: int) -> ViewParams:
    """A ``ViewParams`` from query parameters (strings); a bad value is a ``UserError``."""
    src = query.get("src") or (SEED_PREFIX + query["seed"] if query.get("seed") else "seed:0")
    q = None
    if query.get("q"):
        try:
            q = tuple(float(v) for v in query["q"].split(","))
        except ValueError:
            raise UserError(f"q must be {q_dim} comma-separated numbers") from None
        if len(q) != q_dim or not all(math.isfinite(v) and abs(v) <= MAX_ABS for v in q):
            raise UserError(f"q must be {q_dim} finite numbers in [-{MAX_ABS:g}, {MAX_ABS:g}], got {len(q)} values")
    q_seed = _seed(query["q_seed"], "q_seed") if query.get("q_seed") else None
    return ViewParams(src=src, trunc=_number(query, "trunc", 1.0), q=q, q_seed=q_seed,
                      ref=query.get("ref") or None, alpha=_number(query, "alpha", 1.0, 0.0, 1.0),
                      scale=_number(query, "scale", 1.0), direction=query.get("direction") or None,
                      strength=_number(query, "strength", 0.0))


def load_q_directions(network_path: str, q_dim: int) -> Dict[str, List[float]]:
    """Named degradation directions of a model card: ``<network stem>-q-directions.json`` beside
    the network file, ``{"name": [q_dim numbers], ...}``; {} when there is none (the shipped
    model defines none)."""
    path = os.path.splitext(network_path)[0] + Q_DIRECTIONS_SUFFIX
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected an object of name -> [{q_dim} numbers]")
    out = {}
    for name, vec in data.items():
        if not (isinstance(vec, list) and len(vec) == q_dim and all(isinstance(v, (int, float)) for v in vec)):
            raise UserError(f"{path}: '{name}' must be a list of {q_dim} numbers")
        out[str(name)] = [float(v) for v in vec]
    return out


def direction_files(network_path: str, given: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """Edit directions by name: the shipped boundaries when the network is the shipped model, and
    the ``given`` ones (name -> .npy file)."""
    out = {name: path for name, path in BOUNDARIES.items() if is_shipped(network_path) and os.path.isfile(path)}
    out.update(given or {})
    return out


class Explorer:
    """One model and its uploads; renders views (``image_png``) and answers the page's questions."""

    def __init__(self, models, dtype: str = "auto", directions: Optional[Mapping[str, str]] = None,
                 q_directions: Optional[Mapping[str, List[float]]] = None):
        self.models = models
        self.G = models.G.eval().requires_grad_(False)
        self.device = models.device
        # generate.py's rule, decided once: 'auto' -> bfloat16 on a CPU with native bf16, else float32
        self.dtype = resolve_inference_dtype(dtype, self.device) if dtype == "auto" else dtype
        inference_format(self.device, self.dtype)                  # an impossible dtype fails here
        self.direction_paths = dict(directions or {})
        self.directions = {name: get_direction(self.G, "file", path) for name, path in self.direction_paths.items()}
        self.q_directions = {k: list(v) for k, v in (q_directions or {}).items()}
        self.uploads: Dict[str, Latent] = {}
        self._tuned: Dict[str, Any] = {}                             # upload id -> its PTI-tuned generator
        self._pairs: "collections.OrderedDict[ViewParams, tuple]" = collections.OrderedDict()
        self._sharp: "collections.OrderedDict[tuple, bytes]" = collections.OrderedDict()
        self._render_lock = threading.Lock()                         # one render at a time
        self._state_lock = threading.Lock()                          # caches, tickets, uploads
        self._latest: Dict[str, int] = {}                            # slot -> newest ticket

    # ----------------------------------------------------------------------------------------
    # What the page asks.

    def info(self) -> Dict[str, Any]:
        G = self.G
        with self._state_lock:
            uploads = [{"id": uid, "name": lat.name, "src": UPLOAD_PREFIX + uid} for uid, lat in self.uploads.items()]
        return {"network": os.path.basename(self.models.network), "resolution": G.img_resolution,
                "channels": G.img_channels, "q_dim": G.q_dim, "z_dim": G.z_dim, "conditional": bool(G.c_dim),
                "dtype": self.dtype, "device": str(self.device), "encoder": self.models.encoder is not None,
                "directions": sorted(self.directions), "q_directions": self.q_directions, "uploads": uploads}

    def q_of(self, src: str, q_seed: Optional[int] = None) -> List[float]:
        """The q a source renders with by default: ``q_seed``'s when given, else seed N's or the upload's."""
        if q_seed is not None:
            return [float(v) for v in seed_to_q(q_seed, self.G.q_dim)[0]]
        if src.startswith(UPLOAD_PREFIX):
            return [float(v) for v in self._upload(src).q]
        seed = q_seed if q_seed is not None else self._seed_of(src)
        return [float(v) for v in seed_to_q(seed, self.G.q_dim)[0]]

    def add_upload(self, upload_id: str, latent: Latent) -> None:
        """Register an inverted upload as source ``upload:<id>``."""
        with self._state_lock:
            self.uploads[upload_id] = latent

    # ----------------------------------------------------------------------------------------
    # Rendering.

    def ticket(self, slot: Optional[str]) -> Optional[int]:
        """Take a place for ``slot``: later tickets for the same slot supersede this one."""
        if slot is None:
            return None
        with self._state_lock:
            self._latest[slot] = self._latest.get(slot, 0) + 1
            return self._latest[slot]

    def image_png(self, view: ViewParams, kind: str, slot: Optional[str] = None,
                  ticket: Optional[int] = None) -> bytes:
        """PNG bytes of ``kind`` ('sharp' G(w, 0) or 'degraded' G(w, q)) of ``view``. With a
        ``slot``, raises ``Superseded`` when a newer request for that slot came in first."""
        if kind not in KINDS:
            raise UserError(f"kind must be one of {', '.join(KINDS)}")
        if kind == "degraded" and self.G.q_dim == 0:
            raise UserError("this network is a plain StyleGAN2 (q_dim 0): it has no degraded image")
        if slot is not None and ticket is None:
            ticket = self.ticket(slot)
        hit = self._cached(view, kind)
        if hit is not None:
            return hit
        with self._render_lock:
            if slot is not None and not self._is_latest(slot, ticket):
                raise Superseded(slot)
            hit = self._cached(view, kind)
            if hit is None:
                sharp, degraded = self.render_pair(view)
                pair = (encode_image(sharp, ".png"), encode_image(degraded, ".png") if degraded is not None else None)
                self._store(view, pair)
                hit = pair[KINDS.index(kind)]
        return hit

    def render_pair(self, view: ViewParams) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """uint8 [H, W, C] sharp G(w, 0) and degraded G(w, q) (None for a plain network) of a view."""
        G = self.G
        q = self._view_q(view)                                     # [1, q_dim] float64/32, or None
        direction = self._direction(view)
        with torch.no_grad():
            if view.src.startswith(UPLOAD_PREFIX):
                latent = self._upload(view.src)
                w = latent.w.float()
                ws = edit_ws(w, direction, [view.strength])[0] if direction is not None else w
                gen = self._tuned_generator(view.src[len(UPLOAD_PREFIX):], latent)
                job, trunc = Job("upload", ws=ws, q=q), 1.0
            else:
                z = seed_to_z(self._seed_of(view.src), G.z_dim)
                if direction is None:                               # generate.py's own path: z -> image
                    job = Job("seed", z=z, q=q)
                else:
                    zt = torch.from_numpy(z).float().to(self.device)
                    w = G.mapping(zt, torch.zeros([1, G.c_dim], device=self.device),
                                  truncation_psi=view.trunc)[0].cpu()
                    job = Job("seed", ws=edit_ws(w, direction, [view.strength])[0], q=q)
                gen, trunc = G, view.trunc
            sharp, degraded = render_batch(gen, [job], self.device, None, trunc, None, "const", self.dtype)
        return sharp[0], (degraded[0] if degraded is not None else None)

    # ----------------------------------------------------------------------------------------
    # Helpers.

    def _view_q(self, view: ViewParams) -> Optional[np.ndarray]:
        """[1, q_dim]: the view's q after reference interpolation and Eq. 10 scaling."""
        q_dim = self.G.q_dim
        if q_dim == 0:
            return None
        if view.q is not None:
            q = np.asarray(view.q, dtype=np.float64)[None]
        elif view.q_seed is not None:
            q = seed_to_q(view.q_seed, q_dim)
        elif view.src.startswith(UPLOAD_PREFIX):
            q = self._upload(view.src).q.double().numpy()[None]
        else:
            q = seed_to_q(self._seed_of(view.src), q_dim)
        if view.ref:
            q_ref = torch.tensor([self.q_of(view.ref)], dtype=torch.float32)
            q = interpolate_q(torch.from_numpy(q).float(), q_ref, [view.alpha]).numpy()
        return q * view.scale                                       # Eq. 10 (generate.py's q * q_scale)

    def _direction(self, view: ViewParams) -> Optional[torch.Tensor]:
        if view.direction is None or view.strength == 0:
            return None
        if view.direction not in self.directions:
            raise UserError(f"unknown direction '{view.direction}' (known: {', '.join(sorted(self.directions)) or 'none'})")
        return self.directions[view.direction]

    def _seed_of(self, src: str) -> int:
        if not src.startswith(SEED_PREFIX):
            raise UserError(f"a source is '{SEED_PREFIX}N' or '{UPLOAD_PREFIX}ID', got '{src}'")
        return _seed(src[len(SEED_PREFIX):], "seed")

    def _upload(self, src: str) -> Latent:
        uid = src[len(UPLOAD_PREFIX):]
        with self._state_lock:
            latent = self.uploads.get(uid)
        if latent is None:
            raise UserError(f"no restored upload '{uid}' (upload an image and wait for its restoration)")
        return latent

    def _tuned_generator(self, uid: str, latent: Latent):
        with self._state_lock:
            gen = self._tuned.get(uid)
        if gen is None:
            gen = generator_for(self.G, latent).eval().requires_grad_(False)
            with self._state_lock:
                self._tuned[uid] = gen
        return gen

    def _is_latest(self, slot: str, ticket: Optional[int]) -> bool:
        with self._state_lock:
            return self._latest.get(slot) == ticket

    def _cached(self, view: ViewParams, kind: str) -> Optional[bytes]:
        with self._state_lock:
            if kind == "sharp" and view.sharp_key() in self._sharp:
                self._sharp.move_to_end(view.sharp_key())
                return self._sharp[view.sharp_key()]
            if view in self._pairs:
                self._pairs.move_to_end(view)
                return self._pairs[view][KINDS.index(kind)]
        return None

    def _store(self, view: ViewParams, pair: tuple) -> None:
        with self._state_lock:
            self._pairs[view] = pair
            self._sharp[view.sharp_key()] = pair[0]
            for cache in (self._pairs, self._sharp):
                while len(cache) > CACHE_SIZE:
                    cache.popitem(last=False)


def build_explorer(network: Optional[str] = None, encoder: Optional[str] = None, device: Any = "auto",
                   dtype: str = "auto", directions: Optional[Mapping[str, str]] = None) -> Explorer:
    """An ``Explorer`` on any network file the loaders accept (None: the shipped model and its
    encoder and boundaries; ``inversion.models.load_models``), with ``directions`` (name -> .npy)
    added to the shipped ones and the model card's named q directions (``load_q_directions``)."""
    models = load_models(network, encoder, device, require_qc=False)
    return Explorer(models, dtype=dtype, directions=direction_files(models.network, directions),
                    q_directions=load_q_directions(models.network, models.G.q_dim))
