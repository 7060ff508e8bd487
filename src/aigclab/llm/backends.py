"""Chat backends behind one small interface, in the ``chat-backend`` registry.

``openai`` speaks the OpenAI-compatible chat-completions protocol (OpenAI, vLLM, Ollama, llama.cpp's
server, gateways) over httpx: retries with exponential backoff on connection errors, 5xx and 429, but
never a request that timed out after it was sent (the server may still be computing it; a retry would
queue a second copy behind it); ``stream=True`` reads the reply as server-sent events, so ``timeout_s``
bounds the silence between tokens rather than the whole reply, and a client that gives up closes the
stream (llama.cpp's server then stops computing); ``response_format`` json_schema / json_object where
the server supports it; JSON extracted from free text or fenced blocks and validated with pydantic,
re-asking a bounded number of times.

Every backend answers ``reply(messages) -> Reply``: the text plus tokens, seconds and the finish
reason (``stop``, or ``length`` when the token limit cut it: ``Reply.truncated``).

Example:
    >>> from aigclab.llm import create_backend
    >>> b = create_backend("openai", base_url="http://127.0.0.1:8000/v1", model="qwen")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
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
    "Reply",
    "create_backend",
    "list_backends",
    "structured_reply",
]

M = TypeVar("M", bound=BaseModel)


class LLMError(AigclabError):
    """The model server failed, or the model never returned valid output."""


@dataclass(frozen=True)
class Reply:
    """One model answer with its cost: tokens (None where the server did not say), seconds, finish reason."""

    text: str
    finish_reason: str  # "stop", "length" (cut at the token limit), or what the server said
    seconds: float
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"

    @classmethod
    def from_completion(cls, data: dict[str, Any], text: str | None, start: float) -> Reply:
        """A reply from an OpenAI-style chat completion `data` whose first choice says `text`."""
        usage = data.get("usage") or {}
        return cls(
            text=text or "",
            finish_reason=data["choices"][0].get("finish_reason") or "unknown",
            seconds=round(time.monotonic() - start, 3),
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
        )


class ChatBackend(Protocol):
    name: str

    def reply(self, messages: Sequence[Message], schema: dict[str, Any] | None = None) -> Reply:
        """The assistant's reply with tokens, seconds and finish reason."""
        ...

    def complete(self, messages: Sequence[Message], schema: dict[str, Any] | None = None) -> str:
        """The assistant's reply text; `schema` (a JSON schema) asks for JSON where supported."""
        ...

    def structured(self, messages: Sequence[Message], model_cls: type[M]) -> M:
        """A validated `model_cls` instance, re-asking on malformed output."""
        ...


BACKENDS: Registry[ChatBackend] = Registry("chat-backend")


class ReplyBackend:
    """`complete` and `structured` for a backend that implements `reply`; `where` names it in errors."""

    name: str
    cfg: Any  # with max_reasks
    stats: dict[str, int]

    @property
    def where(self) -> str:
        raise NotImplementedError

    def reply(self, messages: Sequence[Message], schema: dict[str, Any] | None = None) -> Reply:
        raise NotImplementedError

    def complete(self, messages: Sequence[Message], schema: dict[str, Any] | None = None) -> str:
        return self.reply(messages, schema).text

    def structured(self, messages: Sequence[Message], model_cls: type[M]) -> M:
        return structured_reply(self, messages, model_cls, self.cfg.max_reasks, self.stats, self.where)


class OpenAIConfig(Config):
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "default"
    api_key_env: str = "OPENAI_API_KEY"  # read at call time; never stored in configs
    temperature: float = 0.3
    max_tokens: int = 4096
    timeout_s: float = 120.0  # waiting for the reply (stream: for the next event)
    stream: bool = False
    max_retries: int = 4  # connection errors, 5xx, 429; never a request that timed out once sent
    backoff_s: float = 1.0  # first wait; doubles each retry
    max_reasks: int = 2  # extra calls when the output is not valid JSON for the schema
    json_mode: Literal["json_schema", "json_object", "off"] = "json_schema"


