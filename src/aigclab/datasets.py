"""Labelled image collections: a folder layout and a CSV/JSONL manifest layout.

Folder layout (labels from the path)::

    root/real/**/*.png              label 0, generator "real"
    root/fake/<generator>/**/*.png  label 1, generator <generator>

Manifest layout: a ``.csv`` with a header or a ``.jsonl`` file whose rows have ``path`` (relative to the
manifest's folder, or absolute), ``label`` (0 real / 1 fake, or "real"/"fake"), and optional
``generator`` and ``split``.

Both give :class:`ImageRecord` lists; :class:`ImageDataset` yields ``(image, label, generator)`` and
skips unreadable files, reporting them in ``dataset.skipped``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aigclab.errors import DataError, ImageError
from aigclab.io import IMAGE_SUFFIXES, content_hash, list_images, load_image, read_jsonl

__all__ = ["ImageDataset", "ImageRecord", "load_records", "read_manifest", "scan_folder"]

_LABELS = {"0": 0, "1": 1, "real": 0, "fake": 1}


@dataclass(frozen=True)
class ImageRecord:
    path: str
    label: int
    generator: str
    split: str = ""

    def hash(self) -> str:
        return content_hash(self.path)


def scan_folder(root: str | Path, split: str = "") -> list[ImageRecord]:
    """Records from ``root/real`` and ``root/fake/<generator>``."""
    root = Path(root)
    real, fake = root / "real", root / "fake"
    if not real.is_dir() and not fake.is_dir():
        raise DataError(f"{root}: expected a 'real/' and/or 'fake/<generator>/' folder inside")
    records = [ImageRecord(str(p), 0, "real", split) for p in list_images(real)] if real.is_dir() else []
    if fake.is_dir():
        for gen_dir in sorted(d for d in fake.iterdir() if d.is_dir()):
            records += [ImageRecord(str(p), 1, gen_dir.name, split) for p in list_images(gen_dir)]
        loose = [p for p in fake.iterdir() if not p.is_dir() and p.suffix.lower() in IMAGE_SUFFIXES]
        records += [ImageRecord(str(p), 1, "unknown", split) for p in sorted(loose)]
    return records


def _record(row: dict[str, object], base: Path, where: str) -> ImageRecord:
    if "path" not in row or "label" not in row:
        raise DataError(f"{where}: a row needs 'path' and 'label' (got keys {sorted(row)})")
    label = _LABELS.get(str(row["label"]).strip().lower())
    if label is None:
        raise DataError(f"{where}: label {row['label']!r} is not one of 0, 1, real, fake")
    path = Path(str(row["path"]))
    if not path.is_absolute():
        path = base / path
    generator = str(row.get("generator") or ("real" if label == 0 else "unknown"))
    return ImageRecord(str(path), label, generator, str(row.get("split") or ""))


def read_manifest(path: str | Path) -> list[ImageRecord]:
    """Records from a CSV (with header) or JSONL manifest."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found")
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as fh:
            rows: list[dict[str, object]] = list(csv.DictReader(fh))
    elif path.suffix.lower() in (".jsonl", ".json"):
        rows = read_jsonl(path)
    else:
        raise DataError(f"{path}: a manifest must be .csv or .jsonl")
    return [
        _record(row, path.parent, f"{path}:{i + 2 if path.suffix == '.csv' else i + 1}")
        for i, row in enumerate(rows)
    ]


def load_records(source: str | Path, split: str | None = None) -> list[ImageRecord]:
    """Records from a folder or a manifest file, optionally only one split."""
    source = Path(source)
    records = read_manifest(source) if source.is_file() else scan_folder(source)
    return [r for r in records if split is None or r.split == split]


class ImageDataset:
    """Yields (image, label, generator); unreadable files are skipped and listed in `skipped`."""

    def __init__(self, records: Sequence[ImageRecord]):
        self.records = list(records)
        self.skipped: list[tuple[str, str]] = []

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[tuple[np.ndarray, int, str]]:
        self.skipped = []
        for rec in self.records:
            try:
                img = load_image(rec.path)
            except ImageError as err:
                self.skipped.append((rec.path, err.cause))
                continue
            yield img, rec.label, rec.generator

    @property
    def generators(self) -> list[str]:
        return sorted({r.generator for r in self.records if r.label == 1})
