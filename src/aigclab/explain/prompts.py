"""ForenX-style forensic prompting: a prompt that directs a multimodal model to forgery-indicative attributes.

ForenX (arXiv 2508.01402) publishes only its abstract, so the prompt here is ours: the template is data
(``prompts/forenx.json``) covering the attribute families the field inspects, and the measured forensic
cues and the detector's probability are injected as hints. We chose to (1) ask for evidence per attribute
with optional boxes and a strength, so explanations can be checked for accuracy, relevance and
completeness, (2) warn against false accusations (as LOKI's judge prompt does), and (3) present tool
measurements as hints, not proof.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import numpy as np

from aigclab.explain.cues import Cue
from aigclab.llm import Message, system_message, user_message

__all__ = ["forensic_messages", "load_template"]


@cache
def load_template(name: str = "forenx") -> dict[str, Any]:
    ref = resources.files("aigclab.explain") / "prompts" / f"{name}.json"
    return json.loads(ref.read_text())


def _hint(cue: Cue, strength: float | None) -> str:
    s = f" (strength {strength:.2f})" if strength is not None else ""
    return f"- {cue.name}: {cue.finding}{s}"


def forensic_messages(
    image: np.ndarray,
    cues: dict[str, Cue],
    strengths: dict[str, float] | None = None,
    detector_probability: float | None = None,
    template: str = "forenx",
) -> list[Message]:
    """System + user messages (the image as a data URL) for the forensic analysis."""
    t = load_template(template)
    lines = [t["instructions"], "", "Attributes to examine:"]
    lines += [f"- {a['name']}: {a['look_for']}" for a in t["attributes"]]
    lines += ["", t["hints_header"]]
    lines += [_hint(c, (strengths or {}).get(n)) for n, c in cues.items()]
    if detector_probability is not None:
        lines.append(
            f"- a trained detector gives probability {detector_probability:.2f} that the image is AI-generated"
        )
    h, w = image.shape[:2]
    lines += ["", f"The image is {w}x{h} pixels.", t["output"]]
    return [system_message(t["system"]), user_message("\n".join(lines), images=[image])]
