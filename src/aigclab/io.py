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

import hashlib
import io
import json
import struct
import warnings
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from aigclab.errors import DataError, ImageError

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_PIXELS",
    "BatchLoad",
    "ImageError",
    "content_hash",
    "iter_images",
    "list_images",
    "load_image",
    "load_images",
    "read_jsonl",
    "to_rgb_uint8",
    "write_jsonl",
]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
MAX_PIXELS = 64_000_000  # ~8000 x 8000; larger claims are treated as decompression bombs

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


def _read_source(src: str | Path | bytes) -> tuple[bytes, str]:
    if isinstance(src, bytes | bytearray | memoryview):
        return bytes(src), "<bytes>"
    path = Path(src)
    try:
        return path.read_bytes(), str(path)
    except FileNotFoundError:
        raise ImageError(str(path), "file not found") from None
    except IsADirectoryError:
        raise ImageError(str(path), "is a directory, not an image file") from None
    except OSError as err:
        raise ImageError(str(path), f"unreadable ({err.strerror or err})") from None


def load_image(src: str | Path | bytes, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode a file path or raw bytes into an RGB uint8 array (H, W, 3)."""
    data, name = _read_source(src)
    if not data:
        raise ImageError(name, "empty file (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
                if width <= 0 or height <= 0:
                    raise ImageError(name, f"zero-sized image ({width}x{height})")
                if width * height > max_pixels:
                    raise ImageError(
                        name,
                        f"{width}x{height} pixels exceeds the limit of {max_pixels} (decompression bomb?)",
                    )
                im.seek(0)
                im.load()
                return to_rgb_uint8(ImageOps.exif_transpose(im) or im)
        except ImageError:
            raise
        except UnidentifiedImageError:
            raise ImageError(name, "not an image (unrecognised format)") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageError(name, "decompression bomb: too many pixels") from None
        except _DECODE_ERRORS as err:
            raise ImageError(name, f"truncated or corrupt image ({type(err).__name__}: {err})") from None


def to_rgb_uint8(im: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to RGB uint8; alpha is composited over white, high bit depths rescaled."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        grey = np.clip(np.round(arr / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(arr)


def content_hash(src: str | Path | bytes | np.ndarray) -> str:
    """SHA-256 of a file's bytes, raw bytes, or an array's shape, dtype and bytes (hex, 16 chars)."""
    h = hashlib.sha256()
    if isinstance(src, np.ndarray):
        h.update(f"{src.shape}{src.dtype}".encode())
        h.update(np.ascontiguousarray(src).tobytes())
    elif isinstance(src, bytes):
        h.update(src)
    else:
        h.update(Path(src).read_bytes())
    return h.hexdigest()[:16]


def list_images(root: str | Path) -> list[Path]:
    """All files below `root` with an image suffix, sorted; `root` may itself be a file."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.exists():
        raise ImageError(str(root), "path does not exist")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


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
