"""Composite test photos for the face detector: held-out faces placed into real photos.

Faces of ``utkface64-mini.zip`` (64 x 64, held out from training) are scaled (0.5-3x), tilted (up
to 20 degrees) and pasted, several per photo, into scikit-image's bundled photos (no face in any
of them), then degraded with the project's ``degradations`` package (mild, strong). Every face
has the box it was placed at; ``evaluate`` runs a detector over the photos and reports, per face,
the best box IoU with a detection (found: IoU >= 0.5) and, per photo, detections that match no
placed face (false positives), as JSON:

    python -m evaluation.composites --data ../shared/datasets/utkface64-mini.zip --out /tmp/x/comp.json

The placed box is where the reference detector (dlib's HOG detector, 4x upsampled, on the
original 64 x 64 crop) boxes the face, mapped through the placement: one fixed definition of
"where the face is" that does not move when ``FaceDetector`` changes. Faces on which the
reference finds nothing are passed over (seeded order), so every placed face has a box.

An evaluation tool: besides ``dnnlib`` it imports ``degradations`` (for the degradations) and
scikit-image (for the backgrounds), both lazily.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
import zipfile
from typing import Any, Callable, Dict, List, Optional, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from degradations import build_pipeline
from dnnlib.image_io import match_channels
from dnnlib.util import UserError, atomic_write, cli_main

from faces.detection import dlib, require_faces
from faces.pipeline import FacePipeline

BACKGROUNDS = ("coffee", "rocket", "chelsea", "coins", "gravel", "immunohistochemistry", "brick", "grass",
               "hubble_deep_field")       # scikit-image photos without a face (astronaut, camera have one)
PHOTO_LONG_SIDE = 480            # px: backgrounds are resized to this long side
MAX_TILT = 20.0                  # degrees: faces are tilted uniformly in [-MAX_TILT, MAX_TILT]
MATCH_IOU = 0.5                  # box IoU at which a detection counts as the placed face
REFERENCE_UPSAMPLE = 4           # the reference box: HOG detector on the crop upsampled this much

# Degradations (a spec of the degradations package, absolute pixel sizes): blur, noise, JPEG.
LEVELS: Dict[str, Optional[Dict[str, Any]]] = {
    "clean": None,
    "mild": {"name": "faces-mild", "steps": [{"op": "gaussian_blur", "ksize": 7, "sigma": 1.0},
                                             {"op": "gaussian_noise", "var": 25.0, "gray_p": 0.0},
                                             {"op": "jpeg", "quality": 50}]},
    "strong": {"name": "faces-strong", "steps": [{"op": "gaussian_blur", "ksize": 13, "sigma": 2.0},
                                                 {"op": "gaussian_noise", "var": 144.0, "gray_p": 0.0},
                                                 {"op": "jpeg", "quality": 25}]},
}


@dataclasses.dataclass
class Composite:
    name: str                    # background
    photo: np.ndarray            # uint8 [H, W, 3], undegraded
    boxes: List[List[float]]     # per face: placed box [x0, y0, x1, y1] (photo pixels)
    masks: List[np.ndarray]      # per face: bool [H, W], the placed square
    scales: List[float]
    angles: List[float]          # degrees
    seed: int                    # degradation seed of this photo


def _decode(data: bytes) -> np.ndarray:
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if arr is None:
        raise UserError("an image of the faces ZIP could not be decoded")
    return np.ascontiguousarray(arr[:, :, ::-1])


def background(name: str) -> np.ndarray:
    """scikit-image photo ``name`` as uint8 RGB, long side ``PHOTO_LONG_SIDE``."""
    import skimage.data      # scikit-image: the test extra, needed only for the backgrounds
    img = np.asarray(getattr(skimage.data, name)())
    if img.dtype != np.uint8:
        img = (img > 0).astype(np.uint8) * 255 if img.dtype == bool else img.astype(np.uint8)
    img = match_channels(img[:, :, None] if img.ndim == 2 else img, 3)
    h, w = img.shape[:2]
    s = PHOTO_LONG_SIDE / max(h, w)
    return cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)


def place(photo: np.ndarray, face: np.ndarray, centre, scale: float, angle: float):
    """Paste ``face`` (square) rotated by ``angle`` degrees and scaled, centred at ``centre``.
    Returns (photo, m [2, 3] face pixel -> photo pixel, bool mask of the placed square)."""
    side = face.shape[0]
    m = cv2.getRotationMatrix2D(((side - 1) / 2, (side - 1) / 2), angle, scale)
    m[:, 2] += np.asarray(centre, np.float64) - (side - 1) / 2
    h, w = photo.shape[:2]
    warped = cv2.warpAffine(face, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT)
    mask = cv2.warpAffine(np.ones([side, side], np.uint8), m, (w, h), flags=cv2.INTER_NEAREST) > 0
    out = photo.copy()
    out[mask] = warped[mask]
    return out, m, mask


class ReferenceBoxes:
    """Where dlib's HOG detector boxes a face crop (upsampled ``REFERENCE_UPSAMPLE`` x), in the
    crop's pixels; None when it finds none."""

    def __init__(self):
        require_faces()
        self._detector = dlib.get_frontal_face_detector()

    def __call__(self, face: np.ndarray) -> Optional[List[float]]:
        u = REFERENCE_UPSAMPLE
        big = cv2.resize(face, (face.shape[1] * u, face.shape[0] * u), interpolation=cv2.INTER_CUBIC)
        rects, scores, _ = self._detector.run(np.ascontiguousarray(big), 0, 0.0)
        if not len(rects):
            return None
        r = rects[int(np.argmax(scores))]
        box = [r.left(), r.top(), r.right() + 1, r.bottom() + 1]          # pixel edges of the upsampled crop
        return [v / u - 0.5 for v in box]                                # -> crop pixel centres


