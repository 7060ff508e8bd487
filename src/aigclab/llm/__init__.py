"""Chat-model backends shared by the parts that talk to LLMs/MLLMs (gamegym judges, explain).

A backend has two methods: ``complete(messages, schema=None) -> str`` and
``structured(messages, model_cls) -> model``. Messages use the OpenAI chat shape; build them with
:func:`user_message` (text plus images as base64 data URLs) and :func:`system_message`.

Example:
    >>> from aigclab.llm import create_backend, user_message
    >>> backend = create_backend("openai", base_url="http://127.0.0.1:8000/v1")  # doctest: +SKIP
    >>> backend.complete([user_message("Say hi")])  # doctest: +SKIP
    'hi'
"""

from __future__ import annotations

from aigclab.llm import llamacpp, local_hf
from aigclab.llm.backends import (
    BACKENDS,
    ChatBackend,
    LLMError,
    OpenAIBackend,
    OpenAIConfig,
    Reply,
    create_backend,
    list_backends,
)
from aigclab.llm.jsonout import extract_json, parse_model
from aigclab.llm.messages import Message, image_part, image_to_data_url, system_message, user_message

__all__ = [
    "BACKENDS",
    "ChatBackend",
    "LLMError",
    "Message",
    "OpenAIBackend",
    "OpenAIConfig",
    "Reply",
    "create_backend",
    "extract_json",
    "image_part",
    "image_to_data_url",
    "list_backends",
    "llamacpp",
    "local_hf",
    "parse_model",
    "system_message",
    "user_message",
]
