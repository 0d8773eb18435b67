"""Restoration of uploaded images in the background (QC-StyleGAN Sec. 4.3), for the explorer.

Each upload is written into a private temporary folder (never next to the user's files), checked
with ``dnnlib.image_io`` (formats, size limits; a bad file is a ``UserError`` at once), then
restored by one worker thread with the library call of ``restore.py``:
``restore_folder(models, input, outdir, RestoreOptions(...))`` with restore.py's
defaults (``RESTORE_DEFAULTS``: faces of a whole photo found, aligned, restored and pasted back;
an R x R image taken as an aligned face). The worker reports each inversion step
(``RestoreOptions.on_step``), so the page shows progress while the sliders keep rendering.
A finished upload's inversion (face 0 of a photo) becomes the explorer source ``upload:<id>``.
"""
from __future__ import annotations

import dataclasses
import os
import queue
import re
import shutil
import tempfile
import threading
import time
import traceback
import uuid
from typing import Any, Dict, List, Optional

from dnnlib import image_io
from dnnlib.util import UserError, read_jsonl
from faces.pipeline import face_name
from apps.latents import load_inversion_latent
from apps.fidelity import load_curve
from inversion.config import InversionConfig
from apps.restore import RECORDS_FILE, RestoreOptions, restore_folder
from apps.store import INVERSIONS_DIR, is_finished

from .session import UPLOAD_PREFIX, Explorer

# restore.py's option defaults (tests/test_explorer.py checks them against restore.py's own)
# (the inversion settings: restore.py's default preset, InversionConfig())
RESTORE_DEFAULTS = dict(align="auto", max_faces=None, min_face=16, fidelity="auto")
MAX_UPLOAD_BYTES = 64 * 1024 * 1024      # larger uploads are refused before anything is written
INPUT_DIR, OUTPUT_DIR = "input", "output"


def restore_options(models, on_step=None, pti_steps: Optional[int] = None, w_steps: Optional[int] = None) -> RestoreOptions:
    """restore.py's ``RestoreOptions`` for ``models`` (``pti_steps`` / ``w_steps``: restore.py's
    ``--pti-steps`` / ``--w-steps``, None = its defaults); inversions kept (for ``upload:<id>``)."""
    d = RESTORE_DEFAULTS
    curve = load_curve(models.network)[0] if d["fidelity"] == "auto" else None      # as restore.py finds it
    inversion = InversionConfig().replace(**{k: v for k, v in (("pti_steps", pti_steps), ("w_steps", w_steps))
                                             if v is not None})
    return RestoreOptions(fidelity=d["fidelity"], fidelity_curve=curve, inversion=inversion,
                          progress=False, keep_inversions=True, on_step=on_step,
                          face_pipeline=models.face_pipeline(d["align"], d["max_faces"], d["min_face"]))


def safe_stem(filename: str) -> str:
    """A harmless file stem from a client's file name."""
    stem = os.path.splitext(os.path.basename(filename.replace("\\", "/")))[0]
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", stem).strip("._")[:64]
    return stem or "upload"


@dataclasses.dataclass
class RestoreJob:
    id: str
    name: str                                   # the client's file name (display only)
    folder: str                                 # private temp folder of this job
    stem: str
    ext: str
    state: str = "queued"                       # queued | running | done | error
    stage: str = ""                             # '', 'stage1', 'pti', 'writing'
    step: int = 0
    steps: int = 0
    message: str = ""
    q: Optional[List[float]] = None             # estimated q of face 0 (or of the image)
    faces: int = 0
    seconds: float = 0.0
    started: float = 0.0

    def public(self) -> Dict[str, Any]:
        done = self.state == "done"
        has_result = done and os.path.isfile(self.result_path())
        return {"id": self.id, "name": self.name, "state": self.state, "stage": self.stage, "step": self.step,
                "steps": self.steps, "message": self.message, "q": self.q, "faces": self.faces,
                "seconds": round(self.seconds if done else (time.time() - self.started if self.started else 0.0), 2),
                "input": f"/api/restore/{self.id}/input.png",
                "result": f"/api/restore/{self.id}/result.png" if has_result else None,
                "src": UPLOAD_PREFIX + self.id if done and self.q is not None else None}

    def input_path(self) -> str:
        return os.path.join(self.folder, INPUT_DIR, self.stem + self.ext)

    def result_path(self) -> str:
        return os.path.join(self.folder, OUTPUT_DIR, self.stem + ".png")


