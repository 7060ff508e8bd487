"""Read TensorFlow.js Layers models packed as browserify bundles (as the npm package ``nsfwjs`` ships them).

A bundle ``model.min.js`` holds the ``model.json`` object as a minified JavaScript object literal
(unquoted keys, ``!0``/``!1`` for booleans, ``.5`` numbers); each weight shard
``group1-shardKofN.min.js`` holds one base64 string. Weights are quantised per tensor to uint8, and
TensorFlow.js dequantises them as ``float32(q * scale + min)`` with ``scale``/``min`` as doubles.

Nothing here evaluates JavaScript: a small literal parser reads only the data.

Example:
    >>> parse_js_literal('{a:[1,.5,-2e-1],b:!0,"c":null,d:"x\\\\"y"}')
    {'a': [1, 0.5, -0.2], 'b': True, 'c': None, 'd': 'x"y'}
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from aigclab.errors import DataError

__all__ = ["QuantTensor", "decode_weights", "parse_js_literal", "read_bundle_export"]

_NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_IDENT = re.compile(r"[A-Za-z_$][\w$]*")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_EXPORT = re.compile(r"\{1:\[function\((\w+),(\w+),(\w+)\)\{(\w+)\.exports=")


class _Parser:
    def __init__(self, text: str, pos: int = 0):
        self.text, self.pos = text, pos

    def fail(self, what: str) -> DataError:
        snippet = self.text[self.pos : self.pos + 30]
        return DataError(f"JavaScript literal: expected {what} at offset {self.pos} ({snippet!r})")

    def value(self) -> Any:
        text, pos = self.text, self.pos
        ch = text[pos : pos + 1]
        if ch == "{":
            return self.obj()
        if ch == "[":
            return self.arr()
        if ch == '"':
            m = _STRING.match(text, pos)
            if m is None:
                raise self.fail("a closed string")
            self.pos = m.end()
            return json.loads(m.group(0))
        if text.startswith("!0", pos) or text.startswith("!1", pos):
            self.pos += 2
            return text[pos + 1] == "0"
        for word, val in (("null", None), ("true", True), ("false", False)):
            if text.startswith(word, pos):
                self.pos += len(word)
                return val
        m = _NUMBER.match(text, pos)
        if m is None:
            raise self.fail("a value")
        self.pos = m.end()
        s = m.group(0)
        return int(s) if s.lstrip("-").isdigit() else float(s)

    def expect(self, ch: str) -> None:
        if self.text[self.pos : self.pos + 1] != ch:
            raise self.fail(repr(ch))
        self.pos += 1

    def obj(self) -> dict[str, Any]:
        self.expect("{")
        out: dict[str, Any] = {}
        while self.text[self.pos : self.pos + 1] != "}":
            if self.text[self.pos : self.pos + 1] == '"':
                key = self.value()
            else:
                m = _IDENT.match(self.text, self.pos)
                if m is None:
                    raise self.fail("a key")
                key, self.pos = m.group(0), m.end()
            self.expect(":")
            out[key] = self.value()
            if self.text[self.pos : self.pos + 1] == ",":
                self.pos += 1
        self.pos += 1
        return out

    def arr(self) -> list[Any]:
        self.expect("[")
        out: list[Any] = []
        while self.text[self.pos : self.pos + 1] != "]":
            out.append(self.value())
            if self.text[self.pos : self.pos + 1] == ",":
                self.pos += 1
        self.pos += 1
        return out


def parse_js_literal(text: str, pos: int = 0) -> Any:
    """Parse one minified JavaScript data literal (object, array, string, number, boolean, null)."""
    return _Parser(text, pos).value()


def read_bundle_export(text: str, name: str = "bundle") -> Any:
    """The value that module 1 of a browserify bundle assigns to ``module.exports``."""
    m = _EXPORT.search(text)
    if m is None or m.group(4) != m.group(2):
        raise DataError(f"{name}: not a browserify bundle exporting a literal")
    try:
        return parse_js_literal(text, m.end())
    except DataError as err:
        raise DataError(f"{name}: {err}") from None


@dataclass(frozen=True)
class QuantTensor:
    """One uint8-quantised weight: ``float32(q * scale + min)`` (the TensorFlow.js rule)."""

    q: np.ndarray  # uint8, Keras layout
    min: float
    scale: float

    def dequantize(self) -> np.ndarray:
        return (self.q.astype(np.float64) * self.scale + self.min).astype(np.float32)


def decode_weights(manifest: list[dict[str, Any]], shards: dict[str, str]) -> dict[str, QuantTensor]:
    """Keras weight name -> `QuantTensor` from a ``weightsManifest`` and its base64 shard strings."""
    out: dict[str, QuantTensor] = {}
    for group in manifest:
        try:
            data = b"".join(base64.b64decode(shards[p], validate=True) for p in group["paths"])
        except KeyError as err:
            raise DataError(f"weight shard {err} is missing") from None
        offset = 0
        for spec in group["weights"]:
            quant = spec.get("quantization") or {}
            if spec.get("dtype") != "float32" or quant.get("dtype") != "uint8":
                raise DataError(f"weight {spec.get('name')!r}: only uint8-quantised float32 is supported")
            shape = tuple(int(s) for s in spec["shape"])
            size = int(np.prod(shape)) if shape else 1
            if offset + size > len(data):
                raise DataError(f"weight {spec['name']!r}: shard data ends early")
            q = np.frombuffer(data, np.uint8, size, offset).reshape(shape).copy()
            out[spec["name"]] = QuantTensor(q, float(quant["min"]), float(quant["scale"]))
            offset += size
        if offset != len(data):
            raise DataError(f"weight group {group['paths']}: {len(data) - offset} bytes left over")
    return out
