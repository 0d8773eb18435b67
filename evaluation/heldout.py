"""Degraded versions of held-out faces and a classical baseline, shared by the evaluation tools
(``model_report``, ``restore_report``) and the fidelity calibration (``fidelity``)."""
from __future__ import annotations

from typing import List, Sequence

import cv2
import numpy as np
import torch

from degradations import build_pipeline
from dnnlib.image_io import PIXEL_RANGE, from_uint8_hwc, to_uint8_hwc

NLM_STRENGTH = 10                                    # OpenCV's documented example (h = hColor = 10)


def degrade_faces(faces: Sequence[np.ndarray], seed: int) -> List[np.ndarray]:
    """The ``paper`` pipeline, relative mode, one seeded draw per face."""
    pipe = build_pipeline("paper", faces[0].shape[0], mode="relative")
    x = from_uint8_hwc(list(faces), PIXEL_RANGE)
    y, _ = pipe(x, generator=torch.Generator().manual_seed(seed))
    return list(to_uint8_hwc(y, PIXEL_RANGE))


def nlm_denoise(img: np.ndarray, strength: int = NLM_STRENGTH) -> np.ndarray:
    bgr = np.ascontiguousarray(img[..., ::-1])
    return cv2.fastNlMeansDenoisingColored(bgr, None, strength, strength, 7, 21)[..., ::-1].copy()
