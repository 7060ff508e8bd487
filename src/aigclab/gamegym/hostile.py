"""A hostile-code suite for the sandbox and the harness: each attack runs inside it, judged from outside.

An attack is *contained* when the host and the harness show no effect: no file written outside
the jail, no secret read (homes, /etc, /opt, the project dir), no connection accepted (TCP, a
filesystem Unix socket, an abstract one), no SysV IPC object left, the victim process alive, no
process of *this run's* uid left (the suite judges only its own processes), the harness not hung or
flooded (the run ended within its wall limit plus slack, bounded artefacts), and no forged or
tampered report taken for a good run.

Example:
    >>> from aigclab.gamegym.hostile import run_hostile_suite
    >>> run_hostile_suite()["fork_bomb"]["verdict"]  # doctest: +SKIP
    'contained'
"""

from __future__ import annotations

import contextlib
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

from aigclab.gamegym.sandbox import DEFAULT_EVENTS, RunResult, SandboxConfig, resolve_isolation, run_program

__all__ = ["ATTACKS", "run_hostile_suite"]

Judge = Callable[[RunResult], tuple[bool, str]]

_FRAME = "import pygame\nscreen = pygame.display.set_mode((64, 48))\npygame.display.flip()\n"
_BOMB = (
    "import struct, zlib\n"
    "def chunk(kind, data):\n"
    "    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))\n"
    "ihdr = struct.pack('>IIBBBBB', 60000, 60000, 8, 2, 0, 0, 0)\n"
    "idat = zlib.compress(b'\\0' * (1 << 20), 9)\n"
    "bomb = b'\\x89PNG\\r\\n\\x1a\\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', idat) + chunk(b'IEND', b'')\n"
)


def _procs_of(uid: int | None) -> int:
    """Live host processes owned by `uid` (one run's sandbox uid): this suite's processes only."""
    if uid is None:
        return 0
    n = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            n += os.stat(f"/proc/{pid}").st_uid == uid
    return n


class _Listener:
    """A server (TCP on 127.0.0.1, or a Unix socket path / abstract name) counting accepted connections."""

    def __init__(self, family: int = socket.AF_INET, address: Any = ("127.0.0.1", 0)) -> None:
        self.sock = socket.socket(family)
        self.sock.bind(address)
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.address = self.sock.getsockname()
        self.accepted = 0
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.sock.close()


def _ended(cfg: SandboxConfig) -> Judge:
    """The harness got a record back within the wall limit (plus slack for a loaded machine)."""
    return lambda r: (
        r.wall_s < cfg.wall_s + 15 and r.status != "sandbox_error",
        f"status={r.status} wall={r.wall_s}",
    )


def _not_ok(r: RunResult) -> tuple[bool, str]:
    return r.status != "ok" and r.frames < 600, f"status={r.status} frames={r.frames} tampered={r.tampered}"


