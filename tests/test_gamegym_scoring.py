"""Scores that make sense for real games: early exit, sparse motion, busy loops, real-clock helpers,
pygame._sdl2 frames, dummy-driver limits, and bad artefacts failing one attempt, not the batch."""

from __future__ import annotations

import os

import numpy as np
import pytest

from aigclab.gamegym.records import Attempt, Generation, Sample
from aigclab.gamegym.run import execute, score_all
from aigclab.gamegym.sandbox import SandboxConfig, run_program
from aigclab.gamegym.score import automatic_metrics

CFG = SandboxConfig(wall_s=30, cpu_s=10)

LOOP = """
import sys, time, random, pygame
pygame.init()
screen = pygame.display.set_mode((320, 240))
clock = pygame.time.Clock()
start = time.time()
{setup}
while time.time() - start < 10:
    for event in pygame.event.get():
        {on_event}
    {draw}
    pygame.display.flip()
    clock.tick(30)
pygame.quit()
"""

MOVING = "screen.fill((20, 20, 60))\n    pygame.draw.circle(screen, (255, 200, 0), (int((time.time() - start) * 30), 120), 20)"
QUIT_ON_KEY = "if event.type == pygame.KEYDOWN:\n            sys.exit(0)"
STARS = """random.seed(1)
stars = [[random.randrange(320), random.randrange(240)] for _ in range(40)]"""
DRAW_STARS = """screen.fill((0, 0, 0))
    for s in stars:
        s[0] = (s[0] + 3) % 320
        screen.set_at(s, (255, 255, 255))
        screen.set_at((s[0], s[1] + 1), (255, 255, 255))"""


def _score(code: str, tmp_path, probe: bool = False):
    gen = Generation(sample_id="t", generator="test", code=code)
    (attempt,) = execute([gen], CFG, tmp_path, probe=probe, workers=1)
    (score,) = score_all([attempt], [Sample(id="t", requirement="r", code="")])
    return attempt, score


def test_quitting_at_the_first_key_is_an_early_exit(tmp_path):
    attempt, score = _score(LOOP.format(setup="", on_event=QUIT_ON_KEY, draw=MOVING), tmp_path)
    assert attempt.status == "early_exit" and 1.9 <= attempt.virtual_s <= 2.1  # the first key comes at 2 s
    assert not score.passed and score.fail_reason == "early_exit" and not score.exited_cleanly
    _, full = _score(LOOP.format(setup="", on_event="pass", draw=MOVING), tmp_path / "full")
    assert full.passed and full.auto_score > score.auto_score


def test_sparse_motion_is_not_static(tmp_path):
    attempt, score = _score(LOOP.format(setup=STARS, on_event="pass", draw=DRAW_STARS), tmp_path)
    assert attempt.status == "ok" and score.motion < 0.005  # few pixels change...
    assert score.moving == 1.0 and score.passed, score  # ...but something moves in every pair
    _, still = _score(
        LOOP.format(setup=STARS, on_event="pass", draw="screen.fill((0, 0, 0))"), tmp_path / "s"
    )
    assert still.fail_reason in ("static", "blank")


def test_busy_loops_advance_the_virtual_clock():
    polls = """
import pygame
pygame.init()
screen = pygame.display.set_mode((32, 32))
n = 0
start = pygame.time.get_ticks()
while pygame.time.get_ticks() - start < 10_000:   # only polls events; never ticks or sleeps
    pygame.event.pump()
    for event in pygame.event.get():
        pass
    n += 1
    if n % 2000 == 0:
        screen.fill((n % 255, 0, 0))
        pygame.display.flip()
print("polls", n)
"""
    spin = """
import time, pygame
pygame.init()
screen = pygame.display.set_mode((32, 32))
start = time.time()
while time.time() - start < 10:
    frame_end = time.time() + 1 / 30
    while time.time() < frame_end:   # a busy wait on the clock
        pass
    screen.fill((int(time.time() * 10) % 255, 0, 0))
    pygame.display.flip()
"""
    for code in (polls, spin):
        result = run_program(code, CFG)
        assert result.status == "ok" and result.virtual_s >= 9.9 and result.frames > 0, result
        assert result.cpu_s > 0  # CPU is counted even for a program that never sleeps


