"""The sandbox on real programs: virtual clock, capture, scripted input, limits and hostile code."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from aigclab.gamegym.cli import app
from aigclab.gamegym.frames import export_media, load_frames
from aigclab.gamegym.hostile import ATTACKS, run_hostile_suite
from aigclab.gamegym.records import Generation, load_samples, write_records
from aigclab.gamegym.sandbox import (
    DEFAULT_EVENTS,
    InputEvent,
    IsolationUnavailable,
    SandboxConfig,
    isolation_mode,
    run_program,
)

needs_namespaces = pytest.mark.skipif(
    isolation_mode() == "none", reason="needs namespaces (root or unprivileged user namespaces)"
)

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


def test_virtual_clock_capture_and_input(tmp_path):
    events = (InputEvent(t=3.0, type="keydown", key="space"), InputEvent(t=5.0, type="mousedown", pos=(7, 9)))
    result = run_program(CLOCK_GAME, SandboxConfig(), tmp_path, events, probe=True)
    assert result.status == "ok" and result.returncode == 0 and result.tampered == []
    assert 9.9 <= result.virtual_s <= 10.1  # 10 s of game time (the virtual clock; wall time is not asserted)
    assert 295 <= result.frames <= 302  # 30 FPS for 10 s, counted by the harness from the channel
    assert "space at 3.0" in result.stdout and "True" in result.stdout
    assert "click (7, 9) (7, 9)" in result.stdout
    assert 9990 <= int(result.stdout.split("ticks ")[1]) <= 10040  # get_ticks follows the virtual clock
    assert result.shots == [f"shot_{i:02d}" for i in range(10)] and result.video == "video.npz"
    shots = load_frames(tmp_path / "shots.npz")
    # the red square sits at x = 6 * t at the fixed virtual capture times
    for t in (0, 4, 9):
        img = shots[f"shot_{t:02d}"]
        assert img.shape == (48, 64, 3)
        assert int(np.argwhere(img[:, :, 0] == 255)[:, 1].min()) == 6 * t
    assert len(load_frames(tmp_path / "video.npz")) == 40  # 4 fps over [0, 10) s
    # the probe forked at the first scripted input (t = 3) and ran on without it
    assert result.probe_status == "exit" and result.probe_shots == [f"shot_{i:02d}" for i in range(3, 10)]
    export_media(tmp_path)
    assert (tmp_path / "gameplay.gif").is_file() and (tmp_path / "probe" / "shot_05.png").is_file()


def test_same_seed_same_frames(tmp_path):
    code = load_samples(ids=["pong"])[0].code  # random serve direction: seeded in the sandbox
    a = run_program(code, SandboxConfig(), tmp_path / "a", DEFAULT_EVENTS)
    b = run_program(code, SandboxConfig(), tmp_path / "b", DEFAULT_EVENTS)
    assert a.status == b.status == "ok"
    np.testing.assert_array_equal(
        load_frames(tmp_path / "a/shots.npz")["shot_05"], load_frames(tmp_path / "b/shots.npz")["shot_05"]
    )


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("import pygame\npygame.init(\n", "syntax_error"),
        ("raise ValueError('boom')\n", "crash"),
        ("print('no window')\n", "no_frames"),
        (CLOCK_GAME.replace("< 10", "< 1e9"), "virtual_limit"),  # never stops by itself
        ("import sys\nsys.exit(3)\n", "crash"),
        (CLOCK_GAME.replace("< 10", "< 2"), "early_exit"),  # quits after 2 s: not a clean 10 s run
    ],
)
def test_failures_end_as_records(code, status):
    result = run_program(code, SandboxConfig(wall_s=30, cpu_s=5))
    assert result.status == status


def test_plain_process_only_when_asked_for():
    result = run_program(CLOCK_GAME, SandboxConfig(isolation="none"))
    assert result.status == "ok" and result.isolation == "none" and result.frames > 290


def test_fails_closed_without_namespaces(monkeypatch, tmp_path):
    from aigclab.gamegym import sandbox

    monkeypatch.setattr(sandbox, "isolation_mode", lambda: "none")  # as on a machine without unshare
    with pytest.raises(IsolationUnavailable, match="--isolation none"):
        run_program(CLOCK_GAME, SandboxConfig())
    gens = tmp_path / "g.jsonl"
    write_records(gens, [Generation(sample_id="x", generator="g", code="print('ran')\n")])
    runner = CliRunner()
    refused = runner.invoke(app, ["run", str(gens), "--out", str(tmp_path / "a.jsonl"), "--workers", "1"])
    assert refused.exit_code != 0 and isinstance(refused.exception, IsolationUnavailable)
    assert not (tmp_path / "a.jsonl").exists()  # nothing ran
    allowed = runner.invoke(
        app, ["run", str(gens), "--out", str(tmp_path / "a.jsonl"), "--workers", "1", "--isolation", "none"]
    )
    assert allowed.exit_code == 0, allowed.output
    assert allowed.output.index("UNSANDBOXED") < allowed.output.index("wrote 1 attempts")  # said before


@needs_namespaces
def test_jail_failure_is_a_sandbox_error(monkeypatch):
    from aigclab.gamegym import sandbox

    monkeypatch.setattr(sandbox, "_sandbox_uid", lambda: -5)  # setuid fails inside the jail
    result = run_program("print('hi')\n", SandboxConfig())
    assert result.status == "sandbox_error" and "jail" not in (result.stdout or "")


@needs_namespaces
def test_hostile_suite_is_contained():
    report = run_hostile_suite(SandboxConfig(wall_s=10, cpu_s=2, memory_mb=512))  # wall slack for a loaded CI
    assert set(report) == set(ATTACKS)
    for attack, outcome in report.items():
        assert outcome["verdict"] == "contained", (attack, outcome)
    assert report["infinite_loop"]["status"] in ("timeout", "cpu_limit")
    assert report["memory_hog"]["status"] == report["memory_split"]["status"] == "memory"
    assert "Network is unreachable" in report["open_socket"]["stdout"]
    assert report["tamper_recorder"]["status"] == "tampered"
    assert report["forge_result"]["status"] == "no_frames"


@needs_namespaces
@pytest.mark.parametrize("ignore_xcpu", [False, True])
def test_cpu_limit_is_named_by_the_kill_itself(ignore_xcpu):
    # rusage under-counts CPU on a busy machine, so the kill at the limit must carry its cause (SIGXCPU);
    # a program that ignores SIGXCPU is killed a second later and still ends as cpu_limit, never crash
    code = "import signal\n"
    code += "signal.signal(signal.SIGXCPU, signal.SIG_IGN)\n" if ignore_xcpu else ""
    code += "while True:\n    pass\n"
    result = run_program(code, SandboxConfig(wall_s=60, cpu_s=2))
    assert result.status == "cpu_limit", result
    if not ignore_xcpu:
        assert result.returncode == 128 + signal.SIGXCPU


def test_cgroup_v2_group_limits_the_whole_attempt(tmp_path, monkeypatch):
    # this machine has cgroup v1, so the v2 path is checked on a stand-in tree: the group of one attempt
    # gets the memory cap (no swap) and a process cap; an OOM kill in it reads as memory; it is removed
    from aigclab.gamegym import _zygote

    root = tmp_path / "cgroup"
    (root / "svc").mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    (root / "svc" / "cgroup.subtree_control").write_text("memory pids\n")
    membership = tmp_path / "self_cgroup"
    membership.write_text("0::/svc\n")
    monkeypatch.setattr(_zygote, "CGROUP_ROOT", root)
    cfg = SandboxConfig(memory_mb=256, nproc=8)
    group = _zygote._cgroup("attempt", cfg, str(membership))
    assert group == str(root / "svc" / "attempt")
    assert (root / "svc" / "attempt" / "memory.max").read_text() == str(256 << 20)
    assert (root / "svc" / "attempt" / "memory.swap.max").read_text() == "0"
    assert (root / "svc" / "attempt" / "pids.max").read_text() == "12"
    (root / "svc" / "attempt" / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    real_rmdir = os.rmdir

    def rmdir(path):  # a cgroup dir goes with its kernel files
        for f in Path(path).iterdir():
            f.unlink()
        real_rmdir(path)

    monkeypatch.setattr(_zygote.os, "rmdir", rmdir)
    assert _zygote._cgroup_done(group) is True
    assert not (root / "svc" / "attempt").exists()
    (root / "svc" / "cgroup.subtree_control").write_text("pids\n")  # memory not delegated: no group
    assert _zygote._cgroup("other", cfg, str(membership)) is None
