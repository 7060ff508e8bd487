"""Where `aigclab detect` writes its results, checked before any work starts, and how a run resumes.

- The JSONL file gets one row per file (scored or skipped, with size and mtime), appended and flushed
  batch by batch, so Ctrl-C, SIGTERM or a kill leaves a valid file (a half-written last line, only
  possible after SIGKILL, is cut off when the run resumes).
- ``--resume`` skips every file already in the JSONL with the same path, size and modification time.
- The CSV beside it (file, probability, verdict of scored files) is rebuilt from the JSONL at the end.

Paths are stored as Python reads them: bytes that are not UTF-8 are kept as ``\\udcXX`` escapes in the
JSONL (read back exactly) and shown as ``\\xXX`` in the CSV and on screen.

Example:
    >>> from aigclab.detect.outputs import check_out  # doctest: +SKIP
    >>> check_out(Path("runs/det.jsonl"))  # doctest: +SKIP
    PosixPath('runs/det.csv')
"""

from __future__ import annotations

import csv
import json
import os
import stat
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aigclab.detect.pipeline import FileKey
from aigclab.errors import AigclabError
from aigclab.io import display_path

__all__ = ["ResultsFile", "check_out", "iter_rows", "write_csv"]


def check_out(out: Path) -> Path:
    """Make sure results can be written to `out` (creating its folder); returns the CSV path beside it."""
    where = f"--out {display_path(out)}"
    if out.suffix.lower() == ".csv":
        raise AigclabError(
            f"{where}: names the JSONL results, and the CSV written beside it would overwrite them; "
            f"use e.g. {display_path(out.with_suffix('.jsonl'))}"
        )
    csv_path = out.with_suffix(".csv")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise AigclabError(
            f"{where}: cannot create the folder {display_path(out.parent)} ({err.strerror})"
        ) from None
    for path in (out, csv_path):
        _check_writable(path, where)
    return csv_path


def _check_writable(path: Path, where: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as err:
        raise AigclabError(f"{where}: cannot use {display_path(path)} ({err.strerror})") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise AigclabError(f"{where}: {display_path(path)} is a folder; give a file name such as det.jsonl")
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise AigclabError(f"{where}: {display_path(path)} is not a regular file; results need one")
    try:
        with path.open("a"):
            pass
    except OSError as err:
        raise AigclabError(f"{where}: cannot write {display_path(path)} ({err.strerror})") from None
    if st is None:
        path.unlink()  # only probed: leave no empty file behind if the run fails before writing


def iter_rows(path: Path) -> Iterator[dict[str, Any]]:
    """The complete rows of a results JSONL file (a half-written last line is ignored)."""
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.endswith("\n"):
                yield json.loads(line)


def _cut_partial_line(path: Path) -> None:
    """Drop a half-written last line (left by a SIGKILL mid-write) so appending keeps the file valid."""
    with path.open("rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size == 0:
            return
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return
        pos = size
        while pos > 0:
            step = min(65536, pos)
            fh.seek(pos - step)
            block = fh.read(step)
            cut = block.rfind(b"\n")
            if cut >= 0:
                fh.truncate(pos - step + cut + 1)
                return
            pos -= step
        fh.truncate(0)


class ResultsFile:
    """The JSONL results of a run: rows appended and flushed batch by batch, counts kept."""

    def __init__(self, out: Path, resume: bool = False):
        self.path = out
        self.done: set[FileKey] = set()
        if resume and out.is_file():
            _cut_partial_line(out)
            self.done = {FileKey(r["file"], r.get("size"), r.get("mtime")) for r in iter_rows(out)}
        self._fh = out.open("a" if resume else "w", encoding="utf-8")
        self.counts: Counter[str] = Counter()

    def write(self, rows: list[dict[str, Any]]) -> None:
        self._fh.write("".join(json.dumps(r) + "\n" for r in rows))
        self._fh.flush()
        self.counts.update(r.get("verdict", "skipped") for r in rows)

    def close(self) -> None:
        self._fh.close()


def write_csv(jsonl: Path, csv_path: Path) -> int:
    """Rebuild the CSV (file, probability, verdict) of every scored row in `jsonl`; returns the row count."""
    n = 0
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "probability", "verdict"])
        for row in iter_rows(jsonl):
            if "verdict" in row:
                writer.writerow([display_path(row["file"]), row["probability"], row["verdict"]])
                n += 1
    return n
