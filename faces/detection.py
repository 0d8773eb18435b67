"""Face detection and landmarks with dlib (optional extra ``pip install -e .[faces]``).

* detector: dlib's HOG + linear SVM frontal face detector (built into the ``dlib-bin`` wheel);
* check: dlib's CNN face detector (MMOD, ``mmod_human_face_detector.dat``) on a small crop around
  each weak HOG candidate (optional: without the file, weak candidates are dropped);
* landmarks: dlib's 68-point shape predictor (iBUG 300-W layout).
The model files ship inside the ``face-recognition-models`` package and are found through
``importlib.util.find_spec``: importing that package needs ``pkg_resources``, which current
setuptools no longer has.

The HOG detector scans an 80 x 80 window, so faces smaller than about 80 px are missed at the
image's own size. ``FaceDetector`` therefore scans a rescaled copy: upsampled so that a face of
``min_face`` pixels reaches the window, and never larger than ``max_side`` pixels on its long side
(very large photos are scanned on a downscaled copy: memory stays bounded). The upright detector
also scans copies tilted by ``rotations``. Each scan keeps candidates down to the score
``proposal_threshold`` (below dlib's 0). The candidates of all scans are taken best score first,
each dropped when it is a face already kept (box IoU above ``NMS_IOU`` or centred inside its box:
non-maximum suppression across scans). A candidate scoring at least ``threshold`` (plus
``TILTED_MARGIN`` in a tilted copy) is a face; a weaker one is a face only when dlib's CNN
detector, run on an upright crop around it (the face ``CHECK_SIDES`` px, in turn), finds a face
there with a confidence of at least ``CHECK_THRESHOLD`` (a rejected candidate suppresses nothing).
Small and degraded faces mostly score below 0: the check finds them without admitting the
background's weak candidates.
Landmarks are predicted on an upright crop of the photo itself (the face ``LANDMARK_SIDE`` px:
tiny faces upsampled, faces of large photos at full resolution), mapped back to photo pixels.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
from typing import Callable, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from dnnlib.util import UserError

try:
    import dlib      # the optional ``faces`` extra: when missing, FaceDetector's require_faces() names the install line
except ImportError:
    dlib = None

MODELS_PACKAGE = "face_recognition_models"
LANDMARKS_FILE = "shape_predictor_68_face_landmarks.dat"
CHECK_FILE = "mmod_human_face_detector.dat"   # dlib's CNN face detector (optional check of weak candidates)
INSTALL_HINT = "pip install -e '.[faces]'  (installs dlib-bin and face-recognition-models)"
DETECTOR_WINDOW = 80        # px: the side of dlib's HOG scanning window (smallest face found at scale 1)
DEFAULT_MAX_SIDE = 2048     # px: long side of the copy the detector scans (memory / time bound)
DEFAULT_ROTATIONS = (0.0, -15.0, 15.0)   # degrees: the upright detector also scans copies tilted by these
TILTED_MARGIN = 0.5         # score a candidate of a tilted copy needs above the threshold to skip the check
PROPOSAL_THRESHOLD = -0.8   # HOG score down to which candidates are kept (for the CNN check)
NMS_IOU = 0.3               # a candidate overlapping a kept face by more than this IoU (or centred in it) is that face
SAME_SPOT_IOU = 0.5         # a weak candidate overlapping a rejected one by more than this is not checked again
CHECK_SIDES = (80,)     # px: candidate's box side in the crops the CNN checks, in turn (crop: twice that)
CHECK_IOU = 0.3             # IoU the CNN's box needs with the candidate's (in the crop)
CHECK_THRESHOLD = 0.25      # CNN confidence a weak candidate needs (faces on the composites: 0.34-1.05)
MAX_CHECKS = 32             # weak candidates rejected per photo before the rest go unchecked (time bound)
LANDMARK_SIDE = 160         # px: face box side in the crop the 68-point predictor sees

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


def check_model_path() -> Optional[str]:
    """The CNN detector's file (None when this face-recognition-models lacks it)."""
    d = _models_dir()
    path = os.path.join(d, CHECK_FILE) if d else None
    return path if path and os.path.isfile(path) else None


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
    box: List[float]            # [x0, y0, x1, y1] in photo pixels (detector's box, axis-aligned)
    score: float                # HOG detector score (SVM margin; >= threshold = face without a check)
    landmarks: np.ndarray       # [68, 2] float64, photo pixels (x, y)
    angle: float = 0.0          # degrees: tilt of the scanned copy it was found in
    check: Optional[float] = None   # CNN confidence when a weak candidate was checked (None: not checked)

    @property
    def size(self) -> float:
        """Box side in photo pixels (the --min-face measure)."""
        return float(min(self.box[2] - self.box[0], self.box[3] - self.box[1]))


