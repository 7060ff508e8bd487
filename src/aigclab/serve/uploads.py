"""Uploads: read a multipart body within limits, sniff each file's format, decode it with the pixel cap.

Nothing here touches the disk: the body is streamed into memory and refused (413) as soon as it passes
`Limits.max_upload_bytes`, so a slow or huge upload never spools to a temporary file. Each file's format
is taken from its first bytes (`sniff`), never from its name or declared content type, and only the
formats of `aigclab.io.IMAGE_SUFFIXES` are accepted (no EPS, PDF or other formats that call out to other
programs). Decoding is `aigclab.io.decode_image` on the bytes, with the same pixel cap and the same
handling of modes, orientation and corrupt data as the command line.

Every refusal is an `ApiError` with the HTTP status a client should see:
400 malformed request, 413 too large (bytes, files or pixels), 415 not a supported image,
422 an image that does not decode (truncated or corrupt).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from aigclab.errors import AigclabError, ImageError
from aigclab.io import MAX_PIXELS, decode_image

if TYPE_CHECKING:
    from starlette.requests import Request

__all__ = ["ApiError", "Limits", "Upload", "decode_upload", "read_form", "sniff"]


class ApiError(AigclabError):
    """A request the server refuses: HTTP status, a short machine-readable code and a one-line message."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 32 * 2**20  # whole request body
    max_files: int = 16  # files per request
    max_fields: int = 8  # non-file form fields per request
    max_pixels: int = MAX_PIXELS  # per image, as on the command line
    explain_max_pixels: int = 4_000_000  # /v1/explain reads the whole image for cues and the heat map


@dataclass
class Upload:
    field: str
    filename: str
    data: bytes


@dataclass
class Form:
    files: list[Upload] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)


# First bytes of each accepted format -> Pillow's format name (checked again when the header is read).
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def sniff(data: bytes) -> str | None:
    """The image format of `data` from its magic bytes (PNG, JPEG, GIF, BMP, TIFF, WEBP), else None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in _MAGIC if data.startswith(magic)), None)


def decode_upload(upload: Upload, max_pixels: int) -> np.ndarray:
    """RGB uint8 pixels of an uploaded file, or the `ApiError` (415, 413 or 422) that refuses it."""
    name = upload.filename or upload.field
    if not upload.data:
        raise ApiError(422, "empty_file", f"{name}: empty file (0 bytes)")
    fmt = sniff(upload.data)
    if fmt is None:
        raise ApiError(
            415,
            "not_an_image",
            f"{name}: not a supported image (PNG, JPEG, GIF, BMP, TIFF or WebP by content)",
        )
    width, height = _header_size(upload.data, fmt, name)
    if width * height > max_pixels:
        raise ApiError(
            413,
            "too_many_pixels",
            f"{name}: {width}x{height} pixels exceeds the limit of {max_pixels} (decompression bomb?)",
        )
    try:
        return decode_image(upload.data, max_pixels=max_pixels)
    except ImageError as err:
        raise ApiError(422, "undecodable_image", f"{name}: {err.cause}") from None


def _header_size(data: bytes, fmt: str, name: str) -> tuple[int, int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=[fmt]) as im:
                return im.size
        except Image.DecompressionBombError:
            raise ApiError(413, "too_many_pixels", f"{name}: decompression bomb: too many pixels") from None
        except Exception as err:  # Pillow raises many types on hostile headers; all mean "corrupt"
            raise ApiError(
                422, "undecodable_image", f"{name}: unreadable {fmt} header ({type(err).__name__})"
            ) from None


async def read_form(request: Request, limits: Limits) -> Form:
    """Parse a multipart/form-data body in memory, refusing it as soon as a limit is passed."""
    from python_multipart.multipart import FormParser, parse_options_header

    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        raise ApiError(400, "not_multipart", "send the images as multipart/form-data (field 'images')")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_upload_bytes:
        raise _too_big(limits)
    form = Form()

    def on_file(f) -> None:  # type: ignore[no-untyped-def]
        if len(form.files) >= limits.max_files:
            raise ApiError(413, "too_many_files", f"at most {limits.max_files} files per request")
        f.file_object.seek(0)
        form.files.append(
            Upload(_text(f.field_name), _text(f.file_name), f.file_object.read())  # in memory: see config
        )

    def on_field(f) -> None:  # type: ignore[no-untyped-def]
        if len(form.fields) >= limits.max_fields:
            raise ApiError(400, "too_many_fields", f"at most {limits.max_fields} form fields per request")
        form.fields[_text(f.field_name)] = _text(f.value)

    config = {"MAX_MEMORY_FILE_SIZE": limits.max_upload_bytes + 1, "MAX_HEADER_COUNT": 16}
    parser = FormParser("multipart/form-data", on_field, on_file, boundary=params[b"boundary"], config=config)
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limits.max_upload_bytes:
                raise _too_big(limits)
            parser.write(chunk)
        parser.finalize()
    except ApiError:
        raise
    except Exception as err:  # the parser's errors on malformed bodies (several types)
        raise ApiError(
            400, "malformed_multipart", f"malformed multipart body ({type(err).__name__})"
        ) from None
    return form


def _too_big(limits: Limits) -> ApiError:
    return ApiError(
        413, "upload_too_large", f"request body exceeds the {limits.max_upload_bytes}-byte upload limit"
    )


def _text(value: bytes | None) -> str:
    return (value or b"").decode("utf-8", "backslashreplace")
