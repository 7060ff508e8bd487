"""Records that flow between the stages: Sample -> Generation -> Attempt -> Score, stored as JSONL.

``load_samples()`` gives the embedded games; ``load_samples(path)`` reads the official V-GameGym
layout (JSONL, JSON list or parquet rows with ``id``, ``requirement``, ``code`` and ``metadata``
holding ``cluster_id``, ``quality_score``, ``game_type``, ...) or our own Sample JSONL.

Example:
    >>> from aigclab.gamegym.records import load_samples
    >>> samples = load_samples()
    >>> len(samples) >= 30, samples[0].code.count("pygame") > 0
    (True, True)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from aigclab.errors import DataError
from aigclab.gamegym.sandbox import RunResult
from aigclab.io import read_jsonl

__all__ = ["Attempt", "Generation", "Sample", "Score", "load_samples", "read_records", "write_records"]

R = TypeVar("R", bound=BaseModel)


class Sample(BaseModel):
    """A task: the requirement (the prompt) and a reference solution."""

    id: str
    requirement: str
    code: str
    title: str = ""
    theme: str = ""
    cluster_id: int | None = None
    quality_score: float | None = None
    metadata: dict[str, Any] = {}


class Generation(BaseModel):
    """Code a generator wrote for one sample (empty `code` and an `error` when it failed)."""

    sample_id: str
    generator: str
    code: str
    error: str | None = None
    seconds: float = 0.0
    expected_failure: str | None = None  # set by the `broken` generator: the reason the run must fail for
    prompt_tokens: int | None = (
        None  # chat generators: what the model was asked and answered, and why it stopped
    )
    tokens: int | None = None
    finish_reason: str | None = None  # "stop"; "length" when cut at the token limit; "error" when it failed
    truncated: bool = False


class Attempt(RunResult):
    """One generated program run in the sandbox: a flat record (run fields plus who/what/where)."""

    sample_id: str
    generator: str
    code: str = ""
    generation_error: str | None = None
    expected_failure: str | None = None
    media_dir: str | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        """Who ran what: (sample, generator, code digest); a resumed run skips attempts it has."""
        return attempt_key(self.sample_id, self.generator, self.code)


def attempt_key(sample_id: str, generator: str, code: str) -> tuple[str, str, str]:
    import hashlib

    return sample_id, generator, hashlib.sha1(code.encode()).hexdigest()


class Score(BaseModel):
    """Automatic metrics for one attempt, plus the three judges' 0-100 totals when judged."""

    sample_id: str
    generator: str
    status: str
    passed: bool
    fail_reason: str  # "" when passed; else the run status or blank / static
    expected_failure: str | None = None
    ran: bool
    exited_cleanly: bool
    not_blank: float
    content: float = 0.0
    motion_footprint: float = 0.0
    visual_diversity: float
    motion: float
    moving: float = 0.0
    input_response: float | None
    fps: float
    speedup: float
    auto_score: float
    code_score: float | None = None
    screenshot_score: float | None = None
    video_score: float | None = None
    final_score: float | None = None
    judge_feedback: dict[str, str] = {}
    judge_error: str | None = None
    artefact_error: str | None = None


def write_records(path: str | Path, records: Iterable[BaseModel]) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w") as fh:
        for rec in records:
            fh.write(rec.model_dump_json() + "\n")
            n += 1
    return n


def read_records(path: str | Path, cls: type[R]) -> list[R]:
    """Read a JSONL file of `cls` records; a bad line raises DataError naming file and line."""
    out = []
    for i, row in enumerate(read_jsonl(_existing(path)), 1):
        try:
            out.append(cls.model_validate(row))
        except ValidationError as err:
            raise DataError(f"{path}: record {i} is not a valid {cls.__name__}: {err}") from None
    return out


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    return path


def _rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise DataError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from None
        return pq.read_table(path).to_pylist()
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of samples")
        return data
    return read_jsonl(path)


def _from_official(row: dict[str, Any]) -> Sample:
    meta = dict(row.get("metadata") or {})
    if isinstance(row.get("reference_metadata"), dict):
        meta["reference_metadata"] = row["reference_metadata"]
    cluster, quality = (
        meta.get("cluster_id", row.get("cluster_id")),
        meta.get("quality_score", row.get("quality_score")),
    )
    return Sample(
        id=str(row["id"]),
        requirement=row["requirement"],
        code=row.get("code") or "",
        title=row.get("title") or row["requirement"].strip().splitlines()[0].strip("*# "),
        theme=row.get("theme") or str(meta.get("game_type", "")),
        cluster_id=None if cluster is None else int(cluster),
        quality_score=None if quality is None else float(quality),
        metadata=meta,
    )


def load_samples(path: str | Path | None = None, ids: Sequence[str] | None = None) -> list[Sample]:
    """The embedded games (no `path`) or a dataset file; `ids` keeps only those samples, in that order."""
    if path is None:
        root = resources.files("aigclab.gamegym") / "games"
        index = json.loads((root / "index.json").read_text())
        samples = [Sample(code=(root / f"{row['id']}.py.txt").read_text(), **row) for row in index]
    else:
        path = _existing(path)
        samples = []
        for i, row in enumerate(_rows(path), 1):
            try:
                samples.append(_from_official(row))
            except (KeyError, TypeError, ValueError, ValidationError) as err:
                raise DataError(f"{path}: sample {i} lacks a field or has a bad value ({err})") from None
    if ids is None:
        return samples
    by_id = {s.id: s for s in samples}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise DataError(f"unknown sample ids {missing}; known: {', '.join(sorted(by_id))[:300]}")
    return [by_id[i] for i in ids]
