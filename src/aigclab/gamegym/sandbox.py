"""Run untrusted pygame programs: isolated, limited, virtual clock, frames over a validated channel.

Isolation (``SandboxConfig.isolation``; ``auto`` probes once per process by running a real program
through the jail) fails *closed*: when neither mode works, running raises
:class:`IsolationUnavailable` unless the caller asked for ``"none"`` explicitly.

* ``namespaces`` (root) and ``user-namespaces`` (non-root, where the kernel allows): fresh mount,
  PID, network, IPC and UTS namespaces; a minimal root (interpreter, its prefixes, every
  site-packages dir wherever it lives, /usr and the loader, fonts, /dev/null & co, the work dir at
  /game; nothing of /work, /opt, /etc, /run, /tmp or the homes); no network interfaces and no
  filesystem or abstract Unix sockets of the host; SysV IPC private to the run; an unused uid
  (as root) so the program can signal or read nothing of ours. See _jail.py.
* ``none``: a plain forked process with the limits below; not a security boundary.

Limits: wall clock (the whole namespace is killed), RLIMIT_CPU/AS/FSIZE/NPROC/NOFILE per process,
and for the *whole attempt* a memory cgroup (cgroup v2 with a memory controller we may use) or,
failing that, an aggregate watchdog that sums the resident memory and CPU time of every process of
the attempt and kills it past ``memory_mb`` / ``cpu_s``. Programs start from a pre-started zygote
that forks per run (no interpreter start-up or ``import pygame`` per run).

Threat model (integrity of the report). The harness trusts only what it observes from outside:
the exit status (from PID 1 of the namespace), wall and CPU time, and the frame channel, which it
counts and validates itself. Nothing the program can write as a file is read back, so forging
``result.json`` or PNGs in the work dir has no effect; ``import __main__`` is the program's own
module, so the recorder's state is not reachable by name; replacing the recorder's hooks
(flip/update, the clock) is detected and the run is marked ``tampered``; a malformed channel is
``tampered``. Not defended: the recorder runs in the program's process, so a program that
deliberately reimplements the channel protocol can send frames it drew itself; they are then the
frames it is scored on. Judges see only frames that crossed the channel.

Example:
    >>> from aigclab.gamegym.sandbox import SandboxConfig, run_program
    >>> result = run_program("print('hi')", SandboxConfig())  # doctest: +SKIP
    >>> result.status  # doctest: +SKIP
    'no_frames'
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from aigclab._config import Config
from aigclab.errors import AigclabError
from aigclab.gamegym import _zygote
from aigclab.gamegym.frames import Channel, FrameStream, parse_channel, write_media

__all__ = [
    "DEFAULT_EVENTS",
    "InputEvent",
    "IsolationUnavailable",
    "RunResult",
    "SandboxConfig",
    "isolation_mode",
    "resolve_isolation",
    "run_program",
]

Isolation = Literal["auto", "namespaces", "user-namespaces", "none"]
Status = Literal[
    "ok",
    "early_exit",
    "syntax_error",
    "crash",
    "timeout",
    "cpu_limit",
    "memory",
    "no_frames",
    "virtual_limit",
    "bad_artefact",
    "tampered",
    "no_code",
    "sandbox_error",
]


class IsolationUnavailable(AigclabError):
    """No namespace isolation on this machine and the caller did not ask for ``isolation="none"``."""


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
    memory_mb: int = 1024  # the whole attempt (every process of it together)
    file_mb: int = 64  # per file written, and the frame channel's byte cap
    nproc: int = 8
    isolation: Isolation = "auto"
    clock: Literal["virtual", "real"] = "virtual"
    max_virtual_s: float = 12.0  # the prompt asks for 10 s; a program still running after this is stopped
    min_run_s: float = 9.5  # a clean exit before this virtual time is an early exit
    shots_at: tuple[float, ...] = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)
    max_shot_side: int = 1280  # screenshots are scaled down inside the sandbox past this
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
    video: str | None = None
    gif: str | None = None
    exception: str | None = None
    stdout: str = ""
    stderr: str = ""
    isolation: str = ""
    tampered: list[str] = []
    probe_status: str | None = None  # the same program without scripted input, forked at the first input
    probe_shots: list[str] = []
    uid: int | None = None


def _probe(mode: str) -> bool:
    """Run a real program (the interpreter, pygame, a frame) through the jail in `mode`."""
    code = "import pygame\npygame.display.set_mode((8, 8))\npygame.display.flip()\nprint('jail-ok')\n"
    try:
        result = _run(code, SandboxConfig(wall_s=60, min_run_s=0, isolation=mode), mode, None, (), False)  # type: ignore[arg-type]
    except OSError:
        return False
    return result.status == "ok" and "jail-ok" in result.stdout


@functools.cache
def isolation_mode() -> str:
    """The strongest isolation that runs a real program here: namespaces, user-namespaces or none."""
    tries = ["namespaces"] if os.geteuid() == 0 else []
    for mode in [*tries, "user-namespaces"]:
        if _probe(mode):
            return mode
    return "none"


def resolve_isolation(requested: str) -> str:
    """The mode to use; raises IsolationUnavailable instead of silently running unsandboxed."""
    if requested != "auto":
        return requested
    mode = isolation_mode()
    if mode == "none":
        raise IsolationUnavailable(
            "gamegym: no namespace isolation works on this machine (needs root or unprivileged user "
            "namespaces); refusing to run untrusted programs. Pass --isolation none to run them "
            "unsandboxed (trusted code only)."
        )
    return mode


_uid_counter = 0


def _sandbox_uid() -> int:
    """An otherwise unused uid, distinct per parent process and call."""
    global _uid_counter
    _uid_counter += 1
    return 200_000 + (os.getpid() * 64 + _uid_counter) % 500_000


def _env() -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": "/game",
        "TMPDIR": "/game",
        "LANG": "C.UTF-8",
        "SDL_VIDEODRIVER": "dummy",
        "SDL_AUDIODRIVER": "dummy",
        "PYGAME_HIDE_SUPPORT_PROMPT": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def _child_cfg(cfg: SandboxConfig, events: tuple[InputEvent, ...]) -> dict:
    keys = {
        "clock",
        "max_virtual_s",
        "shots_at",
        "max_shot_side",
        "video_fps",
        "video_s",
        "video_width",
        "seed",
    }
    return {**cfg.model_dump(include=keys), "events": [e.model_dump() for e in events]}


def _status(stream: FrameStream, exit_code: int | None, cfg: SandboxConfig, cpu: float) -> Status:
    end = stream.end or {}
    exc = str(end.get("exception") or "")
    if stream.bad_artefact:
        return "bad_artefact"
    if exc.startswith(("SyntaxError", "IndentationError", "TabError")):
        return "syntax_error"
    if exc.startswith("MemoryError"):
        return "memory"
    if stream.tampered:
        return "tampered"
    if stream.end is None:  # killed before it could report: by a signal or a limit
        xcpu = exit_code in (128 + signal.SIGXCPU, -signal.SIGXCPU)
        return "cpu_limit" if xcpu or cpu >= 0.85 * cfg.cpu_s else "crash"
    if end.get("stopped") == "virtual_limit":
        return "virtual_limit"
    if exit_code != 0 or exc:
        return "crash"
    if stream.frames == 0:
        return "no_frames"
    return "early_exit" if stream.t < cfg.min_run_s else "ok"


def run_program(
    code: str,
    cfg: SandboxConfig,
    out_dir: str | Path | None = None,
    events: tuple[InputEvent, ...] = (),
    probe: bool = False,
) -> RunResult:
    """Run `code` as ``game.py`` in the sandbox; screenshots and video frames go to `out_dir` when given.

    With `probe` (and `events`), the program also runs on without input from the first scripted
    event (a fork of the same process) and its screenshots go to ``out_dir/probe``.
    """
    mode = resolve_isolation(cfg.isolation)
    return _run(code, cfg, mode, Path(out_dir) if out_dir else None, events, probe and bool(events))


def _run(
    code: str,
    cfg: SandboxConfig,
    mode: str,
    out_dir: Path | None,
    events: tuple[InputEvent, ...],
    probe: bool,
) -> RunResult:
    attempt_dir = Path(tempfile.mkdtemp(prefix="aigclab-gg-"))
    pipes: list[int] = []  # read ends; write ends stay in `fds` until the zygote has them
    fds: dict[str, int] = {}
    try:
        workdir = attempt_dir / "game"
        workdir.mkdir()
        (attempt_dir / "root").mkdir()
        (workdir / "game.py").write_text(code)
        uid = _sandbox_uid() if mode == "namespaces" else None
        job = {
            "mode": mode,
            "workdir": str(workdir),
            "root": str(attempt_dir / "root"),
            "keep_ro": _zygote.keep_paths(),
            "uid": uid,
            "memory_mb": cfg.memory_mb,
            "cpu_s": cfg.cpu_s,
            "file_mb": cfg.file_mb,
            "nproc": cfg.nproc if mode == "namespaces" else _zygote.user_procs(os.getuid()) + cfg.nproc,
            "env": _env(),
            "child": _child_cfg(cfg, events),
        }
        for name in ("stdout", "stderr"):
            fds[name] = os.open(attempt_dir / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        chan_r, fds["channel"] = os.pipe()
        pipes.append(chan_r)
        channels = {"main": Channel(chan_r, cfg.file_mb << 20)}
        if probe:
            probe_r, fds["probe"] = os.pipe()
            pipes.append(probe_r)
            channels["probe"] = Channel(probe_r, cfg.file_mb << 20)
        for ch in channels.values():
            os.set_blocking(ch.fd, False)
        start = time.monotonic()
        outcome = _zygote.run(mode, job, fds, channels, cfg)
        wall = time.monotonic() - start
        return _result(outcome, channels, attempt_dir, out_dir, cfg, mode, uid, wall)
    finally:
        for fd in [*pipes, *fds.values()]:
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(attempt_dir, ignore_errors=True)


def _tail(path: Path, n: int = 2000) -> str:
    """The last `n` bytes of a log the harness itself created (it may be up to file_mb long)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return ""
    try:
        size = os.fstat(fd).st_size
        os.lseek(fd, max(0, size - n), os.SEEK_SET)
        return os.read(fd, n).decode("utf-8", "replace")
    finally:
        os.close(fd)


