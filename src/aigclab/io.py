"""Safe image loading, batch loading that skips bad files, JSONL records and safetensors weights.

Every image comes back as an RGB ``uint8`` array of shape (H, W, 3), whatever the file held:
grey, grey+alpha, RGBA, palette, CMYK or 16-bit; EXIF orientation is applied; animated files give
their first frame. Transparent pixels are composited over white. Anything that goes wrong raises
:class:`ImageError` naming the file and the cause.

Example:
    >>> from aigclab.io import load_image
    >>> img = load_image("photo.jpg")  # doctest: +SKIP
    >>> img.shape, img.dtype  # doctest: +SKIP
    ((512, 512, 3), dtype('uint8'))
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import stat
import struct
import sys
import warnings
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from aigclab.errors import DataError, ImageError

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_FILE_BYTES",
    "MAX_PIXELS",
    "BatchLoad",
    "ImageError",
    "content_hash",
    "decode_image",
    "display_path",
    "iter_images",
    "list_images",
    "load_image",
    "load_images",
    "open_regular",
    "path_problem",
    "peek_size",
    "read_jsonl",
    "scan_images",
    "to_rgb_uint8",
    "write_jsonl",
]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
MAX_PIXELS = 64_000_000  # ~8000 x 8000; larger claims are treated as decompression bombs
MAX_FILE_BYTES = 256 * 2**20  # larger files are refused before reading (64 MP of 32-bit pixels)

# What Pillow's decoders raise on hostile bytes; all of it means "corrupt" to a user.
_DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    zlib.error,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    OverflowError,
    RuntimeError,
    AttributeError,
    MemoryError,
)


def open_regular(path: str | Path, *, max_bytes: int = MAX_FILE_BYTES) -> BinaryIO:
    """Open a regular file for reading; FIFOs, devices, folders, loops and oversized files raise ImageError.

    The path is checked before opening (so a FIFO or /dev/zero never blocks or floods), opened with
    O_NONBLOCK, and checked again on the open descriptor in case the file was swapped in between.
    """
    name = display_path(path)
    try:
        _check_regular(name, os.stat(path), max_bytes)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as err:
        raise ImageError(name, path_problem(path, err)) from None
    try:
        _check_regular(name, os.fstat(fd), max_bytes)
    except ImageError:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def _check_regular(name: str, st: os.stat_result, max_bytes: int) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(name, "is a directory, not an image file")
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(name, f"not a regular file ({_kind(st.st_mode)})")
    if st.st_size > max_bytes:
        raise ImageError(name, f"file of {st.st_size} bytes exceeds the {max_bytes}-byte limit")


def _kind(mode: int) -> str:
    kinds = [
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ]
    return next((name for test, name in kinds if test(mode)), f"mode {stat.filemode(mode)}")


def path_problem(path: str | Path, err: OSError) -> str:
    """A short reason for an OSError raised while opening or listing `path`."""
    if err.errno == errno.ENOENT:
        return "dangling symbolic link" if os.path.lexists(path) else "file not found"
    if err.errno == errno.ELOOP:
        return "symbolic link loop"
    if err.errno == errno.ENAMETOOLONG:
        return f"path too long ({len(os.fsencode(path))} bytes)"
    if err.errno == errno.ENOTDIR:
        return "file not found (a parent is not a folder)"
    return f"unreadable ({err.strerror or err})"


def display_path(path: str | Path) -> str:
    """`path` as printable text: bytes that are not UTF-8 become backslash escapes (e.g. ``\\xff``)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def load_image(src: str | Path | bytes, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode a file path or raw bytes into an RGB uint8 array (H, W, 3)."""
    return np.ascontiguousarray(decode_image(src, max_pixels=max_pixels))


def decode_image(src: str | Path | bytes, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Like `load_image`, but an EXIF-rotated image may come back as a (non-contiguous) view."""
    if isinstance(src, bytes | bytearray | memoryview):
        data, name = bytes(src), "<bytes>"
        if not data:
            raise ImageError(name, "empty file (0 bytes)")
        return _decode(io.BytesIO(data), name, max_pixels)
    with open_regular(src) as fh:
        name = display_path(src)
        if os.fstat(fh.fileno()).st_size == 0:
            raise ImageError(name, "empty file (0 bytes)")
        return _decode(fh, name, max_pixels)


def peek_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the file's header without decoding; ImageError when that fails."""
    with open_regular(path) as fh:
        try:
            with Image.open(fh) as im:
                return im.size
        except (Image.DecompressionBombError, *_DECODE_ERRORS) as err:
            raise ImageError(display_path(path), f"unreadable header ({type(err).__name__})") from None


def _decode(fh: BinaryIO, name: str, max_pixels: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(fh) as im:
                width, height = im.size
                if width <= 0 or height <= 0:
                    raise ImageError(name, f"zero-sized image ({width}x{height})")
                if width * height > max_pixels:
                    raise ImageError(
                        name,
                        f"{width}x{height} pixels exceeds the limit of {max_pixels} (decompression bomb?)",
                    )
                im.seek(0)
                orientation = im.getexif().get(0x0112, 1)
                im.load()
                return _orient(to_rgb_uint8(im), orientation)
        except ImageError:
            raise
        except UnidentifiedImageError:
            raise ImageError(name, "not an image (unrecognised format)") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageError(name, "decompression bomb: too many pixels") from None
        except _DECODE_ERRORS as err:
            raise ImageError(name, f"truncated or corrupt image ({type(err).__name__}: {err})") from None


def _orient(arr: np.ndarray, orientation: object) -> np.ndarray:
    """Apply an EXIF orientation (1-8) as array views, exactly as `ImageOps.exif_transpose` would."""
    transpose = lambda a: a.transpose(1, 0, 2)  # noqa: E731
    views = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: transpose,
        6: lambda a: transpose(a)[:, ::-1],
        7: lambda a: transpose(a)[::-1, ::-1],
        8: lambda a: transpose(a)[::-1],
    }
    view = views.get(orientation) if isinstance(orientation, int) else None
    return view(arr) if view else arr


_STRIP_PIXELS = 1 << 20  # non-RGB images convert in tiles of this many pixels: no full-size temporaries


def to_rgb_uint8(im: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to RGB uint8; alpha is composited over white, high bit depths rescaled.

    Conversion runs in tiles, so its memory beyond the decoded image is the output array.
    """
    if im.mode == "RGB":
        return np.asarray(im, dtype=np.uint8)
    top = 255.0
    if im.mode in _WIDE_MODES:
        high = im.getextrema()[1]
        top = 65535.0 if im.mode.startswith("I;16") or float(high) > 255 else 255.0  # type: ignore[arg-type]
    out = np.empty((im.height, im.width, 3), np.uint8)
    rows, cols = max(1, _STRIP_PIXELS // im.width), min(im.width, _STRIP_PIXELS)
    for y in range(0, im.height, rows):
        for x in range(0, im.width, cols):
            tile = im.crop((x, y, min(im.width, x + cols), min(im.height, y + rows)))
            out[y : y + tile.height, x : x + tile.width] = _strip_to_rgb(tile, top)
    return out


_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def _strip_to_rgb(im: Image.Image, top: float) -> np.ndarray:
    if im.mode in _WIDE_MODES:
        arr = np.asarray(im, dtype=np.float64)
        grey = np.clip(np.round(arr / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def content_hash(src: str | Path | bytes | np.ndarray) -> str:
    """SHA-256 of a file's bytes, raw bytes, or an array's shape, dtype and bytes (hex, 16 chars)."""
    h = hashlib.sha256()
    if isinstance(src, np.ndarray):
        h.update(f"{src.shape}{src.dtype}".encode())
        h.update(np.ascontiguousarray(src).tobytes())
    elif isinstance(src, bytes):
        h.update(src)
    else:
        with open_regular(src, max_bytes=sys.maxsize) as fh:  # streamed: no size cap needed
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def list_images(root: str | Path) -> list[Path]:
    """Every image candidate below `root` (see `scan_images`), in scan order; `root` may be a file."""
    return [Path(p) for p in scan_images(root)]


def scan_images(root: str | Path) -> Iterator[str]:
    """Yield every path below `root` that a user would expect to be scored, without ever blocking.

    That is every entry with an image suffix (including FIFOs, devices, dangling or looping symbolic
    links: loading them gives the reason they are skipped) and every folder that cannot be listed
    (e.g. a path over the system limit). Symbolic links to folders are followed once each. `root`
    itself is yielded when it is not a folder, so loading it reports what is wrong with it.
    """
    root = os.fspath(root)
    try:
        is_dir = stat.S_ISDIR(os.stat(root).st_mode)
    except OSError:
        is_dir = False
    if not is_dir:
        yield root
        return
    yield from _walk(root, set())


def _walk(folder: str, seen: set[tuple[int, int]]) -> Iterator[str]:
    try:
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in seen:
            return
        seen.add((st.st_dev, st.st_ino))
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:
        yield folder  # loading it names the problem (path too long, unreadable)
        return
    for entry in entries:
        if _is_dir(entry):
            yield from _walk(entry.path, seen)
        elif os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
            yield entry.path


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a loop or an over-long target: not a folder we can enter
        return False


@dataclass
class BatchLoad:
    """Images that loaded, their paths, and (path, reason) for every file that was skipped."""

    images: list[np.ndarray] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def iter_images(
    paths: Iterable[str | Path], skipped: list[tuple[str, str]]
) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (path, image) for each loadable file; append (path, reason) to `skipped` for the rest."""
    for path in paths:
        try:
            yield str(path), load_image(path)
        except ImageError as err:
            skipped.append((str(path), err.cause))


def load_images(paths: Iterable[str | Path]) -> BatchLoad:
    """Load many files; bad ones are skipped and reported, never raised."""
    out = BatchLoad()
    for path, img in iter_images(paths, out.skipped):
        out.paths.append(path)
        out.images.append(img)
    return out


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]], *, append: bool = False) -> int:
    """Write one JSON object per line; returns the number of rows written."""
    n = 0
    with Path(path).open("a" if append else "w") as fh:
        for row in rows:
            fh.write(json.dumps(row, sort_keys=False) + "\n")
            n += 1
    return n


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL file; a bad line raises an error naming the file and line number."""
    rows = []
    path = Path(path)
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{i}: invalid JSON ({err.msg})") from None
    return rows
