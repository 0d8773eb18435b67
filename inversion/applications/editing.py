"""Semantic editing of (inverted) images with the quality code kept (QC-StyleGAN, Sec. 4.5).

For an image with codes (w, q) and a direction Δw ``[num_ws, w_dim]`` (``directions``), strength
α renders the edited **degraded** image G_θ(w + αΔw, q), whose degradation is the input's, and
the edited sharp image G_θ(w + αΔw, 0). θ is the image's PTI-tuned generator when its inversion
carries a delta.

Outputs per image, under ``OUTDIR/<name>/``: ``degraded_<α>.png``, ``sharp_<α>.png`` (α written
as ``+1.50``) and ``grid.png`` (top row degraded, bottom row sharp, one column per strength); one
line per image and strength in ``OUTDIR/edit.jsonl`` with the degradation residual statistics of
that render, so a drift of the degradation under the edit is visible in numbers.
"""
from __future__ import annotations

import os
import sys
from typing import Dict, List, Optional, Sequence

import torch

from dnnlib.image_io import make_grid, to_uint8_hwc, write_image
from dnnlib.util import UserError, append_jsonl, read_jsonl
from torch_utils.misc import assert_shape

from .latents import Latent, generator_for, render

RECORDS_FILE = "edit.jsonl"


def edit_ws(w: torch.Tensor, direction: torch.Tensor, strengths: Sequence[float]) -> torch.Tensor:
    """w [num_ws, w_dim], direction [num_ws, w_dim] -> [S, num_ws, w_dim]: w + α Δw per strength."""
    assert_shape(direction, list(w.shape))
    alphas = torch.as_tensor(list(strengths), dtype=w.dtype).view(-1, 1, 1)
    return w.unsqueeze(0) + alphas * direction.to(w.dtype).unsqueeze(0)


def residual_stats(degraded: torch.Tensor, sharp: torch.Tensor) -> Dict[str, List[float]]:
    """Per-channel mean and std of the degradation residual G(w, q) - G(w, 0), the statistics the
    release's PTI keeps close. degraded, sharp: [C, H, W] or [N, C, H, W] (stats per image)."""
    r = (degraded - sharp).float()
    r = r.flatten(-2)                                                   # [..., C, H*W]
    return {"mean": r.mean(-1).tolist(), "std": r.std(-1).tolist()}


def edit_latent(G, latent: Latent, direction: torch.Tensor, strengths: Sequence[float], device="cpu"):
    """Render one image's edits. Returns (sharp [S, C, H, W], degraded [S, C, H, W]) in [-1, 1]."""
    ws = edit_ws(latent.w.float(), direction.float(), strengths)       # [S, num_ws, w_dim]
    q = latent.q.float().unsqueeze(0).repeat(len(strengths), 1)        # q kept: [S, q_dim]
    return render(generator_for(G, latent), ws, q, device=device)


def strength_tag(alpha: float) -> str:
    return f"{alpha:+.2f}"


def edit_latents(G, latents: Sequence[Latent], direction: torch.Tensor, strengths: Sequence[float],
                 outdir: str, device="cpu", direction_info: Optional[dict] = None, progress: bool = True,
                 log=None) -> dict:
    """Edit every latent with every strength and write the files described in the module doc.
    Images whose grid exists (and records are in ``edit.jsonl``) are skipped: rerun resumes."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if G.q_dim == 0:
        raise UserError("editing with the quality code kept needs a QC generator (q_dim > 0)")
    strengths = [float(a) for a in strengths]
    if not strengths:
        raise UserError("no strengths given")
    os.makedirs(outdir, exist_ok=True)
    records_path = os.path.join(outdir, RECORDS_FILE)
    done = {r["name"] for r in read_jsonl(records_path) if r.get("strength") == strengths[-1]}
    summary = {"images": len(latents), "written": 0, "skipped": 0}
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(latents), desc="edit", unit="img", file=sys.stderr)
    for lat in latents:
        folder = os.path.join(outdir, lat.name)
        if lat.name in done and os.path.isfile(os.path.join(folder, "grid.png")):
            summary["skipped"] += 1
        else:
            sharp, deg = edit_latent(G, lat, direction, strengths, device=device)
            s8, d8 = to_uint8_hwc(sharp), to_uint8_hwc(deg)
            for i, a in enumerate(strengths):
                write_image(os.path.join(folder, f"degraded_{strength_tag(a)}.png"), d8[i])
                write_image(os.path.join(folder, f"sharp_{strength_tag(a)}.png"), s8[i])
                stats = residual_stats(deg[i], sharp[i])
                append_jsonl(records_path, {"name": lat.name, "strength": a, "source": lat.source,
                                            "residual_mean": stats["mean"], "residual_std": stats["std"],
                                            **({"direction": direction_info} if direction_info else {})})
            write_image(os.path.join(folder, "grid.png"), make_grid(list(d8) + list(s8), len(strengths)))
            summary["written"] += 1
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return summary
