"""The openai chat backend against a real local chat-completions server with scripted replies."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image
from pydantic import BaseModel, Field

from aigclab.errors import AigclabError
from aigclab.llm import LLMError, create_backend, extract_json, list_backends, parse_model, user_message


class Verdict(BaseModel):
    label: str
    score: int = Field(ge=0, le=100)


def _backend(server, **kw):
    return create_backend("openai", base_url=server.base_url, model="m", backoff_s=0.01, **kw)


def test_registry_lists_openai_and_rejects_unknown():
    assert "openai" in list_backends()
    with pytest.raises(AigclabError, match=r"known: .*openai"):
        create_backend("no-such-backend")


def test_images_travel_as_base64_png_data_urls(chat_server):
    img = np.random.default_rng(0).integers(0, 256, (12, 20, 3), dtype=np.uint8)
    chat_server.set_script("seen")
    assert _backend(chat_server).complete([user_message("what is this?", [img])]) == "seen"
    (req,) = chat_server.requests
    text, image = req["messages"][0]["content"]
    assert text == {"type": "text", "text": "what is this?"}
    url = image["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    np.testing.assert_array_equal(decoded, img)  # PNG is lossless


@pytest.mark.parametrize("mode", ["json_schema", "json_object", "off"])
def test_json_mode_sets_response_format(chat_server, mode):
    chat_server.set_script('{"label": "fake", "score": 90}')
    out = _backend(chat_server, json_mode=mode).structured([user_message("judge")], Verdict)
    assert out == Verdict(label="fake", score=90)
    fmt = chat_server.requests[0].get("response_format")
    if mode == "json_schema":
        assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"]["required"] == ["label", "score"]
    elif mode == "json_object":
        assert fmt == {"type": "json_object"}
    else:
        assert fmt is None


def test_json_extracted_from_fences_and_prose():
    assert extract_json('Sure!\n```json\n{"a": 1}\n```\nbye') == {"a": 1}
    assert extract_json('The answer is {"a": {"b": "}"}} as asked.') == {"a": {"b": "}"}}
    assert parse_model('x {"label": "real", "score": 3} y', Verdict).score == 3
    with pytest.raises(ValueError, match="no JSON"):
        extract_json("no braces here")


def test_malformed_output_is_reasked_then_accepted(chat_server):
    chat_server.set_script(
        "not json at all", '{"label": "x", "score": 999}', '```json\n{"label": "x", "score": 5}\n```'
    )
    backend = _backend(chat_server, max_reasks=2)
    assert backend.structured([user_message("judge")], Verdict).score == 5
    assert backend.stats["reasks"] == 2
    last = chat_server.requests[-1]["messages"]
    assert last[-2] == {"role": "assistant", "content": '{"label": "x", "score": 999}'}
    assert "invalid" in last[-1]["content"]


def test_never_valid_output_raises_clear_error(chat_server):
    chat_server.set_script("nope")
    with pytest.raises(LLMError, match=r"no valid Verdict after 2 tries"):
        _backend(chat_server, max_reasks=1).structured([user_message("judge")], Verdict)


def test_retries_5xx_and_429_with_backoff(chat_server):
    chat_server.set_script({"status": 503}, {"status": 429}, "fine")
    backend = _backend(chat_server, max_retries=3)
    assert backend.complete([user_message("hi")]) == "fine"
    assert {k: backend.stats[k] for k in ("calls", "retries", "reasks")} == {
        "calls": 3,
        "retries": 2,
        "reasks": 0,
    }


def test_a_request_that_timed_out_is_not_retried(chat_server):
    chat_server.set_script({"delay": 0.5, "content": "late"}, "on time")
    backend = _backend(chat_server, timeout_s=0.1, max_retries=3)
    with pytest.raises(LLMError, match=r"timed out after 0.1 s \(ReadTimeout\); not retried"):
        backend.complete([user_message("hi")])
    assert backend.stats["calls"] == 1 and len(chat_server.requests) == 1  # no second copy queued


def test_client_errors_are_not_retried(chat_server):
    chat_server.set_script({"status": 400}, "never reached")
    backend = _backend(chat_server)
    with pytest.raises(LLMError, match="HTTP 400"):
        backend.complete([user_message("hi")])
    assert backend.stats["calls"] == 1


def test_unreachable_server_and_garbage_replies(chat_server):
    with pytest.raises(LLMError, match="no answer"):
        create_backend("openai", base_url="http://127.0.0.1:9/v1", max_retries=0).complete(
            [user_message("x")]
        )
    chat_server.set_script({"raw": json.dumps({"choices": []})})
    with pytest.raises(LLMError, match="malformed chat reply"):
        _backend(chat_server).complete([user_message("x")])