def _result(
    outcome: _zygote.Outcome,
    channels: dict[str, Channel],
    attempt_dir: Path,
    out_dir: Path | None,
    cfg: SandboxConfig,
    mode: str,
    uid: int | None,
    wall: float,
) -> RunResult:
    max_px = max(cfg.max_shot_side, cfg.video_width) ** 2
    streams = {k: parse_channel(ch.data, cfg.shots_at, max_px, k == "probe") for k, ch in channels.items()}
    main = streams["main"]
    if channels["main"].dropped:
        main.bad_artefact = f"over the byte cap: the frame channel sent more than {cfg.file_mb} MB"
    if outcome.jail_error:
        status: Status = "sandbox_error"
    elif outcome.killed:
        status = outcome.killed  # type: ignore[assignment]
    else:
        status = _status(main, outcome.exit_code, cfg, outcome.cpu)
    end = main.end or {}
    result = RunResult(
        status=status,
        returncode=outcome.exit_code,
        wall_s=round(wall, 3),
        cpu_s=round(outcome.cpu, 3),
        virtual_s=round(main.t, 3),
        frames=main.frames,
        exception=outcome.jail_error or main.bad_artefact or end.get("exception"),
        stdout=_tail(attempt_dir / "stdout"),
        stderr=_tail(attempt_dir / "stderr"),
        isolation=mode,
        tampered=[*main.tampered, *[str(x)[:80] for x in (end.get("tampered") or [])][:8]],
        uid=uid,
    )
    if result.tampered and status not in ("sandbox_error", "bad_artefact"):
        result.status = "tampered"
    if "probe" in streams:
        p = streams["probe"]
        pend = p.end or {}
        if channels["probe"].data:  # the probe forks at the first scripted input; it may never come
            result.probe_status = (
                "tampered"
                if p.tampered
                else "bad_artefact"
                if p.bad_artefact
                else str(pend.get("stopped", "crash"))
            )
    if out_dir is not None and result.status not in ("sandbox_error", "bad_artefact"):
        result.shots, result.video = write_media(main, out_dir)
        if "probe" in streams:
            result.probe_shots, _ = write_media(streams["probe"], out_dir / "probe", video=False)
    return result
