"""What comes back from a sandboxed run, read with bounds: the frame channel, media files, images.

The frame channel is a pipe the recorder writes records to (see _prelude.py): a 25-byte header
(magic, kind, index, virtual time, width, height) and, for screenshots and video frames, raw RGB
pixels. The harness reads it with a byte cap and validates it here; a stream the honest recorder
cannot produce (bad magic, time running backwards, indexes out of order, a frame over the pixel
cap, bytes after the end record) is flagged as tampering, an oversized one as a bad artefact.

Files read back (media from an earlier run, screenshots a user points ``score`` at) are opened
with O_NOFOLLOW | O_NONBLOCK, must be regular files under a byte cap, and images under a pixel cap.
"""

from __future__ import annotations

import json
import os
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aigclab.errors import AigclabError

__all__ = [
    "ArtefactError",
    "Channel",
    "FrameStream",
    "export_media",
    "load_frames",
    "load_shots",
    "parse_channel",
    "read_bounded",
    "write_media",
]

HEADER = struct.Struct("<4sBIdII")  # as _prelude.HEADER: magic, kind, index, virtual t, width, height
MAGIC = b"GGF1"
TICK, SHOT, VIDEO, END = 0, 1, 2, 3
MAX_FILE_BYTES = 64 << 20
MAX_IMAGE_PIXELS = 4_000_000  # screenshots are capped at 1280 px a side by the recorder


class ArtefactError(AigclabError):
    """A file or frame the harness will not read: not regular, too large, too many pixels, corrupt."""


@dataclass
class FrameStream:
    """A parsed channel: harness-counted frames, last virtual time, images and the end record."""

    frames: int = 0
    t: float = 0.0
    shots: dict[int, np.ndarray] = field(default_factory=dict)
    video: list[np.ndarray] = field(default_factory=list)
    end: dict | None = None
    tampered: list[str] = field(default_factory=list)
    bad_artefact: str | None = None
    truncated: bool = False


class Channel:
    """Collects a pipe's bytes up to `cap`; what is over the cap is drained and counted, not kept."""

    def __init__(self, fd: int, cap: int) -> None:
        self.fd, self.cap, self.data, self.dropped = fd, cap, bytearray(), 0

    def pump(self) -> bool:
        """Read what is there (non-blocking); False at end of stream."""
        while True:
            try:
                chunk = os.read(self.fd, 1 << 20)
            except BlockingIOError:
                return True
            if not chunk:
                return False
            room = self.cap - len(self.data)
            self.data += chunk[: max(0, room)]
            self.dropped += max(0, len(chunk) - max(0, room))


def parse_channel(
    data: bytes | bytearray, shots_at: tuple[float, ...], max_pixels: int, continued: bool = False
) -> FrameStream:
    """Validate and decode a channel; never raises on hostile bytes.

    `continued`: the stream of a probe, forked mid-run: its counters start where the fork was.
    """
    out = FrameStream()
    view, pos, n_video = memoryview(data), 0, 0
    if continued and len(view) >= HEADER.size:
        _, kind, index, t, _, _ = HEADER.unpack_from(view, 0)
        out.frames = index - 1 if kind == TICK else 0
        out.t = t if np.isfinite(t) else 0.0
        n_video = _first_video_index(view)
    base_frames = out.frames
    while pos < len(view):
        if len(view) - pos < HEADER.size:
            out.truncated = True
            break
        magic, kind, index, t, w, h = HEADER.unpack_from(view, pos)
        pos += HEADER.size
        problem = _check_record(out, magic, kind, index, t, w, h, shots_at, n_video, max_pixels)
        if problem:
            (
                out.tampered.append(problem)
                if not problem.startswith("over")
                else setattr(out, "bad_artefact", problem)
            )
            break
        size = w if kind == END else (w * h * 3 if kind in (SHOT, VIDEO) else 0)
        if len(view) - pos < size:
            out.truncated = True
            break
        payload = view[pos : pos + size]
        pos += size
        out.t = t
        if kind == TICK:
            out.frames += 1
        elif kind in (SHOT, VIDEO):
            img = np.frombuffer(payload, np.uint8).reshape(h, w, 3).copy()
            if kind == SHOT:
                out.shots[index] = img
            else:
                out.video.append(img)
                n_video += 1
        else:
            try:
                out.end = json.loads(bytes(payload))
            except ValueError:
                out.tampered.append("unreadable end record")
            if pos != len(view):
                out.tampered.append("records after the end record")
            break
    out.frames -= base_frames
    if out.end is not None and not isinstance(out.end, dict):
        out.tampered.append("end record is not an object")
        out.end = None
    return out


def _first_video_index(view: memoryview) -> int:
    pos = 0
    while len(view) - pos >= HEADER.size:
        magic, kind, index, _, w, h = HEADER.unpack_from(view, pos)
        if magic != MAGIC or kind == END:
            return 0
        if kind == VIDEO:
            return int(index)
        pos += HEADER.size + (w * h * 3 if kind == SHOT else 0)
    return 0


