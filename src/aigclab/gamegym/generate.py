"""Code generators in the ``game-generator`` registry: ``chat`` (any chat backend, official prompt),
``reference`` (returns the reference solution: the upper bound), ``broken`` (the reference with a
deliberate, labelled defect: the lower bound, used to check that the harness fails programs for the
right reason) and ``degenerate`` (the reference made to run but show little: one frame, early exit,
text-only screen, frozen frames, never exiting; used to check that ``auto_score`` ranks them low).

Example:
    >>> from aigclab.gamegym.generate import create_generator
    >>> from aigclab.gamegym.records import load_samples
    >>> gen = create_generator("broken")
    >>> gen.generate(load_samples()[0]).expected_failure in {"syntax_error", "crash", "timeout", "blank", "no_exit"}
    True
"""

from __future__ import annotations

import re
import time
import zlib
from pathlib import Path
from typing import Any, Protocol

from aigclab._registry import Registry
from aigclab.errors import AigclabError
from aigclab.gamegym.records import Generation, Sample
from aigclab.llm import create_backend, user_message

__all__ = [
    "BROKEN_MODES",
    "DEGENERATE_MODES",
    "GENERATORS",
    "GameGenerator",
    "build_prompt",
    "create_generator",
    "extract_code",
]

# The V-GameGym generation prompt, in its style: auto-demo, 10 s, on-screen timer, 30/60 FPS, code only.
PROMPT = """You are an expert Python game developer. Write a complete, runnable pygame program for this game.

{requirement}

Requirements:
1. The program must run automatically as a demo for exactly 10 seconds and then exit by itself
   (no user input needed: add simple AI or automatic behaviour for the player).
2. Import `time` and measure the 10 seconds with it; show a timer on screen like "Time: 5.2/10.0s".
3. Use pygame.time.Clock with 30 or 60 FPS.
4. Make it visually clear and appealing; a window size around 640x480 is fine.
5. Output the complete code directly in a single ```python code block."""

_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL)
_OPEN_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*)", re.DOTALL)


class GameGenerator(Protocol):
    name: str

    def generate(self, sample: Sample) -> Generation: ...


GENERATORS: Registry[GameGenerator] = Registry("game-generator")


def build_prompt(sample: Sample) -> str:
    return PROMPT.format(requirement=sample.requirement.strip())


def extract_code(text: str) -> str:
    """The first fenced python block; a block left open (the reply was cut at the token limit) runs to
    the end of the reply; the whole reply when it has no fence."""
    match = _FENCE.search(text) or _OPEN_FENCE.search(text)
    return (match.group(1) if match else text).strip() + "\n"


class ChatGenerator:
    """Asks a chat backend (``aigclab.llm``) for the program."""

    name = "chat"

    def __init__(self, backend: str = "openai", label: str | None = None, **backend_options: Any):
        self.backend = create_backend(backend, **backend_options)
        model = backend_options.get("model") or backend_options.get("model_path") or "default"
        self.label = label or f"{backend}:{Path(model).name if backend != 'openai' else model}"

    def generate(self, sample: Sample) -> Generation:
        start = time.monotonic()
        try:
            reply = self.backend.reply([user_message(build_prompt(sample))])
        except AigclabError as err:
            return Generation(
                sample_id=sample.id,
                generator=self.label,
                code="",
                error=str(err),
                seconds=round(time.monotonic() - start, 3),
                finish_reason="error",
            )
        return Generation(
            sample_id=sample.id,
            generator=self.label,
            code=extract_code(reply.text),
            seconds=round(time.monotonic() - start, 3),
            prompt_tokens=reply.prompt_tokens,
            tokens=reply.completion_tokens,
            finish_reason=reply.finish_reason,
            truncated=reply.truncated,
        )


class ReferenceGenerator:
    name = "reference"

    def generate(self, sample: Sample) -> Generation:
        return Generation(sample_id=sample.id, generator="reference", code=sample.code)


_BLANK = """
import pygame as _pg
_show = _pg.display.flip
def _blank_flip(*args):
    _pg.display.get_surface().fill((0, 0, 0))
    _show()
_pg.display.flip = _blank_flip
"""

# Degenerate programs that still run: each wraps pygame.display.flip/update of the reference game.
_PATCH = """
import sys as _sys, time as _time
import pygame as _pg
_show, _update = _pg.display.flip, _pg.display.update
_state = {{"n": 0, "t0": None, "frozen": None}}
def _flip(*args):
    _surf = _pg.display.get_surface()
    _state["n"] += 1
    if _state["t0"] is None:
        _state["t0"] = _time.time()
{body}
    _show()
_pg.display.flip = _flip
_pg.display.update = _flip
"""
_TIMER = """
    if not _pg.font.get_init():
        _pg.font.init()
    _t = _time.time() - _state["t0"]
    _surf.blit(_pg.font.Font(None, 28).render(f"Time: {_t:.1f}/10.0s", True, (220, 220, 220)), (10, 10))"""
