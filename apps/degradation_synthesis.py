"""Degradation synthesis with the quality code (QC-StyleGAN, Sec. 4.4): keep an image's content
code w and change only q.

* novel: a new q from a seed (``seed_to_q``, the QC convention);
* transfer: the q of a reference image's inversion, copied exactly;
* interpolate: ``q(α) = (1 - α) q_source + α q_reference`` for α in [0, 1] (α = 0 is the
  source's own degradation, α = 1 the transfer);
* scale: ``q(s) = s q_source`` (s = 0 is the sharp image, s = 1 the source's degradation).

Every render is G_θ(w_source, q) with θ the source's PTI-tuned generator when it has a delta.
``synthesize_folder`` writes, per source, ``OUTDIR/<name>/<mode>_<value>.png`` and a grid row
(first column the sharp image G(w, 0), then one column per q), ``OUTDIR/grid.png`` stacking all
rows, and one line per render in ``OUTDIR/degradation.jsonl`` holding the exact q used.
"""
from __future__ import annotations

import os
import sys
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from dnnlib.image_io import make_grid, to_uint8_hwc, write_image
from dnnlib.util import UserError, append_jsonl
from torch_utils.misc import assert_shape
from training.generation import seed_to_q

from .latents import Latent, generator_for, load_latents, render

RECORDS_FILE = "degradation.jsonl"
MODES = ("novel", "transfer", "interpolate", "scale")


def novel_q(q_dim: int, seeds: Sequence[int]) -> torch.Tensor:
    """[S, q_dim]: q for each seed (``numpy.random.RandomState(seed).randn``)."""
    return torch.from_numpy(np.concatenate([seed_to_q(s, q_dim) for s in seeds])).float()


def transfer_q(reference_q: torch.Tensor) -> torch.Tensor:
    """[1, q_dim]: the reference's q, unchanged."""
    return reference_q.reshape(1, -1).clone()


def interpolate_q(q0: torch.Tensor, q1: torch.Tensor, alphas: Sequence[float]) -> torch.Tensor:
    """[S, q_dim]: (1 - α) q0 + α q1; α = 0 and 1 return q0 and q1 exactly."""
    q0, q1 = q0.reshape(1, -1).float(), q1.reshape(1, -1).float()
    assert_shape(q1, list(q0.shape))
    a = torch.as_tensor(list(alphas), dtype=torch.float32).view(-1, 1)
    bad = [float(v) for v in a.view(-1) if not 0 <= float(v) <= 1]
    if bad:
        raise UserError(f"interpolation factors must be in [0, 1], got {bad}")
    out = (1 - a) * q0 + a * q1
    out[a.view(-1) == 0] = q0                   # exact endpoints, whatever the rounding
    out[a.view(-1) == 1] = q1
    return out


def scale_q(q: torch.Tensor, factors: Sequence[float]) -> torch.Tensor:
    """[S, q_dim]: s q for each factor s."""
    return torch.as_tensor(list(factors), dtype=torch.float32).view(-1, 1) * q.reshape(1, -1).float()


def q_variants(source: Latent, mode: str, values: Sequence[float] = (), reference: Optional[Latent] = None,
               seeds: Sequence[int] = ()) -> Tuple[torch.Tensor, List[str]]:
    """The q codes of one source for a mode, with a tag per code. -> ([S, q_dim], [S] tags)."""
    if mode == "novel":
        if not seeds:
            raise UserError("novel degradations need --q-seeds")
        return novel_q(source.q.numel(), seeds), [f"novel_{s:04d}" for s in seeds]
    if mode in ("transfer", "interpolate") and reference is None:
        raise UserError(f"{mode} needs --reference")
    if mode == "transfer":
        return transfer_q(reference.q), [f"transfer_{_safe(reference.name)}"]
    if mode == "interpolate":
        if not values:
            raise UserError("interpolation needs --alphas")
        return interpolate_q(source.q, reference.q, values), [f"alpha_{a:.2f}" for a in values]
    if mode == "scale":
        if not values:
            raise UserError("scaling needs --scales")
        return scale_q(source.q, values), [f"scale_{s:.2f}" for s in values]
    raise UserError(f"unknown degradation mode '{mode}' (expected one of {', '.join(MODES)})")


def _safe(name: str) -> str:
    return name.replace("/", "_")


