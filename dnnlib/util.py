"""Small shared utilities: EasyDict, offline-aware file/URL opening, atomic writes, range parsing.

Nothing here imports the rest of the project.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import tempfile
from typing import Any, Iterator, List


class UserError(Exception):
    """An error caused by the user's input (bad path, wrong file kind, bad option).

    CLIs print its message on one line and exit non-zero, without a traceback.
    """


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
        import urllib.request
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

@contextlib.contextmanager
def atomic_write(path: str, mode: str = "wb") -> Iterator[io.IOBase]:
    """Write to a temporary file beside ``path`` and rename it into place on success, so an
    interrupted run never leaves a half-written file under the final name."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)                 # mkstemp makes 0600 files; give the usual mode
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def append_jsonl(path: str, record: dict) -> None:
    """Append one JSON line (creating the file and folders as needed)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=False) + "\n")


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


def cli_main(func):
    """Decorator for a CLI entry point: a ``UserError`` prints ``error: <message>`` on stderr and
    exits with status 1, without a traceback; Ctrl-C exits with 130."""
    import functools
    import sys

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)
    return wrapper
