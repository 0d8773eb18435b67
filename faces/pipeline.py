"""The face pipeline every application uses on whole photos: find faces, align each to the
model's template, and paste processed crops back.

    if align_enabled("auto"):                             # False: inputs are aligned crops
        pipe = FacePipeline(G.img_resolution, resolve_template(...), mode="auto")
    if pipe.wants(photo):                                 # auto: not already an R x R face crop
        faces, notes = pipe.find(photo)                   # largest first; tiny / extra faces noted
        crops = [f.crop for f in faces]                   # uint8 [R, R, 3], to the inversion
        whole = pipe.paste(photo, faces, restored_crops)  # same size as the photo

Modes: ``none`` (inputs are aligned crops: nothing here runs), ``dlib`` (detect in every input;
stops with the install line when the ``faces`` extra is missing), ``auto`` (detect in every
input that is not an R x R crop; without the extra, one note and inputs are taken as aligned).
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from dnnlib.image_io import match_channels, write_image
from dnnlib.util import UserError, atomic_write

from .alignment import (DEFAULT_FEATHER, apply_transform, crop_box, crop_face, paste_back, paste_change,
                        similarity_transform)
from .detection import INSTALL_HINT, Detection, FaceDetector, faces_available, five_points, missing_dependencies
from .templates import FFHQ_TEMPLATE, resolve_template, template_points, validate_template

ALIGN_MODES = ("auto", "dlib", "none")
DEFAULT_MIN_FACE = 16        # px: faces whose detector box is smaller are skipped (noted)
FACE_INFO_FILE = "face.json"
NO_FACE_NOTE = "no face found: copied unchanged"


def _r(a, nd: int = 2):
    return np.round(np.asarray(a, np.float64), nd).tolist()


@dataclasses.dataclass
class AlignedFace:
    index: int                  # k: 0 = largest face of the photo
    crop: np.ndarray            # uint8 [R, R, 3]: the model's input
    crop_size: int              # S: side of the native crop (the same crop at the photo's own resolution)
    matrix: np.ndarray          # [2, 3]: photo pixel -> R x R crop pixel (similarity)
    detection: Detection
    points: np.ndarray          # [5, 2] alignment points in the photo

    def record(self) -> Dict[str, Any]:
        """Plain data for JSONL: box, landmarks, transform (photo -> crop), score."""
        check = self.detection.check
        return {"face": self.index, "box": _r(self.detection.box), "score": round(self.detection.score, 4),
                "tilt": round(self.detection.angle, 1), "check": None if check is None else round(check, 4),
                "landmarks": _r(self.detection.landmarks, 1), "points": _r(self.points),
                "transform": _r(self.matrix, 6), "crop_size": int(self.crop_size),
                "crop_box": _r(crop_box(self.matrix, self.crop.shape[0]))}


def is_grey(img: np.ndarray) -> bool:
    return img.ndim == 3 and img.shape[2] == 3 and np.array_equal(img[:, :, 0], img[:, :, 1]) \
        and np.array_equal(img[:, :, 1], img[:, :, 2])


def match_colour(img: np.ndarray, grey: bool) -> np.ndarray:
    """A processed crop as uint8 [S, S, 3]; its luma (BT.601) repeated when the photo is grey."""
    img = np.asarray(img)
    img = match_channels(img[:, :, None] if img.ndim == 2 else img, 3)
    return match_channels(match_channels(img, 1), 3) if grey else img


def align_enabled(mode: str, log=None) -> bool:
    """Whether ``--align MODE`` detects faces here: False for ``none``, and for ``auto`` without
    the ``faces`` extra (with one note); ``dlib`` without the extra stops with the install line."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if mode not in ALIGN_MODES:
        raise UserError(f"--align must be one of {', '.join(ALIGN_MODES)}, got '{mode}'")
    if mode == "none":
        return False
    if not faces_available():
        if mode == "dlib":
            raise UserError(f"--align dlib needs {' and '.join(missing_dependencies())}: {INSTALL_HINT}")
        log(f"note: face detection is not installed ({INSTALL_HINT}); --align auto treats every input "
            "as an aligned face crop")
        return False
    return True


