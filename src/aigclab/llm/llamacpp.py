"""``llamacpp`` chat backend: a local GGUF model run in-process by llama-cpp-python (extra ``[llamacpp]``).

Built for small shared machines: ``n_threads`` defaults to 1. llama.cpp's worker threads spin while
they wait for each other, so on a busy machine more threads than free cores can be far slower than
one (measured: the 1.5B coder model fell from ~12 to ~1 token/s with 2 threads on a loaded 2-core
box); raise it only on cores you have to yourself. Decoding is greedy by default (repeatable). The
chat template is the one stored in the GGUF file. Text only: an image part is an error.

Example:
    >>> from aigclab.llm import create_backend, user_message
    >>> coder = create_backend("llamacpp", model_path="qwen2.5-coder-1.5b")  # doctest: +SKIP
    >>> coder.reply([user_message("Write hello world in Python")]).completion_tokens  # doctest: +SKIP
    12
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from aigclab._config import Config
from aigclab.errors import ConfigError
from aigclab.llm.backends import BACKENDS, LLMError, Reply, ReplyBackend
from aigclab.llm.messages import Message, text_messages

__all__ = ["LlamaCppBackend", "LlamaCppConfig", "resolve_gguf"]

M = TypeVar("M", bound=BaseModel)


class LlamaCppConfig(Config):
    model_path: str  # a GGUF file, or a name fetched by `aigclab models fetch` (qwen2.5-coder-1.5b)
    n_threads: int = 1
    n_ctx: int = 4096
    n_batch: int = 256
    max_tokens: int = 2048
    temperature: float = 0.0
    seed: int = 0
    max_reasks: int = 2


def resolve_gguf(model_path: str) -> Path:
    """A GGUF file path: `model_path` itself, or the cached file of a known model name."""
    from aigclab.models.gguf import GGUF_MODELS, gguf_path

    path = gguf_path(model_path) if model_path in GGUF_MODELS else Path(model_path)
    if not path.is_file():
        hint = f" (run `aigclab models fetch {model_path}`)" if model_path in GGUF_MODELS else ""
        raise ConfigError(f"{path}: no such GGUF file{hint}")
    with path.open("rb") as fh:
        if fh.read(4) != b"GGUF":
            raise ConfigError(f"{path}: not a GGUF file (no GGUF magic)")
    return path


def _load(cfg: LlamaCppConfig) -> Any:
    try:
        from llama_cpp import Llama
    except ImportError:
        raise ConfigError(
            "the llamacpp backend needs llama-cpp-python: pip install 'aigclab[llamacpp]'"
        ) from None
    return Llama(
        model_path=str(resolve_gguf(cfg.model_path)),
        n_ctx=cfg.n_ctx,
        n_batch=cfg.n_batch,
        n_threads=cfg.n_threads,
        n_threads_batch=cfg.n_threads,
        seed=cfg.seed,
        verbose=False,
    )


class LlamaCppBackend(ReplyBackend):
    """`llama` is a ``llama_cpp.Llama`` (made from `cfg` when not given; tests pass a stand-in)."""

    name = "llamacpp"

    def __init__(self, cfg: LlamaCppConfig, llama: Any = None):
        self.cfg = cfg
        self.stats = {"calls": 0, "retries": 0, "reasks": 0}
        self.llama = llama if llama is not None else _load(cfg)

    def reply(self, messages: Sequence[Message], schema: dict[str, Any] | None = None) -> Reply:
        self.stats["calls"] += 1
        try:
            chat = text_messages(messages, schema)
        except ValueError as err:
            raise LLMError(f"llamacpp backend ({self.cfg.model_path}): {err}") from None
        start = time.monotonic()
        try:
            out = self.llama.create_chat_completion(
                messages=chat,
                max_tokens=self.cfg.max_tokens,
                temperature=self.cfg.temperature,
                seed=self.cfg.seed,
            )
        except ValueError as err:  # e.g. the prompt does not fit the context
            raise LLMError(f"{self.cfg.model_path}: {err}") from None
        return Reply.from_completion(out, out["choices"][0]["message"]["content"], start)

    @property
    def where(self) -> str:
        return str(self.cfg.model_path)


@BACKENDS.register("llamacpp")
def llamacpp_backend(**overrides: Any) -> LlamaCppBackend:
    """A local GGUF model in-process; `overrides` are :class:`LlamaCppConfig` fields."""
    return LlamaCppBackend(LlamaCppConfig._validate(overrides, "llamacpp chat backend"))
