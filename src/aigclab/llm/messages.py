"""OpenAI chat messages: text parts and images as base64 PNG/JPEG data URLs."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from aigclab.io import load_image

__all__ = ["Message", "image_part", "image_to_data_url", "system_message", "text_messages", "user_message"]

Message = dict[str, Any]
ImageLike = np.ndarray | str | Path | bytes


def image_to_data_url(image: ImageLike, fmt: str = "PNG", max_side: int | None = None) -> str:
    """Encode an RGB array, image file or image bytes as a ``data:image/...;base64,`` URL."""
    rgb = image if isinstance(image, np.ndarray) else load_image(image)
    pil = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
    if max_side and max(pil.size) > max_side:
        pil.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    pil.save(buf, format=fmt, **({"quality": 85} if fmt.upper() == "JPEG" else {}))
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(buf.getvalue()).decode()}"


def image_part(image: ImageLike, detail: str = "auto", max_side: int | None = 768) -> dict[str, Any]:
    return {
        "type": "image_url",
        "image_url": {"url": image_to_data_url(image, max_side=max_side), "detail": detail},
    }


def user_message(text: str, images: Sequence[ImageLike] = ()) -> Message:
    """A user turn; with images the content becomes a list of parts (text first)."""
    if not images:
        return {"role": "user", "content": text}
    return {"role": "user", "content": [{"type": "text", "text": text}, *(image_part(im) for im in images)]}


def system_message(text: str) -> Message:
    return {"role": "system", "content": text}


def text_messages(messages: Sequence[Message], schema: dict[str, Any] | None = None) -> list[dict[str, str]]:
    """Messages as plain role/content strings for text-only models (ValueError on an image part);
    the JSON schema, if any, is appended to the last message as text."""
    import json

    out = []
    for msg in messages:
        content = msg["content"]
        if not isinstance(content, str):
            if any(part["type"] != "text" for part in content):
                raise ValueError("this model is text-only and a message has an image")
            content = "\n".join(part["text"] for part in content)
        out.append({"role": msg["role"], "content": content})
    if schema is not None and out:
        out[-1]["content"] += "\nReply with JSON matching this schema: " + json.dumps(schema)
    return out