@dataclasses.dataclass
class _Candidate:
    cx: float                   # box centre, photo pixels
    cy: float
    side: float                 # box side, photo pixels
    score: float
    angle: float

    @property
    def box(self) -> List[float]:
        h = self.side / 2
        return [self.cx - h, self.cy - h, self.cx + h, self.cy + h]


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _same_face(c: _Candidate, kept: _Candidate) -> bool:
    """A candidate overlapping a kept face by more than ``NMS_IOU``, or centred inside its box."""
    b = kept.box
    return box_iou(c.box, b) > NMS_IOU or (b[0] <= c.cx <= b[2] and b[1] <= c.cy <= b[3])


def merge_candidates(cands: Sequence[_Candidate], strong: Callable[[_Candidate], bool],
                     check: Optional[Callable[[_Candidate], Optional[float]]], max_checks: int = MAX_CHECKS
                     ) -> List[Tuple[_Candidate, Optional[float]]]:
    """The faces among the candidates of all scans: (candidate, CNN confidence or None).

    Best score first; a candidate of the same face as a kept one is dropped (non-maximum
    suppression). A ``strong`` candidate is kept; a weak one is kept when ``check`` gives a
    confidence (None: not a face). Weak candidates on the spot of a rejected one (IoU above
    ``SAME_SPOT_IOU``) are not checked again, and after ``max_checks`` rejections none is."""
    kept: List[Tuple[_Candidate, Optional[float]]] = []
    rejected: List[_Candidate] = []
    for c in sorted(cands, key=lambda c: -c.score):
        if any(_same_face(c, k) for k, _ in kept):
            continue
        conf = None
        if not strong(c):
            if check is None or len(rejected) >= max_checks or any(box_iou(c.box, r.box) > SAME_SPOT_IOU for r in rejected):
                continue
            conf = check(c)
            if conf is None:
                rejected.append(c)                # a rejected candidate suppresses nothing
                continue
        kept.append((c, conf))
    return kept


