"""Face templates: where a model expects the eyes, nose tip and mouth corners in its R x R crop.

A template is plain data, resolution-free (coordinates as fractions of the crop's side, pixel
centres at ``(i + 0.5) / R``)::

    {"points": [[x, y] x 5], "order": POINT_NAMES, "source": "...", ...}

Where a network's template comes from (``resolve_template``), first match wins:

1. ``metadata["face_template"]`` of our checkpoint (``convert_network.py --face-template FILE``);
2. a JSON file beside the network file, ``<stem>-face.json`` (the shipped model's is
   ``pretrained/qc-faces64-face.json``, estimated by ``python -m faces.templates``);
3. the FFHQ template, the default for official files and for every other network (with a note
   when the network is ours: its training faces may be aligned differently).

``python -m faces.templates --data ZIP_OR_DIR --out FILE.json`` estimates a template from a
model's training faces: each face is upsampled, run through the detector and the 68-point
landmark model, and the five points (in crop fractions) are averaged (median, robust to the few
bad fits) over the faces where one face was found.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import zipfile
from typing import Any, Dict, Iterator, Optional, Tuple

import cv2
import numpy as np
from tqdm import tqdm

from dnnlib import image_io
from dnnlib.util import UserError, atomic_write, cli_main

from .alignment import POINT_NAMES
from .detection import DETECTOR_WINDOW, FaceDetector, five_points

TEMPLATE_KEY = "face_template"
SIDECAR_SUFFIX = "-face.json"

# FFHQ alignment's five points in its 512 x 512 crops (the template GFPGAN/facexlib align FFHQ
# models with), as fractions of the side.
FFHQ_512 = ((192.98138, 239.94708), (318.90277, 240.19360), (256.63416, 314.01935),
            (201.26117, 371.41043), (313.08905, 371.15118))
FFHQ_TEMPLATE = {"points": [[x / 512.0, y / 512.0] for x, y in FFHQ_512], "order": list(POINT_NAMES),
                 "source": "FFHQ alignment (5-point template of the 512x512 crops)"}


def validate_template(t: Any, what: str = "face template") -> Dict[str, Any]:
    if not isinstance(t, dict) or "points" not in t:
        raise UserError(f"{what}: expected a JSON object with 'points' (5 [x, y] pairs)")
    pts = np.asarray(t["points"], np.float64)
    if pts.shape != (5, 2) or not np.all(np.isfinite(pts)) or pts.min() < -0.5 or pts.max() > 1.5:
        raise UserError(f"{what}: 'points' must be 5 [x, y] pairs in crop fractions, got shape {pts.shape}")
    if not pts[0, 0] < pts[1, 0] or not pts[3, 0] < pts[4, 0] or not pts[:2, 1].mean() < pts[3:, 1].mean():
        raise UserError(f"{what}: points must be ordered {', '.join(POINT_NAMES)} (eyes above the mouth)")
    return dict(t, points=pts.tolist())


def template_points(template: Dict[str, Any], resolution: int) -> np.ndarray:
    """[5, 2] pixel coordinates (centres at integers) in an R x R crop."""
    return np.asarray(template["points"], np.float64) * resolution - 0.5


def load_template(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as exc:
        raise UserError(f"cannot read face template {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not JSON ({exc.msg}, line {exc.lineno})") from None
    return validate_template(data.get(TEMPLATE_KEY, data) if isinstance(data, dict) else data, path)


def sidecar_path(network_path: str) -> str:
    return os.path.splitext(os.fspath(network_path))[0] + SIDECAR_SUFFIX


def resolve_template(network_path: Optional[str], metadata: Optional[dict] = None, source: Optional[str] = None,
                     log=None) -> Dict[str, Any]:
    """The template of a network (see the module docstring for the order)."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    meta = (metadata or {}).get(TEMPLATE_KEY)
    if meta is not None:
        return validate_template(meta, f"{network_path}: metadata '{TEMPLATE_KEY}'")
    if network_path and os.path.isfile(sidecar_path(network_path)):
        return load_template(sidecar_path(network_path))
    if source == "qc-stylegan-checkpoint":
        log(f"note: {network_path} names no face template (metadata '{TEMPLATE_KEY}' or {os.path.basename(sidecar_path(network_path or 'G'))}); "
            "aligning faces with the FFHQ template")
    return dict(FFHQ_TEMPLATE)


# ---------------------------------------------------------------------------------------------
# Estimation from a model's training faces.

def _iter_images(data: str, limit: Optional[int]) -> Iterator[Tuple[str, np.ndarray]]:
    n = 0
    if os.path.isfile(data) and zipfile.is_zipfile(data):
        with zipfile.ZipFile(data) as z:
            names = sorted(x for x in z.namelist() if image_io.is_image_file(x))
            for name in names[:limit]:
                arr = cv2.imdecode(np.frombuffer(z.read(name), np.uint8), cv2.IMREAD_COLOR)
                if arr is not None:
                    yield name, np.ascontiguousarray(arr[:, :, ::-1])
        return
    for rel in image_io.list_images(data):
        if limit is not None and n >= limit:
            return
        n += 1
        yield rel, image_io.read_image(os.path.join(data, rel))


def estimate_template(data: str, limit: Optional[int] = None, upsample: int = 4, progress: bool = True) -> Dict[str, Any]:
    """Median five points (crop fractions) over the faces of ``data`` where exactly one face is found."""
    det = FaceDetector(min_face=DETECTOR_WINDOW, max_side=100000)      # scale 1: the upsampled face is scanned as is
    pts, sizes, seen = [], set(), 0
    for _, img in tqdm(_iter_images(data, limit), desc="landmarks", unit="img", disable=not progress):
        seen += 1
        h, w = img.shape[:2]
        big = cv2.resize(img, (w * upsample, h * upsample), interpolation=cv2.INTER_CUBIC)
        found = det(big)
        if len(found) != 1:
            continue
        p = (five_points(found[0].landmarks) + 0.5) / upsample          # crop pixels (edges at 0 and w)
        pts.append(p / [w, h])
        sizes.add((h, w))
    if not pts:
        raise UserError(f"no face found in the images of {data}")
    arr = np.stack(pts)                                                 # [N, 5, 2]
    med = np.median(arr, axis=0)
    return {"points": med.tolist(), "order": list(POINT_NAMES),
            "source": f"median of dlib 68-point landmarks over {len(pts)} of {seen} faces of {os.path.basename(data)}",
            "faces": len(pts), "images": seen, "spread": np.median(np.abs(arr - med), axis=0).tolist(),
            "image_sizes": sorted([list(s) for s in sizes]), "upsample": upsample}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m faces.templates", description="Estimate a face template from training faces.")
    p.add_argument("--data", required=True, help="ZIP or folder of aligned training faces")
    p.add_argument("--out", required=True, help="template JSON to write (e.g. pretrained/<stem>-face.json)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images")
    p.add_argument("--upsample", type=int, default=4, help="integer upsampling before detection")
    args = p.parse_args(argv)

    @cli_main
    def run():
        t = estimate_template(args.data, args.limit, args.upsample)
        with atomic_write(args.out, "w") as f:
            json.dump(t, f, indent=2)
            f.write("\n")
        print(f"{t['faces']} of {t['images']} faces -> {args.out}")
    run()


if __name__ == "__main__":
    main()
