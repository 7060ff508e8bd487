"""``transformers`` chat backend: a local Hugging Face vision-language model directory, nothing downloaded.

Messages in the OpenAI shape are converted to the processor's chat format: text parts stay text and
``data:`` image URLs are decoded back to images. Decoding is greedy, so replies are repeatable.

Example:
    >>> from aigclab.llm import create_backend
    >>> vlm = create_backend("transformers", model_path="/models/qwen2-vl-2b")  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image
from pydantic import BaseModel

from aigclab._config import Config
from aigclab.errors import ConfigError
from aigclab.llm.backends import BACKENDS, LLMError, structured_reply
from aigclab.llm.messages import Message

__all__ = ["TransformersBackend", "TransformersConfig", "to_hf_conversation"]

M = TypeVar("M", bound=BaseModel)


class TransformersConfig(Config):
    model_path: str
    max_new_tokens: int = 1024
    device: str = "cpu"
    max_reasks: int = 2


def _decode_data_url(url: str) -> Image.Image:
    if not url.startswith("data:image/"):
        raise LLMError(f"the transformers backend takes images as data URLs only, got {url[:40]!r}")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")


def to_hf_conversation(
    messages: Sequence[Message], schema: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """OpenAI-shaped messages -> the chat format of Hugging Face processors (images as PIL)."""
    conv = []
    for msg in messages:
        content = msg["content"]
        parts: list[dict[str, Any]] = []
        if isinstance(content, str):
            parts.append({"type": "text", "text": content})
        else:
            for part in content:
                if part["type"] == "text":
                    parts.append({"type": "text", "text": part["text"]})
                elif part["type"] == "image_url":
                    parts.append({"type": "image", "image": _decode_data_url(part["image_url"]["url"])})
        conv.append({"role": msg["role"], "content": parts})
    if schema is not None and conv:
        conv[-1]["content"].append(
            {"type": "text", "text": "Reply with JSON matching this schema: " + json.dumps(schema)}
        )
    return conv


class TransformersBackend:
    name = "transformers"

    def __init__(self, cfg: TransformersConfig):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        path = Path(cfg.model_path)
        if not path.is_dir():
            raise ConfigError(
                f"{path}: not a local model directory (the transformers backend never downloads)"
            )
        self.cfg = cfg
        self.stats = {"calls": 0, "retries": 0, "reasks": 0}
        self.processor = AutoProcessor.from_pretrained(path, local_files_only=True)
        model = AutoModelForImageTextToText.from_pretrained(path, local_files_only=True, use_safetensors=True)
        self.model = model.to(cfg.device).eval()  # type: ignore[arg-type]

    def complete(self, messages: Sequence[Message], schema: dict[str, Any] | None = None) -> str:
        import torch

        self.stats["calls"] += 1
        inputs = self.processor.apply_chat_template(
            to_hf_conversation(messages, schema),
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
        ).to(self.cfg.device)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.cfg.max_new_tokens, do_sample=False)
        return self.processor.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)

    def structured(self, messages: Sequence[Message], model_cls: type[M]) -> M:
        return structured_reply(
            self, messages, model_cls, self.cfg.max_reasks, self.stats, self.cfg.model_path
        )


@BACKENDS.register("transformers")
def transformers_backend(**overrides: Any) -> TransformersBackend:
    """A local vision-language model; `overrides` are :class:`TransformersConfig` fields."""
    return TransformersBackend(TransformersConfig._validate(overrides, "transformers chat backend"))
