"""Anomaly models: image -> quadruples, behind one interface (``anomaly-model`` registry).

- ``reasoner``: the trained anomaly reasoner (`explain.reasoner`; shipped weights or ``path=``).
- ``zero-shot-rule``: untrained and image-blind: it lists one generic quadruple for each anomaly kind of
  the taxonomy, all at confidence 0.5 (the "flag everything" rule: full recall of kinds, low precision).
- ``cues``: the cue explainer (no language model): each forensic evidence item with strength >= 0.5
  becomes a quadruple (`quadruples.from_explanation`); signal-level, so it cannot name semantic anomalies.
- ``openai`` / ``transformers``: a chat backend asked once per image with the ``anomreason`` prompt,
  output validated as `AnomalyReport` (a LoRA-tuned local VLM is used through ``transformers``).

Example:
    >>> from aigclab.explain.anomaly_models import create_anomaly_model
    >>> import numpy as np
    >>> [q.kind for q in create_anomaly_model("zero-shot-rule").predict([np.zeros((8, 8, 3), np.uint8)])[0]][:2]
    ['shadow_direction', 'floating']
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any, Protocol

import numpy as np

from aigclab._registry import Registry
from aigclab.explain.quadruples import AnomalyReport, Quadruple, from_explanation

__all__ = ["ANOMALY_MODELS", "AnomalyModel", "anomreason_messages", "create_anomaly_model"]


class AnomalyModel(Protocol):
    name: str

    def predict(self, images: list[np.ndarray]) -> list[list[Quadruple]]: ...


ANOMALY_MODELS: Registry[AnomalyModel] = Registry("anomaly-model")

_TAXONOMY = {
    "shadow_direction": (
        "a shadow",
        "a shadow falls toward the light source",
        "shadows fall away from the light",
    ),
    "floating": (
        "an object",
        "an object floats in the air without support",
        "gravity pulls unsupported objects down",
    ),
    "reflection_mismatch": (
        "a reflection",
        "a reflection does not match the object it mirrors",
        "reflections copy the object mirrored",
    ),
    "impossible_count": (
        "a counted object",
        "something has an impossible number of parts, such as a clock's marks",
        "some things have a fixed count",
    ),
    "scale_inconsistency": (
        "an object's size",
        "an object is far too large or small next to its neighbours",
        "objects at the same depth keep their real proportions",
    ),
    "garbled_text": ("text", "the text is garbled and unreadable", "real writing uses readable words"),
}


class ZeroShotRule:
    name = "zero-shot-rule"

    def predict(self, images: list[np.ndarray]) -> list[list[Quadruple]]:
        quads = [
            Quadruple(name=n, phenomenon=p, reasoning=r, severity=3, confidence=0.5, kind=k)
            for k, (n, p, r) in _TAXONOMY.items()
        ]
        return [list(quads) for _ in images]


class CueAnomalies:
    name = "cues"

    def __init__(self, detector: str = "default", min_strength: float = 0.5):
        from aigclab.detect.default import resolve_detector
        from aigclab.explain.explainer import CueExplainer

        self.detector, self.explainer, self.min_strength = (
            resolve_detector(detector),
            CueExplainer(),
            min_strength,
        )

    def predict(self, images: list[np.ndarray]) -> list[list[Quadruple]]:
        from aigclab.explain.explainer import explain_image

        return [
            from_explanation(explain_image(im, self.detector, self.explainer).explanation, self.min_strength)
            for im in images
        ]


def anomreason_messages(image: np.ndarray) -> list[dict[str, Any]]:
    """System + user messages of the one-call ``anomreason`` prompt (also the LoRA training prompt)."""
    from aigclab.llm import system_message, user_message

    t = json.loads((resources.files("aigclab.explain") / "prompts" / "anomreason.json").read_text())
    h, w = image.shape[:2]
    return [system_message(t["system"]), user_message(t["user"].format(width=w, height=h), images=[image])]


class ChatAnomalies:
    def __init__(self, backend: str, **backend_kwargs: Any):
        from aigclab.llm import create_backend

        self.name = backend
        self.backend = create_backend(backend, **backend_kwargs)

    def predict(self, images: list[np.ndarray]) -> list[list[Quadruple]]:
        return [self.backend.structured(anomreason_messages(im), AnomalyReport).anomalies for im in images]


@ANOMALY_MODELS.register("reasoner")
def reasoner_model(path: str | None = None) -> AnomalyModel:
    from aigclab.explain.reasoner import load_reasoner

    return load_reasoner(path)


@ANOMALY_MODELS.register("zero-shot-rule")
def zero_shot_rule() -> ZeroShotRule:
    return ZeroShotRule()


@ANOMALY_MODELS.register("cues")
def cue_anomalies(detector: str = "default") -> CueAnomalies:
    return CueAnomalies(detector)


@ANOMALY_MODELS.register("openai")
def openai_anomalies(**backend_kwargs: Any) -> ChatAnomalies:
    return ChatAnomalies("openai", **backend_kwargs)


@ANOMALY_MODELS.register("transformers")
def transformers_anomalies(**backend_kwargs: Any) -> ChatAnomalies:
    return ChatAnomalies("transformers", **backend_kwargs)


def create_anomaly_model(name: str, **kwargs: Any) -> AnomalyModel:
    return ANOMALY_MODELS.create(name, **kwargs)
