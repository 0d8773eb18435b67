"""Face detection and landmarks with dlib (optional extra ``pip install -e .[faces]``).

* detector: dlib's HOG + linear SVM frontal face detector (built into the ``dlib-bin`` wheel);
* landmarks: dlib's 68-point shape predictor (iBUG 300-W layout), whose file ships inside the
  ``face-recognition-models`` package. The file is found through ``importlib.util.find_spec``:
  importing that package needs ``pkg_resources``, which current setuptools no longer has.

The HOG detector scans an 80 x 80 window, so faces smaller than about 80 px are missed at the
image's own size. ``FaceDetector`` therefore detects on a rescaled copy: upsampled so that a face
of ``min_face`` pixels reaches the window, and never larger than ``max_side`` pixels on its long
side (very large photos are detected on a downscaled copy: memory stays bounded). Boxes and
landmarks are mapped back to the photo's own coordinates.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
from typing import List, Optional

import cv2
import numpy as np

from dnnlib.util import UserError

try:
    import dlib      # the optional ``faces`` extra: when missing, FaceDetector's require_faces() names the install line
except ImportError:
    dlib = None

MODELS_PACKAGE = "face_recognition_models"
LANDMARKS_FILE = "shape_predictor_68_face_landmarks.dat"
INSTALL_HINT = "pip install -e '.[faces]'  (installs dlib-bin and face-recognition-models)"
DETECTOR_WINDOW = 80        # px: the side of dlib's HOG scanning window (smallest face found at scale 1)
DEFAULT_MAX_SIDE = 2048     # px: long side of the copy the detector scans (memory / time bound)
DEFAULT_ROTATIONS = (0.0, -20.0, 20.0)   # degrees: the upright detector also scans copies tilted by these
TILTED_MARGIN = 0.5         # score a detection in a tilted copy needs above the threshold (fewer false faces)

# 68-point indices of the five alignment points (iBUG 300-W numbering, 0-based).
LEFT_EYE = slice(36, 42)    # the eye on the image's left (the person's right eye)
RIGHT_EYE = slice(42, 48)
NOSE_TIP = 30
MOUTH_LEFT, MOUTH_RIGHT = 48, 54


def _models_dir() -> Optional[str]:
    spec = importlib.util.find_spec(MODELS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.join(list(spec.submodule_search_locations)[0], "models")


def missing_dependencies() -> List[str]:
    """Names of the missing pieces of the ``faces`` extra (empty when everything is there)."""
    missing = []
    if importlib.util.find_spec("dlib") is None:
        missing.append("dlib (dlib-bin)")
    d = _models_dir()
    if d is None or not os.path.isfile(os.path.join(d, LANDMARKS_FILE)):
        missing.append(f"{LANDMARKS_FILE} (face-recognition-models)")
    return missing


def faces_available() -> bool:
    return not missing_dependencies()


def require_faces() -> None:
    missing = missing_dependencies()
    if missing:
        raise UserError(f"face detection needs {' and '.join(missing)}: {INSTALL_HINT}")


def landmarks_path() -> str:
    require_faces()
    return os.path.join(_models_dir(), LANDMARKS_FILE)


def five_points(landmarks68: np.ndarray) -> np.ndarray:
    """[68, 2] -> [5, 2]: left eye centre, right eye centre, nose tip, left and right mouth corner
    (left/right as seen in the image)."""
    lm = np.asarray(landmarks68, np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"expected [68, 2] landmarks, got {lm.shape}")
    return np.stack([lm[LEFT_EYE].mean(0), lm[RIGHT_EYE].mean(0), lm[NOSE_TIP], lm[MOUTH_LEFT], lm[MOUTH_RIGHT]])


@dataclasses.dataclass
class Detection:
    box: List[float]            # [x0, y0, x1, y1] in photo pixels (detector's box)
    score: float                # detector confidence (SVM margin; > 0 = face)
    landmarks: np.ndarray       # [68, 2] float64, photo pixels (x, y)

    @property
    def size(self) -> float:
        """Box side in photo pixels (the --min-face measure)."""
        return float(min(self.box[2] - self.box[0], self.box[3] - self.box[1]))


class FaceDetector:
    """Faces of an RGB photo, largest first (see the module docstring for the scan scale)."""

    def __init__(self, min_face: int = 16, max_side: int = DEFAULT_MAX_SIDE, threshold: float = 0.0,
                 rotations=DEFAULT_ROTATIONS):
        require_faces()
        self.min_face = max(1, int(min_face))   # px: smallest face (box side) looked for
        self.max_side = int(max_side)           # px: long side of the scanned copy, at most
        self.threshold = float(threshold)       # detector score threshold (dlib's adjust_threshold)
        self.rotations = tuple(float(a) for a in rotations)  # degrees: copies scanned (the HOG detector is upright-only)
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(landmarks_path())

    def scan_scale(self, height: int, width: int) -> float:
        """Factor applied to the photo before scanning (> 1 upsamples)."""
        return min(DETECTOR_WINDOW / self.min_face, self.max_side / max(height, width))

    def __call__(self, rgb: np.ndarray) -> List[Detection]:
        img = np.ascontiguousarray(np.asarray(rgb, np.uint8)[:, :, :3])     # [H, W, 3]
        h, w = img.shape[:2]
        s = self.scan_scale(h, w)
        if abs(s - 1) > 1e-6:
            size = (max(1, round(w * s)), max(1, round(h * s)))
            img = cv2.resize(img, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
            sx, sy = size[0] / w, size[1] / h
        else:
            sx = sy = 1.0
        found: List[Detection] = []
        for angle in self.rotations:
            found += self._scan(img, angle, sx, sy)
        out: List[Detection] = []
        for d in sorted(found, key=lambda d: -d.score):       # one detection per face: the best-scoring copy
            c = np.array([(d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2])
            if all(not (o.box[0] <= c[0] <= o.box[2] and o.box[1] <= c[1] <= o.box[3]) for o in out):
                out.append(d)
        out.sort(key=lambda d: -d.size)
        return out

    def _scan(self, img: np.ndarray, angle: float, sx: float, sy: float) -> List[Detection]:
        """Detections in ``img`` rotated by ``angle`` degrees, in photo coordinates."""
        h, w = img.shape[:2]
        if angle:
            rot = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)     # scanned -> rotated
            img = cv2.warpAffine(img, rot, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
            back = cv2.invertAffineTransform(rot)
        else:
            back = np.array([[1.0, 0, 0], [0, 1.0, 0]])
        rects, scores, _ = self._detector.run(img, 0, self.threshold)
        out = []
        for rect, score in zip(rects, scores):
            if angle and score < self.threshold + TILTED_MARGIN:
                continue
            shape = self._predictor(img, dlib.rectangle(rect.left(), rect.top(), rect.right(), rect.bottom()))
            lm = np.array([[p.x, p.y] for p in shape.parts()], np.float64) @ back[:, :2].T + back[:, 2]
            lm = (lm + 0.5) / [sx, sy] - 0.5                 # pixel centres of the scanned copy -> photo
            cx, cy = back[:, :2] @ [(rect.left() + rect.right()) / 2, (rect.top() + rect.bottom()) / 2] + back[:, 2]
            half = (rect.right() - rect.left() + 1) / 2      # the box keeps its side, centred where the face is
            box = [(cx - half + 0.5) / sx - 0.5, (cy - half + 0.5) / sy - 0.5,
                   (cx + half + 0.5) / sx - 0.5, (cy + half + 0.5) / sy - 0.5]
            out.append(Detection(box=[float(v) for v in box], score=float(score), landmarks=lm))
        return out
