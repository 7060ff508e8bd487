"""The recorder inside the sandbox (see sandbox.py): instrument pygame, then run ``game.py``; stdlib only.

Imported once by the zygote (_jail.py); ``main`` runs in the forked program process.

* Virtual clock: ``time.time/monotonic/perf_counter(_ns)``, ``time.sleep``, ``pygame.time.Clock``,
  ``get_ticks``, ``wait``, ``delay`` and ``set_timer`` read or advance one virtual time, so a game
  that ticks at 60 FPS for 10 s runs as fast as the CPU allows. A frame shown without a tick counts
  1/30 s; a loop that only polls events or reads the clock (a busy wait) advances 1 ms per call
  after 1000 calls without progress. ``subprocess`` and ``threading`` keep the real clock (their
  timeouts stay real, e.g. pygame's ``SysFont`` list, filled once by the zygote anyway).
* Capture: display flip/update and ``pygame._sdl2`` ``Renderer.present`` send a tick record per
  frame, raw RGB screenshots at fixed virtual times (longest side capped) and small video frames
  over the frame channel (a pipe the harness reads and validates; nothing is written to files).
* Probe: at the virtual time of the first scripted input the process forks; the child runs on
  without input and sends its frames over the probe channel (for the input-response score).
* Input: scripted key and mouse events are posted when their virtual time comes; ``key.get_pressed``
  and ``mouse.get_pos/get_pressed`` follow them (the dummy video driver has no real input).
* Dummy-driver limits: calls the dummy driver cannot do (system cursors, fullscreen, gamma, icons)
  become no-ops instead of crashing the program.
* Network: ``socket`` refuses to create sockets (a last layer under the network namespace).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
import types
from typing import Any

HEADER = struct.Struct("<4sBIdII")  # magic, kind, index, virtual t, width, height (end: json length)
MAGIC = b"GGF1"
TICK, SHOT, VIDEO, END = 0, 1, 2, 3
_T0, _M0 = 1.7e9, 1000.0
SPIN_LIMIT, SPIN_STEP = 1000, 0.001
_REAL_SLEEP = time.sleep
assert threading  # imported before the clock is patched: its timeouts keep the real clock


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class _Recorder:
    """All recorder state; the program cannot reach it by name (``__main__`` is the program's own)."""

    def __init__(self, cfg: dict[str, Any], channel: int, probe: int | None) -> None:
        self.cfg, self.channel, self.probe_fd = cfg, channel, probe
        self.t, self.ticked, self.spin = 0.0, False, 0
        self.frames, self.shots, self.video, self.next_video = 0, 0, 0, 0.0
        self.probe_pid: int | None = None
        self.is_probe = False
        self.virtual = cfg["clock"] == "virtual"
        self.real_start = time.monotonic()
        self.flags: list[str] = []
        self._seal = self._state()
        self.owner = os.getpid()  # only this process records; the program's own forks do not

    def send(self, kind: int, index: int, w: int = 0, h: int = 0, payload: bytes = b"") -> None:
        _write_all(self.channel, HEADER.pack(MAGIC, kind, index, self.t, w, h) + payload)

    def _state(self) -> tuple:
        return (self.t, self.frames, self.shots, self.video, self.next_video, self.channel)

    def check(self) -> None:
        """Recorder state changed by anything but its own methods (gc, frame tricks): flag it."""
        if self._seal != self._state() and "recorder state edited" not in self.flags:
            self.flags.append("recorder state edited")

    def advance(self, seconds: float, tick: bool = True) -> None:
        self.check()
        self.t += max(0.0, float(seconds))
        self._seal = self._state()
        self.ticked = self.ticked or tick
        self.spin = 0 if tick else self.spin
        if self.t > self.cfg["max_virtual_s"]:
            self.finish("virtual_limit", 3)

    def poll(self) -> None:
        """A clock read or event poll: a long run of them without progress is a busy wait."""
        self.spin += 1
        if self.spin > SPIN_LIMIT:
            self.advance(SPIN_STEP, tick=False)

    def finish(self, stopped: str, code: int, exception: str | None = None) -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        if os.getpid() != self.owner:
            os._exit(code)
        if self.probe_pid is not None:  # the probe branch ends on its own; wait for it
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.probe_pid, 0)
        self.check()
        info = {"stopped": stopped, "exception": exception, "code": code, "tampered": self.flags}
        data = json.dumps(info).encode()
        with contextlib.suppress(OSError):
            self.send(END, self.frames, len(data), 0, data)
        os._exit(code)

    def fork_probe(self) -> None:
        """At the first scripted input: the child becomes the no-input probe on the probe channel."""
        fd, self.probe_fd = self.probe_fd, None
        if fd is None or os.getpid() != self.owner:
            return
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        pid = os.fork()
        if pid == 0:
            null = os.open(os.devnull, os.O_WRONLY)  # the program's output is the main run's
            os.dup2(null, 1)
            os.dup2(null, 2)
            os.close(null)
            os.close(self.channel)
            self.check()
            self.channel, self.is_probe, self.owner = fd, True, os.getpid()
            self._seal = self._state()
        else:
            os.close(fd)
            self.probe_pid = pid

    def on_frame(self, get_surface: Any) -> None:
        if os.getpid() != self.owner:
            return
        self.check()
        if not self.virtual:  # real time, as the official recorder runs
            self.t = time.monotonic() - self.real_start
            if self.t > self.cfg["max_virtual_s"]:
                self.finish("virtual_limit", 3)
        elif not self.ticked:
            self.advance(1 / 30)
        self.ticked, self.spin = False, 0
        self.frames += 1
        self._seal = self._state()
        self.send(TICK, self.frames)
        shots_at = self.cfg["shots_at"]
        shot_due = self.shots < len(shots_at) and self.t >= shots_at[self.shots]
        video_due = self.cfg["video_fps"] > 0 and self.next_video <= self.t <= self.cfg["video_s"]
        if not (shot_due or video_due):
            return
        surface = get_surface()
        if surface is None:
            return
        import pygame

        while self.shots < len(shots_at) and self.t >= shots_at[self.shots]:
            self.send_image(SHOT, self.shots, _fit(pygame, surface, self.cfg["max_shot_side"]))
            self.shots += 1
            self._seal = self._state()
        if video_due:
            self.send_image(VIDEO, self.video, _fit(pygame, surface, self.cfg["video_width"]))
            self.video += 1
            self.next_video += 1.0 / self.cfg["video_fps"]
        self._seal = self._state()

    def send_image(self, kind: int, index: int, surface: Any) -> None:
        import pygame

        w, h = surface.get_size()
        self.send(kind, index, w, h, pygame.image.tobytes(surface, "RGB"))


