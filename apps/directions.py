"""Edit directions in W: InterfaceGAN boundaries, SeFa, GANSpace and user files, by name.

* ``boundary``: an InterfaceGAN boundary (Shen et al., CVPR 2020, Sec. 2.2), the unit normal
  ``[1, w_dim]`` of a linear classifier's hyperplane in W, saved as ``.npy`` with its accuracy in a
  ``.json`` beside it (``fit_boundary`` learns one from w codes and labels). Any ``.npy`` the user
  made loads the same way: ``[w_dim]``, ``[1, w_dim]`` or per layer ``[num_ws, w_dim]``.
* ``sefa``: closed-form factorization (Shen & Zhou, CVPR 2021, Eq. 5): the eigenvectors of
  ``A^T A``, ``A`` the stacked style-affine weights of the chosen layers (each output row scaled to
  unit norm, as in the SeFa release), sorted by eigenvalue, largest first.
* ``ganspace``: principal components of sampled w (Härkönen et al., NeurIPS 2020, Sec. 2.1).

Every direction resolves to a tensor ``[num_ws, w_dim]`` that is zero outside the chosen layers
(``layers``, indices of w rows; None = all) and has unit norm per edited row, so a strength
``alpha`` moves each edited w row by ``alpha`` in W.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from dnnlib.util import UserError, atomic_write

from .linear import DEFAULT_TEST_FRACTION, fit_and_evaluate

GANSPACE_SAMPLES = 10000     # w samples for the PCA (GANSpace used 1M for StyleGAN2; 10k is plenty for the top few)
GANSPACE_BATCH = 1000


# ---------------------------------------------------------------------------------------------
# Layers.

def check_layers(G, layers: Optional[Sequence[int]]) -> List[int]:
    """Validated w-row indices (None = all ``G.num_ws`` rows)."""
    if layers is None:
        return list(range(G.num_ws))
    layers = sorted(set(int(i) for i in layers))
    bad = [i for i in layers if not 0 <= i < G.num_ws]
    if bad or not layers:
        raise UserError(f"--layers must be indices in 0..{G.num_ws - 1} (the generator has {G.num_ws} w rows), "
                        f"got {bad or 'none'}")
    return layers


def style_affines(G) -> List[List[torch.nn.Module]]:
    """For each w row ``i``, the style-affine layers that read it: conv0 and conv1 of a block read
    consecutive rows, toRGB reads the row after the block's convs (shared with the next conv0)."""
    rows: List[List[torch.nn.Module]] = [[] for _ in range(G.num_ws)]
    idx = 0
    for block in G.synthesis.blocks():
        k = idx
        if block.in_channels != 0:
            rows[k].append(block.conv0.affine)
            k += 1
        rows[k].append(block.conv1.affine)
        k += 1
        if hasattr(block, "torgb") and (block.is_last or block.architecture == "skip"):
            rows[k].append(block.torgb.affine)
        idx += block.num_conv
    return rows


def spread(G, direction: torch.Tensor, layers: Optional[Sequence[int]] = None) -> torch.Tensor:
    """A direction [w_dim] (or [1, w_dim]) -> [num_ws, w_dim], unit norm on ``layers``, zero elsewhere.
    A per-layer direction [num_ws, w_dim] is kept as given on ``layers``."""
    d = torch.as_tensor(direction, dtype=torch.float32).cpu()
    layers = check_layers(G, layers)
    out = torch.zeros([G.num_ws, G.w_dim])
    if d.ndim == 2 and d.shape[0] == G.num_ws and G.num_ws > 1 and d.shape[1] == G.w_dim:
        out[layers] = d[layers]
        return out
    d = d.reshape(-1)
    if d.numel() != G.w_dim:
        raise UserError(f"a direction must have w_dim={G.w_dim} values (or be [{G.num_ws}, {G.w_dim}]), "
                        f"got shape {tuple(direction.shape)}")
    norm = float(d.norm())
    if norm < 1e-12:
        raise UserError("the direction is all zeros")
    out[layers] = d / norm
    return out


# ---------------------------------------------------------------------------------------------
# Sources.

def sefa(G, layers: Optional[Sequence[int]] = None):
    """SeFa (Shen & Zhou 2021, Eq. 5). Returns (eigenvectors [w_dim, w_dim] as rows, largest
    eigenvalue first; eigenvalues [w_dim])."""
    layers = check_layers(G, layers)
    affines = style_affines(G)
    mats = []
    for i in layers:
        for fc in affines[i]:
            w = fc.weight.detach().double().cpu()                       # [out, w_dim]
            mats.append(w / w.norm(dim=1, keepdim=True).clamp_min(1e-12))
    a = torch.cat(mats)                                                 # A: [sum(out), w_dim]
    vals, vecs = torch.linalg.eigh(a.T @ a)                             # ascending
    order = torch.argsort(vals, descending=True)
    return vecs[:, order].T.float(), vals[order].float()


