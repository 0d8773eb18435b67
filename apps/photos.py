"""Whole photos for restore: the faces of each photo, aligned to the model's template
(``faces.pipeline``), inverted as one list of crops (so the inversion batches them), restored,
and pasted back into the photo at its own size (``editing.paste_edits`` does the same for edits,
``apps.invert_folder`` stops after inversion).

Names: face k of ``a/photo.jpg`` (k = 0 for the largest) is ``a/photo_k``: its inversion folder,
its ``faces/a/photo_k.png`` tile (aligned input | result), its key in records.
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from dnnlib import image_io
from dnnlib.folder_job import log_stderr
from faces.pipeline import FacePipeline, face_name, find_faces, save_face_info

from inversion.api import save_inversion
from .store import COMPARE_DIR, FACES_DIR, INVERSIONS_DIR, reuse_or_invert

FACE_SCORES = ("psnr", "perceptual", "lpips", "perceptual_loss", "w_steps", "pti_steps")   # InversionStats per face


def with_alpha(img: np.ndarray, alpha: Optional[np.ndarray]) -> np.ndarray:
    return img if alpha is None else np.dstack([img, alpha])


def restore_photos(pipeline: FacePipeline, photos: Sequence[Tuple[str, str, np.ndarray]],
                   alphas: Dict[str, Optional[np.ndarray]], outdir: str,
                   invert_fn: Callable, renders_fn: Callable, fidelity_fn: Callable,
                   inversions: Optional[str] = None, keep_inversions: bool = False, compare: bool = False,
                   score_fn: Optional[Callable] = None, log=None) -> List[Dict[str, Any]]:
    """Restore the faces of whole photos and paste them back; returns one record per photo.

    photos: [(src, out_rel, rgb uint8 [H, W, 3])], ``alphas[src]``: its alpha (uint8 [H, W] or
    None), both as read by the caller; ``invert_fn(crops, names, on_result)`` (the folder's
    inversion call, on the list of every face of these photos without a finished inversion in
    ``inversions``: ``store.reuse_or_invert``); ``renders_fn(result,
    name)`` -> uint8 [R, R, 3] G(w, 0) and G(w, q); ``fidelity_fn(result, sharp, reconstruction,
    crop)`` -> ``fidelity.FidelityChoice`` of the face (``crop``: the aligned input); ``score_fn(src, photo, restored_photo)`` -> metrics
    fields or {}. A face of fidelity f > 0 gets (1 - f) of what the model changed added to the photo
    (``FacePipeline.paste_changes``: the photo keeps its detail above the model's resolution); f = 0
    pastes G(w, 0) itself (the paper's restoration). Computed in the faces' windows only: a large
    photo gets no float copy of itself.
    """
    log = log or log_stderr
    stems = [os.path.splitext(o)[0] for _, o, _ in photos]
    found = find_faces(pipeline, [(s, im) for s, (_, _, im) in zip(stems, photos)], log)
    wanted = [(face_name(stem, f.index), f.crop) for stem, faces, _ in found for f in faces]
    results: Dict[str, Any] = {}                  # name -> (InversionResult, reused)
    spent = [0.0]                                 # seconds of the inversion call

    def invert(crops, names, on_result) -> None:
        t0 = time.perf_counter()
        invert_fn(crops, names, on_result)
        spent[0] = time.perf_counter() - t0

    def keep(i: int, res, reused: bool) -> None:
        results[wanted[i][0]] = (res, reused)

    reuse_or_invert([n for n, _ in wanted], [c for _, c in wanted], inversions, invert, keep)
    seconds = spent[0] / max(1, sum(not reused for _, reused in results.values()))
    records = []
    for (src, out_rel, img), (stem, faces, notes) in zip(photos, found):
        alpha = alphas[src]
        sharps, fidelities, face_recs = [], [], []
        for f in faces:
            name = face_name(stem, f.index)
            res, reused = results[name]
            sharp, recon = renders_fn(res, name)
            choice = fidelity_fn(res, sharp, recon, f.crop)
            sharps.append(sharp)
            fidelities.append(choice.fidelity)
            tile = os.path.join(FACES_DIR, name + ".png").replace(os.sep, "/")
            image_io.write_image(os.path.join(outdir, tile), np.concatenate([f.crop, sharp[:, :, :3]], axis=1))
            if keep_inversions and not reused:
                save_inversion(os.path.join(outdir, INVERSIONS_DIR, name), res)
                save_face_info(os.path.join(outdir, INVERSIONS_DIR, name), f, src, img.shape)
            face_recs.append({**f.record(), "tile": tile, "reused_inversion": reused, **choice.record(),
                              "scores": res.stats.record(*FACE_SCORES)})
        whole = pipeline.paste_changes(img, faces, sharps, fidelities) if faces else img
        image_io.write_image(os.path.join(outdir, out_rel), with_alpha(whole, alpha))
        if compare:
            image_io.write_image(os.path.join(outdir, COMPARE_DIR, out_rel), np.concatenate([img, whole], axis=1))
        rec: Dict[str, Any] = {"file": out_rel, "source": src, "size": list(img.shape[:2]), "aligned": True,
                               "seconds": round(seconds * len(faces), 3), "faces": face_recs, "notes": notes,
                               "alpha": alpha is not None}
        if score_fn is not None:
            rec.update(score_fn(src, img, whole))
        records.append(rec)
    return records
