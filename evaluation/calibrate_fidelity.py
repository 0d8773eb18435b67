"""Calibrate ``restore.py --fidelity auto`` for a network (``apps.fidelity``): restore training
faces as they are and degraded by the ``paper`` pipeline with ``restore.py``'s inversion
defaults, and fit the network's ``FidelityCurve`` (``apps.fidelity.fit_curve``). Training faces
only: the held-out set is for measuring.

    python -m evaluation.calibrate_fidelity --data ../shared/datasets/utkface64.zip \\
        --count 64 --out pretrained/qc-faces64-fidelity.json --measurements runs/calib.npz

With ``--measurements``, a second run refits from the saved restorations in a second.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import zipfile
from typing import List, Optional, Sequence, Tuple

import numpy as np

from apps.fidelity import FidelityCurve, curve_path, fit_curve, severity
from dnnlib.util import UserError, atomic_write
from inversion.api import invert_images
from inversion.models import load_models

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


MEASURED = ("severities", "restored", "inputs", "clean", "is_clean")     # what --measurements keeps


def calibrate(models, faces: Sequence[np.ndarray], seeds: Sequence[int] = (123, 7), progress: bool = True,
              measurements: Optional[str] = None, **invert_kwargs) -> Tuple[FidelityCurve, dict]:
    """Restore ``faces`` as they are and degraded by the ``paper`` pipeline (one draw per seed),
    with ``restore.py``'s inversion defaults (``invert_kwargs`` override them), and fit the curve.
    ``measurements``: an ``.npz`` of what the restorations gave (``MEASURED``), written after them,
    and read instead of restoring again when it exists (a refit after a change of the fit)."""
    if measurements and os.path.isfile(measurements):
        with np.load(measurements, allow_pickle=False) as m:
            saved = [m[k] for k in MEASURED]
        expected = len(faces) * (1 + len(seeds))
        if len(saved[0]) != expected:
            raise UserError(f"{measurements}: holds {len(saved[0])} restorations, this calibration makes {expected} "
                            f"({len(faces)} faces, {len(seeds)} degraded draws each); use another --measurements file")
        return fit_curve(*saved)
    faces = list(faces)
    draws = [degrade_faces(faces, seed) for seed in seeds]
    inputs, clean = [], []                    # interleaved: face i clean, then its degraded draws
    for i, face in enumerate(faces):
        inputs += [face] + [d[i] for d in draws]
        clean += [face] * (1 + len(draws))
    results = invert_images(models.G, inputs, encoder=models.E, device=models.device, progress=progress,
                            **invert_kwargs)
    sev = np.array([severity(r.reconstruction, r.sharp) for r in results])
    is_clean = np.arange(len(inputs)) % (1 + len(draws)) == 0
    measured = (sev, np.stack([r.sharp for r in results]), np.stack(inputs), np.stack(clean), is_clean)
    if measurements:
        with atomic_write(measurements, "wb") as f:
            np.savez(f, **dict(zip(MEASURED, measured)))
    return fit_curve(*measured)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="Calibrate --fidelity auto for a network on training faces.")
    ap.add_argument("--network", default=None, help="QC generator [default: the shipped model]")
    ap.add_argument("--encoder", default=None, help="Encoder [default: the shipped one with the shipped model]")
    ap.add_argument("--data", required=True, help="Training-layout ZIP of faces the model trained on (never held-out faces)")
    ap.add_argument("--count", type=int, default=64, help="Clean faces (each also restored degraded, twice)")
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
