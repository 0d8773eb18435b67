"""Rendering sharp/degraded pairs from seeds or saved latents (what ``generate.py`` runs).

Conventions users rely on (the official tools produce the same images for the same seeds):
  * z for seed s:  ``numpy.random.RandomState(s).randn(1, z_dim)``
  * q for seed s:  ``numpy.random.RandomState(s).randn(1, q_dim)`` (QC-StyleGAN's convention)
  * pixels:        ``(img * 127.5 + 128).clamp(0, 255)`` as uint8 (``dnnlib.image_io.to_uint8``)
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from dnnlib.image_io import make_grid, to_uint8_hwc, write_image
from dnnlib.util import UserError, append_jsonl, atomic_write, read_jsonl
from torch_utils.misc import resolve_inference_dtype

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def seed_to_z(seed: int, z_dim: int) -> np.ndarray:
    """[1, z_dim] float64, the StyleGAN convention."""
    return np.random.RandomState(seed).randn(1, z_dim)


def seed_to_q(seed: int, q_dim: int) -> np.ndarray:
    """[1, q_dim] float64, the QC-StyleGAN convention."""
    return np.random.RandomState(seed).randn(1, q_dim)


def inference_format(device: torch.device, dtype: str = "float32") -> dict:
    """The one place the inference precision and layout are decided (synthesis kwargs).

    ``auto`` is ``torch_utils.misc.resolve_inference_dtype``: bfloat16 on a CPU that computes it
    natively (AMX / AVX-512 BF16), else float32 (the reference; on CUDA with per-block float16).
    bfloat16 (CPUs with AMX, CUDA) and float16 (CUDA)
    run every synthesis block in that dtype with weights cast per layer; images are accumulated
    in float32. On CPU, activations are channels_last and modulation is applied to activations
    (non-fused), which oneDNN runs fastest; on CUDA the per-block defaults (StyleGAN2-ADA's
    mixed precision) apply to float32.
    """
    if dtype not in DTYPES and dtype != "auto":
        raise UserError(f"unknown dtype '{dtype}' (choose from auto, {', '.join(DTYPES)})")
    dtype = resolve_inference_dtype(dtype, device)
    if dtype == "float16" and device.type == "cpu":
        raise UserError("float16 is for CUDA; on CPU use --dtype bfloat16")
    fmt: dict = {"dtype": None if dtype == "float32" else DTYPES[dtype]}
    if device.type == "cpu":
        fmt.update(channels_last=True, fused_modconv=False)
    return fmt


@dataclasses.dataclass
class Job:
    """One image (or pair) to render."""
    name: str                          # file stem, e.g. 'seed0007' or 'proj03'
    z: Optional[np.ndarray] = None     # [1, z_dim] (seed jobs)
    ws: Optional[torch.Tensor] = None  # [num_ws, w_dim] (projected-w jobs)
    q: Optional[np.ndarray] = None     # [1, q_dim] or None (sharp only)
    meta: Dict = dataclasses.field(default_factory=dict)


def build_q(q_dim: int, count: int, seeds: Sequence[int], q_seeds: Optional[Sequence[int]] = None,
            q_file: Optional[str] = None, q_scale: float = 1.0) -> List[tuple]:
    """The q of each job as (array [1, q_dim], description dict)."""
    if q_file is not None:
        q_all = load_array(q_file, "q")
        q_all = q_all.reshape(-1, q_all.shape[-1]) if q_all.ndim > 1 else q_all[None]
        if q_all.shape[1] != q_dim:
            raise UserError(f"{q_file}: q has {q_all.shape[1]} values, the network expects q_dim={q_dim}")
        if len(q_all) not in (1, count):
            raise UserError(f"{q_file}: holds {len(q_all)} codes; need 1 or one per image ({count})")
        return [(q_all[i if len(q_all) > 1 else 0][None] * q_scale,
                 {"q_source": os.path.basename(q_file), "q_index": int(i if len(q_all) > 1 else 0)})
                for i in range(count)]
    if q_seeds is not None:
        if len(q_seeds) not in (1, count):
            raise UserError(f"--q-seeds has {len(q_seeds)} values; need 1 or one per seed ({count})")
        use = [q_seeds[0]] * count if len(q_seeds) == 1 else list(q_seeds)
    else:
        use = list(seeds)
    return [(seed_to_q(s, q_dim) * q_scale, {"q_seed": int(s)}) for s in use]


def load_array(path: str, key: str) -> np.ndarray:
    """Read an array from .npy, .npz (key or the only entry) or a .pt tensor / dict of tensors."""
    if not os.path.isfile(path):
        raise UserError(f"file not found: {path}")
    try:
        if path.endswith(".npy"):
            return np.load(path, allow_pickle=False)
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as data:
                if key in data:
                    return data[key]
                if len(data.files) == 1:
                    return data[data.files[0]]
                raise UserError(f"{path}: no array named '{key}' (has {', '.join(data.files)})")
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
    if isinstance(obj, dict):
        if key not in obj:
            raise UserError(f"{path}: no entry '{key}'")
        obj = obj[key]
    return torch.as_tensor(obj).float().numpy()


def render_batch(G, jobs: Sequence[Job], device: torch.device, class_idx: Optional[int],
                 truncation_psi: float, truncation_cutoff: Optional[int], noise_mode: str,
                 dtype: str = "float32"):
    """Render a batch of jobs. Returns (sharp uint8 [N,H,W,C], degraded uint8 or None)."""
    fmt = inference_format(device, dtype)
    n = len(jobs)
    if jobs[0].ws is not None:
        ws = torch.stack([j.ws for j in jobs]).to(device)
    else:
        z = torch.from_numpy(np.concatenate([j.z for j in jobs])).float().to(device)
        c = torch.zeros([n, G.c_dim], device=device)
        if G.c_dim:
            if class_idx is None:
                raise UserError(f"the network is conditional ({G.c_dim} classes): pass --class")
            if not 0 <= class_idx < G.c_dim:
                raise UserError(f"--class must be in 0..{G.c_dim - 1}")
            c[:, class_idx] = 1
        elif class_idx is not None:
            raise UserError("--class given, but the network is unconditional")
        ws = G.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
    if jobs[0].q is None:
        return to_uint8_hwc(G.synthesis(ws, noise_mode=noise_mode, **fmt)), None
    q = torch.from_numpy(np.concatenate([j.q for j in jobs])).float().to(device)
    sharp, degraded = G.synthesis(ws, q=q, pair=True, noise_mode=noise_mode, **fmt)
    return to_uint8_hwc(sharp), to_uint8_hwc(degraded)


def generate_images(G, outdir: str, seeds: Sequence[int] = (), projected_w: Optional[str] = None,
                    truncation_psi: float = 1.0, truncation_cutoff: Optional[int] = None,
                    class_idx: Optional[int] = None, noise_mode: str = "const",
                    q_seeds: Optional[Sequence[int]] = None, q_file: Optional[str] = None,
                    q_scale: float = 1.0, degraded: bool = True, batch: int = 8,
                    device: torch.device = torch.device("cpu"), dtype: str = "float32",
                    grid: bool = False, progress: bool = True) -> List[dict]:
    """Render ``seeds`` (or the latents in ``projected_w``) to ``outdir``.

    Writes ``<name>.png`` (sharp, q = 0) and, for a QC generator, ``<name>_degraded.png``, one
    ``metadata.jsonl`` line per image (with the ``dtype`` that rendered it: ``auto`` resolved), and
    optionally ``grid.png`` (columns: sharp, degraded). Returns the metadata records.
    """
    os.makedirs(outdir, exist_ok=True)
    G = G.to(device).eval()
    with_q = degraded and G.q_dim > 0
    jobs: List[Job] = []
    if projected_w is not None:
        ws_all = torch.as_tensor(load_array(projected_w, "w")).float()
        if ws_all.ndim == 2:
            ws_all = ws_all[None]
        if ws_all.ndim != 3 or ws_all.shape[1:] != (G.num_ws, G.w_dim):
            raise UserError(f"{projected_w}: w must be [N, {G.num_ws}, {G.w_dim}], got {tuple(ws_all.shape)}")
        q_saved = None
        if with_q and q_file is None:
            try:
                q_saved = load_array(projected_w, "q").reshape(len(ws_all), -1) * q_scale
            except UserError:
                q_saved = None
        qs = build_q(G.q_dim, len(ws_all), list(range(len(ws_all))), q_seeds, q_file, q_scale) if with_q else None
        for i, w in enumerate(ws_all):
            q, meta = (None, {})
            if q_saved is not None:
                q, meta = q_saved[i][None], {"q_source": os.path.basename(projected_w), "q_index": i}
            elif qs is not None:
                q, meta = qs[i]
            jobs.append(Job(f"proj{i:02d}", ws=w, q=q,
                            meta={"w_source": os.path.basename(projected_w), "w_index": i, **meta}))
    else:
        if not seeds:
            raise UserError("nothing to render: give --seeds or --projected-w")
        qs = build_q(G.q_dim, len(seeds), seeds, q_seeds, q_file, q_scale) if with_q else None
        for i, seed in enumerate(seeds):
            q, meta = qs[i] if qs is not None else (None, {})
            jobs.append(Job(f"seed{seed:04d}", z=seed_to_z(seed, G.z_dim), q=q,
                            meta={"seed": int(seed), **meta}))

    # Re-rendering a name replaces its metadata line; other lines in the folder are kept.
    meta_path = os.path.join(outdir, "metadata.jsonl")
    names = {job.name for job in jobs}
    kept = [r for r in read_jsonl(meta_path) if r.get("name") not in names]
    with atomic_write(meta_path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in kept)

    records: List[dict] = []
    tiles: List[np.ndarray] = []
    bar = tqdm(total=len(jobs), desc="generate", unit="img", disable=not progress)
    dtype = resolve_inference_dtype(dtype, device) if dtype == "auto" else dtype   # decided once
    inference_format(device, dtype)          # validate before any work
    with torch.no_grad():
        for start in range(0, len(jobs), batch):
            chunk = jobs[start:start + batch]
            t0 = time.perf_counter()
            sharp, deg = render_batch(G, chunk, device, class_idx, truncation_psi, truncation_cutoff,
                                      noise_mode, dtype)
            seconds = (time.perf_counter() - t0) / len(chunk)
            for i, job in enumerate(chunk):
                files = [job.name + ".png"]
                write_image(os.path.join(outdir, files[0]), sharp[i])
                if deg is not None:
                    files.append(job.name + "_degraded.png")
                    write_image(os.path.join(outdir, files[1]), deg[i])
                    tiles += [sharp[i], deg[i]]
                else:
                    tiles.append(sharp[i])
                rec = {"name": job.name, **job.meta, "truncation_psi": truncation_psi,
                       "truncation_cutoff": truncation_cutoff, "class": class_idx, "noise_mode": noise_mode,
                       "q_scale": q_scale if job.q is not None else None,
                       "q": job.q[0].round(6).tolist() if job.q is not None else None,
                       "dtype": dtype, "files": files, "seconds": round(seconds, 4)}
                records.append(rec)
                append_jsonl(meta_path, rec)
            bar.update(len(chunk))
    bar.close()
    if grid and tiles:
        cols = 2 if with_q else min(len(tiles), 8)
        if with_q and len(jobs) > 1:
            cols = 2 * min(4, len(jobs))
        write_image(os.path.join(outdir, "grid.png"), make_grid(tiles, cols))
    return records
