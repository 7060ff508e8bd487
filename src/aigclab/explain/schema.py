"""The structured output every explanation backend returns, validated with pydantic."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ATTRIBUTES", "Evidence", "Explanation", "Verdict"]

ATTRIBUTES = (
    "lighting and shadows",
    "geometry and perspective",
    "anatomy",
    "texture and high-frequency detail",
    "text and symbols",
    "edges and blending",
    "physics and commonsense",
    "compression and noise",
    "colour",
    "detector attribution",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Verdict(_Strict):
    label: Literal["real", "fake", "uncertain"]
    probability: float = Field(ge=0.0, le=1.0, description="probability that the image is AI-generated")


class Evidence(_Strict):
    attribute: str = Field(description="the attribute family, e.g. 'lighting and shadows'")
    finding: str = Field(description="what was observed, concretely")
    region: list[int] | None = Field(default=None, description="optional box [x0, y0, x1, y1] in pixels")
    strength: float = Field(ge=0.0, le=1.0, description="how strongly this points to generation")


class Explanation(_Strict):
    verdict: Verdict
    evidence: list[Evidence]
    summary: str
