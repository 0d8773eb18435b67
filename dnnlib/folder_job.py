"""The resumable per-input folder job under every folder CLI: ``degrade.py``, ``calc_metrics.py
compare``, ``invert.py run``, ``restore.py`` and ``edit.py --input``.

One ``FolderJob`` is one pass over the inputs of a job:

* inputs: an image file or a folder searched recursively (``of_input``: ``image_io.list_sources``,
  outputs inside the input folder are not read again), or a list the caller made (``compare``);
* overwrite check: ``refuse_overwrite`` before anything is written (an output may never land on an
  input);
* resume: ``finished`` (the outputs an earlier run recorded without ``error`` and wrote) and
  ``pending`` (what is left; the rest counts as skipped), so running the same command again goes on
  where a stopped run ended and retries the inputs that failed;
* options file: ``start`` writes the run's options (JSON) into the output folder; when an earlier
  run's file holds other values, one note names the options that changed (finished outputs are
  kept as they are);
* progress: one bar over every entry, the skipped ones counted in;
* reading: ``chunks`` reads the pending entries a batch at a time; an unreadable file (any odd file
  ``image_io`` refuses) is reported (``skipped NAME: reason``), recorded (a line with ``error`` in
  the records file, when the job keeps one) and counted, and the job goes on;
* the exit rule: ``finish`` (``require_progress``): status 0 when at least one input was processed,
  now or by an earlier run; a ``UserError`` (status 1) when there were inputs and none could be.

    job = FolderJob.of_input(input_path, outdir, "results.jsonl", "invert", options_file="x.json")
    job.refuse_overwrite(output_names)
    todo = job.pending(entries, done=lambda e: ...)
    job.start(options)
    for chunk in job.chunks(todo, batch, source_of, error_record):   # [(entry, (rgb, alpha))]
        ...                                      # process, write each result, job.tick()
    job.finish(processed)                        # UserError when no input could be processed
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple, TypeVar

from tqdm import tqdm

from .image_io import list_sources, read_image_alpha
from .util import UserError, append_jsonl, atomic_write, read_jsonl

T = TypeVar("T")


def log_stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def require_progress(done: int, failed: int, reasons: str) -> None:
    """The exit rule of folder jobs: status 0 when at least one input was processed (now or by an
    earlier run); a ``UserError`` (status 1) when there were inputs and none could be, naming where
    the per-file ``reasons`` are."""
    if done == 0 and failed > 0:
        raise UserError(f"none of the {failed} input(s) could be processed; the reasons are in {reasons}")


class FolderJob:
    """One pass of a folder job (module docstring): the inputs (``sources``, relative to ``root``),
    the output folder, the records file, the failures and the progress bar."""

    def __init__(self,
                 root:         str,                    # folder the sources are relative to
                 sources:      Sequence[str],          # the inputs, relative paths ('/'-separated)
                 outdir:       Optional[str],          # output folder (made by ``start``); None: the job writes
                                                       # no file of its own (compare writes its results at the end)
                 records_file: Optional[str] = None,   # JSONL under outdir: one line per output; None: none kept
                 desc:         Optional[str] = None,   # progress bar label
                 progress:     bool = True,            # show the progress bar
                 log:          Optional[Callable[[str], None]] = None,   # notes and skipped files; None: stderr
                 options_file: Optional[str] = None):  # JSON under outdir written by ``start``; None: none
        self.root, self.sources = root, list(sources)
        self.outdir = outdir
        self.records = os.path.join(outdir, records_file) if outdir and records_file else None
        self.options_path = os.path.join(outdir, options_file) if outdir and options_file else None
        self.desc, self.progress = desc, progress
        self.log = log or log_stderr
        self.total = len(self.sources)              # entries the bar counts (``pending`` sets them)
        self.skipped = 0                            # entries finished by an earlier run
        self.failed: List[Tuple[Any, str]] = []     # (entry, reason) of every unreadable entry
        self.bar: Optional[tqdm] = None

    @classmethod
    def of_input(cls, input_path: str, outdir: str, records_file: Optional[str] = None, desc: Optional[str] = None,
                 progress: bool = True, log: Optional[Callable[[str], None]] = None,
                 options_file: Optional[str] = None) -> "FolderJob":
        """The job over ``input_path`` (an image file or a folder; ``image_io.list_sources``)."""
        root, sources = list_sources(input_path, outdir)
        return cls(root, sources, outdir, records_file, desc, progress, log, options_file)

    # -- before the run --------------------------------------------------------------------------

    def refuse_overwrite(self, outputs: Iterable[str]) -> None:
        """``UserError`` when an output (relative to the output folder) is one of the inputs."""
        inputs = {os.path.abspath(os.path.join(self.root, s)) for s in self.sources}
        for rel in outputs:
            if os.path.abspath(os.path.join(self.outdir, rel)) in inputs:
                raise UserError(f"output {rel} would overwrite an input; choose another --outdir")

    def latest_records(self, key: str = "file") -> Dict[Any, dict]:
        """The last line without ``error`` of each ``key`` value in the records file (a rerun's
        line replaces an earlier one)."""
        if self.records is None:
            return {}
        return {r[key]: r for r in read_jsonl(self.records) if "error" not in r and key in r}

    def finished(self, key: str = "file") -> Set[str]:
        """Outputs (relative to the output folder) an earlier run recorded and wrote."""
        return {rel for rel in self.latest_records(key) if os.path.isfile(os.path.join(self.outdir, rel))}

    def pending(self, entries: Sequence[T], done: Callable[[T], bool]) -> List[T]:
        """The entries not ``done``; the bar counts all of them, the others as skipped."""
        todo = [e for e in entries if not done(e)]
        self.total, self.skipped = len(entries), len(entries) - len(todo)
        return todo

    def start(self, options: Optional[Dict[str, Any]] = None) -> None:
        """Make the output folder, write ``options`` (to ``options_file``) and show the bar."""
        if self.outdir is not None:
            os.makedirs(self.outdir, exist_ok=True)
        if options is not None and self.options_path is not None:
            self._write_options(options)
        self.bar = tqdm(total=self.total, initial=self.skipped, desc=self.desc, unit="img", file=sys.stderr,
                        disable=not self.progress)

    def _write_options(self, options: Dict[str, Any]) -> None:
        text = json.dumps(options, indent=2) + "\n"
        changed = changed_options(_read_json(self.options_path), json.loads(text))
        if changed:
            self.log(f"note: {self.options_path} of an earlier run differs in {', '.join(changed)}; its finished "
                     f"outputs are kept, the others follow this run's options")
        with atomic_write(self.options_path, "w") as f:
            f.write(text)

    # -- during the run --------------------------------------------------------------------------

    def tick(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def chunks(self, todo: Sequence[T], batch: int, source_of: Callable[[T], str],
               error_record: Optional[Callable[[T, str], dict]] = None,
               read: Optional[Callable[[T], Any]] = None) -> Iterator[List[Tuple[T, Any]]]:
        """``todo`` read ``batch`` entries at a time: lists of ``(entry, data)``; ``data`` is
        ``read(entry)``, by default ``(rgb uint8 [H, W, 3], alpha uint8 [H, W] or None)`` of the
        file ``source_of(entry)``. An entry whose reading raises ``UserError`` is logged, recorded
        (``error_record(entry, reason)``, appended to the records file), kept in ``failed`` and
        ticked; a chunk of only those is not yielded."""
        read = read or (lambda entry: read_image_alpha(os.path.join(self.root, source_of(entry))))
        step = max(1, batch)
        for lo in range(0, len(todo), step):
            chunk = []
            for entry in todo[lo:lo + step]:
                try:
                    chunk.append((entry, read(entry)))
                except UserError as exc:
                    self._fail(entry, source_of(entry), str(exc), error_record)
            if chunk:
                yield chunk

    def _fail(self, entry, source: str, reason: str, error_record) -> None:
        self.log(f"skipped {source}: {reason}")
        if error_record is not None and self.records is not None:
            append_jsonl(self.records, error_record(entry, reason))
        self.failed.append((entry, reason))
        self.tick()

    def finish(self, processed: int, reasons: Optional[str] = None) -> None:
        """Close the bar; the exit rule over ``processed`` (now or before) and the failures, whose
        ``reasons`` are in the records file (or where ``reasons`` says)."""
        if self.bar is not None:
            self.bar.close()
        require_progress(processed, len(self.failed), reasons or self.records or "the messages above")


def changed_options(before: Optional[Dict[str, Any]], now: Dict[str, Any]) -> List[str]:
    """Names of the options whose value differs between an earlier run's file and this run's
    (none when there was no earlier file)."""
    if before is None:
        return []
    return [k for k in dict.fromkeys(list(before) + list(now)) if before.get(k) != now.get(k)]


def _read_json(path: str) -> Optional[Dict[str, Any]]:
    """An earlier options file, or None when there is none (or it is not JSON)."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
