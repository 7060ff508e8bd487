"""The streaming detection job: bounded memory, any number of files, local process pool or Ray.

Stages and what each holds at once:

1. the scan (`aigclab.io.scan_images`) yields paths one by one;
2. decode workers (a local process pool, `workers` processes) each open one file safely, decode it,
   cut the patches the detector reads and drop the pixels; at most ``2 * workers`` chunks of
   `CHUNK` files are in flight (as patches), and at most one image over `BIG_PIXELS` is decoded at
   a time, so memory does not grow with the number of files or with workers times resolution;
3. the main process scores `batch_size` images' patches at a time on `score_threads` threads (one
   torch thread each: the feature, not the decode, is the cost, and threads of one process share the
   detector's memory) and yields their rows in input order.

With the Ray engine, cluster workers do stages 2 and 3 from the paths alone (pixels never travel)
and the driver only streams rows. Both engines give identical rows.

Patches are cut in the worker exactly as `aigclab.detect.base.to_patches` cuts them (a test checks
this), so workers need not import torch (which alone costs ~600 MB of resident memory per process).
Images whose short side is below the patch size are upscaled by `to_patches` in the main process;
before that, an extreme aspect ratio is cropped to the centre so upscaling stays bounded.

Example:
    >>> from aigclab.detect.pipeline import detect_stream, file_key  # doctest: +SKIP
    >>> for rows in detect_stream(det, map(file_key, paths)):  # doctest: +SKIP
    ...     print(rows)
"""

from __future__ import annotations

import fcntl
import itertools
import os
import tempfile
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from aigclab.errors import ImageError
from aigclab.io import decode_image, peek_size
from aigclab.parallel import Engine, imap

if TYPE_CHECKING:
    from aigclab.detect.base import Detector

__all__ = [
    "CHUNK",
    "FileKey",
    "Item",
    "Prep",
    "bound_aspect",
    "cut_patches",
    "detect_stream",
    "file_key",
    "prepare_image",
    "score_items",
]

CHUNK = 4  # files per call to a local decode worker
RAY_CHUNK = 16  # files per Ray task (decode and score)
BIG_PIXELS = 16_000_000  # larger images are decoded one at a time (see `prepare`)


@dataclass(frozen=True)
class FileKey:
    """A file as `--resume` knows it: path, size and modification time (ns); None where stat fails."""

    path: str
    size: int | None
    mtime: int | None


