"""AnomAgent: a pipeline of small chat agents that annotates semantic anomalies as quadruples.

AnomReason (arXiv 2510.10231) describes AnomAgent only as "a modular multi-agent pipeline with
lightweight human-in-the-loop verification"; the roles here are ours. Five steps run per image, each a
prompt file in ``explain/prompts/anomagent_<step>.json`` with a pydantic output schema, on any chat
backend of `aigclab.llm` (OpenAI-compatible server, local transformers model):

1. ``describe`` (image) -> objects and a scene description;
2. ``propose`` (image, description) -> candidate anomalies (name, phenomenon, optional box);
3. ``reason`` (image, candidates) -> one reasoning per candidate;
4. ``rate`` (candidates with reasoning) -> a severity per candidate on the 1-5 scale;
5. ``critic`` (image, draft quadruples) -> keep or drop each, with a confidence.

The kept quadruples become *proposals* in the `AnnotationStore`, waiting for human review.

Every step is stored (one row per image and step) with the hash of its prompt file, the model, tokens,
cost and an ``input_key`` over everything it depends on. A rerun reuses a stored step whose key is
unchanged, so a killed run resumes where it stopped, and editing one prompt reruns that step and the
steps whose inputs then change, nothing else. A step that fails (server down, invalid output after the
backend's re-asks) is stored as an error, the image is skipped and the batch goes on.

Example:
    >>> from aigclab.explain.anomagent import AnomAgent  # doctest: +SKIP
    >>> agent = AnomAgent(create_backend("openai", base_url=url), AnnotationStore("ann.db"))  # doctest: +SKIP
    >>> agent.run(["img1.png", "img2.png"])  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from aigclab._config import Config
from aigclab.explain.annotation_store import AnnotationStore
from aigclab.explain.quadruples import Quadruple
from aigclab.llm import LLMError, Message, system_message, user_message

__all__ = ["STEPS", "AgentConfig", "AnomAgent", "load_prompt", "prompt_hash"]


class SceneDescription(BaseModel):
    objects: list[str]
    description: str


class Candidate(BaseModel):
    name: str = Field(min_length=1)
    phenomenon: str = Field(min_length=1)
    region: list[int] | None = Field(default=None, min_length=4, max_length=4)


class Proposals(BaseModel):
    candidates: list[Candidate]


class Reasons(BaseModel):
    reasons: list[str]


class Severities(BaseModel):
    severities: list[int] = Field(description="1-5 per candidate")


class Verdicts(BaseModel):
    keep: list[bool]
    confidence: list[float]


# step -> (schema, the earlier steps whose outputs it reads)
STEPS: dict[str, tuple[type[BaseModel], tuple[str, ...]]] = {
    "describe": (SceneDescription, ()),
    "propose": (Proposals, ("describe",)),
    "reason": (Reasons, ("propose",)),
    "rate": (Severities, ("propose", "reason")),
    "critic": (Verdicts, ("propose", "reason", "rate")),
}


_EMPTY: dict[str, dict[str, list[Any]]] = {
    "reason": {"reasons": []},
    "rate": {"severities": []},
    "critic": {"keep": [], "confidence": []},
}


class AgentConfig(Config):
    model: str = "default"  # recorded in the store; part of every step's input key
    price_prompt_per_1k: float = 0.0  # USD per 1,000 prompt tokens
    price_completion_per_1k: float = 0.0
    max_side: int = 768  # images are sent at most this large


@cache
def _prompt_text(step: str) -> str:
    return (resources.files("aigclab.explain") / "prompts" / f"anomagent_{step}.json").read_text()


def load_prompt(step: str, prompt_dir: Path | None = None) -> dict[str, Any]:
    """The prompt of `step`: ``prompt_dir/anomagent_<step>.json`` when given and present, else the shipped one."""
    if prompt_dir is not None and (prompt_dir / f"anomagent_{step}.json").is_file():
        return json.loads((prompt_dir / f"anomagent_{step}.json").read_text())
    return json.loads(_prompt_text(step))


def prompt_hash(prompt: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(prompt, sort_keys=True).encode()).hexdigest()[:16]


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _numbered(items: Sequence[str]) -> str:
    return "\n".join(f"{i + 1}. {t}" for i, t in enumerate(items)) or "(none)"


def _format_inputs(step: str, outs: dict[str, Any], w: int, h: int) -> dict[str, Any]:
    fmt: dict[str, Any] = {"width": w, "height": h}
    if step == "propose":
        fmt |= {
            "description": outs["describe"]["description"],
            "objects": "; ".join(outs["describe"]["objects"]),
        }
    if step in ("reason", "rate", "critic"):
        cands = outs["propose"]["candidates"]
        lines = [
            f"{c['name']}: {c['phenomenon']}" + (f" at {c['region']}" if c.get("region") else "")
            for c in cands
        ]
        if step in ("rate", "critic"):
            lines = [f"{ln}. Reasoning: {r}" for ln, r in zip(lines, outs["reason"]["reasons"], strict=True)]
        if step == "critic":
            lines = [f"{ln} Severity: {s}" for ln, s in zip(lines, outs["rate"]["severities"], strict=True)]
        fmt |= {"candidates": _numbered(lines), "n": len(cands)}
    return fmt


def _check_lengths(step: str, out: BaseModel, outs: dict[str, Any]) -> None:
    if step not in ("reason", "rate", "critic"):
        return
    n = len(outs["propose"]["candidates"])
    lists = {k: v for k, v in out.model_dump().items() if isinstance(v, list)}
    bad = {k: len(v) for k, v in lists.items() if len(v) != n}
    if bad:
        raise LLMError(f"step {step} answered {bad} entries for {n} candidates")
    if step == "rate" and any(not 1 <= s <= 5 for s in out.model_dump()["severities"]):
        raise LLMError(f"step rate gave severities outside 1-5: {out.model_dump()['severities']}")


class AnomAgent:
    """Runs the five steps over images, storing each step; `run` returns a summary."""

    def __init__(
        self,
        backend: Any,
        store: AnnotationStore,
        cfg: AgentConfig | None = None,
        prompt_dir: Path | None = None,
    ):
        self.backend, self.store = backend, store
        self.cfg = cfg or AgentConfig()
        self.prompts = {s: load_prompt(s, prompt_dir) for s in STEPS}
        self.hashes = {s: prompt_hash(p) for s, p in self.prompts.items()}

    def _messages(self, step: str, fmt: dict[str, Any], image: np.ndarray) -> list[Message]:
        p = self.prompts[step]
        from aigclab.llm.messages import image_part

        user = user_message(p["user"].format(**fmt))
        if p.get("image"):
            user["content"] = [
                {"type": "text", "text": user["content"]},
                image_part(image, max_side=self.cfg.max_side),
            ]
        return [system_message(p["system"]), user]

    def _record(self, image_id: str, step: str, input_key: str, **fields: Any) -> None:
        """One step's row in the store, keyed by its inputs, prompt and model."""
        self.store.put_step(
            image_id,
            step,
            input_key=input_key,
            prompt_hash=self.hashes[step],
            model=self.cfg.model,
            created_at=time.time(),
            **fields,
        )

    def _call(self, step: str, msgs: list[Message]) -> tuple[BaseModel, int, int]:
        stats = getattr(self.backend, "stats", {})
        before = (stats.get("prompt_tokens", 0), stats.get("completion_tokens", 0))
        out = self.backend.structured(msgs, STEPS[step][0])
        return out, stats.get("prompt_tokens", 0) - before[0], stats.get("completion_tokens", 0) - before[1]

    def annotate(self, image_id: str, image: np.ndarray) -> tuple[list[Quadruple], int]:
        """Run (or reuse) the five steps for one image; returns the kept quadruples and the calls made."""
        h, w = image.shape[:2]
        outs: dict[str, Any] = {}
        keys: dict[str, str] = {}
        calls = 0
        for step, (_, deps) in STEPS.items():
            keys[step] = _key(self.hashes[step], self.cfg.model, image_id, [outs[d] for d in deps])
            row = self.store.step(image_id, step)
            if row and row["status"] == "ok" and row["input_key"] == keys[step]:
                outs[step] = json.loads(row["output"])
                continue
            if step in _EMPTY and not outs["propose"]["candidates"]:
                outs[step] = _EMPTY[step]  # nothing proposed: no call needed
                self._record(
                    image_id, step, keys[step], output=json.dumps(outs[step]), status="ok", seconds=0.0
                )
                continue
            t0 = time.perf_counter()
            calls += 1
            try:
                out, p_tok, c_tok = self._call(
                    step, self._messages(step, _format_inputs(step, outs, w, h), image)
                )
                _check_lengths(step, out, outs)
            except LLMError as err:
                self._record(
                    image_id,
                    step,
                    keys[step],
                    status="error",
                    error=str(err)[:500],
                    seconds=time.perf_counter() - t0,
                )
                raise
            outs[step] = out.model_dump()
            cost = (
                p_tok / 1000 * self.cfg.price_prompt_per_1k + c_tok / 1000 * self.cfg.price_completion_per_1k
            )
            self._record(
                image_id,
                step,
                keys[step],
                output=json.dumps(outs[step]),
                prompt_tokens=p_tok,
                completion_tokens=c_tok,
                cost=cost,
                status="ok",
                seconds=time.perf_counter() - t0,
            )
        quads = self._assemble(outs)
        self.store.put_proposals(image_id, keys["critic"], quads)  # same key and content: reviews stay valid
        return quads, calls

    @staticmethod
    def _assemble(outs: dict[str, Any]) -> list[Quadruple]:
        quads = []
        for c, reason, sev, keep, conf in zip(
            outs["propose"]["candidates"],
            outs["reason"]["reasons"],
            outs["rate"]["severities"],
            outs["critic"]["keep"],
            outs["critic"]["confidence"],
            strict=True,
        ):
            if keep:
                quads.append(
                    Quadruple(
                        name=c["name"],
                        phenomenon=c["phenomenon"],
                        reasoning=reason,
                        severity=sev,
                        region=c.get("region"),
                        confidence=float(np.clip(conf, 0.0, 1.0)),
                    )
                )
        return quads

    def run(
        self, paths: Sequence[str | Path], on_image: Callable[[str, str], None] | None = None
    ) -> dict[str, Any]:
        """Annotate every image; bad files and failed steps are skipped and reported, the rest goes on."""
        from aigclab.errors import ImageError
        from aigclab.io import content_hash, load_image

        summary: dict[str, Any] = {"annotated": 0, "reused": 0, "calls": 0, "skipped": []}
        for path in paths:
            try:
                image = load_image(path)
            except ImageError as err:
                summary["skipped"].append((str(path), err.cause))
                continue
            image_id = content_hash(image)[:16]
            self.store.add_image(image_id, str(path), image.shape[1], image.shape[0])
            try:
                quads, calls = self.annotate(image_id, image)
            except LLMError as err:
                summary["skipped"].append((str(path), str(err)[:200]))
                continue
            summary["calls"] += calls
            summary["annotated" if calls else "reused"] += 1
            if on_image:
                on_image(str(path), f"{len(quads)} anomalies proposed" + ("" if calls else " (stored)"))
        return summary
