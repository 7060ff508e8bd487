"""Explain one image: verdict, forensic evidence and a readable summary, from a pluggable backend.

Backends (``explainer`` registry):
- ``cues`` (embedded default, no language model): the verdict is the detector's; the evidence is the
  measured cues ranked by how unusual they are against real photographs, plus the detector's attribution
  region; the summary says plainly that no language model was involved.
- ``openai``: any OpenAI-compatible multimodal chat server (vLLM, Ollama, OpenAI), prompted with the
  ForenX-style forensic prompt and the cues as hints; output validated against `Explanation`.
- ``transformers``: a local Hugging Face vision-language model directory, same prompt and schema.

Example:
    >>> from aigclab.explain import explain_image  # doctest: +SKIP
    >>> result = explain_image(image, backend="cues")  # doctest: +SKIP
    >>> result.explanation.summary  # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from aigclab._registry import Registry
from aigclab.explain.cues import Cue, attribution_map, compute_cues
from aigclab.explain.prompts import forensic_messages
from aigclab.explain.reference import strength
from aigclab.explain.schema import Evidence, Explanation, Verdict

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "EXPLAINERS",
    "ExplainResult",
    "create_explainer",
    "explain_image",
    "heatmap_overlay",
    "save_heatmap",
]


class Explainer(Protocol):
    name: str

    def explain(
        self,
        image: np.ndarray,
        cues: dict[str, Cue],
        strengths: dict[str, float],
        probability: float,
        region: list[int] | None,
        label: str = "",
    ) -> Explanation: ...


EXPLAINERS: Registry[Explainer] = Registry("explainer")

_ATTRIBUTE = {
    "spectral_peaks": "texture and high-frequency detail",
    "noise_residual": "compression and noise",
    "jpeg_grid": "compression and noise",
    "colour": "colour",
}


class CueExplainer:
    """Composes the explanation from the cues and the detector; no language model."""

    name = "cues"

    def explain(self, image, cues, strengths, probability, region, label=""):  # type: ignore[no-untyped-def]
        """`label` is the detector's verdict at its calibrated threshold (default: 0.5)."""
        evidence = [
            Evidence(attribute=_ATTRIBUTE[n], finding=c.finding, strength=round(strengths[n], 3))
            for n, c in sorted(cues.items(), key=lambda kv: -strengths[kv[0]])
        ]
        if region is not None:
            evidence.insert(
                0,
                Evidence(
                    attribute="detector attribution",
                    region=region,
                    strength=round(probability, 3),
                    finding="the detector's evidence is concentrated in this region (see the heat map)",
                ),
            )
        label = label or ("fake" if probability >= 0.5 else "real")
        top = [e for e in evidence if e.attribute != "detector attribution" and e.strength >= 0.8]
        unusual = "; ".join(
            f"{e.finding} (stronger than {100 * e.strength:.0f}% of real photos)" for e in top[:2]
        )
        summary = (
            f"The embedded detector puts the probability that this image is AI-generated at {probability:.2f}, "
            f"so it is judged {label}. "
            + (
                f"Signal-level evidence that stands out: {unusual}. "
                if unusual
                else "No signal-level cue is unusual compared with real photographs. "
            )
            + "No language model was used: this explanation is composed from measured forensic cues "
            "and the detector's attribution map, so it cannot comment on semantic content."
        )
        return Explanation(
            verdict=Verdict(label=label, probability=round(probability, 4)),
            evidence=evidence,
            summary=summary,
        )


class ChatExplainer:
    """Asks a multimodal chat backend (see `aigclab.llm`) with the forensic prompt."""

    def __init__(self, backend: str, **backend_kwargs: Any):
        from aigclab.llm import create_backend

        self.name = backend
        self.backend = create_backend(backend, **backend_kwargs)

    def explain(self, image, cues, strengths, probability, region, label=""):  # type: ignore[no-untyped-def]
        msgs = forensic_messages(image, cues, strengths, probability)
        return self.backend.structured(msgs, Explanation)


@EXPLAINERS.register("cues")
def cues_explainer() -> CueExplainer:
    return CueExplainer()


@EXPLAINERS.register("openai")
def openai_explainer(**backend_kwargs: Any) -> ChatExplainer:
    return ChatExplainer("openai", **backend_kwargs)


@EXPLAINERS.register("transformers")
def transformers_explainer(**backend_kwargs: Any) -> ChatExplainer:
    return ChatExplainer("transformers", **backend_kwargs)


def create_explainer(name: str, **kwargs: Any) -> Explainer:
    return EXPLAINERS.create(name, **kwargs)


@dataclass
class ExplainResult:
    explanation: Explanation
    detector_probability: float
    cues: dict[str, Cue]
    strengths: dict[str, float]
    heatmap: np.ndarray
    backend: str
    latency_ms: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        return {
            "explanation": self.explanation.model_dump(),
            "detector_probability": self.detector_probability,
            "cues": {
                n: {"score": c.score, "finding": c.finding, "strength": self.strengths[n], **c.values}
                for n, c in self.cues.items()
            },
            "backend": self.backend,
            "latency_ms": self.latency_ms,
            **self.extra,
        }


def _top_region(heat: np.ndarray, frac: float = 0.25) -> list[int] | None:
    if not heat.any():
        return None
    ys, xs = np.nonzero(heat >= np.quantile(heat, 1 - frac))
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def explain_image(
    image: np.ndarray, detector: Any, explainer: Explainer, reference: dict[str, Any] | None = None
) -> ExplainResult:
    """Detector score + cues + attribution map, then the backend's explanation.

    `reference` is the cue reference (default: the shipped one, see `explain.reference`).
    """
    t0 = time.perf_counter()
    size = detector.patch_size
    probability = float(detector.score([image])[0])
    cues = compute_cues(image, size)
    strengths = {n: strength(n, c.score, reference) for n, c in cues.items()}
    heat = attribution_map(image, detector.score, size)
    verdicts = getattr(detector, "verdicts", None)  # the detector's calibrated threshold and band
    label = verdicts([probability])[0] if verdicts is not None else ""
    explanation = explainer.explain(image, cues, strengths, probability, _top_region(heat), label)
    return ExplainResult(
        explanation, probability, cues, strengths, heat, explainer.name, 1000 * (time.perf_counter() - t0)
    )


def heatmap_overlay(image: np.ndarray, heat: np.ndarray) -> Image.Image:
    """The image with the attribution map overlaid (jet colour map, 45% opacity); small ones enlarged."""
    from matplotlib import colormaps
    from PIL import Image

    rgb = (colormaps["jet"](heat)[..., :3] * 255).astype(np.float64)
    out = (0.55 * image.astype(np.float64) + 0.45 * rgb).clip(0, 255).astype(np.uint8)
    scale = max(1, 256 // max(image.shape[:2]))
    pil = Image.fromarray(out)
    if scale > 1:
        pil = pil.resize((out.shape[1] * scale, out.shape[0] * scale), Image.Resampling.NEAREST)
    return pil


def save_heatmap(path: str | Path, image: np.ndarray, heat: np.ndarray) -> Path:
    """`heatmap_overlay` saved as PNG."""
    heatmap_overlay(image, heat).save(path)
    return Path(path)