def placed_box(box, m, scale):
    """Where a face box lands: same centre mapped through ``m``, side scaled (axis-aligned)."""
    c = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    cx, cy = m[:, :2] @ c + m[:, 2]
    half = (box[2] - box[0]) * scale / 2
    return [float(cx - half), float(cy - half), float(cx + half), float(cy + half)]


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def degrade(img: np.ndarray, level: str, seed: int) -> np.ndarray:
    """``img`` through the ``level`` degradation of ``LEVELS`` (seeded; clean: unchanged)."""
    if level not in LEVELS:
        raise UserError(f"unknown degradation level '{level}' (use one of {', '.join(LEVELS)})")
    spec = LEVELS[level]
    if spec is None:
        return img
    pipe = build_pipeline(spec, resolution=max(img.shape[:2]), mode="absolute")
    out, _ = pipe.apply_numpy(np.ascontiguousarray(img), int(seed))
    return out


def make_composites(mini_zip: str, photos: int = 3, per_photo: int = 3, seed: int = 0,
                    min_scale: float = 0.5, max_scale: float = 3.0) -> List[Composite]:
    """``photos`` composites of ``per_photo`` faces each, scales spread evenly over
    [min_scale, max_scale] (one face per column, so they do not overlap), seeded."""
    if not 1 <= photos <= len(BACKGROUNDS):
        raise UserError(f"photos must be in 1..{len(BACKGROUNDS)}, got {photos}")
    if per_photo < 1 or not 0 < min_scale <= max_scale:
        raise UserError("per_photo must be >= 1 and 0 < min_scale <= max_scale")
    rng = np.random.RandomState(seed)
    ref = ReferenceBoxes()
    with zipfile.ZipFile(mini_zip) as z:
        names = sorted(n for n in z.namelist() if n.lower().endswith((".png", ".jpg", ".jpeg", ".webp")))
        order = iter(rng.permutation(len(names)))

        def next_face():
            for i in order:                       # faces the reference cannot box are passed over
                face = _decode(z.read(names[i]))
                box = ref(face)
                if box is not None:
                    return face, box
            raise UserError(f"{mini_zip}: too few faces for {photos} x {per_photo} composites")

        out = []
        for b, name in enumerate(BACKGROUNDS[:photos]):
            photo = background(name)
            h, w = photo.shape[:2]
            comp = Composite(name=name, photo=photo, boxes=[], masks=[], scales=[], angles=[], seed=seed * 1000 + b)
            scales = np.linspace(min_scale, max_scale, per_photo)
            for k in rng.permutation(per_photo):  # which column gets which scale: seeded
                face, box = next_face()
                s, angle = float(scales[k]), float(rng.uniform(-MAX_TILT, MAX_TILT))
                col_w = w / per_photo
                col = len(comp.boxes)
                cx = col_w * (col + 0.5) + rng.uniform(-0.1, 0.1) * col_w
                cy = h * rng.uniform(0.35, 0.65)
                comp.photo, m, mask = place(comp.photo, face, (cx, cy), s, angle)
                comp.boxes.append(placed_box(box, m, s))
                comp.masks.append(mask)
                comp.scales.append(s)
                comp.angles.append(angle)
            out.append(comp)
    return out


