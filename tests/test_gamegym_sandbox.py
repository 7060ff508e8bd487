"""The sandbox on real programs: virtual clock, capture, scripted input, limits and hostile code."""

from __future__ import annotations

import numpy as np
import pytest

from aigclab.gamegym.hostile import ATTACKS, run_hostile_suite
from aigclab.gamegym.records import load_samples
from aigclab.gamegym.sandbox import DEFAULT_EVENTS, InputEvent, SandboxConfig, isolation_mode, run_program
from aigclab.io import load_image

CLOCK_GAME = """
import sys, time, pygame
pygame.init()
screen = pygame.display.set_mode((64, 48))
clock = pygame.time.Clock()
start = time.time()
x = 0
while time.time() - start < 10:
    for event in pygame.event.get():
        if event.type == pygame.KEYDOWN and event.key == pygame.K_SPACE:
            print("space at", round(time.time() - start, 2), pygame.key.get_pressed()[pygame.K_SPACE])
        if event.type == pygame.MOUSEBUTTONDOWN:
            print("click", event.pos, pygame.mouse.get_pos())
    x = int((time.time() - start) * 6)
    screen.fill((0, 0, 0))
    pygame.draw.rect(screen, (255, 0, 0), (x, 10, 4, 4))
    pygame.display.flip()
    clock.tick(30)
print("ticks", pygame.time.get_ticks())
pygame.quit()
sys.exit()
"""


def test_virtual_clock_runs_ten_seconds_faster_than_real_time(tmp_path):
    events = (InputEvent(t=3.0, type="keydown", key="space"), InputEvent(t=5.0, type="mousedown", pos=(7, 9)))
    result = run_program(CLOCK_GAME, SandboxConfig(), tmp_path, events)
    assert result.status == "ok" and result.returncode == 0
    assert 9.9 <= result.virtual_s <= 10.1 and result.wall_s < 8  # 10 s of game time
    assert 295 <= result.frames <= 302  # 30 FPS for 10 s
    assert "space at 3.0" in result.stdout and "True" in result.stdout
    assert "click (7, 9) (7, 9)" in result.stdout
    assert 9990 <= int(result.stdout.split("ticks ")[1]) <= 10040  # get_ticks follows the virtual clock
    assert result.shots == [f"shot_{i:02d}.png" for i in range(10)] and result.gif == "gameplay.gif"
    # the red square sits at x = 6 * t at the fixed virtual capture times
    for t in (0, 4, 9):
        img = load_image(tmp_path / f"shot_{t:02d}.png")
        assert img.shape == (48, 64, 3)
        assert int(np.argwhere(img[:, :, 0] == 255)[:, 1].min()) == 6 * t


def test_same_seed_same_frames(tmp_path):
    code = load_samples(ids=["pong"])[0].code  # random serve direction: seeded in the sandbox
    a = run_program(code, SandboxConfig(), tmp_path / "a", DEFAULT_EVENTS)
    b = run_program(code, SandboxConfig(), tmp_path / "b", DEFAULT_EVENTS)
    assert a.status == b.status == "ok"
    np.testing.assert_array_equal(
        load_image(tmp_path / "a/shot_05.png"), load_image(tmp_path / "b/shot_05.png")
    )


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("import pygame\npygame.init(\n", "syntax_error"),
        ("raise ValueError('boom')\n", "crash"),
        ("print('no window')\n", "no_frames"),
        (CLOCK_GAME.replace("< 10", "< 1e9"), "virtual_limit"),  # never stops by itself
        ("import sys\nsys.exit(3)\n", "crash"),
    ],
)
def test_failures_end_as_records(code, status):
    result = run_program(code, SandboxConfig(wall_s=10, cpu_s=5))
    assert result.status == status
    assert result.wall_s < 10


def test_plain_process_fallback_still_runs_games():
    result = run_program(CLOCK_GAME, SandboxConfig(isolation="none"))
    assert result.status == "ok" and result.isolation == "none" and result.frames > 290


@pytest.mark.skipif(
    isolation_mode() == "none", reason="needs namespaces (root or unprivileged user namespaces)"
)
def test_hostile_suite_is_contained():
    report = run_hostile_suite(SandboxConfig(wall_s=10, cpu_s=1, memory_mb=512))  # wall slack for a loaded CI
    assert set(report) == set(ATTACKS)
    for attack, outcome in report.items():
        assert outcome["verdict"] == "contained", (attack, outcome)
    assert report["infinite_loop"]["status"] in ("timeout", "cpu_limit")
    assert report["memory_hog"]["status"] == "memory"
    assert "Network is unreachable" in report["open_socket"]["stdout"]
