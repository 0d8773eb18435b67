"""The library entry points: ``invert_images``, ``InversionResult`` (with its ``InversionStats``),
``save_inversion`` / ``load_inversion`` (the per-image folder that ``invert.py run`` writes)."""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from dnnlib.image_io import as_hwc, from_uint8_hwc, match_channels, read_image, resize, to_uint8_hwc, write_image
from dnnlib.util import UserError, atomic_write
from metrics.image_metrics import psnr
from torch_utils.misc import assert_shape, keep_freed_cpu_memory

from .config import InversionConfig
from .delta import delta_nbytes, load_delta, save_delta
from .encoders import encode_images
from .objectives import PerceptualLoss, ReconstructionLoss
from .pti import PivotalTuner, TuneResult, optimize_latents

RESULT_FILES = dict(w="w.npy", q="q.npy", delta="delta.pt", reconstruction="reconstruction.png",
                    sharp="sharp.png", result="result.json")


@dataclasses.dataclass(frozen=True)
class InversionStats:
    """What one inversion measured: its ``result.json`` (besides the name), and the fields that
    ``results.jsonl``, ``restore.jsonl`` and whole photos' face records take from it. Declared in
    the order ``record()`` writes them; a field an older result file lacks is None."""
    psnr_stage1: Optional[float] = None       # dB: stage-1 render G(w, q) vs the input, uint8 at the model's resolution
    psnr: Optional[float] = None              # dB: the final reconstruction G_tuned(w, q) vs the input
    perceptual: Optional[float] = None        # perceptual term of the reconstruction (loss: perceptual_loss)
    perceptual_loss: Optional[str] = None     # which perceptual loss ran (objectives.PerceptualLoss.name)
    lpips: Optional[float] = None             # = perceptual when real LPIPS ran, else None
    pti_steps: Optional[int] = None           # PTI steps the image took (it may stop early)
    seconds_stage2: Optional[float] = None    # wall time of the batch's PTI steps, shared among the images of each step
    delta_bytes: Optional[int] = None         # bytes of the stored delta (0 without one)
    delta_encoding: Optional[str] = None      # 'fp16' | 'lowrank:R'; None: no delta
    w_steps: Optional[int] = None             # stage-1 optimisation steps
    seconds_stage1: Optional[float] = None    # stage-1 wall time of the batch per image
    input_size: Optional[Tuple[int, int]] = None   # [H, W] of the input before resizing
    encoder: Optional[bool] = None            # stage 1 started from the encoder's (w, q)
    batch: Optional[int] = None               # images inverted together

    @property
    def seconds(self) -> Optional[float]:
        """Both stages' seconds (None when a file lacks one)."""
        if self.seconds_stage1 is None or self.seconds_stage2 is None:
            return None
        return self.seconds_stage1 + self.seconds_stage2

    def record(self, *names: str) -> Dict[str, Any]:
        """Plain data for JSON: every field in declaration order (``result.json``), or the named
        fields (and ``seconds``) in the order given (the records of the folder jobs)."""
        return {n: getattr(self, n) for n in (names or STATS_FIELDS)}

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> "InversionStats":
        """The stats of a ``result.json`` of any version: missing fields None, unknown keys ignored."""
        known = {k: rec[k] for k in STATS_FIELDS if k in rec}
        if known.get("input_size") is not None:
            known["input_size"] = tuple(known["input_size"])
        return cls(**known)


STATS_FIELDS: Tuple[str, ...] = tuple(f.name for f in dataclasses.fields(InversionStats))


@dataclasses.dataclass
class InversionResult:
    """One inverted image.

    w:      [num_ws, w_dim] float32 tensor (CPU), the pivot.
    q:      [q_dim] float32 tensor (CPU); empty for a plain StyleGAN2 generator.
    delta:  the tuned synthesis tensors as a compact delta (``inversion.delta``), or None when
            stage 2 did not run; ``apply_delta(G, delta)`` gives the tuned generator.
    stats:  ``InversionStats`` (PSNR of both stages, perceptual terms, steps, seconds, delta
            size, input size, batch).
    reconstruction: uint8 [R, R, C] = G_tuned(w, q) (the degraded render), when produced.
    sharp:  uint8 [R, R, C] = G_tuned(w, 0), when produced.
    """
    w: torch.Tensor
    q: torch.Tensor
    delta: Optional[dict]
    stats: InversionStats
    reconstruction: Optional[np.ndarray] = None
    sharp: Optional[np.ndarray] = None
    name: Optional[str] = None


# ---------------------------------------------------------------------------------------------
# Images.

def prepare_image(image: np.ndarray, resolution: int, channels: int) -> np.ndarray:
    """uint8 [H, W, 3] (or [H, W] / [H, W, 1]) -> uint8 [R, R, channels].

    Images whose size differs from the model's are resized to R x R with Lanczos filtering (the
    aspect ratio is not kept: crop first if that matters); grey images are replicated to RGB and
    RGB becomes its BT.601 luma for a one-channel model (``image_io.match_channels``).
    """
    return np.ascontiguousarray(match_channels(resize(as_hwc(image), resolution, resolution), channels))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(psnr(a, b))