def evaluate(detect: Callable[[np.ndarray], Sequence[Sequence[float]]], composites: Sequence[Composite],
             levels: Sequence[str] = tuple(LEVELS), progress: bool = False) -> Dict[str, Any]:
    """Run ``detect`` (photo -> boxes) on every composite at every level. Returns per face
    ``{photo, level, face, scale, angle, side, box, iou, found}``, per photo the false positives,
    and per level a summary (found / faces, mean IoU of the found, false positives, seconds)."""
    faces, photos, summary = [], [], {}
    jobs = [(lv, c) for lv in levels for c in composites]
    for level, comp in tqdm(jobs, desc="composites", unit="photo", disable=not progress):
        img = degrade(comp.photo, level, comp.seed)
        t0 = time.perf_counter()
        boxes = [list(map(float, b)) for b in detect(img)]
        secs = time.perf_counter() - t0
        for k, (pb, s, a) in enumerate(zip(comp.boxes, comp.scales, comp.angles)):
            best = max([iou(pb, b) for b in boxes] or [0.0])
            faces.append({"photo": comp.name, "level": level, "face": k, "scale": round(s, 3), "angle": round(a, 2),
                          "side": round(pb[2] - pb[0], 1), "box": [round(v, 1) for v in pb], "iou": round(best, 3),
                          "found": best >= MATCH_IOU})
        false = [b for b in boxes if max(iou(pb, b) for pb in comp.boxes) < MATCH_IOU]
        photos.append({"photo": comp.name, "level": level, "detections": len(boxes),
                       "false_positives": [[round(v, 1) for v in b] for b in false], "seconds": round(secs, 3)})
    for level in levels:
        fl = [f for f in faces if f["level"] == level]
        pl = [p for p in photos if p["level"] == level]
        found = [f["iou"] for f in fl if f["found"]]
        mean_iou = round(float(np.mean(found)), 3) if found else None
        summary[level] = {"found": len(found), "faces": len(fl), "mean_iou_found": mean_iou,
                          "false_positives": sum(len(p["false_positives"]) for p in pl),
                          "missed_sides": [f["side"] for f in fl if not f["found"]],
                          "seconds": round(sum(p["seconds"] for p in pl), 2)}
    return {"summary": summary, "faces": faces, "photos": photos}


def pipeline_detector(min_face: int = 16, **kw) -> Callable[[np.ndarray], List[List[float]]]:
    """``FacePipeline``'s detection as ``evaluate`` wants it: photo -> boxes of the faces kept."""
    pipe = FacePipeline(64, mode="dlib", min_face=min_face, **kw)
    return lambda img: [f.detection.box for f in pipe.find(img)[0]]


def _cpu_name() -> Optional[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m evaluation.composites",
                                description="Face detection on composites of held-out faces in real photos (JSON report).")
    p.add_argument("--data", required=True, help="ZIP of held-out 64x64 faces (utkface64-mini.zip)")
    p.add_argument("--out", required=True, help="JSON report to write")
    p.add_argument("--photos", type=int, default=3, help=f"number of backgrounds (1-{len(BACKGROUNDS)})")
    p.add_argument("--per-photo", type=int, default=3, help="faces per photo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-scale", type=float, default=0.5)
    p.add_argument("--max-scale", type=float, default=3.0)
    p.add_argument("--levels", default=",".join(LEVELS), help="comma-separated degradation levels")
    p.add_argument("--min-face", type=int, default=16, help="the pipeline's --min-face (px)")
    args = p.parse_args(argv)

    @cli_main
    def run():
        if not os.path.isfile(args.data):
            raise UserError(f"faces ZIP not found: {args.data}")
        levels = [x for x in args.levels.split(",") if x]
        bad = [x for x in levels if x not in LEVELS]
        if bad or not levels:
            raise UserError(f"--levels: unknown level(s) {', '.join(bad) or '(none given)'} (use {', '.join(LEVELS)})")
        comps = make_composites(args.data, args.photos, args.per_photo, args.seed, args.min_scale, args.max_scale)
        rep = evaluate(pipeline_detector(args.min_face), comps, levels, progress=True)
        rep["options"] = {k: v for k, v in vars(args).items() if k != "out"}
        rep["cpu"] = _cpu_name() or platform.processor() or platform.machine()
        rep["cpu_count"] = os.cpu_count()
        with atomic_write(args.out, "w") as f:
            json.dump(rep, f, indent=1)
            f.write("\n")
        for level, s in rep["summary"].items():
            print(f"{level:7s} found {s['found']}/{s['faces']}  mean IoU {s['mean_iou_found']}  "
                  f"false positives {s['false_positives']}  missed sides {s['missed_sides']}  {s['seconds']} s")
    run()


if __name__ == "__main__":
    main()
