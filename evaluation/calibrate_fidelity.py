"""Calibrate ``restore.py --fidelity auto`` for a network (``apps.fidelity``): restore training
faces as they are, degraded by the ``paper`` pipeline, and mildly degraded as faces in photos
look at the model's size (which must not come out worse), with ``restore.py``'s inversion
defaults, and fit the network's ``FidelityCurve`` (``apps.fidelity.fit_curve``). Training faces
only: the held-out set is for measuring.

    python -m evaluation.calibrate_fidelity --data ../shared/datasets/utkface64.zip \\
        --count 64 --out pretrained/qc-faces64-fidelity.json --measurements runs/calib.npz

With ``--measurements``, a second run refits from the saved restorations without restoring
(seconds: 16 s for 96 of them on an Intel Xeon, AVX512, 2 threads).
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import sys
import zipfile
from typing import List, Optional, Sequence, Tuple

import numpy as np

from apps.fidelity import FidelityCurve, curve_path, fit_curve, severity
from degradations import build_pipeline
from dnnlib.util import UserError, atomic_write
from faces.alignment import resize_crop
from inversion.api import invert_images
from inversion.config import InversionConfig
from inversion.models import load_models

from .composites import LEVELS
from .heldout import degrade_faces


def read_training_faces(path: str, count: int, start: int) -> List[np.ndarray]:
    """``count`` faces (uint8 RGB) from a training-layout ZIP, in name order from ``start``."""
    from PIL import Image
    if not os.path.isfile(path):
        raise UserError(f"--data not found: {path}")
    with zipfile.ZipFile(path) as z:
        names = sorted(n for n in z.namelist() if n.lower().endswith((".png", ".jpg", ".webp")))[start:start + count]
        if len(names) < count:
            raise UserError(f"{path}: only {len(names)} images from index {start}")
        return [np.asarray(Image.open(io.BytesIO(z.read(n))).convert("RGB")) for n in names]


MEASURED = ("severities", "restored", "inputs", "clean", "is_clean", "keep")     # what --measurements keeps
PHOTO_SCALES = (0.5, 3.0)        # face sizes of the photo-like draws, as multiples of the model's size
PHOTO_SEED = 11


def photo_mild_faces(faces: Sequence[np.ndarray], seed: int = PHOTO_SEED) -> List[np.ndarray]:
    """Each face as a mildly degraded face in a photo looks at the model's size: resized to a
    seeded size of 0.5-3x, degraded there by the composites' ``mild`` spec (blur 1 px, noise 5,
    JPEG 50, in the photo's pixels; ``evaluation.composites.LEVELS``), and brought back the way
    the face pipeline crops a face for the model (``faces.alignment.resize_crop`` both ways)."""
    rng = np.random.RandomState(seed)
    pipe = build_pipeline(LEVELS["mild"], faces[0].shape[0], mode="absolute")
    out = []
    for i, face in enumerate(faces):
        r = face.shape[0]
        side = int(round(r * rng.uniform(*PHOTO_SCALES)))
        big, _ = pipe.apply_numpy(resize_crop(face, side, down=False), seed * 1000003 + i)
        out.append(np.ascontiguousarray(resize_crop(big, r, down=True)))
    return out


def calibrate(models, faces: Sequence[np.ndarray], seeds: Sequence[int] = (123, 7), progress: bool = True,
              measurements: Optional[str] = None, **invert_kwargs) -> Tuple[FidelityCurve, dict]:
    """Restore ``faces`` as they are, degraded by the ``paper`` pipeline (one draw per seed) and
    mildly degraded as faces in photos (``photo_mild_faces``: restoration must not make these worse,
    ``fit_curve``'s ``keep``), with ``restore.py``'s inversion defaults (``invert_kwargs`` override
    them), and fit the curve.
    ``measurements``: an ``.npz`` of what the restorations gave (``MEASURED``), written after them,
    and read instead of restoring again when it exists (a refit after a change of the fit)."""
    if measurements and os.path.isfile(measurements):
        with np.load(measurements, allow_pickle=False) as m:
            saved = [m[k] for k in MEASURED]
        per_face = 2 + len(seeds)
        expected = len(faces) * per_face
        if len(saved[0]) != expected:
            raise UserError(f"{measurements}: holds {len(saved[0])} restorations, this calibration makes {expected} "
                            f"({len(faces)} faces, {len(seeds)} degraded draws and a photo-like mild one each); "
                            f"use another --measurements file")
        return _with_steps(fit_curve(*saved[:5], keep=saved[5]), invert_kwargs)
    faces = list(faces)
    draws = [degrade_faces(faces, seed) for seed in seeds] + [photo_mild_faces(faces)]
    inputs, clean = [], []                    # interleaved: face i clean, then its degraded draws, then the mild one
    for i, face in enumerate(faces):
        inputs += [face] + [d[i] for d in draws]
        clean += [face] * (1 + len(draws))
    results = invert_images(models.G, inputs, encoder=models.E, device=models.device, progress=progress,
                            **invert_kwargs)
    sev = np.array([severity(r.reconstruction, r.sharp) for r in results])
    slot = np.arange(len(inputs)) % (1 + len(draws))
    is_clean, keep = slot == 0, slot == len(draws)
    measured = (sev, np.stack([r.sharp for r in results]), np.stack(inputs), np.stack(clean), is_clean, keep)
    if measurements:
        with atomic_write(measurements, "wb") as f:
            np.savez(f, **dict(zip(MEASURED, measured)))
    return _with_steps(fit_curve(*measured[:5], keep=keep), invert_kwargs)


def _with_steps(fit: Tuple[FidelityCurve, dict], invert_kwargs: dict) -> Tuple[FidelityCurve, dict]:
    """The fitted curve marked with the calibration's PTI steps (``FidelityCurve.min_pti_steps``:
    its severities hold for inversions at least that long)."""
    curve, report = fit
    config = invert_kwargs.get("config") or InversionConfig()
    steps = float(invert_kwargs.get("pti_steps", config.pti_steps))
    return dataclasses.replace(curve, min_pti_steps=steps), {**report, "pti_steps": steps}


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="Calibrate --fidelity auto for a network on training faces.")
    ap.add_argument("--network", default=None, help="QC generator [default: the shipped model]")
    ap.add_argument("--encoder", default=None, help="Encoder [default: the shipped one with the shipped model]")
    ap.add_argument("--data", required=True, help="Training-layout ZIP of faces the model trained on (never held-out faces)")
    ap.add_argument("--count", type=int, default=64, help="Clean faces (each also restored degraded twice and photo-like mild once)")
    ap.add_argument("--start", type=int, default=5000, help="Index of the first face (name order)")
    ap.add_argument("--out", default=None, help="Curve file [default: <network stem>-fidelity.json]")
    ap.add_argument("--measurements", default=None, metavar="NPZ",
                    help="Keep the restorations' measurements here; when the file exists, refit from it without restoring")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    try:
        if "mini" in os.path.basename(args.data):
            raise UserError("calibrate on training faces: the held-out set (utkface64-mini) is for measuring")
        models = load_models(args.network, args.encoder, args.device)
        faces = read_training_faces(args.data, args.count, args.start)
        curve, report = calibrate(models, faces, measurements=args.measurements)
        report.update({"data": os.path.basename(args.data), "start": args.start, "network": os.path.basename(models.network),
                       "encoder": os.path.basename(models.encoder) if models.encoder else None})
        out = args.out or curve_path(models.network)
        curve.save(out, report)
        print(json.dumps({"curve": curve.to_dict(), **report}, indent=2))
        print(f"wrote {out}")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