class FacePipeline:
    """Detection + alignment + paste-back for one model resolution and template."""

    def __init__(self, resolution: int, template: Optional[Dict[str, Any]] = None, mode: str = "auto",
                 max_faces: Optional[int] = None, min_face: int = DEFAULT_MIN_FACE,
                 feather: float = DEFAULT_FEATHER, max_side: Optional[int] = None):
        if mode not in ("auto", "dlib"):
            raise ValueError(f"mode must be auto or dlib, got {mode}")
        if max_faces is not None and max_faces < 1:
            raise UserError("--max-faces must be >= 1")
        if min_face < 1:
            raise UserError("--min-face must be >= 1 (pixels)")
        self.resolution = int(resolution)                     # R of the model
        self.template = validate_template(template or FFHQ_TEMPLATE)
        self.mode = mode
        self.max_faces = max_faces                            # None: every face found
        self.min_face = int(min_face)                         # px, detector box side
        self.feather = float(feather)                         # mask fall-off, share of the crop side
        kw = {"max_side": max_side} if max_side else {}
        # Scan for faces down to DEFAULT_MIN_FACE even when --min-face is larger, so that the
        # faces skipped for their size are reported rather than silently missed.
        self.detector = FaceDetector(min_face=min(self.min_face, DEFAULT_MIN_FACE), **kw)
        self._dst = template_points(self.template, self.resolution)

    def options(self) -> Dict[str, Any]:
        """Plain data for options files."""
        return {"mode": self.mode, "max_faces": self.max_faces, "min_face": self.min_face, "feather": self.feather,
                "template": self.template}

    def wants(self, img: np.ndarray) -> bool:
        """Whether to detect faces in ``img`` (auto: an R x R image is taken as an aligned crop)."""
        return self.mode == "dlib" or tuple(img.shape[:2]) != (self.resolution, self.resolution)

    def align(self, photo: np.ndarray, det: Detection, index: int = 0) -> AlignedFace:
        pts = five_points(det.landmarks)
        m = similarity_transform(pts, self._dst)
        crop, _, side = crop_face(photo, m, self.resolution)      # the native crop itself is not kept (memory)
        return AlignedFace(index=index, crop=crop, crop_size=side, matrix=m, detection=det, points=pts)

    def find(self, photo: np.ndarray) -> Tuple[List[AlignedFace], List[str]]:
        """Aligned faces of ``photo`` (uint8 [H, W, 3]), largest first, and notes on what was left out."""
        found = self.detector(photo)
        notes = []
        small = [d for d in found if d.size < self.min_face]
        if small:
            notes.append(f"{len(small)} face(s) smaller than --min-face {self.min_face} px skipped "
                         f"({', '.join(f'{d.size:.0f}' for d in small)} px)")
        keep = [d for d in found if d.size >= self.min_face]
        if self.max_faces is not None and len(keep) > self.max_faces:
            notes.append(f"{len(keep) - self.max_faces} face(s) beyond --max-faces {self.max_faces} skipped")
            keep = keep[:self.max_faces]
        return [self.align(photo, d, k) for k, d in enumerate(keep)], notes

    def paste(self, photo: np.ndarray, faces: Sequence[AlignedFace], images: Sequence[np.ndarray],
              opacity: float = 1.0) -> np.ndarray:
        """Paste each processed crop (uint8, square, any side) back into a copy of ``photo``, its
        soft mask scaled by ``opacity`` (``alignment.paste_back``). A grey photo stays grey (the
        faces are converted to their luma)."""
        grey = is_grey(photo)
        out = photo
        for face, img in zip(faces, images):
            out = paste_back(out, match_colour(img, grey), face.matrix, self.resolution, self.feather, opacity)
        return out

    def paste_changes(self, photo: np.ndarray, faces: Sequence[AlignedFace], images: Sequence[np.ndarray],
                      fidelities: Sequence[float]) -> np.ndarray:
        """Restoration's paste-back: face k with fidelity f_k > 0 adds (1 - f_k) of what the model
        changed (``images[k]`` minus the model's input ``faces[k].crop``, ``alignment.paste_change``):
        the photo keeps its detail above the model's resolution. f_k = 0 pastes ``images[k]`` itself
        (``paste``). A grey photo stays grey."""
        grey = is_grey(photo)
        out = photo
        for face, img, f in zip(faces, images, fidelities):
            img = match_colour(img, grey)
            if f == 0:
                out = paste_back(out, img, face.matrix, self.resolution, self.feather, 1.0)
            else:
                out = paste_change(out, match_colour(face.crop, grey), img, face.matrix, self.resolution,
                                   self.feather, 1.0 - f)
        return out


