"""Second stage of a sandboxed run (see sandbox.py): instrument pygame, then run ``game.py``; stdlib only.

* Virtual clock: ``time.time/monotonic/perf_counter(_ns)``, ``time.sleep``, ``pygame.time.Clock``,
  ``get_ticks``, ``wait``, ``delay`` and ``set_timer`` all read or advance one virtual time, so a game
  that ticks at 60 FPS for 10 s runs as fast as the CPU allows. A frame shown without a tick counts 1/30 s.
  With ``clock="real"`` nothing is patched and captures follow the real clock (the official way).
* Capture: the display's flip/update save screenshots at fixed virtual times and small video frames.
* Input: scripted key and mouse events are posted when their virtual time comes; ``key.get_pressed``
  and ``mouse.get_pos/get_pressed`` follow them (the dummy video driver has no real input).
* Network: ``socket`` refuses to create sockets (a last layer under the network namespace).
* Every run writes ``_gg_out/result.json``: frames, virtual time, how it stopped, the exception.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import sys
import time
import traceback
from typing import Any

with open("_gg_config.json") as _fh:
    CFG: dict[str, Any] = json.load(_fh)
OUT = "_gg_out"
STATE: dict[str, Any] = {
    "t": 0.0,
    "ticked": False,
    "frames": 0,
    "shots": [],
    "video": 0,
    "next_video": 0.0,
    "stopped": "exit",
    "exception": None,
    "last_event": 0.0,
}
_T0, _M0 = 1.7e9, 1000.0
VIRTUAL = CFG["clock"] == "virtual"
_real_clock, _real_start = time.monotonic, time.monotonic()


def advance(seconds: float) -> None:
    STATE["t"] += max(0.0, float(seconds))
    STATE["ticked"] = True
    if STATE["t"] > CFG["max_virtual_s"]:
        finish("virtual_limit", 3)


def finish(stopped: str, code: int) -> None:
    STATE["stopped"] = stopped
    write_result()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def write_result() -> None:
    keys = ("t", "frames", "shots", "video", "stopped", "exception")
    with open(os.path.join(OUT, "result.json"), "w") as fh:
        json.dump({k: STATE[k] for k in keys}, fh)


def _blocked(*args: object, **kwargs: object) -> None:
    raise PermissionError("network access is disabled in the gamegym sandbox")


def patch_time() -> None:
    time.time = lambda: _T0 + STATE["t"]
    time.monotonic = lambda: _M0 + STATE["t"]
    time.perf_counter = lambda: _M0 + STATE["t"]
    time.time_ns = lambda: int((_T0 + STATE["t"]) * 1e9)
    time.monotonic_ns = lambda: int((_M0 + STATE["t"]) * 1e9)
    time.perf_counter_ns = lambda: int((_M0 + STATE["t"]) * 1e9)
    time.sleep = advance  # type: ignore[assignment]


def patch_pygame(pygame) -> None:  # type: ignore[no-untyped-def]
    timers: dict[int, list] = {}

    class Clock:
        def __init__(self) -> None:
            self._ms, self._fps = 0.0, 0.0

        def tick(self, framerate: float = 0) -> int:
            dt = 1.0 / framerate if framerate and framerate > 0 else 1.0 / 60
            advance(dt)
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
            timers[etype] = [event, millis / 1000, STATE["t"] + millis / 1000, loops or -1]

    held: set[int] = set()
    mouse: dict[str, Any] = {"pos": (0, 0), "buttons": [False, False, False]}
    script = sorted(CFG["events"], key=lambda e: e["t"])

    def pump_script() -> None:
        while script and script[0]["t"] <= STATE["t"]:
            ev = script.pop(0)
            kind = ev["type"]
            if kind in ("keydown", "keyup"):
                key = pygame.key.key_code(ev["key"])
                (held.add if kind == "keydown" else held.discard)(key)
                etype = pygame.KEYDOWN if kind == "keydown" else pygame.KEYUP
                uni = ev["key"] if len(ev["key"]) == 1 else ""
                pygame.event.post(pygame.event.Event(etype, key=key, mod=0, unicode=uni, scancode=0))
            else:
                pos, button = tuple(ev["pos"]), ev.get("button", 1)
                mouse["pos"] = pos
                down = kind == "mousedown"
                if kind != "mousemove":
                    mouse["buttons"][button - 1] = down
                    etype = pygame.MOUSEBUTTONDOWN if down else pygame.MOUSEBUTTONUP
                    pygame.event.post(pygame.event.Event(etype, pos=pos, button=button))
                else:
                    pygame.event.post(
                        pygame.event.Event(pygame.MOUSEMOTION, pos=pos, rel=(0, 0), buttons=(0, 0, 0))
                    )
        for etype, timer in list(timers.items()):
            event, every, due, loops = timer
            if STATE["t"] >= due:
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

    def sleep_ms(ms: float) -> int:
        advance(ms / 1000)
        return int(ms)

    def wrap_events(fn):  # type: ignore[no-untyped-def]
        def wrapped(*args, **kwargs):  # type: ignore[no-untyped-def]
            pump_script()
            return fn(*args, **kwargs)

        return wrapped

    def wait(*args, **kwargs):  # type: ignore[no-untyped-def]
        advance(1 / 30)
        pump_script()
        return pygame.event.poll()

    def on_frame() -> None:
        if not VIRTUAL:  # real time, as the official recorder runs
            STATE["t"] = _real_clock() - _real_start
            if STATE["t"] > CFG["max_virtual_s"]:
                finish("virtual_limit", 3)
        elif not STATE["ticked"]:
            advance(1 / 30)
        STATE["ticked"] = False
        STATE["frames"] += 1
        surface = pygame.display.get_surface()
        if surface is None:
            return
        t = STATE["t"]
        shots = CFG["shots_at"]
        while len(STATE["shots"]) < len(shots) and t >= shots[len(STATE["shots"])]:
            name = f"shot_{len(STATE['shots']):02d}.png"
            pygame.image.save(surface, os.path.join(OUT, name))
            STATE["shots"].append(name)
        if CFG["video_fps"] > 0 and t >= STATE["next_video"] and t <= CFG["video_s"]:
            w, h = surface.get_size()
            scale = min(1.0, CFG["video_width"] / max(1, w))
            small = pygame.transform.smoothscale(surface, (max(1, int(w * scale)), max(1, int(h * scale))))
            pygame.image.save(small, os.path.join(OUT, f"video_{STATE['video']:04d}.png"))
            STATE["video"] += 1
            STATE["next_video"] += 1.0 / CFG["video_fps"]

    def wrap_display(fn):  # type: ignore[no-untyped-def]
        def wrapped(*args, **kwargs):  # type: ignore[no-untyped-def]
            result = fn(*args, **kwargs)
            on_frame()
            return result

        return wrapped

    if VIRTUAL:
        pygame.time.Clock = Clock
        pygame.time.get_ticks = lambda: int(STATE["t"] * 1000)
        pygame.time.wait = pygame.time.delay = sleep_ms
        pygame.time.set_timer = set_timer
        pygame.event.wait = wait
    pygame.event.get = wrap_events(pygame.event.get)
    pygame.event.poll = wrap_events(pygame.event.poll)
    pygame.event.peek = wrap_events(pygame.event.peek)
    pygame.key.get_pressed = Keys
    pygame.mouse.get_pos = lambda: mouse["pos"]
    pygame.mouse.get_pressed = lambda num_buttons=3: tuple(mouse["buttons"][:num_buttons])
    pygame.display.flip = wrap_display(pygame.display.flip)
    pygame.display.update = wrap_display(pygame.display.update)


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    random.seed(CFG["seed"])
    if VIRTUAL:
        patch_time()
    socket.socket = socket.create_connection = socket.socketpair = _blocked  # type: ignore[assignment, misc]
    import pygame

    patch_pygame(pygame)
    sys.argv = ["game.py"]
    code = 0
    try:
        with open("game.py") as fh:
            source = fh.read()
        exec(compile(source, "game.py", "exec"), {"__name__": "__main__", "__file__": "game.py"})
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException as err:
        STATE["exception"] = f"{type(err).__name__}: {err}"[:500]
        traceback.print_exc()
        code = 1
    finish("exit", code)


if __name__ == "__main__":
    main()
