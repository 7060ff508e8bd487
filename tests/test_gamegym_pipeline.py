"""GameGym stages on real records: dataset loading, curation, generation, scoring, judges, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aigclab.errors import DataError
from aigclab.gamegym.cli import app
from aigclab.gamegym.curate import CurateConfig, curate, quality_score
from aigclab.gamegym.generate import BROKEN_MODES, build_prompt, create_generator, extract_code
from aigclab.gamegym.records import (
    Attempt,
    Generation,
    Sample,
    Score,
    load_samples,
    read_records,
    write_records,
)
from aigclab.gamegym.run import execute, generate_all, score_all, write_leaderboard
from aigclab.gamegym.sandbox import SandboxConfig
from aigclab.llm import create_backend

FAST = SandboxConfig(wall_s=60, cpu_s=2)  # generous wall: a loaded machine; CPU bounds the loops


def test_embedded_games_are_complete_and_varied():
    samples = load_samples()
    assert len(samples) >= 30 and len({s.id for s in samples}) == len(samples)
    assert len({s.theme for s in samples}) >= 10
    for s in samples:
        compile(s.code, s.id, "exec")
        assert "Time:" in s.code and "clock.tick(" in s.code and s.requirement.startswith("**")
        assert 50 <= len(s.code.splitlines()) <= 150


def test_official_layout_loader(tmp_path):
    ref = load_samples(ids=["pong"])[0]
    row = {
        "id": 17,
        "requirement": "**Pong**\nA pong game.",
        "code": ref.code,
        "metadata": {"cluster_id": 3, "quality_score": 70, "game_type": "unknown", "original_repo": "a/b"},
        "reference_metadata": {"execution_result": {"success": True, "screenshot_count": 10}},
    }
    (tmp_path / "test.jsonl").write_text(json.dumps(row) + "\n")
    (tmp_path / "test.json").write_text(json.dumps([row]))
    for name in ("test.jsonl", "test.json"):
        (s,) = load_samples(tmp_path / name)
        assert (s.id, s.cluster_id, s.quality_score, s.title) == ("17", 3, 70.0, "Pong")
        assert (
            s.metadata["original_repo"] == "a/b"
            and s.metadata["reference_metadata"]["execution_result"]["success"]
        )
    (tmp_path / "bad.jsonl").write_text(json.dumps({"id": 1, "code": ""}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl: sample 1 lacks a field"):
        load_samples(tmp_path / "bad.jsonl")
    with pytest.raises(DataError, match="unknown sample ids"):
        load_samples(ids=["no-such-game"])
    write_records(tmp_path / "ours.jsonl", load_samples(ids=["snake", "pong"]))
    assert [s.id for s in load_samples(tmp_path / "ours.jsonl")] == ["snake", "pong"]


def test_curation_picks_best_per_cluster_deterministically():
    samples = load_samples()
    cfg = CurateConfig(features="structural", k=6, seed=0)
    a, b = curate(samples, cfg), curate(samples, cfg)
    assert a.representatives == b.representatives and len(a.representatives) == 6
    for rep in a.representatives:
        cluster = next(s.cluster_id for s in a.samples if s.id == rep)
        members = [s for s in a.samples if s.cluster_id == cluster]
        assert max(m.quality_score for m in members) == next(s.quality_score for s in members if s.id == rep)
    assert sum(c["size"] for c in a.coverage["clusters"]) == len(samples)
    assert 0 < a.coverage["theme_coverage"] <= 1
    assert quality_score("print('hi')\n") < 30 < min(s.quality_score for s in a.samples)


def test_prompt_and_code_extraction():
    prompt = build_prompt(load_samples(ids=["pong"])[0])
    assert "10 seconds" in prompt and "Time: 5.2/10.0s" in prompt and "30 or 60 FPS" in prompt
    assert extract_code("text\n```python\nprint(1)\n```\nmore ```python\nprint(2)\n```") == "print(1)\n"
    assert extract_code("print(3)") == "print(3)\n"


def test_reference_passes_and_broken_fails_for_the_right_reason(tmp_path):
    samples = load_samples(ids=["pong", "snake"])
    gens = generate_all(samples[:1], "reference")
    gens += [create_generator("broken", mode=m).generate(samples[1]) for m in BROKEN_MODES]
    attempts = execute(gens, FAST, tmp_path, workers=2)
    scores = score_all(attempts, samples)
    ref, broken = scores[0], scores[1:]
    assert ref.passed and ref.fail_reason == "" and ref.exited_cleanly and ref.not_blank == 1.0
    assert ref.motion > 0.005 and ref.input_response is not None and 25 <= ref.fps <= 61 and ref.speedup > 0
    assert ref.auto_score > 80
    for s in broken:
        assert not s.passed and s.fail_reason == s.expected_failure, (s.expected_failure, s.status)
        assert s.auto_score < ref.auto_score
    rows = write_leaderboard(scores, tmp_path / "report")
    assert [r["generator"] for r in rows] == ["reference", "broken"]
    assert rows[1]["fail_reasons"] == {m: 1 for m in BROKEN_MODES}
    assert {p.name for p in (tmp_path / "report").iterdir()} == {
        "leaderboard.json",
        "leaderboard.md",
        "leaderboard.png",
    }


CODE_J = '{"functionality_score": 20, "code_quality_score": 15, "game_logic_score": 18, "technical_score": 22, "feedback": "ok"}'
SHOT_J = '{"visual_completeness_score": 10, "ui_design_score": 10, "functionality_display_score": 10, "overall_quality_score": 10}'
VIDEO_J = (
    '{"animation_score": 25, "interaction_score": 5, "gameplay_flow_score": 5, "dynamic_quality_score": 5}'
)


def test_three_judges_through_a_chat_server(tmp_path, chat_server):
    sample = load_samples(ids=["pong"])[0]
    (attempt,) = execute(generate_all([sample], "reference"), FAST, tmp_path, probe=False, workers=1)
    backend = create_backend("openai", base_url=chat_server.base_url, backoff_s=0.01)
    chat_server.set_script(CODE_J, "not json", SHOT_J, VIDEO_J)
    (score,) = score_all([attempt], [sample], backend)
    assert (score.code_score, score.screenshot_score, score.video_score) == (75.0, 40.0, 40.0)
    assert score.final_score == pytest.approx(155 / 3, abs=0.01) and score.judge_feedback["code"] == "ok"
    images = [
        sum(p.get("type") == "image_url" for p in r["messages"][0]["content"])
        for r in chat_server.requests[2:]
    ]
    assert images == [10, 8]  # ten screenshots; eight frames from the GIF
    chat_server.set_script('{"functionality_score": 99}')
    (failed,) = score_all([attempt], [sample], backend)
    assert failed.final_score is None and "no valid CodeJudgement" in failed.judge_error and failed.passed


def test_cli_end_to_end(tmp_path):
    runner = CliRunner()
    gens, atts, scores = tmp_path / "g.jsonl", tmp_path / "a.jsonl", tmp_path / "s.jsonl"

    def ok(*args: str) -> str:
        result = runner.invoke(app, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    ok("generate", "reference", "--id", "breakout", "--out", str(gens))
    ok(
        "run",
        str(gens),
        "--out",
        str(atts),
        "--media",
        str(tmp_path / "media"),
        "--workers",
        "1",
        "--no-probe",
        "--export",
    )
    ok("score", str(atts), "--out", str(scores))
    out = ok("report", str(scores), "--out", str(tmp_path / "report"))
    assert "reference" in out and (tmp_path / "report" / "leaderboard.md").exists()
    (attempt,) = read_records(atts, Attempt)
    assert attempt.status == "ok" and (tmp_path / "media" / "reference").is_dir()
    assert (Path(attempt.media_dir) / "gameplay.gif").exists() and len(attempt.shots) == 10
    assert (Path(attempt.media_dir) / "shot_09.png").exists()  # --export: PNGs and the GIF on request
    assert read_records(scores, Score)[0].passed
    ok("curate", "--out", str(tmp_path / "cur.jsonl"), "--k", "4")
    assert len(read_records(tmp_path / "cur_representatives.jsonl", Sample)) == 4
    bad = runner.invoke(app, ["score", str(tmp_path / "missing.jsonl")])
    assert bad.exit_code != 0 and "missing.jsonl: file not found" in str(bad.exception)


def test_cli_generates_through_a_chat_server(tmp_path, chat_server):
    pong = load_samples(ids=["pong"])[0]
    chat_server.set_script("Sure.\n```python\n" + pong.code + "```")
    out = tmp_path / "g.jsonl"
    args = ["generate", "chat", "--id", "pong", "--base-url", chat_server.base_url, "--model", "m"]
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    (gen,) = read_records(out, Generation)
    assert gen.generator == "openai:m" and gen.code == pong.code and gen.error is None
    prompt = chat_server.requests[0]["messages"][0]["content"]
    assert pong.requirement.strip() in prompt and "exactly 10 seconds" in prompt