def _attack(name: str, ctx: dict[str, Any], cfg: SandboxConfig) -> tuple[str, Judge]:
    """(program source, judge) for attack `name`; the judge looks at the host after the run."""
    secret = ctx["secret"]
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
            _procs_of(r.uid) == 0 and r.status not in ("ok", "sandbox_error") and r.wall_s < cfg.wall_s + 15,
            f"status={r.status}, leftover={_procs_of(r.uid)}",
        )
    if name == "memory_hog":
        code = "blocks = []\nwhile True:\n    blocks.append(bytearray(64 * 1024 * 1024))\n"
        return code, lambda r: (r.status == "memory", f"status={r.status}, exc={r.exception}")
    if name == "memory_split":  # many processes, each under the per-process limit, together over it
        code = (
            "import os, signal\nfor _ in range(6):\n    if os.fork() == 0:\n        break\n"
            f"block = bytearray({cfg.memory_mb // 4} * 1024 * 1024)\n"
            "for i in range(0, len(block), 4096):\n    block[i] = 1\nsignal.pause()  # held, on the real clock\n"
        )
        return code, lambda r: (r.status == "memory" and _procs_of(r.uid) == 0, f"status={r.status}")
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
    if name in ("read_home", "read_host_files"):
        paths = (
            [ctx["canaries"]["home"], "/etc/shadow", os.path.expanduser("~/.bash_history")]
            if name == "read_home"
            else [ctx["canaries"][k] for k in ("etc", "opt", "project") if k in ctx["canaries"]]
        )
        code = (
            "import glob, os\nfor p in "
            + repr(paths)
            + " + glob.glob('/home/*/*') + glob.glob('/root/.*') + glob.glob('/work/*') + glob.glob('/opt/*'):\n"
            + "    try:\n        print(p, open(p).read()[:200])\n    except OSError as e:\n        print('denied', p, e)\n"
            + "print('etc:', sorted(os.listdir('/etc')) if os.path.isdir('/etc') else None)\n"
        )
        return code, lambda r: (
            secret not in r.stdout and "root:" not in r.stdout and "passwd" not in r.stdout,
            f"status={r.status}",
        )
    if name == "open_socket":
        port = ctx["tcp"].address[1]
        code = (
            "import _socket\n"
            "try:\n    s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)\n"
            f"    s.settimeout(2)\n    s.connect(('127.0.0.1', {port}))\n    print('connected')\n"
            "except OSError as e:\n    print('refused', e)\n"
        )
        return code, lambda r: (ctx["tcp"].accepted == 0, f"accepted={ctx['tcp'].accepted}")
    if name == "unix_socket":
        targets = [ctx["unix_path"].address, "\0" + ctx["unix_abstract"].address[1:].decode()]
        code = (
            "import _socket\n"
            f"for addr in {targets!r}:\n"
            "    try:\n        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)\n"
            "        s.settimeout(2)\n        s.connect(addr)\n        print('connected', repr(addr))\n"
            "    except OSError as e:\n        print('refused', repr(addr), e)\n"
        )
        return code, lambda r: (
            ctx["unix_path"].accepted == 0 and ctx["unix_abstract"].accepted == 0,
            f"accepted={ctx['unix_path'].accepted}+{ctx['unix_abstract'].accepted}",
        )
    if name == "sysv_ipc":  # a shared memory segment that would outlive the run and leak to the next
        key = ctx["ipc_key"]
        code = (
            "import ctypes\nlibc = ctypes.CDLL(None)\n"
            f"shm = libc.shmget({key}, 4096, 0o1666)\nprint('shmget', shm)\n"
            "addr = libc.shmat(shm, None, 0)\n"
            f"ctypes.memmove(ctypes.c_void_p(addr), b'{secret}', {len(secret)})\n"
            f"print('msgget', libc.msgget({key}, 0o1666), 'semget', libc.semget({key}, 1, 0o1666))\n"
        )

        def judge(r: RunResult) -> tuple[bool, str]:
            host = "".join(Path(f"/proc/sysvipc/{k}").read_text() for k in ("shm", "msg", "sem"))
            leaked = any(line.split()[:1] == [str(key)] for line in host.splitlines())
            reader = run_program(
                f"import ctypes\nprint('found', ctypes.CDLL(None).shmget({key}, 0, 0))\n", ctx["cfg"]
            )
            return (
                not leaked and "found -1" in reader.stdout,
                f"leaked={leaked} next_run={reader.stdout.strip()}",
            )

        return code, judge
    if name == "kill_parent":
        victim = ctx["victim"]
        code = (
            "import os, signal\n"
            f"for pid in (os.getppid(), 1, {victim.pid}, {os.getpid()}):\n"
            "    for sig in (signal.SIGKILL, signal.SIGTERM):\n"
            "        try:\n            os.kill(pid, sig)\n            print('sent', pid, sig)\n"
            "        except OSError as e:\n            print('denied', pid, e)\n"
            f"try:\n    os.killpg({victim.pid}, signal.SIGKILL)\nexcept OSError as e:\n    print('denied pg', e)\n"
            "try:\n    os.kill(-1, signal.SIGKILL)\nexcept OSError as e:\n    print('denied -1', e)\n"
        )
        return code, lambda r: (victim.poll() is None, f"victim alive={victim.poll() is None}")
    if name == "daemon_leftover":  # a detached child that outlives the program
        code = (
            "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            "        time.sleep(1e6)\n    os._exit(0)\n" + _FRAME
        )
        return code, lambda r: (_procs_of(r.uid) == 0, f"status={r.status} leftover={_procs_of(r.uid)}")
    if name in ("result_fifo", "result_symlink"):  # what the old harness read back: now nothing is
        make = "os.mkfifo(p)" if name == "result_fifo" else "os.symlink('/dev/zero', p)"
        code = (
            "import os\nos.makedirs('_gg_out', exist_ok=True)\n"
            "for p in ('_gg_out/result.json', 'result.json', '_gg_out/shot_00.png', 'shots.npz'):\n"
            f"    try:\n        {make}\n    except OSError as e:\n        print(e)\n" + _FRAME
        )
        return code, _ended(cfg)
    if name == "decompression_bomb":
        code = (
            _BOMB
            + "import os\nos.makedirs('_gg_out', exist_ok=True)\n"
            + "for p in ('_gg_out/shot_00.png', 'shot_00.png', '_gg_out/video_0000.png'):\n"
            + "    open(p, 'wb').write(bomb)\n"
            + _FRAME
        )
        return code, lambda r: (_ended(cfg)(r)[0] and r.frames == 1, f"status={r.status} frames={r.frames}")
    if name == "huge_frames":  # large but legal frames: scaled down inside the sandbox, capped outside
        code = (
            "import pygame\nscreen = pygame.display.set_mode((4000, 3000))\n"
            "for i in range(8):\n    screen.fill((i * 30, 0, 0))\n    pygame.display.flip()\n    pygame.time.wait(1000)\n"
        )
        return code, _ended(cfg)
    if name == "channel_flood":  # garbage and floods on every inherited descriptor
        code = (
            "import os\nfor fd in range(3, 64):\n"
            "    try:\n        os.write(fd, b'GGF1' + b'\\xff' * 60)\n        os.write(fd, b'\\0' * (8 << 20))\n"
            "    except OSError:\n        pass\n" + _FRAME
        )
        return code, lambda r: (r.status in ("tampered", "bad_artefact", "crash"), f"status={r.status}")
    if name == "disk_fill":
        code = (
            "i = 0\nwhile True:\n    try:\n        open(f'fill_{i}', 'wb').write(b'x' * (16 << 20))\n"
            "    except OSError as e:\n        print('stopped', i, e)\n        break\n    i += 1\n"
        )
        return code, lambda r: ("stopped" in r.stdout or r.status != "ok", f"status={r.status}")
    if name == "forge_result":  # write the old harness's report and screenshots, never draw
        code = (
            "import json, os\nos.makedirs('_gg_out', exist_ok=True)\n"
            "json.dump({'t': 10.0, 'frames': 600, 'shots': ['shot_00.png'], 'video': 0, 'stopped': 'exit',"
            " 'exception': None}, open('_gg_out/result.json', 'w'))\n"
            "open('_gg_out/shot_00.png', 'wb').write(b'\\x89PNG fake')\n"
        )
        return code, _not_ok
    if name == "tamper_main":  # edit the recorder's state through `import __main__`
        code = (
            "import __main__\nfor name in ('STATE', 'rec', 'RECORDER'):\n"
            "    getattr(__main__, name)['frames'] = 600\n" + _FRAME
        )
        return code, _not_ok
    if name == "tamper_recorder":  # find the recorder through gc and fake 10 s and 600 frames
        code = (
            _FRAME
            + "import gc\nfor o in gc.get_objects():\n    if hasattr(o, 'frames') and hasattr(o, 'shots'):\n"
            + "        o.t, o.frames = 10.0, 600\n"
            + "pygame.display.flip()\n"
        )
        return code, lambda r: (r.status == "tampered", f"status={r.status} tampered={r.tampered}")
    raise KeyError(name)