# ---------------------------------------------------------------------------------------------
# Photos in the applications.

def face_name(stem: str, k: int) -> str:
    return f"{stem}_{k}"


def build_face_pipeline(align: str, G, network_path: Optional[str], nets: Optional[dict] = None,
                        max_faces: Optional[int] = None, min_face: Optional[int] = None, log=None
                        ) -> Optional[FacePipeline]:
    """The pipeline behind ``--align`` for generator ``G`` loaded from ``network_path`` (``nets``:
    what ``load_network`` returned, or at least its ``metadata`` and ``source``, for the template
    in its metadata). None = inputs are taken as aligned crops."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if not align_enabled(align, log):
        return None
    nets = nets or {}
    template = resolve_template(network_path, nets.get("metadata"), nets.get("source"), log=log)
    return FacePipeline(G.img_resolution, template, mode=align, max_faces=max_faces,
                        min_face=DEFAULT_MIN_FACE if min_face is None else min_face)


def split_photos(pipeline: Optional[FacePipeline], items: Sequence[tuple], image_index: int = 2
                 ) -> Tuple[List[tuple], List[tuple]]:
    """(crops, photos): the items whose image is taken as an aligned crop, and the photos."""
    if pipeline is None:
        return list(items), []
    photos = [it for it in items if pipeline.wants(it[image_index])]
    crops = [it for it in items if not pipeline.wants(it[image_index])]
    return crops, photos


def find_faces(pipeline: FacePipeline, photos: Sequence[Tuple[str, np.ndarray]], log=None):
    """[(stem, photo)] -> [(stem, faces, notes)] with notes logged."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    out = []
    for stem, img in photos:
        faces, notes = pipeline.find(img)
        if not faces:
            notes = notes + [NO_FACE_NOTE]
        for n in notes:
            log(f"{stem}: {n}")
        out.append((stem, faces, notes))
    return out


def expand_photos(pipeline: Optional[FacePipeline], items: Sequence[Tuple[str, np.ndarray]], log=None
                  ) -> Tuple[List[Tuple[str, np.ndarray, Optional[Any], Optional[str]]], List[str]]:
    """[(key, image)] -> ([(key, crop, face or None, photo key or None)], keys of photos without a
    face). Aligned crops pass through; each face of a photo becomes ``<key>_<k>``."""
    crops, photos = split_photos(pipeline, [(k, None, im) for k, im in items])
    out = [(k, im, None, None) for k, _, im in crops]
    empty = []
    if photos:
        for (key, faces, _), (_, _, img) in zip(find_faces(pipeline, [(k, im) for k, _, im in photos], log), photos):
            if not faces:
                empty.append(key)
            out += [(face_name(key, f.index), f.crop, f, key) for f in faces]
    return out, empty


# ---------------------------------------------------------------------------------------------
# A face's alignment beside its inversion folder (invert.py run --align, edit.py --align).

def save_face_info(folder: str, face: AlignedFace, source: str, photo_shape: Sequence[int]) -> None:
    os.makedirs(folder, exist_ok=True)
    write_image(os.path.join(folder, "aligned.png"), face.crop)
    with atomic_write(os.path.join(folder, FACE_INFO_FILE), "w") as f:
        json.dump({"source": source, "photo_size": [int(photo_shape[0]), int(photo_shape[1])],
                   "resolution": int(face.crop.shape[0]), **face.record()}, f)
        f.write("\n")


def load_face_info(folder: str) -> Optional[Dict[str, Any]]:
    path = os.path.join(folder, FACE_INFO_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def paste_recorded(photo: np.ndarray, infos: Sequence[Dict[str, Any]], images: Sequence[np.ndarray],
                   feather: float = DEFAULT_FEATHER) -> np.ndarray:
    """Paste crops back with recorded transforms (``face.json`` / restore.jsonl entries)."""
    grey = is_grey(photo)
    out = photo
    for info, img in zip(infos, images):
        out = paste_back(out, match_colour(img, grey), np.asarray(info["transform"]), int(info["resolution"]), feather)
    return out


__all__ = ["ALIGN_MODES", "AlignedFace", "FacePipeline", "align_enabled", "apply_transform", "load_face_info", "paste_recorded",
           "save_face_info"]
