"""Safe image loading: formats, modes, orientation, typed errors, batch skipping, fuzzing."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from aigclab.errors import DataError
from aigclab.io import (
    ImageError,
    display_path,
    load_image,
    load_images,
    open_regular,
    read_jsonl,
    scan_images,
    to_rgb_uint8,
    write_jsonl,
)

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8)


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "WEBP"])
def test_lossless_formats_round_trip(fmt: str) -> None:
    kw = {"lossless": True} if fmt == "WEBP" else {}
    np.testing.assert_array_equal(load_image(_encode(Image.fromarray(RGB), fmt, **kw)), RGB)


def test_jpeg_decodes_close_to_source() -> None:
    out = load_image(_encode(Image.fromarray(RGB), "JPEG", quality=95))
    assert out.shape == RGB.shape and out.dtype == np.uint8


def test_gif_gives_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 0, 255)]]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    out = load_image(buf.getvalue())
    assert out.shape == (8, 8, 3) and out[0, 0, 0] > 200 and out[0, 0, 2] < 50


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "1"])
def test_modes_become_rgb_uint8(mode: str) -> None:
    im = Image.fromarray(RGB).convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    out = load_image(_encode(im, fmt))
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8


def test_transparent_pixels_composite_over_white() -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)  # fully transparent black
    out = load_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert (out == 255).all()


def test_sixteen_bit_grey_is_rescaled() -> None:
    grey = np.full((4, 4), 65535, np.uint16)
    grey[0, 0] = 0
    out = load_image(_encode(Image.fromarray(grey), "PNG"))
    assert out[1, 1, 0] == 255 and out[0, 0, 0] == 0 and out.shape == (4, 4, 3)


def test_exif_orientation_is_applied() -> None:
    im = Image.fromarray(np.zeros((10, 20, 3), np.uint8))  # landscape 20 wide
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    out = load_image(_encode(im, "JPEG", exif=exif.tobytes()))
    assert out.shape[:2] == (20, 10)


@pytest.mark.parametrize(
    ("data", "cause"),
    [
        (b"", "empty file"),
        (b"hello, I am text", "not an image"),
        (_encode(Image.fromarray(RGB), "PNG")[:60], "truncated or corrupt"),
        (_encode(Image.fromarray(RGB), "JPEG")[:200], "truncated or corrupt"),
    ],
)
def test_bad_bytes_raise_image_error(data: bytes, cause: str) -> None:
    with pytest.raises(ImageError, match=cause):
        load_image(data)


def test_pixel_limit_rejects_bombs() -> None:
    with pytest.raises(ImageError, match="exceeds the limit"):
        load_image(_encode(Image.new("L", (300, 300)), "PNG"), max_pixels=10_000)


def test_missing_file_and_directory_are_named(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"missing\.png: file not found"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path)


def test_batch_skips_bad_files_and_reports_them(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    Image.fromarray(RGB).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    out = load_images([bad, good, empty])
    assert out.paths == [str(good)]
    assert [p for p, _ in out.skipped] == [str(bad), str(empty)]
    assert "empty" in out.skipped[1][1]


def test_jsonl_round_trip_and_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    write_jsonl(path, [{"a": 1}, {"b": [1, 2]}])
    assert read_jsonl(path) == [{"a": 1}, {"b": [1, 2]}]
    path.write_text('{"a": 1}\n{oops\n')
    with pytest.raises(DataError, match=r"rows\.jsonl:2"):
        read_jsonl(path)


SEEDS = [_encode(Image.fromarray(RGB), f) for f in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")]


@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=12),
    st.integers(0, 5000),
)
def test_fuzz_mutated_images_only_raise_image_error(seed: bytes, flips: list, cut: int) -> None:
    data = bytearray(seed)
    for pos, val in flips:
        if pos < len(data):
            data[pos] = val
    data = data[: max(1, len(data) - cut)]
    try:
        out = load_image(bytes(data))
    except ImageError:
        return
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3


@settings(max_examples=100, deadline=2000, derandomize=True)
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes_only_raise_image_error(data: bytes) -> None:
    with contextlib.suppress(ImageError):
        load_image(data)


# --- safe opening: what cannot be an image never blocks, floods or crashes (issues 13 and 22) ---


@pytest.mark.parametrize(
    ("make", "cause"),
    [
        (lambda p: os.mkfifo(p), "not a regular file (a FIFO)"),
        (lambda p: p.symlink_to("/dev/zero"), "not a regular file (a character device)"),
        (lambda p: p.symlink_to(p), "symbolic link loop"),
        (lambda p: p.symlink_to(p.parent / "gone.png"), "dangling symbolic link"),
        (lambda p: p.mkdir(), "is a directory"),
    ],
)
def test_only_regular_files_are_opened(tmp_path: Path, make, cause: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "x.jpg"
    make(path)
    with pytest.raises(ImageError, match=re.escape(cause)):
        load_image(path)


def test_size_cap_and_over_long_path(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    big.write_bytes(_encode(Image.fromarray(RGB), "PNG"))
    with pytest.raises(ImageError, match="exceeds the 100-byte limit"):
        open_regular(big, max_bytes=100)
    with pytest.raises(ImageError, match=r"path too long \(4\d\d\d bytes\)"):
        load_image(tmp_path / (("d" * 200 + "/") * 21) / "x.png")


def test_scan_lists_every_candidate_and_walks_folder_loops_once(tmp_path: Path) -> None:
    Image.fromarray(RGB).save(tmp_path / "a.png")
    (tmp_path / "sub").mkdir()
    os.mkfifo(tmp_path / "sub" / "f.jpg")
    (tmp_path / "sub" / "up").symlink_to(tmp_path)  # a folder loop
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "b\udcff.png").write_bytes(b"")  # a name that is not UTF-8
    names = [Path(p).name for p in scan_images(tmp_path)]
    assert names == ["a.png", "b\udcff.png", "f.jpg"]
    assert display_path(tmp_path / "b\udcff.png").endswith("b\\xff.png")


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(orientation: int) -> None:
    im = Image.fromarray(RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8))
    exif = im.getexif()
    exif[0x0112] = orientation
    data = _encode(im, "PNG", exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    np.testing.assert_array_equal(load_image(data), expected)


@pytest.mark.parametrize(
    ("mode", "h", "w"), [(m, 1100, 2000) for m in ("CMYK", "F", "I;16", "P", "LA")] + [("L", 1, 2_500_000)]
)
def test_tiled_conversion_equals_whole_image_conversion(mode: str, h: int, w: int) -> None:
    """Images larger than one tile (1100 x 2000: strips of 524 rows; a 2.5 M pixel line) convert exactly."""
    base = Image.fromarray(RNG.integers(0, 256, (h, w, 3), dtype=np.uint8))
    if mode == "F":
        im = Image.fromarray(RNG.random((h, w)).astype(np.float32) * 1000.0)
        want = np.clip(np.round(np.asarray(im, np.float64) / 65535.0 * 255), 0, 255).astype(np.uint8)
        want = np.repeat(want[..., None], 3, axis=2)
    elif mode == "I;16":
        im = Image.fromarray(RNG.integers(0, 65536, (h, w)).astype(np.uint16))
        want = np.repeat(np.round(np.asarray(im, np.float64) / 65535 * 255).astype(np.uint8)[..., None], 3, 2)
    elif mode == "P":
        im = base.convert("P")
        im.info["transparency"] = 0
        want = np.asarray(
            Image.alpha_composite(Image.new("RGBA", im.size, "white"), im.convert("RGBA")).convert("RGB")
        )
    elif mode == "LA":
        im = base.convert("LA")
        want = np.asarray(
            Image.alpha_composite(Image.new("RGBA", im.size, "white"), im.convert("RGBA")).convert("RGB")
        )
    else:
        im = base.convert(mode)
        want = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(to_rgb_uint8(im), want)


def test_float_tiff_decodes_within_its_memory_budget(tmp_path: Path) -> None:
    """A 16 MP float TIFF (a deflate bomb of a few KB) costs its decoded size plus the RGB output, no more."""
    path = tmp_path / "float.tif"
    Image.fromarray(np.zeros((4000, 4000), np.float32)).save(path, compression="tiff_adobe_deflate")
    assert path.stat().st_size < 200_000
    code = (  # VmHWM is this process's own peak (ru_maxrss would include the parent's, kept across exec)
        "import re, sys; from aigclab.io import load_image; "
        "hwm = lambda: int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)); "
        "before = hwm(); img = load_image(sys.argv[1]); print((hwm() - before) // 1024, img.shape)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    grown_mb = int(out.stdout.split()[0])
    assert "(4000, 4000, 3)" in out.stdout
    assert grown_mb < 64 + 48 + 40  # 64 MB of float pixels + 48 MB of RGB output + slack