ATTACKS = (
    "infinite_loop",
    "fork_bomb",
    "memory_hog",
    "memory_split",
    "write_outside",
    "read_home",
    "read_host_files",
    "open_socket",
    "unix_socket",
    "sysv_ipc",
    "kill_parent",
    "daemon_leftover",
    "result_fifo",
    "result_symlink",
    "decompression_bomb",
    "huge_frames",
    "channel_flood",
    "disk_fill",
    "forge_result",
    "tamper_main",
    "tamper_recorder",
)


def _canaries(token: str) -> dict[str, str]:
    """Secret files where a program must not read them: home, /etc, /opt, the current project dir."""
    out = {}
    for key, folder in (
        ("home", Path.home()),
        ("etc", Path("/etc")),
        ("opt", Path("/opt")),
        ("project", Path.cwd()),
    ):
        path = folder / f".aigclab_canary_{token}"
        with contextlib.suppress(OSError):
            path.write_text(f"SECRET-{token}")
            path.chmod(0o644 if key != "home" else 0o600)
            out[key] = str(path)
    return out


def run_hostile_suite(
    cfg: SandboxConfig | None = None, attacks: tuple[str, ...] = ATTACKS
) -> dict[str, dict]:
    """Run each attack in the sandbox; returns {attack: {verdict, detail, status, wall_s}}."""
    cfg = cfg or SandboxConfig(wall_s=10, cpu_s=4, memory_mb=512)
    cfg = cfg.model_copy(update={"isolation": resolve_isolation(cfg.isolation)})
    token = secrets.token_hex(6)
    canaries = _canaries(token)
    run_dir = Path("/run") if os.access("/run", os.W_OK) else Path("/tmp")
    tcp = _Listener()
    unix_path = _Listener(socket.AF_UNIX, str(run_dir / f"aigclab-{token}.sock"))
    unix_abstract = _Listener(socket.AF_UNIX, f"\0aigclab-{token}")
    victim = subprocess.Popen(["sleep", "600"], start_new_session=True)
    targets = [
        f"/tmp/aigclab_escape_{token}",
        f"/var/tmp/aigclab_escape_{token}",
        f"/dev/shm/aigclab_escape_{token}",
        str(Path.home() / f"aigclab_escape_{token}"),
        str(Path.cwd() / f"aigclab_escape_{token}"),
    ]
    ctx: dict[str, Any] = {
        "secret": f"SECRET-{token}",
        "canaries": canaries,
        "tcp": tcp,
        "unix_path": unix_path,
        "unix_abstract": unix_abstract,
        "victim": victim,
        "write_targets": targets,
        "ipc_key": 0x6A000000 + int(token[:5], 16),
        "cfg": cfg,
    }
    out: dict[str, dict] = {}
    try:
        for name in attacks:
            if (
                name == "kill_parent" and cfg.isolation == "none"
            ):  # same uid, no PID namespace: it would kill us
                detail = "not run: no PID namespace and the same uid"
                out[name] = {"verdict": "escaped", "detail": detail, "status": "not_run", "wall_s": 0.0}
                continue
            code, judge = _attack(name, ctx, cfg)
            events = DEFAULT_EVENTS if name == "huge_frames" else ()
            result = run_program(code, cfg, None, events, probe=bool(events))
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
        for path in [*canaries.values(), *targets]:
            Path(path).unlink(missing_ok=True)
        for listener in (tcp, unix_path, unix_abstract):
            listener.close()
        Path(unix_path.address).unlink(missing_ok=True)
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
    return out