@torch.no_grad()
def ganspace(G, num_samples: int = GANSPACE_SAMPLES, seed: int = 0, device="cpu"):
    """GANSpace PCA of w = mapping(z) (Härkönen et al. 2020). Returns (components [K, w_dim]
    as unit rows, largest variance first; standard deviations [K]; mean w [w_dim])."""
    gen = torch.Generator().manual_seed(seed)
    ws = []
    for start in range(0, num_samples, GANSPACE_BATCH):
        n = min(GANSPACE_BATCH, num_samples - start)
        z = torch.randn([n, G.z_dim], generator=gen).to(device)
        c = torch.zeros([n, G.c_dim], device=device)
        if G.c_dim:
            c[torch.arange(n), torch.randint(G.c_dim, [n], generator=gen)] = 1
        ws.append(G.mapping(z, c)[:, 0].double().cpu())
    w = torch.cat(ws)
    mean = w.mean(0)
    _, s, vh = torch.linalg.svd(w - mean, full_matrices=False)
    return vh.float(), (s / max(len(w) - 1, 1) ** 0.5).float(), mean.float()


def load_direction_file(path: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise UserError(f"direction file not found: {path}")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise UserError(f"{path}: cannot read as .npy ({type(exc).__name__}: {exc})") from None
    if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)):
        raise UserError(f"{path}: a direction must hold finite numbers")
    return arr.astype(np.float32)


def _from_file(G, arg, layers, **_):
    return spread(G, torch.from_numpy(load_direction_file(str(arg))), layers)


def _from_sefa(G, arg, layers, **_):
    vecs, _ = sefa(G, layers)
    k = int(arg)
    if not 0 <= k < len(vecs):
        raise UserError(f"--sefa must be in 0..{len(vecs) - 1}")
    return spread(G, vecs[k], layers)


def _from_ganspace(G, arg, layers, num_samples: int = GANSPACE_SAMPLES, seed: int = 0, device="cpu", **_):
    comps, _, _ = ganspace(G, num_samples=num_samples, seed=seed, device=device)
    k = int(arg)
    if not 0 <= k < len(comps):
        raise UserError(f"--ganspace must be in 0..{len(comps) - 1}")
    return spread(G, comps[k], layers)


DIRECTIONS: Dict[str, Callable] = {}


def register_direction(name: str, fn: Callable) -> None:
    """Register a direction source ``fn(G, arg, layers, **options) -> [num_ws, w_dim]``."""
    DIRECTIONS[name] = fn


register_direction("boundary", _from_file)
register_direction("file", _from_file)
register_direction("sefa", _from_sefa)
register_direction("ganspace", _from_ganspace)


def pick_direction(G, boundary: Optional[str] = None, sefa: Optional[int] = None, ganspace: Optional[int] = None,
                   layers: Optional[Sequence[int]] = None, device="cpu") -> Tuple[torch.Tensor, dict]:
    """edit.py's ``--direction FILE`` / ``--sefa K`` / ``--ganspace K`` (exactly one): the direction
    and a plain-data description for the records."""
    given = [(k, v) for k, v in (("boundary", boundary), ("sefa", sefa), ("ganspace", ganspace)) if v is not None]
    if len(given) != 1:
        raise UserError("give exactly one of --direction FILE, --sefa K, --ganspace K")
    kind, arg = given[0]
    d = get_direction(G, kind, arg, layers=layers, device=device)
    info = {"kind": kind, "arg": os.path.abspath(arg) if kind == "boundary" else int(arg),
            "layers": layers if layers is not None else "all"}
    return d, info


def get_direction(G, kind: str, arg, layers: Optional[Sequence[int]] = None, **options) -> torch.Tensor:
    """Resolve a direction by source name: ``get_direction(G, 'sefa', 0, layers=[0, 1])``."""
    if kind not in DIRECTIONS:
        raise UserError(f"unknown direction source '{kind}' (known: {', '.join(DIRECTIONS)})")
    return DIRECTIONS[kind](G, arg, layers, **options)


# ---------------------------------------------------------------------------------------------
# Boundaries (InterfaceGAN).

def w_features(ws) -> np.ndarray:
    """One feature vector per image for the boundary fit: w [N, w_dim], or the mean over the rows
    of W+ codes [N, num_ws, w_dim] (rows are equal for an unedited mapping output)."""
    ws = np.asarray(ws, np.float64)
    return ws.mean(axis=1) if ws.ndim == 3 else ws


