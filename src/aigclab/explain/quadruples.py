"""AnomReason quadruples: one semantic anomaly as (Name, Phenomenon, Reasoning, Severity).

AnomReason (arXiv 2510.10231) annotates the semantic anomalies of an image as quadruples; only the
four field names are public, so the meanings and the severity scale below are ours.

- ``name``: the object or part concerned, a short noun phrase ("the clock", "the left tree's shadow").
- ``phenomenon``: what is seen that is wrong, concretely ("the clock face has 13 hour marks").
- ``reasoning``: why that is implausible in the real world ("clocks have 12 hour marks").
- ``severity`` (integer 1-5, `SEVERITY_SCALE`): 1 subtle, visible only on close inspection; 2 minor;
  3 noticeable at a normal look; 4 obvious; 5 severe, it breaks the scene.
- optional ``region`` [x0, y0, x1, y1] in pixels, optional ``confidence`` in [0, 1] (a model's score;
  it ranks predictions for SemAP), optional ``kind`` (a category such as ``floating``; AnomReason-Mini
  and the reasoner fill it; per-kind scores use it).

`Quadruple` is the pydantic schema every backend (the reasoner, AnomAgent's chat agents, a LoRA-tuned
VLM) returns and that ground truth is stored in; `AnomalyReport` wraps a list for one image.

Example:
    >>> q = Quadruple(name="the clock", phenomenon="13 hour marks", reasoning="clocks have 12", severity=3)
    >>> q.text()
    'the clock: 13 hour marks'
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aigclab.errors import DataError

__all__ = [
    "SEVERITY_SCALE",
    "AnomalyReport",
    "ImageAnomalies",
    "Quadruple",
    "from_explanation",
    "read_quadruples",
    "write_quadruples",
]

SEVERITY_SCALE: dict[int, str] = {
    1: "subtle: visible only on close inspection",
    2: "minor: noticed when looking at that object",
    3: "noticeable: seen at a normal look at the image",
    4: "obvious: catches the eye at once",
    5: "severe: breaks the plausibility of the whole scene",
}


class Quadruple(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="the object or part concerned, a short noun phrase")
    phenomenon: str = Field(min_length=1, description="what is seen that is wrong, concretely")
    reasoning: str = Field(description="why it is implausible in the real world")
    severity: int = Field(ge=1, le=5, description="1 subtle, 2 minor, 3 noticeable, 4 obvious, 5 severe")
    region: list[int] | None = Field(
        default=None, min_length=4, max_length=4, description="optional box [x0, y0, x1, y1] in pixels"
    )
    confidence: float | None = Field(default=None, ge=0.0, le=1.0, description="the model's confidence")
    kind: str | None = Field(default=None, description="optional anomaly category, e.g. 'floating'")

    def text(self, fields: tuple[str, ...] = ("name", "phenomenon")) -> str:
        """The text that semantic matching embeds: the chosen fields joined by ': '."""
        return ": ".join(str(getattr(self, f)) for f in fields)


class AnomalyReport(BaseModel):
    """What an anomaly model returns for one image (also the JSON schema the chat agents answer in)."""

    model_config = ConfigDict(extra="forbid")
    anomalies: list[Quadruple]


class ImageAnomalies(BaseModel):
    """One JSONL record: an image (path or id) and its quadruples."""

    model_config = ConfigDict(extra="forbid")
    image: str
    anomalies: list[Quadruple]
    meta: dict[str, Any] = Field(default_factory=dict)


def write_quadruples(path: str | Path, records: Iterable[ImageAnomalies]) -> int:
    """Write one JSON object per image; returns the number written."""
    n = 0
    with Path(path).open("w") as f:
        for rec in records:
            f.write(rec.model_dump_json(exclude_none=True) + "\n")
            n += 1
    return n


def read_quadruples(path: str | Path) -> list[ImageAnomalies]:
    """Read and validate a quadruple JSONL file; errors name the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: not a regular file")
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(ImageAnomalies.model_validate_json(line))
        except ValidationError as err:
            raise DataError(f"{path}:{i}: not an anomaly record ({err.errors()[0]['msg']})") from None
    return out


def from_explanation(explanation: Any, min_strength: float = 0.5) -> list[Quadruple]:
    """Quadruples from an `Explanation` (e.g. the cue backend's): one per evidence item at `min_strength`.

    The evidence's attribute becomes the name, its finding the phenomenon; strength maps to severity
    1 + round(4 * strength) and to the confidence.
    """
    out = []
    for ev in explanation.evidence:
        if ev.strength < min_strength:
            continue
        out.append(
            Quadruple(
                name=ev.attribute,
                phenomenon=ev.finding,
                reasoning=f"{ev.attribute} evidence with strength {ev.strength:.2f} points to generation",
                severity=1 + round(4 * ev.strength),
                region=ev.region,
                confidence=ev.strength,
            )
        )
    return out