class OpenAIBackend(ReplyBackend):
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

    def _send(self, url: str, body: dict[str, Any]) -> tuple[httpx.Response | None, str]:
        """(response, "") or (None, why) for a retryable failure; LLMError when not retryable."""
        request = self._http.build_request("POST", url, json=body, headers=self._headers())
        try:
            resp = self._http.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as err:
            return None, f"{type(err).__name__}: {err}"  # nothing reached the server: safe to retry
        except httpx.TimeoutException as err:
            raise self._timed_out(url, err) from None
        except httpx.TransportError as err:
            return None, f"{type(err).__name__}: {err}"
        if resp.status_code == 429 or resp.status_code >= 500:
            resp.read()
            resp.close()
            return None, f"HTTP {resp.status_code}: {resp.text[:200]}"
        if resp.status_code != 200:
            resp.read()
            resp.close()
            raise LLMError(f"{url}: HTTP {resp.status_code}: {resp.text[:300]}")
        return resp, ""

    def _timed_out(self, url: str, err: Exception) -> LLMError:
        return LLMError(
            f"{url}: timed out after {self.cfg.timeout_s:g} s ({type(err).__name__}); not retried, the "
            "server may still be computing it (raise --timeout, lower --max-tokens, or use --stream)"
        )

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        """The reply as one chat.completion object (assembled from the events when streaming)."""
        url = self.cfg.base_url.rstrip("/") + "/chat/completions"
        last = ""
        for attempt in range(self.cfg.max_retries + 1):
            if attempt:
                self.stats["retries"] += 1
                time.sleep(self.cfg.backoff_s * 2 ** (attempt - 1))
            self.stats["calls"] += 1
            resp, last = self._send(url, body)
            if resp is None:
                continue
            try:
                return _read_events(resp, url) if body.get("stream") else _read_json(resp, url)
            except httpx.TimeoutException as err:
                raise self._timed_out(url, err) from None
            except httpx.TransportError as err:
                raise LLMError(f"{url}: connection lost while reading the reply ({err})") from None
            finally:
                resp.close()
        raise LLMError(f"{url}: no answer after {self.cfg.max_retries + 1} tries ({last})")

    def reply(self, messages: Sequence[Message], schema: dict[str, Any] | None = None) -> Reply:
        body: dict[str, Any] = {
            "model": self.cfg.model,
            "messages": list(messages),
            "temperature": self.cfg.temperature,
            "max_tokens": self.cfg.max_tokens,
        }
        if self.cfg.stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        fmt = self._response_format(schema, str((schema or {}).get("title", "output")))
        if fmt:
            body["response_format"] = fmt
        start = time.monotonic()
        data = self._post(body)
        usage = data.get("usage") or {}  # token counts, when the server reports them
        self.stats["prompt_tokens"] += int(usage.get("prompt_tokens") or 0)
        self.stats["completion_tokens"] += int(usage.get("completion_tokens") or 0)
        try:
            choice = data["choices"][0]
            content = choice["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise LLMError(f"{self.cfg.base_url}: malformed chat reply: {str(data)[:200]}") from None
        return Reply.from_completion(data, content, start)

    @property
    def where(self) -> str:
        return f"{self.cfg.model} at {self.cfg.base_url}"


def _read_json(resp: httpx.Response, url: str) -> dict[str, Any]:
    resp.read()
    try:
        return resp.json()
    except ValueError:
        raise LLMError(f"{url}: reply is not JSON: {resp.text[:200]!r}") from None


def _events(resp: httpx.Response, url: str) -> Iterator[dict[str, Any]]:
    for line in resp.iter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            yield json.loads(data)
        except ValueError:
            raise LLMError(f"{url}: a stream event is not JSON: {data[:200]!r}") from None


def _read_events(resp: httpx.Response, url: str) -> dict[str, Any]:
    """Join the server-sent chunks of a streamed reply into one chat.completion object.

    Servers that ignore ``stream_options.include_usage`` (llama-cpp-python's) send no usage; the reply's
    tokens are then the content chunks, one token each on llama.cpp servers."""
    parts: list[str] = []
    finish, usage = None, None
    for event in _events(resp, url):
        usage = event.get("usage") or usage
        for choice in event.get("choices") or []:
            parts.append((choice.get("delta") or {}).get("content") or "")
            finish = choice.get("finish_reason") or finish
    if finish is None:
        raise LLMError(f"{url}: the stream ended without a finish reason (cut off?)")
    message = {"role": "assistant", "content": "".join(parts)}
    usage = usage or {"completion_tokens": sum(1 for p in parts if p)}
    return {"choices": [{"message": message, "finish_reason": finish}], "usage": usage}


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
