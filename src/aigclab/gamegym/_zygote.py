"""Harness side of the jail: start the zygote (_jail.py), send it runs, watch and kill them.

One zygote per harness process and isolation mode, started on first use; it dies with the harness
(PR_SET_PDEATHSIG) and so does every run it forked. While a run goes on, the harness drains the
frame channels, enforces the wall limit, and limits the *whole attempt*: a cgroup v2 memory group
where one can be made, else a watchdog that sums resident memory and CPU time over every process
of the attempt (the namespace's PID 1 and its descendants).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import os
import select
import signal
import site
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aigclab.gamegym.frames import Channel

_HERE = Path(__file__).parent
_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICK = os.sysconf("SC_CLK_TCK")
_SYSTEM_RO = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"]
_ETC = ["/etc/ld.so.cache", "/etc/fonts", "/var/cache/fontconfig", "/usr/share/fonts"]


@dataclass
class Outcome:
    exit_code: int | None = None
    cpu: float = 0.0
    jail_error: str | None = None
    killed: str | None = None  # timeout | memory | cpu_limit (by the harness)


def site_dirs() -> list[str]:
    """The interpreter's package dirs that exist: its site-packages (a venv's and the base one's) and the
    user site. They are the jail's whole import path; the harness's project dirs are not among them."""
    return [d for d in (*site.getsitepackages(), site.getusersitepackages()) if os.path.isdir(d)]


def keep_paths() -> list[str]:
    """Read-only paths the program needs: system dirs, the interpreter, its prefixes and every
    package dir (`site_dirs`, wherever they live, and pygame's own dir)."""
    spec = importlib.util.find_spec("pygame")
    extra = [str(Path(spec.origin).parent.parent)] if spec and spec.origin else []
    dirs = [
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        str(Path(sys.executable).parent),
        str(Path(os.path.realpath(sys.executable)).parent),
        *site_dirs(),
        *extra,
    ]
    real = sorted({os.path.realpath(p) for p in dirs if os.path.isdir(p)})
    keep: list[str] = [p for p in _SYSTEM_RO + _ETC if os.path.lexists(p)]
    for path in real:
        if not any(path == k or path.startswith(k.rstrip("/") + "/") for k in keep if not os.path.islink(k)):
            keep.append(path)
    return keep


def user_procs(uid: int) -> int:
    n = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            n += os.stat(f"/proc/{pid}").st_uid == uid
    return n


def _tree(root: int) -> list[int]:
    """`root` and its descendants (host pids), from /proc/<pid>/task/*/children."""
    out: list[int] = []
    todo = [root]
    while todo and len(out) < 4096:
        pid = todo.pop()
        out.append(pid)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as fh:
                    todo.extend(int(x) for x in fh.read().split())
    return out


def _usage(pids: list[int], cpu_seen: dict[int, float]) -> int:
    """Private resident bytes of `pids` now; updates the CPU seconds seen per pid."""
    rss = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{pid}/statm") as fh:
                fields = fh.read().split()
            rss += (int(fields[1]) - int(fields[2])) * _PAGE
            with open(f"/proc/{pid}/stat") as fh:
                stat = fh.read().rsplit(")", 1)[1].split()
            cpu_seen[pid] = (int(stat[11]) + int(stat[12])) / _TICK
    return rss


CGROUP_ROOT = Path("/sys/fs/cgroup")  # the cgroup v2 mount


def _cgroup(name: str, cfg: Any, membership: str = "/proc/self/cgroup") -> str | None:
    """A cgroup v2 memory group for one attempt, when this process may make one; else None."""
    base = CGROUP_ROOT
    try:
        if "memory" not in (base / "cgroup.controllers").read_text().split():
            return None
        own = Path(membership).read_text().split("0::", 1)[1].split("\n", 1)[0]
        parent = base / own.lstrip("/")
        if "memory" not in (parent / "cgroup.subtree_control").read_text().split():
            return None
        group = parent / name
        group.mkdir()
        (group / "memory.max").write_text(str(cfg.memory_mb << 20))
        with contextlib.suppress(OSError):
            (group / "memory.swap.max").write_text("0")
        with contextlib.suppress(OSError):
            (group / "pids.max").write_text(str(cfg.nproc + 4))
        return str(group)
    except (OSError, IndexError):
        return None


def _cgroup_done(group: str | None) -> bool:
    """Remove the group; True when the kernel killed something in it for memory."""
    if not group:
        return False
    oom = False
    with contextlib.suppress(OSError, ValueError):
        events = dict(line.split() for line in Path(group, "memory.events").read_text().splitlines())
        oom = int(events.get("oom_kill", 0)) > 0
    for _ in range(50):
        try:
            os.rmdir(group)
            break
        except OSError:
            time.sleep(0.02)
    return oom


class Zygote:
    """A pre-started jail process; `run` forks one sandboxed program from it."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # The interpreter's package dirs (venv, base, user site) reach the jail through PYTHONPATH in a
        # controlled environment; -s and -P keep anything else (the script's dir) off its import path.
        path = os.pathsep.join(site_dirs())
        cmd = [
            sys.executable,
            "-s",
            "-P",
            str(_HERE / "_jail.py"),
            str(_HERE / "_prelude.py"),
            str(theirs.fileno()),
        ]
        self.proc = subprocess.Popen(
            cmd,
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env={
                "PATH": "/usr/bin:/bin",
                "LANG": "C.UTF-8",
                "PYGAME_HIDE_SUPPORT_PROMPT": "1",
                "PYTHONPATH": path,
            },
        )
        theirs.close()
        ready, _, _ = select.select([self.sock], [], [], 120)
        msg = self.sock.recv(1 << 16) if ready else b""
        if not msg:
            self.close()
            err = self.proc.stderr.read().decode(errors="replace")[-500:] if self.proc.stderr else ""
            raise OSError(f"the gamegym zygote did not start: {err.strip() or 'no reply'}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
        with contextlib.suppress(OSError):
            self.proc.kill()
        with contextlib.suppress(Exception):
            self.proc.wait(5)


_zygotes: dict[tuple[int, str], Zygote] = {}
_lock = threading.Lock()


@atexit.register
def _close_all() -> None:
    """Stop and reap this process's zygotes (their CPU time then counts in our children's usage)."""
    for key, zyg in list(_zygotes.items()):
        if key[0] == os.getpid():
            zyg.close()


def _get(mode: str) -> Zygote:
    key = (os.getpid(), mode)
    zyg = _zygotes.get(key)
    if zyg is None or not zyg.alive():
        if zyg is not None:
            zyg.close()
        zyg = _zygotes[key] = Zygote(mode)
        import multiprocessing.util

        multiprocessing.util.Finalize(zyg, _close_all, exitpriority=10)
    return zyg


def _kill(pid: int | None) -> None:
    if pid:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _grow_pipe(fd: int) -> None:
    """1 MiB pipe buffers: a screenshot crosses in one or two writes instead of twenty."""
    with contextlib.suppress(OSError):
        import fcntl

        fcntl.fcntl(fd, 1031, 1 << 20)  # F_SETPIPE_SZ


def run(mode: str, job: dict, fds: dict[str, int], channels: dict[str, Channel], cfg: Any) -> Outcome:
    """Send `job` to the zygote and supervise it; always returns (the run is dead by then)."""
    with _lock:
        zyg = _get(mode)
        group = _cgroup(f"aigclab-gg-{os.getpid()}-{time.monotonic_ns()}", cfg) if mode != "none" else None
        job = {**job, "fd_names": list(fds), "cgroup": group}
        out = Outcome()
        init_pid: int | None = None
        cpu_seen: dict[int, float] = {}
        for ch in channels.values():
            _grow_pipe(ch.fd)
        try:
            socket.send_fds(zyg.sock, [json.dumps(job).encode()], list(fds.values()))
            for fd in fds.values():  # the run holds its own copies now
                os.close(fd)
            fds.clear()
            deadline = time.monotonic() + cfg.wall_s
            next_watch = 0.0
            open_channels = {ch.fd: ch for ch in channels.values()}
            while True:
                ctl_fd = zyg.sock.fileno()
                readable, _, _ = select.select([ctl_fd, *open_channels], [], [], 0.02)
                for fd in readable:
                    if fd in open_channels and not open_channels[fd].pump():
                        del open_channels[fd]
                if ctl_fd in readable:
                    msg = zyg.sock.recv(1 << 16)
                    if not msg:
                        out.jail_error = "the gamegym zygote died"
                        break
                    info = json.loads(msg)
                    if "init_pid" in info:
                        init_pid = info["init_pid"]
                        continue
                    out.exit_code, out.cpu = info.get("exit"), float(info.get("cpu", 0.0))
                    out.jail_error = info.get("jail_error")
                    break
                now = time.monotonic()
                if now > deadline:
                    out.killed = "timeout"
                elif init_pid and now >= next_watch and group is None:
                    next_watch = now + 0.05
                    rss = _usage(_tree(init_pid), cpu_seen)
                    if rss > cfg.memory_mb << 20:
                        out.killed = "memory"
                    elif sum(cpu_seen.values()) > cfg.cpu_s + 0.5:
                        out.killed = "cpu_limit"
                if out.killed:
                    _kill(init_pid)
                    deadline = float("inf")
            for ch in channels.values():  # what is still buffered in the pipes
                ch.pump()
        except BaseException:
            _kill(init_pid)
            zyg.close()
            _zygotes.pop((os.getpid(), mode), None)
            raise
        finally:
            if _cgroup_done(group) and not out.killed:
                out.killed = "memory"
        out.cpu = max(out.cpu, sum(cpu_seen.values()))
        return out