class RestoreJobs:
    """Upload -> background restoration; status and files by job id."""

    def __init__(self, explorer: Explorer, workdir: Optional[str] = None, pti_steps: Optional[int] = None,
                 w_steps: Optional[int] = None):
        self.explorer = explorer
        self.root = tempfile.mkdtemp(prefix="qc-explore-", dir=workdir)
        self.pti_steps, self.w_steps = pti_steps, w_steps
        self.jobs: Dict[str, RestoreJob] = {}
        self._queue: "queue.Queue[Optional[RestoreJob]]" = queue.Queue()
        self._lock = threading.Lock()
        self._worker = threading.Thread(target=self._work, name="explorer-restore", daemon=True)
        self._worker.start()

    def submit(self, data: bytes, filename: str) -> RestoreJob:
        """Check an upload and queue it; a ``UserError`` names what is wrong with the file."""
        if not data:
            raise UserError("the upload is empty")
        if len(data) > MAX_UPLOAD_BYTES:
            raise UserError(f"the upload is larger than {MAX_UPLOAD_BYTES // 2 ** 20} MiB")
        ext = os.path.splitext(filename)[1].lower()
        if ext not in image_io.IMAGE_EXTENSIONS:
            raise UserError(f"'{filename}' is not an image file name (use {', '.join(image_io.IMAGE_EXTENSIONS)})")
        job_id = uuid.uuid4().hex[:12]
        job = RestoreJob(id=job_id, name=os.path.basename(filename)[:200], folder=os.path.join(self.root, job_id),
                         stem=safe_stem(filename), ext=ext)
        os.makedirs(os.path.dirname(job.input_path()))
        with open(job.input_path(), "wb") as f:
            f.write(data)
        try:
            image_io.read_image_alpha(job.input_path())              # decodes with the project's limits
        except UserError as exc:
            shutil.rmtree(job.folder, ignore_errors=True)
            raise UserError(f"'{job.name}' cannot be read as an image: {exc}") from None
        with self._lock:
            self.jobs[job_id] = job
        self._queue.put(job)
        return job

    def get(self, job_id: str) -> RestoreJob:
        with self._lock:
            job = self.jobs.get(job_id)
        if job is None:
            raise KeyError(job_id)
        return job

    def wait(self, job_id: str, timeout: float = 600.0) -> RestoreJob:
        """Block until a job ends (tests and scripts)."""
        end = time.time() + timeout
        job = self.get(job_id)
        while job.state in ("queued", "running") and time.time() < end:
            time.sleep(0.05)
        return job

    def close(self) -> None:
        """Stop the worker after its current job and delete every upload and result."""
        self._queue.put(None)
        self._worker.join(timeout=5)
        shutil.rmtree(self.root, ignore_errors=True)

    # ----------------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                self._run(job)
            except UserError as exc:
                job.state, job.message = "error", str(exc)
            except Exception as exc:                                 # reported on the page, not lost
                traceback.print_exc()
                job.state, job.message = "error", f"{type(exc).__name__}: {exc}"

    def _run(self, job: RestoreJob) -> None:
        models = self.explorer.models
        job.state, job.started = "running", time.time()

        def on_step(stage: str, k: int, n: int) -> None:
            job.stage, job.step, job.steps = stage, k, n

        notes: List[str] = []
        opts = restore_options(models, on_step, self.pti_steps, self.w_steps)
        out = os.path.join(job.folder, OUTPUT_DIR)
        restore_folder(models, os.path.join(job.folder, INPUT_DIR), out, opts.replace(log=notes.append))
        job.stage = "writing"
        records = [r for r in read_jsonl(os.path.join(out, RECORDS_FILE)) if "error" not in r]
        if not records:
            raise UserError("; ".join(notes) or "the image could not be restored")
        rec = records[-1]
        faces = rec.get("faces")
        job.faces = len(faces) if faces is not None else 1
        inv = os.path.join(out, INVERSIONS_DIR, job.stem if faces is None else face_name(job.stem, 0))
        if is_finished(inv):
            latent = load_inversion_latent(models.G, inv, name=job.name)
            job.q = [round(float(v), 5) for v in latent.q]
            self.explorer.add_upload(job.id, latent)
        if faces is not None and not faces:
            job.message = "no face found in this photo: it is returned unchanged" + (f" ({'; '.join(notes)})" if notes else "")
        elif faces is not None:
            job.message = f"{len(faces)} face(s) found, restored and pasted back"
        job.seconds = time.time() - job.started
        job.state = "done"
