"""Semantic editing of (inverted) images with the quality code kept (QC-StyleGAN, Sec. 4.5).

For an image with codes (w, q) and a direction Δw ``[num_ws, w_dim]`` (``directions``), strength
α renders the edited **degraded** image G_θ(w + αΔw, q), whose degradation is the input's, and
the edited sharp image G_θ(w + αΔw, 0). θ is the image's PTI-tuned generator when its inversion
carries a delta.

The release's edit (``editing/edit.py``, InterfaceGAN's ``linear_interpolate``) *sets* the signed
distance to the boundary instead: w_k = w + (d_k - w·n) n, d_k in linspace(-3, 3, 10), rendered at
q and at 0; ``mode='set-distance'`` does that (for every image, where the release edits only its
first).

Outputs per image, under ``OUTDIR/<name>/``: ``degraded_<α>.png``, ``sharp_<α>.png`` (α written
as ``+1.50``) and ``grid.png`` (top row degraded, bottom row sharp, one column per strength); one
line per image and strength in ``OUTDIR/edit.jsonl`` with the degradation residual statistics of
that render, so a drift of the degradation under the edit is visible in numbers.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from dnnlib import image_io
from dnnlib.image_io import list_sources, make_grid, to_uint8_hwc, write_image
from dnnlib.util import UserError, append_jsonl, read_jsonl
from faces.pipeline import FacePipeline, load_face_info, paste_recorded
from torch_utils.misc import assert_shape

from inversion.config import AppOptions, InversionConfig
from inversion.models import Models
from inversion.pti import residual_stats
from .invert_folder import InvertOptions
from .store import INVERSIONS_DIR
from .latents import Latent, find_inversions, generator_for, latents_from_images, load_latents, render
from .photos import with_alpha

RECORDS_FILE = "edit.jsonl"
EDIT_MODES = ("add", "set-distance")
OFFICIAL_DISTANCES = tuple(float(d) for d in np.linspace(-3.0, 3.0, 10))   # the release's edit.py: d_k


def edit_ws(w: torch.Tensor, direction: torch.Tensor, strengths: Sequence[float], mode: str = "add") -> torch.Tensor:
    """w [num_ws, w_dim], direction [num_ws, w_dim] -> [S, num_ws, w_dim], one per strength:

    * ``add``: w + α Δw (moves every image by the same amount);
    * ``set-distance``: the release's InterfaceGAN edit, each row put at signed distance α from the
      boundary through the origin with unit normal n (the direction's row):
      w + (α - w·n) n, so every image ends at the same distance whatever its start (rows where the
      direction is zero are kept).
    """
    assert_shape(direction, list(w.shape))
    if mode not in EDIT_MODES:
        raise UserError(f"unknown edit mode '{mode}' (choose from {', '.join(EDIT_MODES)})")
    alphas = torch.as_tensor(list(strengths), dtype=w.dtype).view(-1, 1, 1)      # [S, 1, 1]
    n = direction.to(w.dtype).unsqueeze(0)                                        # [1, num_ws, w_dim]
    if mode == "add":
        return w.unsqueeze(0) + alphas * n
    dist = (w * direction.to(w.dtype)).sum(dim=-1, keepdim=True).unsqueeze(0)    # w·n: [1, num_ws, 1]
    return w.unsqueeze(0) + (alphas - dist) * n


def residual_record(sharp: torch.Tensor, degraded: torch.Tensor) -> Dict[str, List[float]]:
    """``pti.residual_stats`` of a render as plain lists: sharp, degraded [C, H, W] or [N, C, H, W]."""
    mean, std = residual_stats(sharp.float(), degraded.float())
    return {"mean": mean.tolist(), "std": std.tolist()}


def edit_latent(G, latent: Latent, direction: torch.Tensor, strengths: Sequence[float], device="cpu",
                mode: str = "add"):
    """Render one image's edits. Returns (sharp [S, C, H, W], degraded [S, C, H, W]) in [-1, 1]."""
    ws = edit_ws(latent.w.float(), direction.float(), strengths, mode)  # [S, num_ws, w_dim]
    q = latent.q.float().unsqueeze(0).repeat(len(strengths), 1)        # q kept: [S, q_dim]
    return render(generator_for(G, latent), ws, q, device=device)


def strength_tag(alpha: float) -> str:
    return f"{alpha:+.2f}"


def edit_latents(G, latents: Sequence[Latent], direction: torch.Tensor, strengths: Sequence[float],
                 outdir: str, device="cpu", direction_info: Optional[dict] = None, progress: bool = True,
                 log=None, mode: str = "add") -> dict:
    """Edit every latent with every strength and write the files described in the module doc.
    Images whose grid exists (and records are in ``edit.jsonl``) are skipped: rerun resumes.
    ``mode``: ``add`` (strengths are α of w + αΔw) or ``set-distance`` (strengths are the signed
    distances the release's edit sets; ``edit_ws``)."""
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
    bar = tqdm(total=len(latents), desc="edit", unit="img", file=sys.stderr) if progress else None
    for lat in latents:
        folder = os.path.join(outdir, lat.name)
        if lat.name in done and os.path.isfile(os.path.join(folder, "grid.png")):
            summary["skipped"] += 1
        else:
            sharp, deg = edit_latent(G, lat, direction, strengths, device=device, mode=mode)
            s8, d8 = to_uint8_hwc(sharp), to_uint8_hwc(deg)
            for i, a in enumerate(strengths):
                write_image(os.path.join(folder, f"degraded_{strength_tag(a)}.png"), d8[i])
                write_image(os.path.join(folder, f"sharp_{strength_tag(a)}.png"), s8[i])
                stats = residual_record(sharp[i], deg[i])
                append_jsonl(records_path, {"name": lat.name, "strength": a, "mode": mode, "source": lat.source,
                                            "residual_mean": stats["mean"], "residual_std": stats["std"],
                                            **({"direction": direction_info} if direction_info else {})})
            write_image(os.path.join(folder, "grid.png"), make_grid(list(d8) + list(s8), len(strengths)))
            summary["written"] += 1
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return summary


# ---------------------------------------------------------------------------------------------
# edit.py: latents from a folder of inversions or of images, edited; photos' faces pasted back.

@dataclasses.dataclass
class EditOptions(AppOptions):
    """What ``edit_folder`` does (``edit.py edit``'s options)."""
    direction: torch.Tensor                          # Δw [num_ws, w_dim] (directions.pick_direction)
    strengths: Sequence[float]                       # α of w + αΔw (add), or the distances set (set-distance)
    mode: str = "add"                                # EDIT_MODES: 'add' | 'set-distance' (edit_ws)
    direction_info: Optional[dict] = None            # what the direction is, for edit.jsonl
    from_inversions: bool = False                    # the input is inversions (a folder, one image's folder, the
                                                     # release's pSp outputs, seeds:RANGE); else images, inverted first
    inversion: InversionConfig = dataclasses.field(default_factory=InversionConfig)   # for images: every setting
    face_pipeline: Optional[FacePipeline] = None     # images: whole photos (faces.pipeline); None = aligned crops
    progress: bool = True                            # progress bars on stderr
    log: Optional[Callable[[str], None]] = None      # notes; None: stderr


def edit_folder(models: Models, input_path: str, outdir: str, options: EditOptions) -> dict:
    """The library of ``edit.py edit``: the latents of ``input_path`` (with
    ``options.from_inversions``: an inversions folder, one image's folder, the release's pSp
    outputs or ``seeds:RANGE``; else images, inverted first into ``OUTDIR/inversions`` with
    ``options.inversion``, resumable, whole photos by ``options.face_pipeline``), edited by
    ``edit_latents`` (``options.mode``: ``add`` or ``set-distance``); each photo's edited faces are
    pasted back into ``OUTDIR/photos``. ``models``: ``inversion.models.Models`` (G, encoder,
    device). Returns ``edit_latents``' counts and ``pasted``."""
    opts = options
    inv_dir = os.path.join(outdir, INVERSIONS_DIR)
    if opts.from_inversions:
        latents = load_latents(models.G, input_path, device=models.device)
    else:
        latents = latents_from_images(models, input_path, inv_dir,
                                      InvertOptions(inversion=opts.inversion, face_pipeline=opts.face_pipeline,
                                                    progress=opts.progress, log=opts.log))
    summary = edit_latents(models.G, latents, opts.direction, opts.strengths, outdir, device=models.device,
                           direction_info=opts.direction_info, progress=opts.progress, log=opts.log, mode=opts.mode)
    summary["pasted"] = 0 if opts.from_inversions else \
        paste_edits(inv_dir, outdir, list_sources(input_path, outdir)[0], opts.strengths)
    return summary


def paste_edits(inversions_dir: str, edit_dir: str, root: str, strengths: Sequence[float],
                kind: str = "degraded") -> int:
    """For every photo whose faces were inverted with ``face.json`` under ``inversions_dir``, paste
    each face's ``EDIT_DIR/<face>/<kind>_<α>.png`` back: ``EDIT_DIR/photos/<photo>_<α>.png`` (alpha
    kept). Returns the number of photos written."""
    groups: Dict[str, List[Tuple[str, dict]]] = {}
    for name in find_inversions(inversions_dir) if os.path.isdir(inversions_dir) else []:
        info = load_face_info(os.path.join(inversions_dir, name))
        if info is not None:
            groups.setdefault(info["source"], []).append((name, info))
    for src, faces in sorted(groups.items()):
        img, alpha = image_io.read_image_alpha(os.path.join(root, src))
        stem = os.path.splitext(src)[0]
        for a in strengths:
            crops = [image_io.read_image(os.path.join(edit_dir, n, f"{kind}_{strength_tag(a)}.png")) for n, _ in faces]
            whole = paste_recorded(img, [i for _, i in faces], crops)
            image_io.write_image(os.path.join(edit_dir, "photos", f"{stem}_{strength_tag(a)}.png"), with_alpha(whole, alpha))
    return len(groups)