def _fit(pygame: Any, surface: Any, side: int) -> Any:
    w, h = surface.get_size()
    scale = min(1.0, side / max(1, w, h))
    if scale >= 1.0:
        return surface
    size = (max(1, int(w * scale)), max(1, int(h * scale)))
    try:
        return pygame.transform.smoothscale(surface, size)
    except (ValueError, pygame.error):
        return pygame.transform.scale(surface, size)


def _blocked(*args: object, **kwargs: object) -> None:
    raise PermissionError("network access is disabled in the gamegym sandbox")


def patch_time(rec: _Recorder) -> None:
    real = types.SimpleNamespace(sleep=_REAL_SLEEP, monotonic=time.monotonic, time=time.time)
    subprocess.time = real  # type: ignore[attr-defined]  # subprocess waits keep the real clock

    def now() -> float:
        rec.poll()
        return rec.t

    time.time = lambda: _T0 + now()
    time.monotonic = lambda: _M0 + now()
    time.perf_counter = lambda: _M0 + now()
    time.time_ns = lambda: int((_T0 + now()) * 1e9)
    time.monotonic_ns = lambda: int((_M0 + now()) * 1e9)
    time.perf_counter_ns = lambda: int((_M0 + now()) * 1e9)
    time.sleep = rec.advance  # type: ignore[assignment]