_DEGENERATE = {
    # one frame, then exit 0.1 s later
    "one_frame": "    if _state['n'] > 1:\n        _time.sleep(0.1)\n        _sys.exit(0)",
    # only the on-screen timer on a black screen, for the full 10 s, then a clean exit
    "text_only": "    _surf.fill((0, 0, 0))" + _TIMER,
    # the first frame forever (nothing changes, not even the timer)
    "frozen": "    if _state['frozen'] is None:\n        _state['frozen'] = _surf.copy()\n    _surf.blit(_state['frozen'], (0, 0))",
    # the first frame forever, with only the timer text changing
    "static_timer": "    if _state['frozen'] is None:\n        _state['frozen'] = _surf.copy()\n    _surf.blit(_state['frozen'], (0, 0))"
    + _TIMER,
}


def _degenerate(mode: str) -> Any:
    return lambda c: _PATCH.format(body=_DEGENERATE[mode]) + c


# mode -> (expected failure reason, transform of the reference code)
DEGENERATE_MODES = {
    "early_exit": ("early_exit", lambda c: re.sub(r"elapsed >= 10\b", "elapsed >= 2", c)),
    "one_frame": ("early_exit", _degenerate("one_frame")),
    "text_only": ("blank", _degenerate("text_only")),
    "frozen": ("static", _degenerate("frozen")),
    "static_timer": ("static", _degenerate("static_timer")),
    "never_exits": ("no_exit", lambda c: re.sub(r"elapsed >= 10\b", "elapsed >= 1e9", c)),
}

# mode -> (expected failure reason, transform of the reference code)
BROKEN_MODES = {
    "syntax_error": ("syntax_error", lambda c: c.replace("pygame.init()", "pygame.init(", 1)),
    "crash": ("crash", lambda c: c.replace("pygame.init()", "pygame.init()\nundefined_helper()", 1)),
    "timeout": ("timeout", lambda c: c.replace("pygame.init()", "pygame.init()\nwhile True:\n    pass", 1)),
    "blank": ("blank", lambda c: _BLANK + c),
    "no_exit": ("no_exit", lambda c: re.sub(r"elapsed >= 10\b", "elapsed >= 1e9", c)),
}


class BrokenGenerator:
    """The reference with one defect; the mode is fixed per sample id (or forced by `mode`)."""

    name = "broken"

    def __init__(self, mode: str | None = None):
        if mode is not None and mode not in BROKEN_MODES:
            raise AigclabError(f"unknown broken mode {mode!r}; known: {', '.join(BROKEN_MODES)}")
        self.mode = mode

    def generate(self, sample: Sample) -> Generation:
        modes = list(BROKEN_MODES)
        mode = self.mode or modes[zlib.crc32(sample.id.encode()) % len(modes)]
        reason, transform = BROKEN_MODES[mode]
        code = transform(sample.code)
        if code == sample.code:
            raise AigclabError(f"sample {sample.id}: broken mode {mode!r} found nothing to break")
        return Generation(sample_id=sample.id, generator="broken", code=code, expected_failure=reason)


class DegenerateGenerator:
    """The reference made degenerate in one way that a fair score must punish (it still runs)."""

    name = "degenerate"

    def __init__(self, mode: str = "one_frame"):
        if mode not in DEGENERATE_MODES:
            raise AigclabError(f"unknown degenerate mode {mode!r}; known: {', '.join(DEGENERATE_MODES)}")
        self.mode = mode
        self.label = f"degenerate:{mode}"

    def generate(self, sample: Sample) -> Generation:
        reason, transform = DEGENERATE_MODES[self.mode]
        code = transform(sample.code)
        if code == sample.code:
            raise AigclabError(f"sample {sample.id}: degenerate mode {self.mode!r} found nothing to change")
        return Generation(sample_id=sample.id, generator=self.label, code=code, expected_failure=reason)


@GENERATORS.register("chat")
def chat_generator(**options: Any) -> ChatGenerator:
    return ChatGenerator(**options)


@GENERATORS.register("reference")
def reference_generator() -> ReferenceGenerator:
    return ReferenceGenerator()


@GENERATORS.register("broken")
def broken_generator(mode: str | None = None) -> BrokenGenerator:
    return BrokenGenerator(mode)


@GENERATORS.register("degenerate")
def degenerate_generator(mode: str = "one_frame") -> DegenerateGenerator:
    return DegenerateGenerator(mode)


def create_generator(name: str, **options: Any) -> GameGenerator:
    return GENERATORS.create(name, **options)
