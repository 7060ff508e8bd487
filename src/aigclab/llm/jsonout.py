"""Get JSON out of model text: the whole reply, a fenced block, or the first balanced ``{...}``."""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

__all__ = ["extract_json", "parse_model"]

M = TypeVar("M", bound=BaseModel)
_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


def _balanced_objects(text: str) -> list[str]:
    """Every top-level ``{...}`` span, respecting strings and escapes."""
    spans, depth, start, in_str, esc = [], 0, -1, False, False
    for i, ch in enumerate(text):
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
            continue
        if ch == '"' and depth:
            in_str = True
        elif ch == "{":
            start = i if depth == 0 else start
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                spans.append(text[start : i + 1])
    return spans


def extract_json(text: str) -> dict[str, Any]:
    """The first JSON object found in `text`; raises ValueError when there is none."""
    candidates = [text.strip(), *(m.strip() for m in _FENCE.findall(text)), *_balanced_objects(text)]
    for cand in candidates:
        try:
            obj = json.loads(cand)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return obj
    raise ValueError(f"no JSON object in model output: {text[:200]!r}")


def parse_model(text: str, model_cls: type[M]) -> M:
    """Extract JSON from `text` and validate it; raises ValueError with the reason."""
    data = extract_json(text)
    try:
        return model_cls.model_validate(data)
    except ValidationError as err:
        raise ValueError(f"output does not match {model_cls.__name__}: {err}") from None