def file_key(path: str) -> FileKey:
    try:
        st = os.stat(path)
    except OSError:
        return FileKey(path, None, None)
    return FileKey(path, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class Prep:
    """What a worker needs to know of the detector to turn an image into its input."""

    patch_size: int
    max_patches: int
    cut: bool  # the detector scores through `Detector.score`'s patch grid, so workers cut patches
    lock_path: str | None = None  # a file the workers lock to decode big images one at a time

    @classmethod
    def of(cls, det: Detector, lock_path: str | None = None) -> Prep:
        from aigclab.detect.base import Detector

        return cls(det.patch_size, det.max_patches, type(det).score is Detector.score, lock_path)


@dataclass
class Item:
    """One file after decoding: its patches (``cut``) or a small image, or the reason it was skipped."""

    key: FileKey
    data: np.ndarray | None = None
    cut: bool = False
    error: str | None = None
    note: str | None = None


def bound_aspect(image: np.ndarray, size: int, max_patches: int) -> tuple[np.ndarray, str | None]:
    """Crop the long side of an image that must be upscaled to `size` so it holds <= `max_patches` patches.

    A 1 x 64,000,000 line upscaled to a 32-pixel short side would need 2 billion pixels; the detector
    reads at most `max_patches` patches, so the centre ``short * max_patches`` pixels are kept.
    """
    h, w = image.shape[:2]
    short, long = min(h, w), max(h, w)
    if short >= size or long <= short * max_patches:
        return image, None
    keep = short * max_patches
    start = (long - keep) // 2
    crop = image[:, start : start + keep] if w > h else image[start : start + keep]
    note = f"extreme aspect ratio ({w}x{h}): scored the centre {crop.shape[1]}x{crop.shape[0]}"
    return crop, note


def cut_patches(image: np.ndarray, size: int, max_patches: int) -> np.ndarray:
    """The patches `to_patches` takes from an image at least `size` on both sides (same grid, same order)."""
    h, w = image.shape[:2]
    rows, cols = h // size, w // size
    top, left = (h - rows * size) // 2, (w - cols * size) // 2
    n = rows * cols
    idx = np.arange(n) if n <= max_patches else np.linspace(0, n - 1, max_patches).round().astype(int)
    return np.stack(
        [
            image[top + r * size : top + (r + 1) * size, left + c * size : left + (c + 1) * size]
            for r, c in zip(idx // cols, idx % cols, strict=True)
        ]
    )


def prepare(key: FileKey, prep: Prep) -> Item:
    """Decode one file and turn it into the detector's input; errors become the item's reason.

    Images over `BIG_PIXELS` are decoded one at a time across the job's workers (a file lock), so
    peak memory holds at most one image near the pixel cap however many workers there are.
    """
    if prep.lock_path is None or _pixels(key.path) <= BIG_PIXELS:
        return _prepare(key, prep)
    with open(prep.lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _prepare(key, prep)


def _pixels(path: str) -> int:
    """Pixel count from the header (0 when unreadable: decoding then reports the reason)."""
    try:
        width, height = peek_size(path)
    except ImageError:
        return 0
    return width * height


def _prepare(key: FileKey, prep: Prep) -> Item:
    try:
        image = decode_image(key.path)
    except ImageError as err:
        return Item(key, error=err.cause)
    return prepare_image(key, image, prep)


def prepare_image(key: FileKey, image: np.ndarray, prep: Prep) -> Item:
    """A decoded image as the detector's input: its patches (``cut``) or the image, aspect bounded."""
    image, note = bound_aspect(image, prep.patch_size, prep.max_patches)
    if prep.cut and min(image.shape[:2]) >= prep.patch_size:
        return Item(key, cut_patches(image, prep.patch_size, prep.max_patches), cut=True, note=note)
    return Item(key, np.ascontiguousarray(image), note=note)


def prepare_chunk(keys: list[FileKey], prep: Prep) -> list[Item]:
    return [prepare(k, prep) for k in keys]


def _probabilities(det: Detector, items: list[Item], prep: Prep) -> tuple[np.ndarray, np.ndarray]:
    """P(fake) per item and its patch count: the numbers `det.score_counted(images)` gives (mean over
    each image's patches).

    Features are not remembered in memory: each file of the stream is scored once."""
    from aigclab.detect.base import feature_memory, to_patches

    arrays = [it.data for it in items if it.data is not None]
    if not prep.cut:
        with feature_memory(False):
            return det.score_counted(arrays)
    sets = [
        a if it.cut else to_patches(a, prep.patch_size, prep.max_patches)
        for it, a in zip(items, arrays, strict=True)
    ]
    with feature_memory(False):
        flat = det.score(np.concatenate(sets))
    bounds = np.cumsum([0] + [len(p) for p in sets])
    probs = np.array([flat[a:b].mean() for a, b in itertools.pairwise(bounds)])
    return probs, np.array([len(p) for p in sets], int)


def score_items(det: Detector, items: list[Item], prep: Prep) -> list[dict[str, Any]]:
    """One row per item, in order: probability, patches read and verdict, or the reason it was skipped."""
    ok = [it for it in items if it.error is None]
    probs, counts = _probabilities(det, ok, prep) if ok else (np.zeros(0), np.zeros(0, int))
    verdicts = iter(det.verdicts(probs, counts))
    scores, read = iter(probs), iter(counts)
    rows = []
    for it in items:
        row: dict[str, Any] = {"file": it.key.path}
        if it.error is not None:
            row["skipped"] = it.error
        else:
            row |= {"probability": round(float(next(scores)), 4), "patches": int(next(read))}
            row["verdict"] = next(verdicts)
            if it.note:
                row["note"] = it.note
        rows.append(row | {"size": it.key.size, "mtime": it.key.mtime})
    return rows


def score_chunk(keys: list[FileKey], det: Detector, prep: Prep) -> list[dict[str, Any]]:
    """A Ray task: read, decode and score files on the worker; only rows go back."""
    import torch

    torch.set_num_threads(1)
    return score_items(det, prepare_chunk(keys, prep), prep)


def _chunks(keys: Iterable[FileKey], n: int) -> Iterator[list[FileKey]]:
    it = iter(keys)
    while chunk := list(itertools.islice(it, n)):
        yield chunk


def detect_stream(
    det: Detector,
    keys: Iterable[FileKey],
    *,
    engine: Engine = "local",
    workers: int | None = None,
    address: str | None = None,
    batch_size: int = 64,
    score_threads: int | None = None,
) -> Iterator[list[dict[str, Any]]]:
    """Yield the rows of `keys`, in input order, a batch at a time (about `batch_size` files each).

    `score_threads` (default: `workers`, else the number of cores) batches are scored at once; rows are
    the same whatever the number (each batch is scored alone, one torch thread per batch)."""
    if engine == "ray":
        prep = Prep.of(det)
        yield from imap(
            score_chunk,
            _chunks(keys, RAY_CHUNK),
            args=(det, prep),
            engine="ray",
            workers=workers,
            address=address,
        )
        return
    threads = max(1, score_threads or workers or os.cpu_count() or 1)
    with (
        tempfile.NamedTemporaryFile(prefix="aigclab-decode-", suffix=".lock") as lock,
        ThreadPoolExecutor(threads, thread_name_prefix="aigclab-score") as scorers,
    ):
        prep = Prep.of(det, lock.name)
        pending: deque[Future[list[dict[str, Any]]]] = deque()
        batch: list[Item] = []
        try:
            chunks = imap(prepare_chunk, _chunks(keys, CHUNK), args=(prep,), engine=engine, workers=workers)
            for items in chunks:
                batch += items
                if len(batch) >= batch_size:
                    pending.append(scorers.submit(score_items, det, batch, prep))
                    batch = []
                    if len(pending) >= threads:  # bounded: at most `threads` batches in flight
                        yield pending.popleft().result()
            if batch:
                pending.append(scorers.submit(score_items, det, batch, prep))
            while pending:
                yield pending.popleft().result()
        finally:  # interrupted: batches not started are dropped (--resume scores them)
            for f in pending:
                f.cancel()
