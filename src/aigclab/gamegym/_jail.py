"""First stage of a sandboxed run, executed inside fresh namespaces (see sandbox.py); stdlib only.

As root of the new mount namespace it hides the writable and private parts of the filesystem
behind empty tmpfs mounts (temp dirs, homes), binds back the interpreter read-only and the work dir
read-write, then drops to an unprivileged uid, sets the resource limits and execs the prelude.
Usage: ``python -I _gg_jail.py <jail.json>``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18
_libc = ctypes.CDLL(None, use_errno=True)


def _mount(src: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    ok = _libc.mount(
        src.encode(),
        target.encode(),
        fstype.encode() if fstype else None,
        flags,
        data.encode() if data else None,
    )
    if ok != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {src} on {target}: {os.strerror(err)}")


def _bind(fd: int, target: str, readonly: bool) -> None:
    os.makedirs(target, exist_ok=True)
    _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
    if readonly:
        _mount("none", target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


# Per-mount flags that a read-only remount must keep (locked in user namespaces): nosuid, nodev,
# noexec, noatime, nodiratime, relatime. statvfs reports them with the same bit values.
_KEEP_FLAGS = MS_NOSUID | MS_NODEV | 8 | 1024 | 2048 | 4096


def readonly_elsewhere(writable: list[str]) -> None:
    """Every other mount point (but /proc, /dev, /sys) becomes read-only in this mount namespace.

    Always a *bind* remount, which changes this namespace's view of the mount, never the filesystem.
    """
    with open("/proc/self/mountinfo") as fh:
        points = [line.split()[4] for line in fh]
    for point in points:
        if "\\" in point or point.startswith(("/proc", "/dev", "/sys")):
            continue
        if any(point == w or point.startswith(w.rstrip("/") + "/") for w in writable):
            continue
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY | (os.statvfs(point).f_flag & _KEEP_FLAGS)
        assert flags & MS_BIND  # a remount without MS_BIND would make the host's filesystem read-only
        with contextlib.suppress(OSError):  # a few special mounts refuse; they hold no user files
            _mount("none", point, None, flags)


def hide_filesystem(hide: list[str], keep_ro: list[str], workdir: str) -> None:
    """Empty tmpfs over every path in `hide`; `keep_ro` and `workdir` are bound back in place."""
    _mount("none", "/", None, MS_REC | MS_PRIVATE)
    fds = {p: os.open(p, os.O_PATH) for p in [*keep_ro, workdir]}
    for path in hide:
        _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "size=32m,mode=1777")
    for path in keep_ro:
        _bind(fds[path], path, readonly=True)
    _bind(fds[workdir], workdir, readonly=False)
    readonly_elsewhere([*hide, workdir])


def set_limits(cfg: dict) -> None:
    gib = 1 << 20
    limits = {
        resource.RLIMIT_AS: cfg["memory_mb"] * gib,
        resource.RLIMIT_CPU: cfg["cpu_s"],
        resource.RLIMIT_FSIZE: cfg["file_mb"] * gib,
        resource.RLIMIT_NOFILE: 256,
        resource.RLIMIT_CORE: 0,
        resource.RLIMIT_NPROC: cfg["nproc"],
    }
    for kind, value in limits.items():
        resource.setrlimit(kind, (value, value))


def main() -> None:
    with open(sys.argv[1]) as fh:
        cfg = json.load(fh)
    if cfg["hide"]:
        hide_filesystem(cfg["hide"], cfg["keep_ro"], cfg["workdir"])
    os.chdir(cfg["workdir"])
    uid = cfg["uid"]
    if uid is not None:
        for root, dirs, files in os.walk(cfg["workdir"]):
            for name in [*dirs, *files]:
                os.chown(os.path.join(root, name), uid, uid)
        os.chown(cfg["workdir"], uid, uid)
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    set_limits(cfg)
    os.execve(sys.executable, [sys.executable, "-I", "_gg_prelude.py"], cfg["env"])


if __name__ == "__main__":
    main()
