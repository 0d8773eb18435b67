"""The explorer's HTTP layer: the standard library's ``ThreadingHTTPServer`` on 127.0.0.1 only,
serving the page from this package (``static/``; nothing from outside) and one endpoint per
image or question of the page. Every endpoint is listed in ``docs/explorer.md``:

    GET  /                          the page (static/index.html; app.js, app.css under /static/)
    GET  /api/info                  the model, its directions and the restored uploads (JSON)
    GET  /api/q?src=...&q_seed=N    the default q of a source (JSON)
    GET  /image/sharp.png?...       G(w, 0) of a view (``session.parse_view``'s parameters)
    GET  /image/degraded.png?...    G(w, q) of the same view
    POST /api/restore?name=FILE     body: the image file; starts a restoration (JSON: job)
    GET  /api/restore/ID            the job's state and progress (JSON)
    GET  /api/restore/ID/input.png  the upload as read (PNG)
    GET  /api/restore/ID/result.png the restored image (PNG; ``download=1``: as an attachment)

Bad parameters answer 400 with ``{"error": message}``; an image request carrying ``slot=NAME``
that a newer request for the same slot overtook answers 409 (the page aborts it anyway).
"""
from __future__ import annotations

import json
import os
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Optional
from urllib.parse import parse_qs, urlsplit

from dnnlib import image_io
from dnnlib.util import UserError

from .jobs import MAX_UPLOAD_BYTES, RestoreJobs
from .session import Explorer, Superseded, parse_view

HOST = "127.0.0.1"                       # never another interface
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".png": "image/png"}
ALLOWED_HOSTS = ("127.0.0.1", "localhost")   # Host header check: a page elsewhere cannot reach us by DNS rebinding


class ExplorerServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, explorer: Explorer, jobs: RestoreJobs, port: int = 0, quiet: bool = True):
        self.explorer, self.jobs, self.quiet = explorer, jobs, quiet
        super().__init__((HOST, port), _Handler)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}/"

    def start_background(self) -> threading.Thread:
        """Serve in a daemon thread (tests, scripts); ``shutdown()`` + ``close()`` to stop."""
        thread = threading.Thread(target=self.serve_forever, name="explorer-http", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self.server_close()
        self.jobs.close()


class _Handler(BaseHTTPRequestHandler):
    server: ExplorerServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:    # noqa: A002 (the base class's name)
        if not self.server.quiet:
            sys.stderr.write("explore: " + (format % args) + "\n")

    # ----------------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        try:
            if self.headers.get("Host", "").rsplit(":", 1)[0] not in ALLOWED_HOSTS:
                self._json({"error": "unexpected Host header"}, HTTPStatus.FORBIDDEN)
                return
            route = self._route(method, parts.path)
            if route is None:
                self._json({"error": f"no such endpoint: {method} {parts.path}"}, HTTPStatus.NOT_FOUND)
                return
            route(query)
        except UserError as exc:
            self._json({"error": str(exc)}, HTTPStatus.BAD_REQUEST)
        except Superseded:
            self._json({"error": "superseded by a newer request for this image"}, HTTPStatus.CONFLICT)
        except KeyError as exc:
            self._json({"error": f"unknown job {exc}"}, HTTPStatus.NOT_FOUND)
        except (BrokenPipeError, ConnectionResetError):
            pass                                       # the page aborted this request

    def _route(self, method: str, path: str):
        if method == "POST":
            return self._restore_start if path == "/api/restore" else None
        if path in ("/", "/index.html"):
            return lambda q: self._static("index.html")
        if path.startswith("/static/"):
            return lambda q: self._static(path[len("/static/"):])
        if path == "/api/info":
            return lambda q: self._json(self.server.explorer.info())
        if path == "/api/q":
            return self._q
        if path in ("/image/sharp.png", "/image/degraded.png"):
            return lambda q: self._image(path[len("/image/"):-len(".png")], q)
        if path.startswith("/api/restore/"):
            rest = path[len("/api/restore/"):].split("/")
            if len(rest) == 1:
                return lambda q: self._json(self.server.jobs.get(rest[0]).public())
            if len(rest) == 2 and rest[1] in ("input.png", "result.png"):
                return lambda q: self._job_file(rest[0], rest[1], q)
        return None

    # ----------------------------------------------------------------------------------------
    # Endpoints.

    def _static(self, name: str) -> None:
        if name not in os.listdir(STATIC_DIR) or os.path.splitext(name)[1] not in CONTENT_TYPES:
            self._json({"error": f"no such file: {name}"}, HTTPStatus.NOT_FOUND)
            return
        with open(os.path.join(STATIC_DIR, name), "rb") as f:
            self._send(f.read(), CONTENT_TYPES[os.path.splitext(name)[1]])

    def _q(self, query: Dict[str, str]) -> None:
        ex = self.server.explorer
        q_seed = int(query["q_seed"]) if query.get("q_seed", "").isdigit() else None
        self._json({"src": query.get("src", "seed:0"), "q": ex.q_of(query.get("src") or "seed:0", q_seed)})

    def _image(self, kind: str, query: Dict[str, str]) -> None:
        ex = self.server.explorer
        view = parse_view(query, ex.G.q_dim)
        self._send(ex.image_png(view, kind, slot=query.get("slot") or None), "image/png")

    def _restore_start(self, query: Dict[str, str]) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_UPLOAD_BYTES:
            self.close_connection = True
            raise UserError(f"the upload is larger than {MAX_UPLOAD_BYTES // 2 ** 20} MiB")
        data = self.rfile.read(length) if length > 0 else b""
        job = self.server.jobs.submit(data, query.get("name") or "upload.png")
        self._json(job.public(), HTTPStatus.ACCEPTED)

    def _job_file(self, job_id: str, which: str, query: Dict[str, str]) -> None:
        job = self.server.jobs.get(job_id)
        if which == "input.png":
            rgb, alpha = image_io.read_image_alpha(job.input_path())
            self._send(image_io.encode_image(rgb, ".png"), "image/png")
            return
        if job.state != "done" or not os.path.isfile(job.result_path()):
            self._json({"error": f"job {job_id} has no result yet ({job.state})"}, HTTPStatus.NOT_FOUND)
            return
        with open(job.result_path(), "rb") as f:
            data = f.read()
        disposition = f'attachment; filename="{job.stem}-restored.png"' if query.get("download") else None
        self._send(data, "image/png", disposition)

    # ----------------------------------------------------------------------------------------

    def _json(self, obj: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
        self._send(json.dumps(obj).encode("utf-8"), "application/json", status=status)

    def _send(self, body: bytes, content_type: str, disposition: Optional[str] = None,
              status: HTTPStatus = HTTPStatus.OK) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        # the page may load nothing from anywhere but this server
        self.send_header("Content-Security-Policy", "default-src 'self'; img-src 'self' blob:; connect-src 'self'")
        if disposition:
            self.send_header("Content-Disposition", disposition)
        self.end_headers()
        self.wfile.write(body)


def make_server(explorer: Explorer, port: int = 0, pti_steps: Optional[int] = None, w_steps: Optional[int] = None,
                quiet: bool = True) -> ExplorerServer:
    """A server for ``explorer`` on 127.0.0.1:``port`` (0: any free port; see ``.url``)."""
    jobs = RestoreJobs(explorer, pti_steps=pti_steps, w_steps=w_steps)
    try:
        return ExplorerServer(explorer, jobs, port, quiet)
    except OSError:
        jobs.close()
        raise


def parse_directions(specs) -> Dict[str, str]:
    """``--direction NAME=FILE`` or ``FILE`` (named by its stem) -> {name: path}."""
    out = {}
    for spec in specs or ():
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = os.path.splitext(os.path.basename(spec))[0], spec
        if not os.path.isfile(path):
            raise UserError(f"--direction: file not found: {path}")
        out[name] = path
    return out
