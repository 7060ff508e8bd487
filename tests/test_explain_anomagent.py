"""AnomAgent end to end against the local scripted chat server: store, resume after a kill, prompt
changes, terminal review and export of reviewed records only."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from aigclab.cli import app
from aigclab.explain.annotation_store import AnnotationStore
from aigclab.explain.anomagent import STEPS, AgentConfig, AnomAgent
from aigclab.explain.anomreason_mini import render_scene
from aigclab.explain.quadruples import Quadruple, read_quadruples
from aigclab.llm import create_backend

REPLIES = {
    "SceneDescription": {"objects": ["a clock on the left", "a tree"], "description": "A sunny park."},
    "Proposals": {
        "candidates": [
            {"name": "the clock", "phenomenon": "the dial has 13 hour marks", "region": [1, 2, 30, 40]},
            {"name": "the tree", "phenomenon": "the tree looks a bit green"},
        ]
    },
    "Reasons": {"reasons": ["clocks have twelve hour marks", "trees are green"]},
    "Severities": {"severities": [3, 1]},
    "Verdicts": {"keep": [True, False], "confidence": [0.9, 0.2]},
}


def respond(body, replies=REPLIES, delay=0.0):
    name = body["response_format"]["json_schema"]["name"]
    return {"content": json.dumps(replies[name]), "delay": delay}


def _images(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        paths.append(folder / f"scene{i}.png")
        Image.fromarray(render_scene(100 + i).image).save(paths[-1])
    return paths


def _agent(server, db: Path, prompt_dir: Path | None = None) -> AnomAgent:
    backend = create_backend("openai", base_url=server.base_url, model="m", backoff_s=0.01)
    return AnomAgent(
        backend, AnnotationStore(db), AgentConfig(model="m", price_prompt_per_1k=0.01), prompt_dir
    )


def _schemas(server) -> list[str]:
    return [r["response_format"]["json_schema"]["name"] for r in server.requests]


def test_pipeline_stores_one_row_per_image_and_step(chat_server, tmp_path):
    paths = _images(tmp_path / "img", 2)
    chat_server.set_script(respond)
    agent = _agent(chat_server, tmp_path / "a.db")
    summary = agent.run(paths)
    assert summary["annotated"] == 2 and summary["calls"] == 10
    assert _schemas(chat_server) == ["SceneDescription", "Proposals", "Reasons", "Severities", "Verdicts"] * 2
    rows = agent.store.db.execute(
        "SELECT step, prompt_hash, model, prompt_tokens, completion_tokens, cost FROM steps"
    ).fetchall()
    assert len(rows) == 10 and {r[0] for r in rows} == set(STEPS)
    assert all(r[2] == "m" and r[3] > 0 and r[4] > 0 and r[5] > 0 for r in rows)
    assert rows[0][1] == agent.hashes[rows[0][0]]
    # the critic kept the clock only; reasoning and severity come from their agents
    props = agent.store.proposals()
    assert [p.quadruple.name for p in props] == ["the clock", "the clock"]
    assert (
        props[0].quadruple.reasoning == "clocks have twelve hour marks" and props[0].quadruple.severity == 3
    )
    # the reasoner saw the candidates, the critic saw reasoning and severities
    critic_prompt = chat_server.requests[4]["messages"][1]["content"][0]["text"]
    assert "the dial has 13 hour marks" in critic_prompt and "Severity: 3" in critic_prompt
    # a second run reuses everything
    chat_server.set_script(respond)
    assert agent.run(paths)["calls"] == 0 and chat_server.requests == []


def test_changed_prompt_reruns_only_what_depends_on_it(chat_server, tmp_path):
    paths = _images(tmp_path / "img", 2)
    chat_server.set_script(respond)
    _agent(chat_server, tmp_path / "a.db").run(paths)
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    rate = json.loads(_shipped("rate"))
    rate["system"] += " Be strict."
    (prompts / "anomagent_rate.json").write_text(json.dumps(rate))
    chat_server.set_script(respond)
    _agent(chat_server, tmp_path / "a.db", prompts).run(paths)
    assert _schemas(chat_server) == ["Severities"] * 2  # same severities -> the critic's inputs are unchanged
    new = dict(REPLIES, Severities={"severities": [5, 1]})
    (prompts / "anomagent_rate.json").write_text(json.dumps(rate | {"user": rate["user"] + " "}))
    chat_server.set_script(lambda body: respond(body, new))
    agent = _agent(chat_server, tmp_path / "a.db", prompts)
    agent.run(paths)
    assert _schemas(chat_server) == ["Severities", "Verdicts"] * 2  # new severities -> the critic reruns
    assert [p.quadruple.severity for p in agent.store.proposals()] == [5, 5]


def _shipped(step: str) -> str:
    from importlib import resources

    return (resources.files("aigclab.explain") / "prompts" / f"anomagent_{step}.json").read_text()


def test_failed_step_is_stored_and_the_batch_goes_on(chat_server, tmp_path):
    paths = _images(tmp_path / "img", 2)
    bad = dict(REPLIES, Reasons={"reasons": ["only one"]})  # 1 reason for 2 candidates
    chat_server.set_script(lambda body: respond(body, bad))
    agent = _agent(chat_server, tmp_path / "a.db")
    summary = agent.run([*paths, tmp_path / "missing.png"])
    assert len(summary["skipped"]) == 3 and "1 for 2 candidates" not in summary["skipped"][0][1]
    assert "2 candidates" in summary["skipped"][0][1] and "missing.png" in summary["skipped"][2][0]
    errors = agent.store.db.execute("SELECT step, error FROM steps WHERE status='error'").fetchall()
    assert [e[0] for e in errors] == ["reason", "reason"]
    chat_server.set_script(respond)  # fixed server: only the failed steps and what follows them run
    assert agent.run(paths)["calls"] == 6


def test_resume_after_kill_loses_and_duplicates_nothing(chat_server, tmp_path):
    paths = _images(tmp_path / "img", 4)
    db = tmp_path / "a.db"
    chat_server.set_script(lambda body: respond(body, delay=0.3))
    cmd = [
        sys.executable,
        "-c",
        "from aigclab.cli import main; main()",
        "explain",
        "annotate",
        *map(str, paths),
        "--db",
        str(db),
        "--base-url",
        chat_server.base_url,
        "--model",
        "m",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(chat_server.requests) < 8 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = AnnotationStore(db)
    done = store.db.execute("SELECT COUNT(*) FROM steps WHERE status='ok'").fetchone()[0]
    assert 7 <= done < 20
    chat_server.set_script(respond)
    result = CliRunner().invoke(app, cmd[3:])
    assert result.exit_code == 0, result.output
    assert len(chat_server.requests) == 20 - done  # finished steps were not asked again
    rows = store.db.execute("SELECT image_id, step, status FROM steps").fetchall()
    assert len(rows) == 20 == len(set((r[0], r[1]) for r in rows)) and {r[2] for r in rows} == {"ok"}
    assert len(store.proposals()) == 4


def test_terminal_review_and_export_only_reviewed(chat_server, tmp_path):
    paths = _images(tmp_path / "img", 3)
    db = tmp_path / "a.db"
    chat_server.set_script(respond)
    _agent(chat_server, db).run(paths)
    runner = CliRunner()
    # accept the first, edit the second (new name, keep phenomenon and reasoning, severity 5), skip the third
    keys = "a" + "e" + "edited clock\n\n\n5\n" + "s"
    result = runner.invoke(app, ["explain", "review", str(db), "--reviewer", "ann"], input=keys)
    assert result.exit_code == 0, result.output
    assert "1 accepted, 1 edited, 0 rejected, 1 skipped; 1 still pending" in " ".join(result.output.split())
    out = tmp_path / "gt.jsonl"
    result = runner.invoke(app, ["explain", "export", str(db), str(out)])
    assert "2 images; 1 left out" in " ".join(result.output.split())
    records = read_quadruples(out)
    assert [r.anomalies[0].name for r in records] == ["the clock", "edited clock"]
    assert (
        records[1].anomalies[0].severity == 5
        and records[1].anomalies[0].reasoning == "clocks have twelve hour marks"
    )
    # a web review page writes to the same store; a rejected proposal leaves an image with no anomalies
    store = AnnotationStore(db)
    pending = store.proposals(only_pending=True)
    store.review(pending[0].image_id, pending[0].idx, "rejected", reviewer="web-user", source="web")
    records, stats = store.export_reviewed()
    assert stats == {"exported": 3, "partially_reviewed": 0} and records[2].anomalies == []
    sources = store.db.execute("SELECT source FROM reviews ORDER BY reviewed_at").fetchall()
    assert [s[0] for s in sources] == ["terminal", "terminal", "web"]


def test_review_of_an_outdated_proposal_no_longer_counts(chat_server, tmp_path):
    paths = _images(tmp_path / "img", 1)
    db = tmp_path / "a.db"
    chat_server.set_script(respond)
    _agent(chat_server, db).run(paths)
    store = AnnotationStore(db)
    p = store.proposals()[0]
    store.review(p.image_id, p.idx, "accepted")
    assert store.export_reviewed()[1]["exported"] == 1
    new = dict(REPLIES, Verdicts={"keep": [True, True], "confidence": [0.9, 0.6]})
    new["Severities"] = {"severities": [4, 1]}
    shutil.copy(db, tmp_path / "before.db")
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "anomagent_rate.json").write_text(_shipped("rate").replace("Rate the", "Please rate the"))
    chat_server.set_script(lambda body: respond(body, new))
    _agent(chat_server, db, prompts).run(paths)
    assert store.export_reviewed()[1] == {"exported": 0, "partially_reviewed": 1}
    with pytest.raises(Exception, match="status must be one of"):
        store.review(p.image_id, 0, "maybe")
    assert isinstance(store.proposals()[1].quadruple, Quadruple)