def _check_record(
    out: FrameStream,
    magic: bytes,
    kind: int,
    index: int,
    t: float,
    w: int,
    h: int,
    shots_at: tuple[float, ...],
    n_video: int,
    max_pixels: int,
) -> str:
    if magic != MAGIC or kind not in (TICK, SHOT, VIDEO, END):
        return "malformed record"
    if not np.isfinite(t) or t < out.t - 1e-9:
        return "virtual time ran backwards"
    if kind == TICK and index != out.frames + 1:
        return "frame counter out of order"
    if kind == SHOT and (index in out.shots or index >= len(shots_at) or t < shots_at[index] - 1e-6):
        return "screenshot out of order"
    if kind == VIDEO and index != n_video:
        return "video frame out of order"
    if kind in (SHOT, VIDEO) and (w < 1 or h < 1 or w * h > max_pixels):
        return f"over the pixel cap: {w}x{h} frame"
    if kind == END and w > 1 << 16:
        return "over the byte cap: end record"
    return ""


def read_bounded(path: str | Path, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """Read a regular file without following a final symlink or blocking on a FIFO, at most `max_bytes`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        raise ArtefactError(f"{path}: cannot open ({err.strerror or err})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ArtefactError(f"{path}: not a regular file")
        if info.st_size > max_bytes:
            raise ArtefactError(f"{path}: {info.st_size} bytes is over the cap of {max_bytes}")
        chunks, left = [], max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > max_bytes:
            raise ArtefactError(f"{path}: over the cap of {max_bytes} bytes")
        return data
    finally:
        os.close(fd)


def load_frames(
    path: str | Path, max_frames: int = 400, max_pixels: int = MAX_IMAGE_PIXELS
) -> dict[str, np.ndarray]:
    """A run's frame archive (``shots.npz`` / ``video.npz``): bounded in bytes, count and pixels."""
    import io
    import zipfile

    data = read_bounded(path)
    out: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:  # sizes before decompressing (zip bombs)
            for info in zf.infolist():
                if info.file_size > max_pixels * 3 + 4096:
                    raise ArtefactError(
                        f"{path}: {info.filename} unpacks to {info.file_size} bytes, over the cap"
                    )
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            if len(npz.files) > max_frames:
                raise ArtefactError(f"{path}: {len(npz.files)} frames is over the cap of {max_frames}")
            for name in npz.files:
                arr = npz[name]
                if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[-1] != 3:
                    raise ArtefactError(f"{path}: {name} is not an RGB uint8 frame ({arr.dtype} {arr.shape})")
                if arr.shape[0] * arr.shape[1] > max_pixels:
                    raise ArtefactError(f"{path}: {name} {arr.shape[1]}x{arr.shape[0]} is over the pixel cap")
                out[name] = arr
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
        raise ArtefactError(f"{path}: not a frame archive ({err})") from None
    return out


def _save_npz(path: Path, frames: dict[str, np.ndarray]) -> None:
    """Like np.savez_compressed, at zlib level 1 (game frames are flat; level 1 is 3x faster than PNG)."""
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, arr in frames.items():
            with zf.open(name + ".npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.ascontiguousarray(arr), allow_pickle=False)


def write_media(stream: FrameStream, dest: Path, video: bool = True) -> tuple[list[str], str | None]:
    """Screenshots to ``shots.npz`` (names ``shot_00``...), video frames to ``video.npz``, kept raw
    (losslessly compressed) until someone wants PNGs or a GIF (:func:`export_media`)."""
    dest.mkdir(parents=True, exist_ok=True)
    shots = {f"shot_{i:02d}": stream.shots[i] for i in sorted(stream.shots)}
    if shots:
        _save_npz(dest / "shots.npz", shots)
    if not (video and stream.video):
        return list(shots), None
    _save_npz(dest / "video.npz", {f"frame_{i:04d}": f for i, f in enumerate(stream.video)})
    return list(shots), "video.npz"


def load_shots(media_dir: str | Path, names: list[str]) -> dict[str, np.ndarray]:
    """The named screenshots of a run (missing archive: none)."""
    path = Path(media_dir) / "shots.npz"
    if not names or not os.path.lexists(path):
        return {}
    frames = load_frames(path)
    return {n: frames[n] for n in names if n in frames}


def export_media(media_dir: str | Path, fps: float = 4.0) -> list[Path]:
    """PNG screenshots and ``gameplay.gif`` beside a run's archives, for people to look at."""
    from PIL import Image

    media = Path(media_dir)
    written = []
    for sub in (media, media / "probe"):
        if (sub / "shots.npz").is_file():
            for name, img in load_frames(sub / "shots.npz").items():
                Image.fromarray(img).save(sub / f"{name}.png")
                written.append(sub / f"{name}.png")
    if (media / "video.npz").is_file():
        frames = list(load_frames(media / "video.npz").values())
        if frames:
            images = [Image.fromarray(f).quantize(64) for f in frames]
            gif = media / "gameplay.gif"
            images[0].save(gif, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
            written.append(gif)
    return written