def upright_crop(photo: np.ndarray, cx: float, cy: float, side: float, angle: float, target: int
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """Square crop of side ``2 target`` centred on (cx, cy), turned by ``angle`` degrees (as the
    scanned copy was) and scaled so that ``side`` photo px become ``target`` px (bicubic up; area
    averaged first when it shrinks the face). Returns (crop, m [2, 3] crop pixel -> photo pixel)."""
    s = target / max(side, 1e-6)
    m = cv2.getRotationMatrix2D((float(cx), float(cy)), float(angle), s)     # photo -> crop, centre kept
    m[:, 2] += np.array([target - 0.5, target - 0.5]) - (float(cx), float(cy))
    back = cv2.invertAffineTransform(m)
    src, mw = photo, m
    if s < 1:        # shrink the photo's window around the crop with area averaging, then warp at scale ~1
        h, w = photo.shape[:2]
        corners = np.array([[-0.5, -0.5], [2 * target - 0.5, -0.5], [-0.5, 2 * target - 0.5], [2 * target - 0.5] * 2])
        p = corners @ back[:, :2].T + back[:, 2]
        x0, y0 = max(0, int(np.floor(p[:, 0].min())) - 2), max(0, int(np.floor(p[:, 1].min())) - 2)
        x1, y1 = min(w, int(np.ceil(p[:, 0].max())) + 3), min(h, int(np.ceil(p[:, 1].max())) + 3)
        if x1 > x0 and y1 > y0:
            size = (max(1, round((x1 - x0) * s)), max(1, round((y1 - y0) * s)))
            src = cv2.resize(photo[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA)
            f = np.array([size[0] / (x1 - x0), size[1] / (y1 - y0)])
            # window-small pixel q -> photo pixel (q + 0.5) / f - 0.5 + (x0, y0); compose with m
            mw = m.copy()
            mw[:, :2] = m[:, :2] / f
            mw[:, 2] = m[:, :2] @ ((0.5 / f) - 0.5 + np.array([x0, y0])) + m[:, 2]
    crop = cv2.warpAffine(src, mw, (2 * target, 2 * target), flags=cv2.INTER_CUBIC if s > 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT_101)
    return np.ascontiguousarray(crop), back


class FaceDetector:
    """Faces of an RGB photo, largest first (see the module docstring for the scans and the check)."""

    def __init__(self, min_face: int = 16, max_side: int = DEFAULT_MAX_SIDE, threshold: float = 0.0,
                 rotations=DEFAULT_ROTATIONS, proposal_threshold: float = PROPOSAL_THRESHOLD,
                 check: bool = True):
        require_faces()
        self.min_face = max(1, int(min_face))   # px: smallest face (box side) looked for
        self.max_side = int(max_side)           # px: long side of the scanned copy, at most
        self.threshold = float(threshold)       # HOG score of a face without a check (dlib's adjust_threshold)
        self.rotations = tuple(float(a) for a in rotations)  # degrees: copies scanned (the HOG detector is upright-only)
        path = check_model_path() if check else None
        # weak candidates need the CNN check: without it (check=False, no model file) none is kept
        self.proposal_threshold = min(float(proposal_threshold), self.threshold) if path else self.threshold
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(landmarks_path())
        self._checker = dlib.cnn_face_detection_model_v1(path) if path else None

    @property
    def checks(self) -> bool:
        """Whether weak candidates are checked with the CNN detector."""
        return self._checker is not None

    def scan_scale(self, height: int, width: int) -> float:
        """Factor applied to the photo before scanning (> 1 upsamples)."""
        return min(DETECTOR_WINDOW / self.min_face, self.max_side / max(height, width))

    def __call__(self, rgb: np.ndarray) -> List[Detection]:
        photo = np.ascontiguousarray(np.asarray(rgb, np.uint8)[:, :, :3])     # [H, W, 3]
        h, w = photo.shape[:2]
        s = self.scan_scale(h, w)
        img = photo
        if abs(s - 1) > 1e-6:
            size = (max(1, round(w * s)), max(1, round(h * s)))
            img = cv2.resize(photo, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        sx, sy = img.shape[1] / w, img.shape[0] / h
        cands: List[_Candidate] = []
        for angle in self.rotations:
            cands += self._scan(img, angle, sx, sy)
        del img
        strong = lambda c: c.score >= self.threshold + (TILTED_MARGIN if c.angle else 0.0)   # noqa: E731
        check = (lambda c: self._check(photo, c)) if self._checker is not None else None
        out = [Detection(box=[float(v) for v in c.box], score=float(c.score), landmarks=self._landmarks(photo, c),
                         angle=c.angle, check=conf)
               for c, conf in merge_candidates(cands, strong, check)]
        out.sort(key=lambda d: -d.size)
        return out

    def _scan(self, img: np.ndarray, angle: float, sx: float, sy: float) -> List[_Candidate]:
        """Candidates in ``img`` (the scanned copy) turned by ``angle`` degrees, in photo pixels."""
        h, w = img.shape[:2]
        if angle:
            rot = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)     # scanned -> rotated
            img = cv2.warpAffine(img, rot, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
            back = cv2.invertAffineTransform(rot)
        else:
            back = np.array([[1.0, 0, 0], [0, 1.0, 0]])
        rects, scores, _ = self._detector.run(img, 0, self.proposal_threshold)
        out = []
        for rect, score in zip(rects, scores):
            cx, cy = back[:, :2] @ [(rect.left() + rect.right()) / 2, (rect.top() + rect.bottom()) / 2] + back[:, 2]
            side = (rect.right() - rect.left() + 1) / ((sx + sy) / 2)   # the box keeps its side, centred on the face
            out.append(_Candidate(cx=(cx + 0.5) / sx - 0.5, cy=(cy + 0.5) / sy - 0.5, side=side,
                                  score=float(score), angle=angle))
        return out

    def _check(self, photo: np.ndarray, c: _Candidate) -> Optional[float]:
        """CNN confidence of a face where the candidate is (None: no face there)."""
        for side in CHECK_SIDES:
            crop, _ = upright_crop(photo, c.cx, c.cy, c.side, c.angle, side)
            mid = [side / 2, side / 2, 3 * side / 2, 3 * side / 2]
            best = None
            for d in self._checker(crop, 0):
                r = d.rect
                box = [r.left(), r.top(), r.right() + 1, r.bottom() + 1]
                if d.confidence >= CHECK_THRESHOLD and box_iou(box, mid) >= CHECK_IOU:
                    best = max(best or -np.inf, float(d.confidence))
            if best is not None:
                return best
        return None

    def _landmarks(self, photo: np.ndarray, c: _Candidate) -> np.ndarray:
        """[68, 2] landmarks in photo pixels, predicted on an upright crop (box side LANDMARK_SIDE px)."""
        crop, back = upright_crop(photo, c.cx, c.cy, c.side, c.angle, LANDMARK_SIDE)
        lo, hi = LANDMARK_SIDE // 2, LANDMARK_SIDE // 2 + LANDMARK_SIDE - 1
        shape = self._predictor(crop, dlib.rectangle(lo, lo, hi, hi))
        return np.array([[p.x, p.y] for p in shape.parts()], np.float64) @ back[:, :2].T + back[:, 2]