def fit_boundary(ws, labels: Sequence, test_fraction: float = DEFAULT_TEST_FRACTION, seed: int = 0) -> dict:
    """Fit a linear classifier on w against two-class labels (InterfaceGAN Sec. 2.2) and return
    ``{'normal': [1, w_dim] unit, pointing to the larger label, 'train_accuracy', 'test_accuracy', ...}``."""
    x = w_features(ws)
    y = np.asarray(labels)
    classes = np.unique(y)
    if len(classes) != 2:
        raise UserError(f"a boundary needs exactly two label values, got {len(classes)}: {classes[:10].tolist()}")
    clf, stats = fit_and_evaluate(x, y, test_fraction=test_fraction, seed=seed)
    return {"normal": clf.binary_normal()[None].astype(np.float32), "classes": classes.tolist(), **stats}


def fit_boundary_on_latents(latents: Sequence, labels: Dict[str, object], test_fraction: float = DEFAULT_TEST_FRACTION,
                            seed: int = 0, log: Optional[Callable[[str], None]] = None) -> Tuple[dict, int]:
    """``fit_boundary`` on the w of the latents that have a label (``labels``: file name, with or
    without extension -> label); the others are left out with one note. Returns (result, images used)."""
    by_stem = {os.path.splitext(k)[0]: v for k, v in labels.items()}
    ws, ys, missing = [], [], []
    for lat in latents:
        if lat.name in by_stem:
            ws.append(lat.w.numpy())
            ys.append(by_stem[lat.name])
        else:
            missing.append(lat.name)
    if missing:
        (log or (lambda msg: print(msg, file=sys.stderr)))(f"{len(missing)} images have no label (e.g. {missing[0]}); left out")
    if len(ws) < 4:
        raise UserError(f"only {len(ws)} labelled images matched the labels file; need at least 4")
    return fit_boundary(np.stack(ws), ys, test_fraction=test_fraction, seed=seed), len(ws)


def save_boundary(path: str, result: dict, meta: Optional[dict] = None) -> str:
    """Write ``path`` (.npy, [1, w_dim]) and ``path`` with .json (accuracies, classes, meta)."""
    if not path.endswith(".npy"):
        path += ".npy"
    with atomic_write(path, "wb") as f:
        np.save(f, np.asarray(result["normal"], np.float32))
    info = {k: v for k, v in result.items() if k != "normal"}
    info.update(meta or {})
    with atomic_write(os.path.splitext(path)[0] + ".json", "w") as f:
        json.dump(info, f, indent=2, default=str)
        f.write("\n")
    return path


def read_labels(path: str, attribute: Optional[int] = None, threshold: Optional[float] = None) -> Dict[str, object]:
    """Labels by relative file path from a StyleGAN-style ``dataset.json``
    (``{"labels": [["a/b.png", 1], ...]}``) or a two-column CSV/TSV (``file,label``).
    ``attribute`` picks one entry of vector labels; ``threshold`` makes numbers binary (value > t)."""
    if not os.path.isfile(path):
        raise UserError(f"labels file not found: {path}")
    pairs = []
    if path.endswith(".json"):
        try:
            with open(path, "r", encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as exc:
            raise UserError(f"{path}: not a readable JSON file ({exc})") from None
        raw = data.get("labels") if isinstance(data, dict) else data
        if not isinstance(raw, (list, dict)):
            raise UserError(f"{path}: expected {{'labels': [[file, label], ...]}}")
        pairs = list(raw.items()) if isinstance(raw, dict) else [tuple(p) for p in raw]
    else:
        with open(path, "r", encoding="utf-8") as f:
            for line in f:
                parts = [p.strip() for p in line.replace("\t", ",").split(",")]
                if len(parts) >= 2 and parts[0] and not parts[0].startswith("#"):
                    pairs.append((parts[0], parts[1]))
        pairs = [p for p in pairs if not (p[0].lower() in ("file", "filename", "name") and p is pairs[0])]
    out: Dict[str, object] = {}
    for item in pairs:
        if len(item) != 2:
            raise UserError(f"{path}: each label entry must be [file, label], got {item!r}")
        name, value = item
        if isinstance(value, (list, tuple)):
            if attribute is None:
                raise UserError(f"{path}: labels are vectors; pick one entry with --attribute")
            if not 0 <= attribute < len(value):
                raise UserError(f"--attribute must be in 0..{len(value) - 1}")
            value = value[attribute]
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if threshold is not None:
            value = int(float(value) > threshold)
        elif isinstance(value, float) and value.is_integer():
            value = int(value)
        out[str(name).replace(os.sep, "/")] = value
    if not out:
        raise UserError(f"{path}: no labels found")
    return out
