"""Small shared utilities: EasyDict, offline-aware file/URL opening, atomic writes, range parsing.

Nothing here imports the rest of the project.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import re
import signal
import sys
import tempfile
import urllib.request
from typing import Any, Dict, Iterator, List, Optional


class UserError(Exception):
    """An error caused by the user's input (bad path, wrong file kind, bad option).

    CLIs print its message on one line and exit non-zero, without a traceback.
    """


class BadFileError(UserError):
    """A file given as a model (network, encoder, checkpoint) exists but cannot serve: wrong kind,
    truncated or corrupt, a newer format version, or built for another network. CLIs exit with
    status 2 (``EXIT_BAD_FILE``) and write nothing."""

    exit_code = 2


# Exit statuses of every CLI (``cli_main``): 0 = done (something processed, or nothing left to do),
# 1 = a user error (bad option, missing path, no input could be read, a write failed),
# 2 = a wrong model file (``BadFileError``), 130 = interrupted (Ctrl-C).
EXIT_USER_ERROR = 1
EXIT_BAD_FILE = 2
EXIT_INTERRUPTED = 130


class EasyDict(dict):
    """A dict whose keys can also be read and written as attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        del self[name]


# ---------------------------------------------------------------------------------------------
# Cache directory and URL opening.

def cache_dir() -> str:
    """Where downloaded or user-provided external files are looked up (``$QC_CACHE_DIR``,
    else ``$XDG_CACHE_HOME/qc-stylegan``, else ``~/.cache/qc-stylegan``)."""
    if "QC_CACHE_DIR" in os.environ:
        return os.environ["QC_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
    return os.path.join(base, "qc-stylegan")


def is_url(path: str) -> bool:
    return bool(re.match(r"^[a-z][a-z0-9+.-]*://", str(path)))


def url_cache_path(url: str) -> str:
    """The file a URL is cached as: ``<cache_dir>/downloads/<md5(url)>_<basename>``."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", url.rstrip("/").split("/")[-1])[:80] or "file"
    digest = hashlib.md5(url.encode("utf-8")).hexdigest()
    return os.path.join(cache_dir(), "downloads", f"{digest}_{name}")


def open_url(path_or_url: str, allow_download: bool = False, timeout: float = 30.0) -> io.BufferedReader:
    """Open a local path or a URL for binary reading.

    URLs are served from the local cache (``url_cache_path``). Downloading happens only with
    ``allow_download=True``; otherwise, and when the download fails (offline machine), a
    ``UserError`` says which file to fetch and where to put it.
    """
    path_or_url = os.fspath(path_or_url)
    if not is_url(path_or_url) or path_or_url.startswith("file://"):
        path = path_or_url[len("file://"):] if path_or_url.startswith("file://") else path_or_url
        if not os.path.isfile(path):
            raise UserError(f"file not found: {path}")
        return open(path, "rb")
    cached = url_cache_path(path_or_url)
    if os.path.isfile(cached):
        return open(cached, "rb")
    if allow_download:
        try:
            with urllib.request.urlopen(path_or_url, timeout=timeout) as resp:
                data = resp.read()
        except Exception as exc:  # offline, DNS failure, HTTP error
            raise UserError(f"cannot download {path_or_url} ({exc}); download it by hand and "
                            f"save it as {cached}, or pass a local path") from None
        with atomic_write(cached, "wb") as f:
            f.write(data)
        return open(cached, "rb")
    raise UserError(f"{path_or_url} is not available offline; download it by hand and save it as "
                    f"{cached}, or pass a local path")


# ---------------------------------------------------------------------------------------------
# Files.

TEMP_PREFIX, TEMP_SUFFIX = ".", ".tmp"      # atomic_write's temporary files: hidden, never read as results


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "wb") -> Iterator[io.IOBase]:
    """Write to a temporary file beside ``path`` (hidden: ``.NAME.XXXX.tmp``), fsync it and rename
    it into place on success, so an interrupted run (even SIGKILL) never leaves a half-written file
    under the final name. A failed write (disk full, ...) removes the temporary, keeps any old
    file and raises ``UserError`` naming ``path``."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX + os.path.basename(path) + ".", suffix=TEMP_SUFFIX, dir=directory)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        try:
            with os.fdopen(fd, mode) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            umask = os.umask(0)                 # mkstemp makes 0600 files; give the usual mode
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, path)
        except OSError as exc:              # disk full, quota, read-only: name the file, keep the old one
            raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def remove_stale_temp_files(directory: str) -> List[str]:
    """Delete the temporary files an ``atomic_write`` killed mid-write left in ``directory`` (not
    recursive); returns their names."""
    removed = []
    if not os.path.isdir(directory):
        return removed
    for name in os.listdir(directory):
        if name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX) and os.path.isfile(os.path.join(directory, name)):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(directory, name))
                removed.append(name)
    return removed