def test_subprocess_and_sysfont_see_a_sane_clock():
    code = """
import subprocess, time, pygame
pygame.init()
t0 = time.time()
out = subprocess.run(["true"], timeout=5)
print("subprocess", out.returncode, "clock moved", round(time.time() - t0, 3))
font = pygame.font.SysFont("dejavusans,freesans,liberationsans,sans", 20)
print("fonts", len(pygame.font.get_fonts()) > 0, pygame.font.match_font("sans") is not None)
screen = pygame.display.set_mode((64, 32))
screen.blit(font.render("hi", True, (255, 255, 255)), (0, 0))
pygame.display.flip()
"""
    result = run_program(code, CFG.model_copy(update={"min_run_s": 0.0}))
    assert result.status == "ok", result
    assert "subprocess 0 clock moved 0.0" in result.stdout  # a real wait does not jump the game clock
    assert "fonts True True" in result.stdout


def test_sdl2_renderer_frames_are_captured(tmp_path):
    code = """
import time, pygame
from pygame._sdl2 import video
pygame.init()
window = video.Window("sdl2", size=(64, 48))
renderer = video.Renderer(window)
start = time.time()
while time.time() - start < 10:
    renderer.draw_color = (int((time.time() - start) * 25), 0, 255, 255)
    renderer.clear()
    renderer.present()
    time.sleep(1 / 30)
"""
    result = run_program(code, CFG, tmp_path)
    assert result.status == "ok" and result.frames >= 290 and len(result.shots) == 10, result
    from aigclab.gamegym.frames import load_frames

    shots = load_frames(tmp_path / "shots.npz")
    assert shots["shot_00"][0, 0].tolist() == [0, 0, 255] and shots["shot_09"][0, 0, 0] > 200


def test_dummy_driver_limits_are_not_crashes():
    code = LOOP.format(
        setup="pygame.mouse.set_cursor(pygame.SYSTEM_CURSOR_HAND)\npygame.display.toggle_fullscreen()",
        on_event="pass",
        draw=MOVING,
    )
    result = run_program(code, CFG)
    assert result.status == "ok", result
    assert "ignored set_cursor under the dummy driver" in result.stderr


def test_input_response_from_the_forked_probe(tmp_path):
    code = LOOP.format(
        setup="x = 100",
        on_event="if event.type == pygame.KEYDOWN and event.key == pygame.K_RIGHT:\n            x += 80",
        draw="screen.fill((0, 0, 0))\n    pygame.draw.rect(screen, (0, 255, 0), (x, 100, 40, 40))\n"
        "    pygame.draw.circle(screen, (255, 0, 0), (int((time.time() - start) * 30), 50), 10)",
    )
    attempt, score = _score(code, tmp_path, probe=True)
    assert attempt.probe_status == "exit" and attempt.probe_shots[0] == "shot_02"
    assert score.input_response is not None and score.input_response > 0.01
    _, deaf = _score(code.replace("x += 80", "pass"), tmp_path / "deaf", probe=True)
    assert deaf.input_response == 0.0


@pytest.mark.parametrize("damage", ["corrupt", "symlink", "fifo", "bomb", "huge"])
def test_bad_artefact_fails_one_attempt_and_the_batch_goes_on(tmp_path, damage):
    gens = [
        Generation(
            sample_id=f"g{i}", generator="test", code=LOOP.format(setup="", on_event="pass", draw=MOVING)
        )
        for i in range(2)
    ]
    attempts = execute(gens, CFG, tmp_path, probe=False, workers=1)
    shots = os.path.join(attempts[0].media_dir or "", "shots.npz")
    os.remove(shots)
    if damage == "corrupt":
        with open(shots, "wb") as fh:
            fh.write(b"PK\x03\x04 not really a zip")
    elif damage == "symlink":
        os.symlink("/dev/zero", shots)
    elif damage == "fifo":
        os.mkfifo(shots)
    else:  # an archive that claims a huge frame
        huge = np.lib.format.open_memmap(
            tmp_path / "big.npy", mode="w+", dtype=np.uint8, shape=(3000, 3000, 3)
        )
        del huge
        import zipfile

        with zipfile.ZipFile(shots, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.write(tmp_path / "big.npy", "shot_00.npy")
    scores = score_all(attempts, [Sample(id=f"g{i}", requirement="r", code="") for i in range(2)])
    assert scores[0].fail_reason == "bad_artefact" and scores[0].auto_score == 0 and scores[0].artefact_error
    assert scores[1].passed  # the other attempt is scored as usual


def test_automatic_metrics_without_media():
    attempt = Attempt(status="crash", sample_id="x", generator="g")
    metrics = automatic_metrics(attempt)
    assert (
        metrics["fail_reason"] == "crash" and metrics["auto_score"] == 0 and metrics["input_response"] is None
    )
