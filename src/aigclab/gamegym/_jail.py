"""The jail: a pre-started process that forks one sandboxed run per request; stdlib and pygame only.

``PYTHONPATH=<interpreter site dirs> python -s -P _jail.py <prelude.py> <control-fd>`` starts a *zygote*: it imports pygame (and fills pygame's
system-font list) once, then serves requests from the harness over a SOCK_SEQPACKET socket. Each
request carries a JSON job and the file descriptors of the run (stdout, stderr, frame channels).

Per request the zygote forks ``A`` (root, outside), which unshares fresh mount, PID, network, IPC
and UTS namespaces (plus a user namespace when not root) and forks ``B``, PID 1 of the new PID
namespace. ``B`` builds a minimal root (tmpfs with read-only binds of the interpreter, its prefixes
and site-packages, /usr and the loader's dirs, a few /etc files for fonts and the loader, /dev/null
& co, a fresh /proc, a small /tmp and the work dir at /game), chroots into it and forks ``C``, the
program: an unused uid, resource limits, then the prelude runs ``game.py`` in-process (no exec, so
no interpreter start-up and no ``import pygame`` per run). When ``C`` ends, ``B`` exits and the
kernel kills everything left in the namespace. ``A`` reports B's host pid and the exit status.
Each of A, B, C dies with its parent (PR_SET_PDEATHSIG), and the zygote dies with the harness.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import resource
import signal
import socket
import sys

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
_DEV = ("null", "zero", "random", "urandom", "full")
_KEEP = (
    MS_NOSUID | MS_NODEV | MS_NOEXEC | 1024 | 2048 | 4096
)  # nosuid nodev noexec noatime nodiratime relatime


def _check(ok: int, what: str) -> None:
    if ok != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(src: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    fs = fstype.encode() if fstype else None
    _check(
        _libc.mount(src.encode(), target.encode(), fs, flags, data.encode() if data else None),
        f"mount {src} on {target}",
    )


def die_with_parent() -> None:
    parent = os.getppid()
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")
    if os.getppid() != parent:  # the parent died before the prctl
        os._exit(137)


def _bind(src: str, root: str, readonly: bool = True) -> None:
    """Bind host path `src` at the same path under `root` (symlinks are recreated as symlinks)."""
    dest = root + src
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    if os.path.islink(src):
        if not os.path.lexists(dest):
            os.symlink(os.readlink(src), dest)
        return
    if os.path.isdir(src):
        os.makedirs(dest, exist_ok=True)
    elif not os.path.exists(dest):
        open(dest, "w").close()
    _mount(src, dest, None, MS_BIND)
    # a remount must keep the source's locked flags (in a user namespace it fails otherwise)
    flags = (
        MS_REMOUNT | MS_BIND | MS_NOSUID | (MS_RDONLY if readonly else 0) | (os.statvfs(src).f_flag & _KEEP)
    )
    if not src.startswith("/dev/"):
        flags |= MS_NODEV
    _mount("none", dest, None, flags)


def build_root(job: dict) -> None:
    """Inside the new mount namespace: a minimal root at job['root'], then chroot into it."""
    root = job["root"]
    _mount("none", "/", None, MS_REC | MS_PRIVATE)
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=8m,mode=755")
    for sub, size, mode in (("tmp", "16m", "1777"), ("dev", "1m", "755")):
        os.makedirs(f"{root}/{sub}")
        _mount(
            "tmpfs", f"{root}/{sub}", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, f"size={size},mode={mode}"
        )
    os.makedirs(f"{root}/dev/shm")
    _mount("tmpfs", f"{root}/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=16m,mode=1777")
    for name in _DEV:
        if os.path.exists(f"/dev/{name}"):
            _bind(f"/dev/{name}", root, readonly=False)
    for path in job["keep_ro"]:
        if os.path.lexists(path):
            _bind(path, root)
    os.makedirs(f"{root}/game")  # the work dir: a tmpfs of file_mb (a full disk stays in the jail)
    _mount("tmpfs", f"{root}/game", "tmpfs", MS_NOSUID | MS_NODEV, f"size={job['file_mb']}m,mode=700")
    with (
        open(os.path.join(job["workdir"], "game.py"), "rb") as src,
        open(f"{root}/game/game.py", "wb") as dst,
    ):
        dst.write(src.read())
    if job["uid"] is not None:
        os.chown(f"{root}/game", job["uid"], job["uid"])
        os.chown(f"{root}/game/game.py", job["uid"], job["uid"])
    os.makedirs(f"{root}/proc")
    _mount("proc", f"{root}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _mount("none", root, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chroot(root)
    os.chdir("/game")


def set_limits(job: dict) -> None:
    mib = 1 << 20
    limits = {
        resource.RLIMIT_AS: job["memory_mb"] * mib,
        # SIGXCPU at the limit, so the kill names its cause (rusage under-counts CPU on a busy
        # machine); SIGKILL a second later if the program ignores SIGXCPU
        resource.RLIMIT_CPU: (job["cpu_s"], job["cpu_s"] + 1),
        resource.RLIMIT_FSIZE: job["file_mb"] * mib,
        resource.RLIMIT_NOFILE: 256,
        resource.RLIMIT_CORE: 0,
        resource.RLIMIT_NPROC: job["nproc"],
    }
    for kind, value in limits.items():
        resource.setrlimit(kind, value if isinstance(value, tuple) else (value, value))


def _user_namespace(uid: int, gid: int) -> None:
    """Map our uid to root inside a new user namespace (unprivileged mode)."""
    with open("/proc/self/setgroups", "w") as fh:
        fh.write("deny")
    with open("/proc/self/uid_map", "w") as fh:
        fh.write(f"0 {uid} 1")
    with open("/proc/self/gid_map", "w") as fh:
        fh.write(f"0 {gid} 1")


def run_game(job: dict, fds: dict[str, int]) -> None:
    """C: drop privileges, set limits, run the prelude (never returns)."""
    uid = job["uid"]
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    die_with_parent()
    set_limits(job)
    os.environ.clear()
    os.environ.update(job["env"])
    if job["mode"] == "none":
        os.chdir(job["workdir"])
    os.close(fds.pop("report"))  # from here on, failures are the program's
    sys.modules["_gg_prelude"].main(job["child"], fds["channel"], fds.get("probe"))


def init_process(job: dict, fds: dict[str, int]) -> None:
    """B: PID 1 of the new namespace; builds the root, forks the program, exits with its status."""
    die_with_parent()
    if job.get("cgroup"):
        with open(os.path.join(job["cgroup"], "cgroup.procs"), "w") as fh:
            fh.write("0")
    if job["mode"] != "none":
        build_root(job)
    os.setsid()
    for name in ("stdout", "stderr"):  # already on fds 1 and 2
        os.close(fds.pop(name))
    pid = os.fork()
    if pid == 0:
        try:
            run_game(job, fds)
        except BaseException as err:  # the jail failed, not the program
            os.write(fds["report"], json.dumps({"jail_error": f"{type(err).__name__}: {err}"}).encode())
            os._exit(121)
    for fd in (fds["report"], fds["channel"], fds.get("probe")):
        if fd is not None:
            os.close(fd)
    while True:  # reap everything; stop when the program itself ends
        try:
            got, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(0)
        if got == pid:
            os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))


def attempt_process(job: dict, fds: dict[str, int], ctl: socket.socket) -> None:
    """A: new namespaces, fork B (PID 1 there), report its pid and exit status."""
    die_with_parent()
    try:
        if job["mode"] != "none":
            flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
            uid, gid = os.getuid(), os.getgid()
            if job["mode"] == "user-namespaces":
                flags |= CLONE_NEWUSER
            _check(_libc.unshare(flags), "unshare")
            if job["mode"] == "user-namespaces":
                _user_namespace(uid, gid)
        read_end, write_end = os.pipe()
        fds["report"] = write_end
        pid = os.fork()
    except OSError as err:
        ctl.send(json.dumps({"jail_error": f"{type(err).__name__}: {err}"}).encode())
        os._exit(1)
    if pid == 0:
        os.close(read_end)
        ctl.close()
        os.dup2(fds["stdout"], 1)
        os.dup2(fds["stderr"], 2)
        try:
            init_process(job, fds)
        except BaseException as err:
            os.write(write_end, json.dumps({"jail_error": f"{type(err).__name__}: {err}"}).encode())
            os._exit(121)
    os.close(write_end)
    ctl.send(json.dumps({"init_pid": pid}).encode())
    _, status = os.waitpid(pid, 0)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = os.read(read_end, 4096)
    msg: dict = {"exit": os.waitstatus_to_exitcode(status), "cpu": usage.ru_utime + usage.ru_stime}
    if report:
        try:
            msg.update(json.loads(report))
        except ValueError:
            msg["jail_error"] = "unreadable jail report"
    ctl.send(json.dumps(msg).encode())
    os._exit(0)


def serve(ctl: socket.socket) -> None:
    """Zygote loop: one request at a time; each request is a JSON job plus its file descriptors."""
    while True:
        try:
            data, fd_list, _, _ = socket.recv_fds(ctl, 1 << 20, 8)
        except OSError:
            return
        if not data:
            return
        job = json.loads(data)
        names = job["fd_names"]
        fds = dict(zip(names, fd_list, strict=True))
        pid = os.fork()
        if pid == 0:
            try:
                attempt_process(job, fds, ctl)
            finally:
                os._exit(1)
        for fd in fd_list:
            os.close(fd)
        os.waitpid(pid, 0)


def main() -> None:
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ctl = socket.socket(fileno=int(sys.argv[2]))
    os.environ.pop("PYTHONPATH", None)  # it served this interpreter's start; programs do not see it
    spec = importlib.util.spec_from_file_location("_gg_prelude", sys.argv[1])
    assert spec and spec.loader
    prelude = importlib.util.module_from_spec(spec)
    sys.modules["_gg_prelude"] = prelude
    spec.loader.exec_module(prelude)  # before pygame: it keeps the real clock for subprocess/threading
    import pygame
    import pygame.sysfont

    pygame.sysfont.initsysfonts()  # fc-list runs once, on the host clock, outside the jail

    ctl.send(json.dumps({"ready": os.getpid()}).encode())
    serve(ctl)


if __name__ == "__main__":
    main()
