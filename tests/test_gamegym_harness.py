"""The harness outside the sandbox: interpreter found wherever it lives, interrupt and resume, Ray."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aigclab.gamegym.records import Attempt, Generation, load_samples, read_records, write_records
from aigclab.gamegym.run import execute
from aigclab.gamegym.sandbox import SandboxConfig, isolation_mode

needs_namespaces = pytest.mark.skipif(isolation_mode() == "none", reason="needs namespaces")
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _descendants(pid: int) -> set[int]:
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for task in os.listdir(f"/proc/{p}/task") if os.path.isdir(f"/proc/{p}/task") else []:
            try:
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    kids = [int(x) for x in fh.read().split()]
            except OSError:
                continue
            out.update(kids)
            todo.extend(kids)
    return out


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] != "Z":
                    alive.add(pid)
        except OSError:
            continue
    return alive


@needs_namespaces
def test_interpreter_in_a_hidden_venv(tmp_path):
    """A venv under a hidden dir in /tmp (as pytest's own tmp dirs are) runs programs, not `crash`."""
    venv = tmp_path / ".hidden" / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)], check=True
    )
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "aigclab_src.pth").write_text(SRC + "\n")
    code = (
        "from aigclab.gamegym.sandbox import run_program, SandboxConfig\n"
        "r = run_program('import pygame\\npygame.display.set_mode((8, 8))\\npygame.display.flip()\\nprint(7 * 6)\\n',"
        " SandboxConfig(min_run_s=0))\n"
        "print(r.status, r.isolation, r.stdout.strip(), r.exception)\n"
    )
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, timeout=300
    )
    assert out.stdout.split() == ["ok", "namespaces", "42", "None"], out.stdout + out.stderr


@needs_namespaces
def test_sigterm_kills_every_child_cleans_up_and_resumes(tmp_path):
    quick = load_samples(ids=["pong"])[0].code
    slow = "while True:\n    pass\n"  # held until the wall limit
    gens = tmp_path / "g.jsonl"
    write_records(
        gens,
        [Generation(sample_id=f"quick{i}", generator="t", code=quick) for i in range(2)]
        + [Generation(sample_id=f"slow{i}", generator="t", code=slow) for i in range(2)],
    )
    out, tmp = tmp_path / "a.jsonl", tmp_path / "tmp"
    tmp.mkdir()
    args = ["run", str(gens), "--out", str(out), "--media", str(tmp_path / "m"), "--workers", "2"]
    cmd = [sys.executable, "-c", "from aigclab.gamegym.cli import app; app()", *args]
    slow_args = ["--wall-s", "300", "--cpu-s", "300"]
    proc = subprocess.Popen([*cmd, *slow_args], env={**os.environ, "TMPDIR": str(tmp)}, cwd=tmp_path)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # wait until both quick games are written and the slow ones run
        done = out.read_text().count("\n") if out.exists() else 0
        if done >= 2 and len(_descendants(proc.pid)) >= 6:
            break
        time.sleep(0.2)
    children = _descendants(proc.pid)
    assert done == 2 and children, "the run did not get going"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) != 0
    deadline = time.monotonic() + 30
    while _alive(children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(children), "sandbox processes outlived the harness"
    assert list(tmp.iterdir()) == []  # temp dirs removed
    kept = read_records(out, Attempt)
    assert sorted(a.sample_id for a in kept) == ["quick0", "quick1"] and all(a.status == "ok" for a in kept)
    again = subprocess.run(
        [*cmd, "--wall-s", "5", "--cpu-s", "2", "--no-probe"], capture_output=True, text=True, cwd=tmp_path
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "kept 2 finished attempts" in again.stdout
    final = read_records(out, Attempt)
    assert sorted(a.sample_id for a in final) == ["quick0", "quick1", "slow0", "slow1"]
    assert {a.status for a in final if a.sample_id.startswith("slow")} <= {"timeout", "cpu_limit"}


@needs_namespaces
def test_ray_engine_on_a_local_cluster(tmp_path):
    pytest.importorskip("ray")
    gens = [Generation(sample_id="pong", generator="t", code=load_samples(ids=["pong"])[0].code)]
    got = []
    attempts = execute(
        gens,
        SandboxConfig(wall_s=60),
        tmp_path,
        engine="ray",
        workers=1,
        on_result=lambda i, a: got.append(i),
    )
    assert [a.status for a in attempts] == ["ok"] and got == [0]
    assert attempts[0].probe_status == "exit" and len(attempts[0].probe_shots) == 8
