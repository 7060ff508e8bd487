"""Backends that deliver with slow local models: streaming and no retry of timed-out requests (openai),
the in-process llamacpp backend (a stand-in for llama_cpp.Llama), text-only transformers models; every
reply carries tokens, seconds and the finish reason."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

from aigclab.errors import ConfigError
from aigclab.llm import LLMError, create_backend, user_message
from aigclab.llm.llamacpp import LlamaCppBackend, LlamaCppConfig


def _openai(server, **kw):
    return create_backend("openai", base_url=server.base_url, model="m", backoff_s=0.01, **kw)


def test_reply_records_tokens_seconds_and_finish_reason(chat_server):
    chat_server.set_script({"content": "one two three", "finish": "length"})
    reply = _openai(chat_server, max_tokens=3).reply([user_message("count to ten")])
    assert reply.text == "one two three" and reply.truncated and reply.finish_reason == "length"
    assert reply.completion_tokens == 3 and reply.prompt_tokens == 3 and reply.seconds >= 0
    assert chat_server.requests[0]["max_tokens"] == 3 and "stream" not in chat_server.requests[0]


def test_streaming_joins_the_events_and_keeps_usage(chat_server):
    chat_server.set_script({"content": "a b c d", "finish": "stop"})
    reply = _openai(chat_server, stream=True).reply([user_message("go")])
    assert (reply.text, reply.finish_reason, reply.completion_tokens) == ("a b c d", "stop", 4)
    body = chat_server.requests[0]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    # a server that ignores include_usage (llama-cpp-python's): the content chunks are the tokens
    chat_server.set_script({"content": "a b c d e", "finish": "stop", "no_usage": True})
    assert _openai(chat_server, stream=True).reply([user_message("go")]).completion_tokens == 5


def test_streaming_timeout_bounds_the_silence_not_the_whole_reply(chat_server):
    # 6 words 0.15 s apart: 0.9 s in all, never 0.4 s of silence, so a 0.4 s timeout does not fire
    chat_server.set_script({"content": "w " * 5 + "w", "chunk_delay": 0.15})
    assert _openai(chat_server, stream=True, timeout_s=0.4).reply([user_message("go")]).completion_tokens == 6
    # a stalled stream times out, is not retried, and the client closes it (the server may stop)
    chat_server.set_script({"content": "x y", "chunk_delay": 0.6})
    backend = _openai(chat_server, stream=True, timeout_s=0.2, max_retries=3)
    with pytest.raises(LLMError, match="not retried, the server may still be computing it"):
        backend.reply([user_message("go")])
    assert backend.stats["calls"] == 1 and len(chat_server.requests) == 1


def test_connection_errors_are_still_retried(chat_server):
    backend = create_backend("openai", base_url="http://127.0.0.1:9/v1", max_retries=2, backoff_s=0.01)
    with pytest.raises(LLMError, match="no answer after 3 tries"):
        backend.complete([user_message("x")])
    assert backend.stats["retries"] == 2


class FakeLlama:
    """Stands in for llama_cpp.Llama: records the calls, answers like create_chat_completion."""

    def __init__(self, replies=("```python\nprint(1)\n```",), finish="stop", **kwargs):
        self.kwargs, self.calls = kwargs, []
        self.replies, self.finish = list(replies), finish

    def create_chat_completion(self, messages, **kw):
        self.calls.append({"messages": messages, **kw})
        text = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        return {
            "choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": self.finish}],
            "usage": {"prompt_tokens": 7, "completion_tokens": len(text.split())},
        }


def test_llamacpp_backend_with_a_fake_llama():
    llama = FakeLlama(["not json", '{"answer": 1}'], finish="length")
    backend = LlamaCppBackend(LlamaCppConfig(model_path="m.gguf", max_tokens=9), llama=llama)
    reply = backend.reply([{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    assert reply.truncated and reply.completion_tokens == 2 and reply.prompt_tokens == 7
    assert llama.calls[0]["messages"] == [{"role": "user", "content": "hi"}]
    assert llama.calls[0]["max_tokens"] == 9 and llama.calls[0]["temperature"] == 0.0
    from pydantic import BaseModel

    class Answer(BaseModel):
        answer: int

    assert backend.structured([user_message("answer?")], Answer) == Answer(answer=1)
    assert "schema" in llama.calls[-1]["messages"][-1]["content"] and backend.stats["reasks"] == 0
    with pytest.raises(LLMError, match="text-only"):
        backend.reply([user_message("what is this?", [np.zeros((4, 4, 3), np.uint8)])])


def test_llamacpp_loads_a_gguf_with_one_thread_by_default(tmp_path, monkeypatch):
    made = []

    class Llama(FakeLlama):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            made.append(kwargs)

    monkeypatch.setitem(sys.modules, "llama_cpp", types.SimpleNamespace(Llama=Llama))
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF" + bytes(60))
    backend = create_backend("llamacpp", model_path=str(gguf))
    assert made[0]["n_threads"] == made[0]["n_threads_batch"] == 1 and made[0]["model_path"] == str(gguf)
    assert backend.complete([user_message("x")]).startswith("```python")
    create_backend("llamacpp", model_path=str(gguf), n_threads=3)
    assert made[1]["n_threads"] == 3
    (tmp_path / "fake.gguf").write_bytes(b"PK\x03\x04 not a model")
    with pytest.raises(ConfigError, match=r"fake\.gguf: not a GGUF file"):
        create_backend("llamacpp", model_path=str(tmp_path / "fake.gguf"))
    with pytest.raises(ConfigError, match="no such GGUF file"):
        create_backend("llamacpp", model_path=str(tmp_path / "missing.gguf"))


def _tiny_causal_lm(folder: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["<unk>", "<s>", "</s>", "user", "assistant", ":", "print", "(", ")", "1", "```"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<unk>"
    )
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}assistant : {% endif %}"
    )
    config = LlamaConfig(
        vocab_size=len(words),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        eos_token_id=2,
        bos_token_id=1,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_transformers_backend_runs_a_text_only_causal_lm(tmp_path):
    path = _tiny_causal_lm(tmp_path / "lm")
    backend = create_backend("transformers", model_path=str(path), max_new_tokens=5)
    assert not backend.vision
    reply = backend.reply([user_message("print ( 1 )")])
    again = backend.reply([user_message("print ( 1 )")])
    assert reply == again.__class__(**{**again.__dict__, "seconds": reply.seconds})  # greedy: repeatable
    assert reply.prompt_tokens == 8 and reply.completion_tokens is not None and reply.completion_tokens <= 5
    assert reply.finish_reason == ("length" if reply.completion_tokens == 5 else "stop")
    with pytest.raises(LLMError, match="text-only"):
        backend.reply([user_message("see", [np.zeros((4, 4, 3), np.uint8)])])
