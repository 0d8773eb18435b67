"""Where the codes of an application come from: inversions on disk or generated samples.

A ``Latent`` is one image's (w, q) and, for PTI inversions, its generator delta. Sources:

* an ``invert.py run`` output folder: every sub-folder holding ``w.npy`` (its path relative to
  the folder is the name, e.g. ``a/0001``), or one such sub-folder;
* the official release's pSp output folder (``latent/NNNN.pt`` + ``org/``, read by
  ``inversion.official_outputs``): each image's pSp pivot, no generator delta, named ``0000``...;
* ``seeds:0-3``: generated samples, z and q from the seeds (``training.generation`` conventions),
  w = mapping(z) without truncation;
* images (``latents_from_images``): inverted first with ``invert.py run``'s resumable folder loop.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, List, Optional

import torch

from dnnlib.util import UserError, parse_range
from training.generation import inference_format, seed_to_q, seed_to_z

from inversion.api import load_inversion
from inversion.delta import apply_delta
from inversion.models import Models
from .invert_folder import InvertOptions, invert_folder
from inversion.official_outputs import is_official_outputs, pivot_ws, read_official_outputs

SEEDS_PREFIX = "seeds:"


@dataclasses.dataclass
class Latent:
    name: str                  # output name (relative path without extension)
    w: torch.Tensor            # [num_ws, w_dim]
    q: torch.Tensor            # [q_dim]
    delta: Any = None          # PTI generator delta (inversion.apply_delta) or None
    source: str = ""           # where it came from (for records)


def find_inversions(root: str) -> List[str]:
    """Names (relative folder paths, '/'-separated) of the inversions under ``root``, sorted."""
    if not os.path.isdir(root):
        raise UserError(f"inversions folder not found: {root}")
    if os.path.isfile(os.path.join(root, "w.npy")):
        return [""]
    names = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if "w.npy" in filenames:
            names.append(os.path.relpath(dirpath, root).replace(os.sep, "/"))
    return sorted(names)


def load_inversion_latent(G, folder: str, name: Optional[str] = None) -> Latent:
    """One ``invert.py`` result folder as a ``Latent`` (checked against ``G``)."""
    res = load_inversion(folder)
    w = torch.as_tensor(res.w).float()
    w = w[0] if w.ndim == 3 and w.shape[0] == 1 else w
    w = w[None] if w.ndim == 1 else w
    if w.ndim == 2 and w.shape[0] == 1:
        w = w.repeat(G.num_ws, 1)
    if tuple(w.shape) != (G.num_ws, G.w_dim):
        raise UserError(f"{folder}: w has shape {tuple(torch.as_tensor(res.w).shape)}, the network needs "
                        f"[{G.num_ws}, {G.w_dim}] (inverted with another network?)")
    q = torch.as_tensor(res.q).float().reshape(-1) if res.q is not None else torch.zeros([G.q_dim])
    if q.numel() != G.q_dim:
        raise UserError(f"{folder}: q has {q.numel()} values, the network has q_dim={G.q_dim}")
    name = name if name is not None else os.path.basename(os.path.normpath(folder))
    return Latent(name=name, w=w, q=q, delta=getattr(res, "delta", None), source=os.path.abspath(folder))


def seed_latents(G, seeds, device="cpu") -> List[Latent]:
    out = []
    with torch.no_grad():
        for s in seeds:
            z = torch.from_numpy(seed_to_z(s, G.z_dim)).float().to(device)
            c = torch.zeros([1, G.c_dim], device=device)
            w = G.mapping(z, c)[0].cpu()
            q = torch.from_numpy(seed_to_q(s, G.q_dim)).float()[0]
            out.append(Latent(name=f"seed{s:04d}", w=w, q=q, source=f"seed {s}"))
    return out


def load_latents(G, spec: str, device="cpu") -> List[Latent]:
    """Latents from an inversions folder, one inversion folder, the release's pSp output folder, or
    ``seeds:RANGE``."""
    spec = str(spec)
    if spec.startswith(SEEDS_PREFIX):
        seeds = parse_range(spec[len(SEEDS_PREFIX):])
        if not seeds:
            raise UserError(f"no seeds in '{spec}'")
        return seed_latents(G, seeds, device)
    if is_official_outputs(spec):
        return [Latent(name=p.name, w=pivot_ws(p, G.num_ws), q=p.q, source=os.path.abspath(p.image))
                for p in read_official_outputs(spec, G.w_dim, G.q_dim)]
    names = find_inversions(spec)
    if not names:
        raise UserError(f"no inversions (folders with w.npy) under {spec}; run invert.py run first")
    if names == [""]:
        return [load_inversion_latent(G, spec)]
    return [load_inversion_latent(G, os.path.join(spec, n), name=n) for n in names]


def latents_from_images(models: Models, input_path: str, inv_dir: str,
                        options: Optional[InvertOptions] = None) -> List[Latent]:
    """Invert the images under ``input_path`` into ``inv_dir`` (``apps.invert_folder.invert_folder``:
    each image written when it is finished, reused on a rerun, unreadable files reported in its
    results.jsonl) with ``models`` (``inversion.models.Models``: G, encoder, device) and ``options``
    (``InvertOptions``: the ``InversionConfig``, default preset ``ours``; its ``face_pipeline``:
    each face of a whole photo is inverted aligned, as ``<name>_<k>``). Returns every latent of
    ``inv_dir``."""
    invert_folder(models, input_path, inv_dir, options)
    return load_latents(models.G, inv_dir, device=models.device)


def generator_for(G, latent: Latent):
    """The generator an image's codes belong to: G with the image's PTI delta applied, or G."""
    if latent.delta is None:
        return G
    return apply_delta(G, latent.delta)


@torch.no_grad()
def render(G, ws: torch.Tensor, q: Optional[torch.Tensor], device="cpu", noise_mode: str = "const"):
    """ws [N, num_ws, w_dim], q [N, q_dim] or None -> (sharp, degraded or None), [N, C, H, W]
    float32 in about [-1, 1], on the CPU. Sharp is G(w, 0), degraded G(w, q)."""
    device = torch.device(device)
    fmt = inference_format(device)
    ws = ws.to(device, torch.float32)
    if q is None or G.q_dim == 0:
        return G.synthesis(ws, noise_mode=noise_mode, **fmt).float().cpu(), None
    sharp, deg = G.synthesis(ws, q=q.to(device, torch.float32), pair=True, noise_mode=noise_mode, **fmt)
    return sharp.float().cpu(), deg.float().cpu()