def patch_pygame(pygame: Any, rec: _Recorder) -> None:
    timers: dict[int, list] = {}

    class Clock:
        def __init__(self) -> None:
            self._ms, self._fps = 0.0, 0.0

        def tick(self, framerate: float = 0) -> int:
            dt = 1.0 / framerate if framerate and framerate > 0 else 1.0 / 60
            rec.advance(dt)
            self._ms, self._fps = dt * 1000, 1.0 / dt
            return round(self._ms)

        tick_busy_loop = tick

        def get_time(self) -> int:
            return round(self._ms)

        get_rawtime = get_time

        def get_fps(self) -> float:
            return self._fps

    def set_timer(event, millis, loops=0):  # type: ignore[no-untyped-def]
        etype = event if isinstance(event, int) else event.type
        if millis <= 0:
            timers.pop(etype, None)
        else:
            timers[etype] = [event, millis / 1000, rec.t + millis / 1000, loops or -1]

    held: set[int] = set()
    mouse: dict[str, Any] = {"pos": (0, 0), "buttons": [False, False, False]}
    script = sorted(rec.cfg["events"], key=lambda e: e["t"])

    def post_event(ev: dict) -> None:
        kind = ev["type"]
        if kind in ("keydown", "keyup"):
            key = pygame.key.key_code(ev["key"])
            (held.add if kind == "keydown" else held.discard)(key)
            etype = pygame.KEYDOWN if kind == "keydown" else pygame.KEYUP
            uni = ev["key"] if len(ev["key"]) == 1 else ""
            pygame.event.post(pygame.event.Event(etype, key=key, mod=0, unicode=uni, scancode=0))
            return
        pos, button = tuple(ev["pos"]), ev.get("button", 1)
        mouse["pos"] = pos
        if kind == "mousemove":
            pygame.event.post(pygame.event.Event(pygame.MOUSEMOTION, pos=pos, rel=(0, 0), buttons=(0, 0, 0)))
            return
        down = kind == "mousedown"
        mouse["buttons"][button - 1] = down
        etype = pygame.MOUSEBUTTONDOWN if down else pygame.MOUSEBUTTONUP
        pygame.event.post(pygame.event.Event(etype, pos=pos, button=button))

    def pump_script() -> None:
        rec.poll()
        if script and script[0]["t"] <= rec.t:
            rec.fork_probe()
            if rec.is_probe:
                script.clear()
        while script and script[0]["t"] <= rec.t:
            post_event(script.pop(0))
        for etype, timer in list(timers.items()):
            event, every, due, loops = timer
            if rec.t >= due:
                pygame.event.post(event if not isinstance(event, int) else pygame.event.Event(event))
                timer[2] = due + every
                timer[3] = loops - 1
                if timer[3] == 0:
                    timers.pop(etype)

    class Keys:
        def __getitem__(self, key: int) -> bool:
            return key in held

        def __iter__(self):  # type: ignore[no-untyped-def]
            return iter([True] * len(held))

        def __len__(self) -> int:
            return 512

    def get_ticks() -> int:
        rec.poll()
        return int(rec.t * 1000)

    def sleep_ms(ms: float) -> int:
        rec.advance(ms / 1000)
        return int(ms)

    def wrap_events(fn):  # type: ignore[no-untyped-def]
        def wrapped(*args, **kwargs):  # type: ignore[no-untyped-def]
            pump_script()
            return fn(*args, **kwargs)

        return wrapped

    def wait(*args, **kwargs):  # type: ignore[no-untyped-def]
        rec.advance(1 / 30)
        pump_script()
        return pygame.event.poll()

    def wrap_display(fn):  # type: ignore[no-untyped-def]
        def wrapped(*args, **kwargs):  # type: ignore[no-untyped-def]
            result = fn(*args, **kwargs)
            rec.on_frame(pygame.display.get_surface)
            return result

        return wrapped

    def tolerant(fn):  # type: ignore[no-untyped-def]
        def wrapped(*args, **kwargs):  # type: ignore[no-untyped-def]
            try:
                return fn(*args, **kwargs)
            except pygame.error as err:  # the dummy driver cannot do it; a real display could
                print(f"gamegym: ignored {fn.__name__} under the dummy driver: {err}", file=sys.stderr)
                return None

        return wrapped

    if rec.virtual:
        pygame.time.Clock = Clock
        pygame.time.get_ticks = get_ticks
        pygame.time.wait = pygame.time.delay = sleep_ms
        pygame.time.set_timer = set_timer
        pygame.event.wait = wait
    pygame.event.get = wrap_events(pygame.event.get)
    pygame.event.poll = wrap_events(pygame.event.poll)
    pygame.event.peek = wrap_events(pygame.event.peek)
    pygame.key.get_pressed = Keys
    pygame.mouse.get_pos = lambda: mouse["pos"]
    pygame.mouse.get_pressed = lambda num_buttons=3: tuple(mouse["buttons"][:num_buttons])
    for name in ("set_cursor", "set_system_cursor", "set_visible"):
        if hasattr(pygame.mouse, name):
            setattr(pygame.mouse, name, tolerant(getattr(pygame.mouse, name)))
    for name in ("toggle_fullscreen", "set_gamma", "set_gamma_ramp", "set_icon"):
        if hasattr(pygame.display, name):
            setattr(pygame.display, name, tolerant(getattr(pygame.display, name)))
    pygame.display.flip = wrap_display(pygame.display.flip)
    pygame.display.update = wrap_display(pygame.display.update)
    _patch_sdl2(rec)


def _patch_sdl2(rec: _Recorder) -> None:
    """Frames presented through ``pygame._sdl2.video`` (Renderer.present, Window.flip) are captured."""
    try:
        from pygame._sdl2 import video
    except ImportError:
        return

    class Renderer(video.Renderer):  # type: ignore[misc, name-defined]
        def present(self) -> None:
            super().present()
            rec.on_frame(self.to_surface)

    video.Renderer = Renderer  # type: ignore[misc]
    if hasattr(video.Window, "flip"):

        class Window(video.Window):  # type: ignore[misc, name-defined]
            def flip(self) -> None:
                super().flip()  # type: ignore[misc]
                rec.on_frame(self.get_surface)  # type: ignore[attr-defined]

        video.Window = Window  # type: ignore[misc]


def main(cfg: dict[str, Any], channel: int, probe: int | None) -> None:
    rec = _Recorder(cfg, channel, probe if cfg["events"] else None)
    random.seed(cfg["seed"])
    if rec.virtual:
        patch_time(rec)
    socket.socket = socket.create_connection = socket.socketpair = _blocked  # type: ignore[assignment, misc]
    import pygame

    patch_pygame(pygame, rec)
    sys.argv = ["game.py"]
    game = types.ModuleType("__main__")
    game.__file__ = "game.py"
    sys.modules["__main__"] = game
    code, exception = 0, None
    try:
        with open("game.py") as fh:
            source = fh.read()
        exec(compile(source, "game.py", "exec"), game.__dict__)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException as err:
        exception = f"{type(err).__name__}: {err}"[:500]
        traceback.print_exc()
        code = 1
    rec.finish("exit", code, exception)
