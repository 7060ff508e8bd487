"""Run untrusted pygame programs: own process, limits, no network, virtual clock, captured frames.

Layers, strongest available first (``isolation="auto"`` probes once per process):

* ``namespaces`` (root): ``unshare --net --mount --pid --fork --kill-child``: an empty network
  namespace (no interfaces but a down loopback), a private mount namespace where the temp dirs and
  home directories are empty tmpfs (the interpreter is bound back read-only, the work dir
  read-write) and every other mount is read-only, a PID namespace whose processes all die with it;
  then an unused uid (so RLIMIT_NPROC applies and nothing of the parent's can be signalled or read).
* ``user-namespaces`` (non-root, where the kernel allows): the same with ``unshare -r``, no uid drop,
  so files the invoking user may read outside the hidden dirs stay readable.
* ``none``: a plain child process; only the rlimits and the Python socket block remain. This is
  not a security boundary (the hostile suite escapes it); use it only for trusted code.

Always: its own session (process group killed on timeout), wall-clock timeout, RLIMIT_CPU, RLIMIT_AS,
RLIMIT_FSIZE, RLIMIT_NPROC, RLIMIT_NOFILE, a fresh temp working dir, a scrubbed environment with SDL
dummy drivers, and the prelude's virtual clock, frame capture, scripted input and socket block.

Example:
    >>> from aigclab.gamegym.sandbox import SandboxConfig, run_program
    >>> result = run_program("print('hi')", SandboxConfig())  # doctest: +SKIP
    >>> result.status  # doctest: +SKIP
    'no_frames'
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ValidationError

from aigclab._config import Config

__all__ = ["DEFAULT_EVENTS", "InputEvent", "RunResult", "SandboxConfig", "isolation_mode", "run_program"]

Isolation = Literal["auto", "namespaces", "user-namespaces", "none"]
Status = Literal[
    "ok",
    "syntax_error",
    "crash",
    "timeout",
    "cpu_limit",
    "memory",
    "no_frames",
    "virtual_limit",
    "no_code",
    "sandbox_error",
]
_HERE = Path(__file__).parent
_UNSHARE = ["unshare", "--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc"]
_HIDE = ["/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/root", "/home"]


class InputEvent(BaseModel):
    """A scripted event at virtual time `t`: keydown/keyup (pygame key name) or mousedown/up/move."""

    t: float
    type: Literal["keydown", "keyup", "mousedown", "mouseup", "mousemove"]
    key: str = ""
    pos: tuple[int, int] = (0, 0)
    button: int = 1


def _hold(key: str, start: float, end: float) -> list[InputEvent]:
    return [InputEvent(t=start, type="keydown", key=key), InputEvent(t=end, type="keyup", key=key)]


# Arrows, space and a few clicks in the second half of the run: enough to move most auto-demos.
DEFAULT_EVENTS: tuple[InputEvent, ...] = (
    *_hold("right", 2.0, 3.5),
    *_hold("space", 3.6, 3.8),
    *_hold("up", 4.0, 5.0),
    *_hold("left", 5.0, 6.5),
    *_hold("down", 6.5, 7.0),
    *_hold("return", 7.1, 7.2),
    InputEvent(t=7.5, type="mousedown", pos=(160, 120)),
    InputEvent(t=7.6, type="mouseup", pos=(160, 120)),
    InputEvent(t=8.0, type="mousedown", pos=(400, 300)),
    InputEvent(t=8.1, type="mouseup", pos=(400, 300)),
)


class SandboxConfig(Config):
    wall_s: float = 30.0
    cpu_s: int = 20
    memory_mb: int = 1024
    file_mb: int = 64
    nproc: int = 32
    isolation: Isolation = "auto"
    clock: Literal["virtual", "real"] = "virtual"
    max_virtual_s: float = 12.0  # the prompt asks for 10 s; a program still running after this is stopped
    shots_at: tuple[float, ...] = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)
    video_fps: float = 4.0
    video_s: float = 10.0
    video_width: int = 200
    seed: int = 0


class RunResult(BaseModel):
    """A flat record of one run; `status` says how it ended."""

    status: Status
    returncode: int | None = None
    wall_s: float = 0.0
    cpu_s: float = 0.0
    virtual_s: float = 0.0
    frames: int = 0
    shots: list[str] = []
    gif: str | None = None
    exception: str | None = None
    stdout: str = ""
    stderr: str = ""
    isolation: str = ""


class _ChildReport(BaseModel):
    t: float = 0.0
    frames: int = 0
    shots: list[str] = []
    video: int = 0
    stopped: str = "exit"
    exception: str | None = None


@functools.cache
def isolation_mode() -> str:
    """The strongest isolation this machine allows (probed once by running ``true`` inside it)."""
    if shutil.which("unshare") is None:
        return "none"
    tries = [("namespaces", _UNSHARE)] if os.geteuid() == 0 else []
    tries.append(("user-namespaces", [_UNSHARE[0], "-r", *_UNSHARE[1:]]))
    for mode, cmd in tries:
        try:
            if subprocess.run([*cmd, "true"], capture_output=True, timeout=20).returncode == 0:
                return mode
        except subprocess.TimeoutExpired:
            continue
    return "none"


def _sandbox_uid() -> int:
    """An otherwise unused uid, distinct per parent process and call."""
    _sandbox_uid.counter = getattr(_sandbox_uid, "counter", 0) + 1  # type: ignore[attr-defined]
    return 200_000 + (os.getpid() * 64 + _sandbox_uid.counter) % 500_000  # type: ignore[attr-defined]


def _keep_paths() -> list[str]:
    """The interpreter's and pygame's dirs that live under a hidden home root and must stay visible."""
    import importlib.util
    import site

    spec = importlib.util.find_spec("pygame")
    pygame_dir = str(Path(spec.origin).parent.parent) if spec and spec.origin else sys.prefix
    homes = ("/root/", "/home/")
    dirs = [sys.base_prefix, sys.prefix, *site.getsitepackages(), pygame_dir]
    keep: list[str] = []
    for path in sorted({os.path.realpath(p) for p in dirs if os.path.isdir(p)}):
        if path.startswith(homes) and not any(path == k or path.startswith(k + "/") for k in keep):
            keep.append(path)
    return keep


def _user_procs(uid: int) -> int:
    n = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            n += os.stat(f"/proc/{pid}").st_uid == uid
        except FileNotFoundError:
            continue
    return n


def _env(workdir: str) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "SDL_VIDEODRIVER": "dummy",
        "SDL_AUDIODRIVER": "dummy",
        "PYGAME_HIDE_SUPPORT_PROMPT": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def _jail_config(cfg: SandboxConfig, workdir: str, mode: str) -> dict:
    root = os.geteuid() == 0
    nproc = cfg.nproc if mode == "namespaces" else _user_procs(os.getuid()) + cfg.nproc
    return {
        "workdir": workdir,
        "hide": [p for p in _HIDE if os.path.isdir(p)] if mode != "none" else [],
        "keep_ro": _keep_paths() if mode != "none" else [],
        "uid": _sandbox_uid() if mode == "namespaces" and root else None,
        "memory_mb": cfg.memory_mb,
        "cpu_s": cfg.cpu_s,
        "file_mb": cfg.file_mb,
        "nproc": nproc,
        "env": _env(workdir),
    }


def _wait(proc: subprocess.Popen, wall_s: float) -> tuple[int | None, float, bool]:
    """Wait up to `wall_s`; kill the whole session past it. Returns (returncode, cpu seconds, timed out)."""
    deadline = time.monotonic() + wall_s
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_utime + usage.ru_stime, False
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            return None, usage.ru_utime + usage.ru_stime, True
        time.sleep(0.01)


def _reap(uid: int, patience_s: float = 3.0) -> None:
    """Wait until the sandbox uid owns no process (the dying PID namespace), killing stragglers."""
    deadline = time.monotonic() + patience_s
    while _user_procs(uid) and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            if os.stat(f"/proc/{pid}").st_uid == uid:
                os.kill(int(pid), signal.SIGKILL)


def _tail(path: Path, n: int = 2000) -> str:
    data = path.read_bytes() if path.exists() else b""
    return data[-n:].decode("utf-8", "replace")


def _status(
    report: _ChildReport | None, code: int | None, timed_out: bool, cpu: float, cfg: SandboxConfig
) -> Status:
    if timed_out:
        return "timeout"
    exc = (report.exception or "") if report else ""
    if exc.startswith(("SyntaxError", "IndentationError", "TabError")):
        return "syntax_error"
    if exc.startswith("MemoryError"):
        return "memory"
    if report is None:  # killed before it could report: by a signal or a limit
        return "cpu_limit" if cpu >= cfg.cpu_s - 0.5 or code == -signal.SIGXCPU else "crash"
    if report.stopped == "virtual_limit":
        return "virtual_limit"
    if code != 0 or exc:
        return "crash"
    return "ok" if report.frames > 0 else "no_frames"


def run_program(
    code: str, cfg: SandboxConfig, out_dir: str | Path | None = None, events: tuple[InputEvent, ...] = ()
) -> RunResult:
    """Run `code` as ``game.py`` in the sandbox; screenshots and a GIF go to `out_dir` when given."""
    mode = isolation_mode() if cfg.isolation == "auto" else cfg.isolation
    workdir = tempfile.mkdtemp(prefix="aigclab-gg-")
    logdir = Path(tempfile.mkdtemp(prefix="aigclab-gglog-"))
    try:
        wd = Path(workdir)
        (wd / "game.py").write_text(code)
        shutil.copy(_HERE / "_prelude.py", wd / "_gg_prelude.py")
        shutil.copy(_HERE / "_jail.py", logdir / "_gg_jail.py")
        child_cfg = cfg.model_dump(
            include={"clock", "max_virtual_s", "shots_at", "video_fps", "video_s", "video_width", "seed"}
        )
        child_cfg["events"] = [e.model_dump() for e in events]
        (wd / "_gg_config.json").write_text(json.dumps(child_cfg))
        jail = _jail_config(cfg, workdir, mode)
        (logdir / "jail.json").write_text(json.dumps(jail))
        prefix = {"namespaces": _UNSHARE, "user-namespaces": [_UNSHARE[0], "-r", *_UNSHARE[1:]]}.get(mode, [])
        cmd = [*prefix, sys.executable, "-I", str(logdir / "_gg_jail.py"), str(logdir / "jail.json")]
        start = time.monotonic()
        with open(logdir / "stdout", "wb") as out, open(logdir / "stderr", "wb") as err:
            proc = subprocess.Popen(
                cmd,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=_env(workdir),
                start_new_session=True,
            )
            returncode, cpu, timed_out = _wait(proc, cfg.wall_s)
        if jail["uid"] is not None:
            _reap(jail["uid"])
        wall = time.monotonic() - start
        report = _read_report(wd / "_gg_out" / "result.json")
        result = RunResult(
            status=_status(report, returncode, timed_out, cpu, cfg),
            returncode=returncode,
            wall_s=round(wall, 3),
            cpu_s=round(cpu, 3),
            virtual_s=round(report.t, 3) if report else 0.0,
            frames=report.frames if report else 0,
            exception=report.exception if report else None,
            stdout=_tail(logdir / "stdout"),
            stderr=_tail(logdir / "stderr"),
            isolation=mode,
        )
        if out_dir is not None and report is not None:
            _collect_media(wd / "_gg_out", report, Path(out_dir), result, cfg)
        return result
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(logdir, ignore_errors=True)


def _read_report(path: Path) -> _ChildReport | None:
    try:
        return _ChildReport.model_validate_json(path.read_bytes()[:1_000_000])
    except (OSError, ValidationError):
        return None


def _plain(path: Path) -> bool:
    """A regular file the program wrote itself: no symlink, no hard link to someone else's file."""
    return path.is_file() and not path.is_symlink() and path.stat().st_nlink == 1


def _collect_media(
    src: Path, report: _ChildReport, dest: Path, result: RunResult, cfg: SandboxConfig
) -> None:
    """Copy the screenshots (only names the child reported, only plain files) and build the GIF."""
    from PIL import Image, UnidentifiedImageError

    dest.mkdir(parents=True, exist_ok=True)
    for name in report.shots[: len(cfg.shots_at)]:
        path = src / Path(name).name
        if _plain(path):
            shutil.copyfile(path, dest / path.name)
            result.shots.append(path.name)
    frames = []
    for i in range(min(report.video, int(cfg.video_fps * cfg.video_s) + 1)):
        path = src / f"video_{i:04d}.png"
        if not _plain(path):
            break
        try:
            with Image.open(path) as im:
                frames.append(im.convert("RGB").quantize(64))
        except (OSError, UnidentifiedImageError):
            break
    if frames:
        frames[0].save(
            dest / "gameplay.gif",
            save_all=True,
            append_images=frames[1:],
            duration=int(1000 / cfg.video_fps),
            loop=0,
        )
        result.gif = "gameplay.gif"