# ---------------------------------------------------------------------------------------------
# Inversion.

def invert_images(G: nn.Module, images: Sequence[np.ndarray], encoder: Optional[nn.Module] = None,
                  config: Optional[InversionConfig] = None, device: Any = None, progress: bool = True,
                  names: Optional[Sequence[str]] = None,
                  on_result: Optional[Callable[[int, InversionResult], None]] = None,
                  pivots: Optional[Sequence[tuple]] = None,
                  on_step: Optional[Callable[[str, int, int], None]] = None,
                  **overrides) -> List[InversionResult]:
    """Invert uint8 RGB images ``[H, W, 3]`` (any size; resized to the model's) into ``G``
    (Sec. 4.2 inversion: stage 1 pivot, stage 2 PTI).

    ``config`` (``InversionConfig``, default preset ``ours``; keyword ``overrides`` such as
    ``pti_steps=0`` replace its fields) holds every setting. Images go in batches of
    ``config.batch_for(device)``: stage 1 is the encoder's (w, q) (or the given ``pivots``: one
    ``(ws [num_ws, w_dim], q [q_dim])`` per image, e.g. the release's pSp codes,
    ``inversion.official_outputs``), refined by ``config.stage1_steps(...)`` optimisation steps;
    stage 2 is up to ``pti_steps`` of pivotal tuning (0 = skip; the result's delta is then None),
    each image of the batch with its own tuned tensors and early stop. An image's result does not
    depend on its batch (up to float rounding). ``on_result(i, result)`` is called as soon as image
    ``i`` is finished (so callers can write it at once); ``on_step(stage, k, steps)`` after each
    optimisation step of a batch (stage 'stage1' or 'pti'). ``G`` is not modified. Returns one
    ``InversionResult`` per image, in order.

    Memory: a batch holds ``batch_size`` x 4 float32 copies of the tuned tensors (values,
    gradients, two Adam moments) besides the activations; see docs/inversion.md.
    """
    if len(images) == 0:
        return []
    dev = torch.device(device) if device is not None else next(G.parameters()).device
    if dev.type == "cpu":
        keep_freed_cpu_memory()          # big per-step tensors: no page faults at every allocation
    opts = (config or InversionConfig()).replace(**overrides)
    if pivots is not None and len(pivots) != len(images):
        raise UserError(f"{len(pivots)} pivots for {len(images)} images")
    batch_size = opts.batch_for(dev)
    w_steps, pti_steps = opts.stage1_steps(encoder is not None or pivots is not None), int(opts.pti_steps)
    G = copy.deepcopy(G).eval().requires_grad_(False).to(dev)      # frozen base, never the caller's
    if encoder is not None:
        encoder.check_generator(G)
        encoder = encoder.eval().to(dev)
    perc = PerceptualLoss(opts.perceptual, device=dev)
    loss_fn = ReconstructionLoss(perc.to(dev), opts.l2_weight, opts.perceptual_weight)
    tuner = PivotalTuner(G, loss_fn, opts) if pti_steps > 0 else None
    names = list(names) if names is not None else [None] * len(images)

    results: List[Optional[InversionResult]] = [None] * len(images)
    bar = tqdm(total=len(images), desc="invert", unit="img", disable=not progress, leave=False)
    for lo in range(0, len(images), batch_size):
        batch = images[lo:lo + batch_size]
        sizes = [list(np.shape(im)[:2]) for im in batch]
        prepared = [prepare_image(im, G.img_resolution, G.img_channels) for im in batch]
        target = from_uint8_hwc(prepared, device=dev)
        t0 = time.perf_counter()
        ws_init = q_init = None
        if pivots is not None:
            ws_init = torch.stack([torch.as_tensor(p[0]).float() for p in pivots[lo:lo + batch_size]]).to(dev)
            q_init = torch.stack([torch.as_tensor(p[1]).float() for p in pivots[lo:lo + batch_size]]).to(dev)
            assert_shape(ws_init, [len(batch), G.num_ws, G.w_dim])       # [B, num_ws, w_dim]
            assert_shape(q_init, [len(batch), G.q_dim])                   # [B, q_dim]
        elif encoder is not None:
            with torch.no_grad():
                ws_init, q_init = encode_images(encoder, batch, target)   # the official pSp encoder reads the originals
        ws, q = optimize_latents(G, target, loss_fn, w_steps, opts, ws_init, q_init, on_step=on_step)
        with torch.no_grad():
            stage1 = to_uint8_hwc(G.synthesis(ws, q, noise_mode="const"))
        sec1 = (time.perf_counter() - t0) / len(batch)

        def done(i: int, out: TuneResult) -> None:
            qi = None if q is None else q[i:i + 1]
            res = _result(ws[i:i + 1], qi, target[i:i + 1], prepared[i], stage1[i], out, perc,
                          dict(w_steps=w_steps, seconds_stage1=sec1, input_size=tuple(sizes[i]),
                               encoder=encoder is not None, batch=len(batch)))
            res.name = names[lo + i]
            results[lo + i] = res
            bar.update(1)
            if on_result is not None:
                on_result(lo + i, res)

        if tuner is not None:
            tuner.tune_batch(ws, q, target, pti_steps, on_done=done, on_step=on_step)
        else:
            t0 = time.perf_counter()
            with torch.no_grad():
                if q is not None:
                    sharp, degraded = G.synthesis(ws, q, noise_mode="const", pair=True)
                else:
                    sharp = degraded = G.synthesis(ws, None, noise_mode="const")
            sec2 = (time.perf_counter() - t0) / len(batch)
            for i in range(len(batch)):
                done(i, TuneResult(None, degraded[i:i + 1], sharp[i:i + 1], 0, seconds=sec2))
    bar.close()
    return results