def append_jsonl(path: str, record: dict) -> None:
    """Append one JSON line (creating the file and folders as needed). A last line cut short by a
    killed writer is ended first, so the new record stays a line of its own."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    line = json.dumps(record, sort_keys=False) + "\n"
    try:
        with open(path, "ab+") as f:            # appends always go to the end (O_APPEND)
            if f.seek(0, os.SEEK_END) > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    line = "\n" + line
            f.write(line.encode("utf-8"))
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None


def rewrite_jsonl(path: str, keep) -> int:
    """Rewrite a JSONL file atomically with only the records for which ``keep(record)`` is true
    (a cut-short line is dropped); returns how many were dropped. A missing file is left alone."""
    if not os.path.isfile(path):
        return 0
    with open(path, "r", encoding="utf-8") as f:
        total = sum(1 for line in f if line.strip())
    records = [r for r in read_jsonl(path) if keep(r)]
    if len(records) == total:
        return 0
    with atomic_write(path, "w") as f:
        for r in records:
            f.write(json.dumps(r, sort_keys=False) + "\n")
    return total - len(records)


def read_jsonl(path: str) -> List[dict]:
    """Read a JSONL file; a truncated last line (interrupted writer) is ignored."""
    out = []
    if not os.path.isfile(path):
        return out
    with open(path, "r", encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


# ---------------------------------------------------------------------------------------------
# Parsing.

def parse_range(spec: str) -> List[int]:
    """Parse ``'0-3,10,12-13'`` into ``[0, 1, 2, 3, 10, 12, 13]`` (inclusive ranges)."""
    if isinstance(spec, (list, tuple)):
        return [int(v) for v in spec]
    out: List[int] = []
    for part in str(spec).split(","):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"(-?\d+)\s*-\s*(-?\d+)", part)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise UserError(f"bad range '{part}': end before start")
            out.extend(range(lo, hi + 1))
        elif re.fullmatch(r"-?\d+", part):
            out.append(int(part))
        else:
            raise UserError(f"bad range item '{part}' (expected e.g. '0-3,10')")
    return out


def format_time(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {(s // 60) % 60:02d}m"
    return f"{s // 86400}d {(s // 3600) % 24:02d}h"


STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1")   # scheduler preemption, Ctrl-C, SLURM's early warning


class StopSignals:
    """While installed (main thread only), SIGTERM / SIGINT / SIGUSR1 only record a stop request
    (``requested`` = the signal's name); the training loop that installed it (the GAN's, the
    encoders') finishes the step, snapshots and returns. Further signals are ignored meanwhile
    (SIGKILL still stops at once, resumably)."""

    def __init__(self):
        self.requested: Optional[str] = None
        self._previous: Dict[int, Any] = {}

    def _handle(self, signum, _frame):
        if self.requested is None:        # no printing here: the main thread may be inside a print
            self.requested = signal.Signals(signum).name

    def install(self) -> "StopSignals":
        for name in STOP_SIGNALS:
            sig = getattr(signal, name, None)
            if sig is None:
                continue
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:        # not the main thread (e.g. a test's worker thread)
                pass
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


def cli_main(func):
    """Decorator for a CLI entry point: a ``UserError`` prints ``error: <message>`` on stderr, one
    line, no traceback, and exits with its status (1; 2 for a ``BadFileError``, see ``EXIT_*``);
    an ``OSError`` (e.g. a full disk) is reported the same way with status 1; Ctrl-C exits 130."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(getattr(exc, "exit_code", EXIT_USER_ERROR))
        except OSError as exc:
            name = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            print(f"error: {name}{exc.strerror or exc}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(EXIT_INTERRUPTED)
    return wrapper