def synthesize(G, source: Latent, qs: torch.Tensor, device="cpu"):
    """G_θ(w_source, q) for each q [S, q_dim]. Returns (sharp [1, C, H, W], degraded [S, C, H, W])."""
    assert_shape(qs, [None, G.q_dim])
    ws = source.w.float().unsqueeze(0).repeat(len(qs), 1, 1)
    sharp, deg = render(generator_for(G, source), ws, qs, device=device)
    return sharp[:1], deg


def synthesize_folder(G, sources: Sequence[Latent], mode: str, outdir: str, values: Sequence[float] = (),
                      reference: Optional[Latent] = None, seeds: Sequence[int] = (), device="cpu",
                      progress: bool = True) -> dict:
    """Render every source's q variants and write the files described in the module doc."""
    if G.q_dim == 0:
        raise UserError("degradation synthesis needs a QC generator (q_dim > 0)")
    os.makedirs(outdir, exist_ok=True)
    rows = []
    records_path = os.path.join(outdir, RECORDS_FILE)
    it = sources
    if progress:
        it = tqdm(sources, desc=mode, unit="img", file=sys.stderr)
    for src in it:
        qs, tags = q_variants(src, mode, values, reference, seeds)
        sharp, deg = synthesize(G, src, qs, device=device)
        s8, d8 = to_uint8_hwc(sharp), to_uint8_hwc(deg)
        folder = os.path.join(outdir, src.name)
        write_image(os.path.join(folder, "sharp.png"), s8[0])
        for i, tag in enumerate(tags):
            write_image(os.path.join(folder, f"{tag}.png"), d8[i])
            append_jsonl(records_path, {"name": src.name, "mode": mode, "tag": tag, "file": f"{src.name}/{tag}.png",
                                        "value": (list(values)[i] if mode in ("interpolate", "scale") else
                                                  int(seeds[i]) if mode == "novel" else None),
                                        "source": src.source, "reference": reference.source if reference else None,
                                        "q": qs[i].tolist()})
        row = [s8[0]] + list(d8)
        write_image(os.path.join(folder, "grid.png"), make_grid(row, len(row)))
        rows.append(row)
    if rows and all(len(r) == len(rows[0]) for r in rows):
        write_image(os.path.join(outdir, "grid.png"), make_grid([im for r in rows for im in r], len(rows[0])))
    return {"images": len(sources), "renders": sum(len(r) - 1 for r in rows)}


def synthesize_degradations(models, source: str, outdir: str, reference: Optional[str] = None,
                            alphas: Optional[Sequence[float]] = None, q_seeds: Optional[Sequence[int]] = None,
                            scales: Optional[Sequence[float]] = None, progress: bool = True) -> Tuple[str, dict]:
    """The library of ``edit.py degradation``: the latents of ``source`` (an inversions folder,
    one image's folder or ``seeds:RANGE``) with their q interpolated towards ``reference``'s
    (``alphas``), novel (``q_seeds``), scaled (``scales``) or transferred (``reference`` alone).
    ``models``: ``inversion.models.Models``. Returns (mode, ``synthesize_folder``'s counts)."""
    G, device = models.G, models.device
    picked = [k for k, v in (("alphas", alphas), ("q-seeds", q_seeds), ("scales", scales)) if v is not None]
    if len(picked) > 1:
        raise UserError(f"give only one of --alphas, --q-seeds, --scales (got {', '.join(picked)})")
    ref = None
    if reference is not None:
        refs = load_latents(G, reference, device=device)
        if len(refs) != 1:
            raise UserError(f"--reference must be one image, found {len(refs)} under {reference}")
        ref = refs[0]
    if alphas is not None:
        mode, values, seeds = "interpolate", list(alphas), ()
    elif q_seeds is not None:
        mode, values, seeds = "novel", (), list(q_seeds)
    elif scales is not None:
        mode, values, seeds = "scale", list(scales), ()
    elif ref is not None:
        mode, values, seeds = "transfer", (), ()
    else:
        raise UserError("say what to do: --reference (transfer), --reference --alphas, --q-seeds or --scales")
    sources = load_latents(G, source, device=device)
    return mode, synthesize_folder(G, sources, mode, outdir, values=values, reference=ref, seeds=seeds,
                                   device=device, progress=progress)