def _result(ws, q, target, prepared: np.ndarray, stage1: np.ndarray, out: TuneResult,
            perc: PerceptualLoss, batch_stats: Dict[str, Any]) -> InversionResult:
    """One image's ``InversionResult`` from its stage-2 output (``PivotalTuner.tune_batch``);
    ``batch_stats``: the stage-1 and batch fields of its ``InversionStats``."""
    degraded, sharp, delta = out.degraded, out.sharp, out.delta
    if sharp is None:
        sharp = degraded
    with torch.no_grad():
        p = float(perc(degraded, target)[0])
    recon = to_uint8_hwc(degraded)[0]
    stats = InversionStats(psnr_stage1=_psnr(stage1, prepared), psnr=_psnr(recon, prepared), perceptual=p,
                           perceptual_loss=perc.name, lpips=p if perc.kind == "lpips" else None,
                           pti_steps=out.steps, seconds_stage2=out.seconds, delta_bytes=delta_nbytes(delta),
                           delta_encoding=delta["encoding"] if delta else None, **batch_stats)
    q_out = q[0].detach().cpu().float() if q is not None else torch.zeros([0])
    return InversionResult(w=ws[0].detach().cpu().float(), q=q_out, delta=delta, stats=stats,
                           reconstruction=recon, sharp=to_uint8_hwc(sharp)[0])


# ---------------------------------------------------------------------------------------------
# Files.

def save_inversion(folder: str, result: InversionResult) -> None:
    """Write one result: w.npy, q.npy, delta.pt (when tuned), reconstruction.png, sharp.png and
    result.json (stats, name). result.json is written last: its presence marks a finished image."""
    os.makedirs(folder, exist_ok=True)
    for key, arr in (("w", result.w), ("q", result.q)):
        with atomic_write(os.path.join(folder, RESULT_FILES[key]), "wb") as f:
            np.save(f, arr.numpy().astype(np.float32))
    delta_path = os.path.join(folder, RESULT_FILES["delta"])
    if result.delta is not None:
        save_delta(delta_path, result.delta)
    elif os.path.isfile(delta_path):
        os.remove(delta_path)
    for key in ("reconstruction", "sharp"):
        img = getattr(result, key)
        if img is not None:
            write_image(os.path.join(folder, RESULT_FILES[key]), img if img.shape[2] == 3 else img[:, :, 0])
    with atomic_write(os.path.join(folder, RESULT_FILES["result"]), "w") as f:
        json.dump({"name": result.name, **result.stats.record()}, f, indent=2)


def load_inversion(folder: str) -> InversionResult:
    """Read a folder written by ``save_inversion`` / ``invert.py run`` (``DIR/<name>``; result
    files of earlier versions too: ``InversionStats.from_record``)."""
    meta_path = os.path.join(folder, RESULT_FILES["result"])
    if not os.path.isfile(meta_path):
        raise UserError(f"{folder}: no finished inversion here ({RESULT_FILES['result']} missing)")
    with open(meta_path, "r", encoding="utf-8") as f:
        meta = json.load(f)
    name, stats = meta.get("name"), InversionStats.from_record(meta)
    w = torch.from_numpy(np.load(os.path.join(folder, RESULT_FILES["w"]), allow_pickle=False))
    q = torch.from_numpy(np.load(os.path.join(folder, RESULT_FILES["q"]), allow_pickle=False))
    delta_path = os.path.join(folder, RESULT_FILES["delta"])
    delta = load_delta(delta_path) if os.path.isfile(delta_path) else None
    images = {}
    for key in ("reconstruction", "sharp"):
        path = os.path.join(folder, RESULT_FILES[key])
        if os.path.isfile(path):
            images[key] = read_image(path)
    return InversionResult(w=w, q=q, delta=delta, stats=stats, name=name, **images)
