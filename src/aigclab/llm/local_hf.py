"""``transformers`` chat backend: a local Hugging Face model directory, nothing downloaded.

A vision-language model (its config has a ``vision_config``) gets messages in the processor's chat
format: text parts stay text and ``data:`` image URLs are decoded back to images. A text-only causal
LM (e.g. a code model) gets plain role/content strings through its tokenizer's chat template; a
``.gguf`` file is dequantised by transformers (needs the ``gguf`` package; slow and large on CPU,
the ``llamacpp`` backend runs such files natively). Decoding is greedy, so replies are repeatable.

Example:
    >>> from aigclab.llm import create_backend
    >>> vlm = create_backend("transformers", model_path="/models/qwen2-vl-2b")  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image
from pydantic import BaseModel

from aigclab._config import Config
from aigclab.errors import ConfigError
from aigclab.llm.backends import BACKENDS, LLMError, Reply, ReplyBackend
from aigclab.llm.messages import Message, text_messages

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


class TransformersBackend(ReplyBackend):
    name = "transformers"

    def __init__(self, cfg: TransformersConfig):
        from transformers import AutoConfig

        path = Path(cfg.model_path)
        gguf = path.suffix == ".gguf" and path.is_file()
        if not (path.is_dir() or gguf):
            raise ConfigError(
                f"{path}: not a local model directory or .gguf file (the transformers backend never downloads)"
            )
        self.cfg = cfg
        self.stats = {"calls": 0, "retries": 0, "reasks": 0}
        folder, extra = (path.parent, {"gguf_file": path.name}) if gguf else (path, {})
        config = AutoConfig.from_pretrained(folder, local_files_only=True, **extra)
        self.vision = hasattr(config, "vision_config")
        weights: dict[str, Any] = {**extra} if extra else {"use_safetensors": True}  # never a pickle
        if self.vision:
            from transformers import AutoModelForImageTextToText, AutoProcessor

            self.processor = AutoProcessor.from_pretrained(folder, local_files_only=True, **extra)
            model = AutoModelForImageTextToText.from_pretrained(folder, local_files_only=True, **weights)
        else:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            self.processor = AutoTokenizer.from_pretrained(folder, local_files_only=True, **extra)
            model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, **weights)
        self.model = model.to(cfg.device).eval()  # type: ignore[arg-type]

    def _inputs(self, messages: Sequence[Message], schema: dict[str, Any] | None) -> Any:
        if self.vision:
            conv: list[dict[str, Any]] = to_hf_conversation(messages, schema)
        else:
            try:
                conv = text_messages(messages, schema)  # type: ignore[assignment]
            except ValueError as err:
                raise LLMError(f"{self.cfg.model_path}: {err}") from None
        return self.processor.apply_chat_template(
            conv, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        ).to(self.cfg.device)

    def reply(self, messages: Sequence[Message], schema: dict[str, Any] | None = None) -> Reply:
        import torch

        self.stats["calls"] += 1
        start = time.monotonic()
        inputs = self._inputs(messages, schema)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.cfg.max_new_tokens, do_sample=False)
        n_prompt = inputs["input_ids"].shape[1]
        new = out[0, n_prompt:]
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos])
        stopped = len(new) > 0 and int(new[-1]) in eos_ids
        return Reply(
            text=self.processor.decode(new, skip_special_tokens=True),
            finish_reason="length" if len(new) >= self.cfg.max_new_tokens and not stopped else "stop",
            seconds=round(time.monotonic() - start, 3),
            prompt_tokens=int(n_prompt),
            completion_tokens=len(new),
        )

    @property
    def where(self) -> str:
        return str(self.cfg.model_path)


@BACKENDS.register("transformers")
def transformers_backend(**overrides: Any) -> TransformersBackend:
    """A local vision-language or text-only causal LM; `overrides` are :class:`TransformersConfig` fields."""
    return TransformersBackend(TransformersConfig._validate(overrides, "transformers chat backend"))
