"""Training trainable detectors: data from AIGC-Mini or a folder, then `Trainable.train_on`, then save.

`aigclab detect train NAME --data DIR|aigc-mini --out model.safetensors` calls `train_detector`. Training
data are read as `aigclab data scan` reads them: a folder with ``real/`` and ``fake/<generator>/`` or a
CSV/JSONL manifest. Images larger than the detector's patch size are cut into a grid of at most
`max_patches` patches (the same grid the detector scores at test time); unreadable files are skipped and
reported. ``aigc-mini`` means AIGC-Mini's cross-generator training split (real train patches plus the
training family's train fakes).

Example:
    >>> from aigclab.detect.train import train_detector
    >>> summary = train_detector("cnndet-tiny", "aigc-mini", "cnn.safetensors", overrides={"epochs": 1})  # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aigclab.data.mini import MiniSplit
from aigclab.detect.base import Detector, Trainable, create_detector, to_patches
from aigclab.errors import AigclabError, DataError

__all__ = ["MINI", "load_labeled", "load_unlabeled", "parse_overrides", "train_detector"]

MINI = "aigc-mini"
Log = Callable[[str], None]


def _patch_split(
    items: Sequence[tuple[str, np.ndarray, int, str]], patch_size: int, max_patches: int
) -> MiniSplit:
    images, labels, gens, ids = [], [], [], []
    for path, img, label, gen in items:
        patches = to_patches(img, patch_size, max_patches)
        images.append(patches)
        labels += [label] * len(patches)
        gens += [gen] * len(patches)
        ids += [f"{path}#{k}" for k in range(len(patches))]
    return MiniSplit(np.concatenate(images), np.array(labels, np.int64), np.array(gens), np.array(ids))


def load_labeled(
    source: str | Path, patch_size: int = 32, max_patches: int = 16, log: Log = print
) -> MiniSplit:
    """Labelled training patches from ``"aigc-mini"``, a folder or a manifest; needs reals and fakes."""
    from aigclab.datasets import load_records
    from aigclab.io import iter_images

    if str(source) == MINI:
        from aigclab.data.mini import load_mini, mini_protocols

        return load_mini("train", generators=mini_protocols()["cross_generator"]["train"])
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source}: training data not found (give a folder, a manifest or 'aigc-mini')")
    records = load_records(source)
    for label, what, where in ((1, "fake", "fake/<generator>/"), (0, "real", "real/")):
        if not any(r.label == label for r in records):
            raise DataError(f"{source}: no {what} images (expected them under {where}); training needs both")
    by_path = {r.path: r for r in records}
    skipped: list[tuple[str, str]] = []
    items = [
        (path, img, by_path[path].label, by_path[path].generator)
        for path, img in iter_images([Path(r.path) for r in records], skipped)
    ]
    for path, reason in skipped:
        log(f"skipped {path}: {reason}")
    if {item[2] for item in items} != {0, 1}:
        raise DataError(f"{source}: after skipping unreadable files, real and fake images are both needed")
    return _patch_split(items, patch_size, max_patches)


def load_unlabeled(
    source: str | Path, patch_size: int = 32, max_patches: int = 16, log: Log = print
) -> MiniSplit:
    """Every readable image below a folder (or in a manifest), as patches labelled -1."""
    from aigclab.datasets import load_records
    from aigclab.io import iter_images, list_images

    source = Path(source)
    if not source.exists():
        raise DataError(f"{source}: unlabelled data not found")
    paths = [Path(r.path) for r in load_records(source)] if source.is_file() else list_images(source)
    skipped: list[tuple[str, str]] = []
    items = [(path, img, -1, "unlabeled") for path, img in iter_images(paths, skipped)]
    for path, reason in skipped:
        log(f"skipped {path}: {reason}")
    if not items:
        raise DataError(f"{source}: no readable unlabelled images")
    return _patch_split(items, patch_size, max_patches)


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``["epochs=2", "paired_ratio=0.2"]`` -> ``{"epochs": 2, "paired_ratio": 0.2}`` (values as JSON if they parse)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, eq, raw = pair.partition("=")
        if not eq or not key:
            raise AigclabError(f"--set {pair!r}: expected key=value")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def build_trainable(name: str, seed: int, overrides: dict[str, Any] | None = None) -> Detector:
    """`create_detector(name, **overrides)`, with `seed` in its config when the config has one."""
    overrides = dict(overrides or {})
    det = create_detector(name, **overrides)
    config = getattr(det, "config", None)
    if config is not None and "seed" in type(config).model_fields and "seed" not in overrides:
        det = create_detector(name, seed=seed, **overrides)
    if not isinstance(det, Trainable):
        raise AigclabError(f"detector {name!r} ({type(det).__name__}) cannot be trained by this command")
    return det


def train_detector(
    name: str,
    data: str | Path,
    out: str | Path,
    unlabeled: str | Path | None = None,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
    max_patches: int = 16,
    log: Log = print,
) -> dict[str, Any]:
    """Build detector `name`, train it on `data` (and `unlabeled`), save it to `out`; returns a summary."""
    out = Path(out)
    if out.suffix != ".safetensors":
        raise AigclabError(f"{out}: the trained detector is saved as a .safetensors file")
    det = build_trainable(name, seed, overrides)
    patch = det.patch_size
    labeled = load_labeled(data, patch, max_patches, log)
    extra = load_unlabeled(unlabeled, patch, max_patches, log) if unlabeled is not None else None
    log(
        f"training {name} on {len(labeled)} labelled patches ({int(labeled.labels.sum())} fake)"
        + (f" and {len(extra)} unlabelled" if extra is not None else "")
    )
    start = time.perf_counter()
    summary = det.train_on(labeled, extra, seed=seed, log=log)  # type: ignore[attr-defined]
    out.parent.mkdir(parents=True, exist_ok=True)
    det.save(out)  # type: ignore[attr-defined]
    return {
        "detector": name,
        "out": str(out),
        "seed": seed,
        "train_seconds": round(time.perf_counter() - start, 1),
    } | summary
