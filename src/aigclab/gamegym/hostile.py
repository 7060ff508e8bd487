"""A hostile-code suite for the sandbox: each attack runs inside it and is judged from the outside.

An attack is *contained* when the host shows no effect: no file written outside the work dir, no
secret read, no connection accepted, the victim process alive, no sandbox process left over, and the
run ended as a record within its limits.

Example:
    >>> from aigclab.gamegym.hostile import run_hostile_suite
    >>> run_hostile_suite()["fork_bomb"]["verdict"]  # doctest: +SKIP
    'contained'
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aigclab.gamegym.sandbox import RunResult, SandboxConfig, isolation_mode, run_program

__all__ = ["ATTACKS", "run_hostile_suite"]

ATTACKS = (
    "infinite_loop",
    "fork_bomb",
    "memory_hog",
    "write_outside",
    "read_home",
    "open_socket",
    "kill_parent",
)


def _sandbox_procs() -> int:
    """Processes owned by the sandbox uid range (200000+) still alive on the host."""
    n = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            n += os.stat(f"/proc/{pid}").st_uid >= 200_000
        except FileNotFoundError:
            continue
    return n


class _Listener:
    """A TCP server on 127.0.0.1 that counts the connections it accepts."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.sock.close()


def _attack(name: str, ctx: dict[str, Any]) -> tuple[str, Callable[[RunResult], tuple[bool, str]]]:
    """(program source, judge) for attack `name`; the judge looks at the host after the run."""
    if name == "infinite_loop":
        return "while True:\n    pass\n", lambda r: (
            r.status in ("timeout", "cpu_limit"),
            f"status={r.status}",
        )
    if name == "fork_bomb":
        code = (
            "import os, time\nn = 0\nwhile True:\n    try:\n        os.fork()\n        n += 1\n"
            "    except OSError:\n        time.sleep(0.001)\n"
        )
        return code, lambda r: (
            _sandbox_procs() == 0 and r.status in ("timeout", "cpu_limit", "crash"),
            f"status={r.status}, leftover={_sandbox_procs()}",
        )
    if name == "memory_hog":
        code = "blocks = []\nwhile True:\n    blocks.append(bytearray(64 * 1024 * 1024))\n"
        return code, lambda r: (r.status in ("memory", "crash"), f"status={r.status}, exc={r.exception}")
    if name == "write_outside":
        targets = ctx["write_targets"]
        code = "import os\n" + "".join(
            f"try:\n    open({t!r}, 'w').write('escaped')\n    print('wrote', {t!r})\nexcept OSError as e:\n"
            f"    print('denied', {t!r}, e)\n"
            for t in targets
        )
        return code, lambda r: (
            not any(os.path.exists(t) for t in targets),
            "host files: " + ",".join(t for t in targets if os.path.exists(t)),
        )
    if name == "read_home":
        paths = [ctx["canary_path"], "/etc/shadow", os.path.expanduser("~/.bash_history")]
        code = (
            "import glob\nfor p in "
            + repr(paths)
            + " + glob.glob('/home/*/*') + glob.glob('/root/.*'):\n"
            + (
                "    try:\n        print(p, open(p).read()[:200])\n    except OSError as e:\n        print('denied', p, e)\n"
            )
        )
        secret = ctx["canary_secret"]
        return code, lambda r: (secret not in r.stdout and "root:" not in r.stdout, f"status={r.status}")
    if name == "open_socket":
        port = ctx["listener"].port
        code = (
            "import _socket\n"
            "for mod in ('socket', '_socket'):\n"
            "    try:\n"
            "        s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)\n"
            f"        s.settimeout(2)\n        s.connect(('127.0.0.1', {port}))\n        print('connected')\n"
            "    except OSError as e:\n        print('refused', e)\n"
        )
        return code, lambda r: (ctx["listener"].accepted == 0, f"accepted={ctx['listener'].accepted}")
    if name == "kill_parent":
        victim = ctx["victim"]
        code = (
            "import os, signal\n"
            f"for pid in (os.getppid(), {victim.pid}, {os.getpid()}):\n"
            "    for sig in (signal.SIGKILL, signal.SIGTERM):\n"
            "        try:\n            os.kill(pid, sig)\n            print('sent', pid, sig)\n"
            "        except OSError as e:\n            print('denied', pid, e)\n"
            f"try:\n    os.killpg({victim.pid}, signal.SIGKILL)\nexcept OSError as e:\n    print('denied pg', e)\n"
        )
        return code, lambda r: (victim.poll() is None, f"victim alive={victim.poll() is None}")
    raise KeyError(name)


def run_hostile_suite(
    cfg: SandboxConfig | None = None, attacks: tuple[str, ...] = ATTACKS
) -> dict[str, dict]:
    """Run each attack in the sandbox; returns {attack: {verdict, detail, status, wall_s}}."""
    cfg = cfg or SandboxConfig(wall_s=8, cpu_s=4, memory_mb=512)
    token = secrets.token_hex(6)
    canary = Path.home() / f".aigclab_canary_{token}"
    canary.write_text(f"SECRET-{token}")
    canary.chmod(0o600)
    listener = _Listener()
    victim = subprocess.Popen(["sleep", "600"], start_new_session=True)
    targets = [
        f"/tmp/aigclab_escape_{token}",
        f"/var/tmp/aigclab_escape_{token}",
        f"/dev/shm/aigclab_escape_{token}",
        str(Path.home() / f"aigclab_escape_{token}"),
        str(Path.cwd() / f"aigclab_escape_{token}"),
    ]
    ctx: dict[str, Any] = {
        "canary_path": str(canary),
        "canary_secret": f"SECRET-{token}",
        "listener": listener,
        "victim": victim,
        "write_targets": targets,
    }
    out: dict[str, dict] = {}
    try:
        for name in attacks:
            mode = isolation_mode() if cfg.isolation == "auto" else cfg.isolation
            if name == "kill_parent" and mode == "none":  # same uid, no PID namespace: it would kill us
                detail = "not run: no PID namespace and the same uid"
                out[name] = {"verdict": "escaped", "detail": detail, "status": "not_run", "wall_s": 0.0}
                continue
            code, judge = _attack(name, ctx)
            result = run_program(code, cfg)
            time.sleep(0.05)
            ok, detail = judge(result)
            out[name] = {
                "verdict": "contained" if ok else "escaped",
                "detail": detail,
                "status": result.status,
                "wall_s": result.wall_s,
                "isolation": result.isolation,
                "stdout": result.stdout[-400:],
            }
    finally:
        canary.unlink(missing_ok=True)
        for t in targets:
            Path(t).unlink(missing_ok=True)
        listener.close()
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
    return out
