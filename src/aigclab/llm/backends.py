"""Chat backends behind one small interface, in the ``chat-backend`` registry.

``openai`` speaks the OpenAI-compatible chat-completions protocol (OpenAI, vLLM, Ollama, gateways)
over httpx: retries with exponential backoff on timeouts, connection errors, 5xx and 429;
``response_format`` json_schema / json_object where the server supports it; JSON extracted from free
text or fenced blocks and validated with pydantic, re-asking a bounded number of times.

Example:
    >>> from aigclab.llm import create_backend
    >>> b = create_backend("openai", base_url="http://127.0.0.1:8000/v1", model="qwen")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any, Literal, Protocol, TypeVar

import httpx
from pydantic import BaseModel

from aigclab._config import Config
from aigclab._registry import Registry
from aigclab.errors import AigclabError
from aigclab.llm.jsonout import parse_model
from aigclab.llm.messages import Message

__all__ = [
    "BACKENDS",
    "ChatBackend",
    "LLMError",
    "OpenAIBackend",
    "OpenAIConfig",
    "create_backend",
    "list_backends",
    "structured_reply",
]

M = TypeVar("M", bound=BaseModel)


class LLMError(AigclabError):
    """The model server failed, or the model never returned valid output."""


class ChatBackend(Protocol):
    name: str

    def complete(self, messages: Sequence[Message], schema: dict[str, Any] | None = None) -> str:
        """The assistant's reply text; `schema` (a JSON schema) asks for JSON where supported."""
        ...

    def structured(self, messages: Sequence[Message], model_cls: type[M]) -> M:
        """A validated `model_cls` instance, re-asking on malformed output."""
        ...


BACKENDS: Registry[ChatBackend] = Registry("chat-backend")


class OpenAIConfig(Config):
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "default"
    api_key_env: str = "OPENAI_API_KEY"  # read at call time; never stored in configs
    temperature: float = 0.3
    max_tokens: int = 4096
    timeout_s: float = 120.0
    max_retries: int = 4  # transport-level: timeouts, connection errors, 5xx, 429
    backoff_s: float = 1.0  # first wait; doubles each retry
    max_reasks: int = 2  # extra calls when the output is not valid JSON for the schema
    json_mode: Literal["json_schema", "json_object", "off"] = "json_schema"


class OpenAIBackend:
    """A chat-completions client. `stats` counts calls, transport retries and re-asks."""

    name = "openai"

    def __init__(self, cfg: OpenAIConfig):
        self.cfg = cfg
        self.stats = {"calls": 0, "retries": 0, "reasks": 0, "prompt_tokens": 0, "completion_tokens": 0}
        self._http = httpx.Client(timeout=cfg.timeout_s)

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.cfg.api_key_env, "")
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _response_format(self, schema: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
        if schema is None or self.cfg.json_mode == "off":
            return None
        if self.cfg.json_mode == "json_object":
            return {"type": "json_object"}
        return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        url = self.cfg.base_url.rstrip("/") + "/chat/completions"
        last = ""
        for attempt in range(self.cfg.max_retries + 1):
            if attempt:
                self.stats["retries"] += 1
                time.sleep(self.cfg.backoff_s * 2 ** (attempt - 1))
            self.stats["calls"] += 1
            try:
                resp = self._http.post(url, json=body, headers=self._headers())
            except (httpx.TimeoutException, httpx.TransportError) as err:
                last = f"{type(err).__name__}: {err}"
                continue
            if resp.status_code == 429 or resp.status_code >= 500:
                last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                continue
            if resp.status_code != 200:
                raise LLMError(f"{url}: HTTP {resp.status_code}: {resp.text[:300]}")
            try:
                return resp.json()
            except ValueError:
                raise LLMError(f"{url}: reply is not JSON: {resp.text[:200]!r}") from None
        raise LLMError(f"{url}: no answer after {self.cfg.max_retries + 1} tries ({last})")

    def complete(self, messages: Sequence[Message], schema: dict[str, Any] | None = None) -> str:
        body: dict[str, Any] = {
            "model": self.cfg.model,
            "messages": list(messages),
            "temperature": self.cfg.temperature,
            "max_tokens": self.cfg.max_tokens,
        }
        fmt = self._response_format(schema, str((schema or {}).get("title", "output")))
        if fmt:
            body["response_format"] = fmt
        data = self._post(body)
        usage = data.get("usage") or {}  # token counts, when the server reports them
        self.stats["prompt_tokens"] += int(usage.get("prompt_tokens") or 0)
        self.stats["completion_tokens"] += int(usage.get("completion_tokens") or 0)
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise LLMError(f"{self.cfg.base_url}: malformed chat reply: {str(data)[:200]}") from None
        return content or ""

    def structured(self, messages: Sequence[Message], model_cls: type[M]) -> M:
        where = f"{self.cfg.model} at {self.cfg.base_url}"
        return structured_reply(self, messages, model_cls, self.cfg.max_reasks, self.stats, where)


def structured_reply(
    backend: ChatBackend,
    messages: Sequence[Message],
    model_cls: type[M],
    max_reasks: int,
    stats: dict[str, int],
    where: str,
) -> M:
    """Ask for `model_cls` JSON; on invalid output show the model its reply and the error, and ask again."""
    msgs = list(messages)
    schema = model_cls.model_json_schema()
    error = ""
    for attempt in range(max_reasks + 1):
        if attempt:
            stats["reasks"] += 1
        text = backend.complete(msgs, schema=schema)
        try:
            return parse_model(text, model_cls)
        except ValueError as err:
            error = str(err)
            msgs = [
                *messages,
                {"role": "assistant", "content": text},
                {
                    "role": "user",
                    "content": f"That reply was invalid ({error[:300]}). "
                    "Answer again with only one JSON object that matches the schema.",
                },
            ]
    raise LLMError(f"{where} gave no valid {model_cls.__name__} after {max_reasks + 1} tries: {error[:300]}")


@BACKENDS.register("openai")
def openai_backend(**overrides: Any) -> OpenAIBackend:
    """An OpenAI-compatible server; `overrides` are :class:`OpenAIConfig` fields."""
    return OpenAIBackend(OpenAIConfig._validate(overrides, "openai chat backend"))


def create_backend(name: str, **overrides: Any) -> ChatBackend:
    """Build a registered chat backend, e.g. ``create_backend("openai", base_url=...)``."""
    return BACKENDS.create(name, **overrides)


def list_backends() -> list[str]:
    return BACKENDS.list()
