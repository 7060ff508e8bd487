"""Scoring: automatic metrics from the captured frames, and the three V-GameGym judges.

Automatic (always): ``ran`` (at least one frame), ``exited_cleanly`` (stopped by itself with code 0
within the virtual time limit), ``not_blank`` (share of screenshots with pixel std > 3),
``visual_diversity`` (mean colour entropy over 64 bins / 6 bits), ``motion`` (mean share of pixels
that change between consecutive screenshots), ``input_response`` (share of pixels that differ
between the run with scripted input and the same run without it, at t >= 2 s), ``fps`` (frames per
virtual second) and ``speedup`` (virtual / wall seconds). A program *passes* when it ran and exited
cleanly, at least half the screenshots are not blank, and motion > 0.005. ``auto_score`` (0-100) =
25 ran + 25 exited cleanly + 20 not_blank + 15 min(1, motion / 0.02) + 15 min(1, diversity / 0.3).

Judges (optional, any chat backend): code (requirement + code), screenshots (up to 10 images) and
video (GIF frames sent as images, for servers without video input), each four 0-25 sub-scores as in
the paper; ``final_score`` = mean of the three totals; missing media gives that judge 0.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, Field

from aigclab.errors import AigclabError
from aigclab.gamegym.records import Attempt, Sample, Score
from aigclab.llm import ChatBackend, user_message

__all__ = [
    "CodeJudgement",
    "ScreenshotJudgement",
    "VideoJudgement",
    "automatic_metrics",
    "judge_attempt",
    "score_attempt",
]

_REASONS = {"virtual_limit": "no_exit", "cpu_limit": "timeout", "no_frames": "no_frames"}
Sub = Annotated[float, Field(ge=0, le=25)]


class _Judgement(BaseModel):
    feedback: str = ""

    @property
    def total(self) -> float:
        return float(sum(v for k, v in self.model_dump().items() if k.endswith("_score")))


class CodeJudgement(_Judgement):
    functionality_score: Sub
    code_quality_score: Sub
    game_logic_score: Sub
    technical_score: Sub


class ScreenshotJudgement(_Judgement):
    visual_completeness_score: Sub
    ui_design_score: Sub
    functionality_display_score: Sub
    overall_quality_score: Sub


class VideoJudgement(_Judgement):
    animation_score: Sub
    interaction_score: Sub
    gameplay_flow_score: Sub
    dynamic_quality_score: Sub


def _load(paths: list[Path]) -> list[np.ndarray]:
    from aigclab.io import load_image

    return [load_image(p) for p in paths if p.is_file()]


def _entropy(img: np.ndarray) -> float:
    q = (img // 64).reshape(-1, 3).astype(np.int64)
    counts = np.bincount(q[:, 0] * 16 + q[:, 1] * 4 + q[:, 2], minlength=64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum() / 6.0)


def _changed(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return 1.0
    return float((np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2) > 10).mean())


def automatic_metrics(attempt: Attempt) -> dict[str, Any]:
    """The automatic metrics and pass/fail reason for one attempt (reads its screenshots)."""
    media = Path(attempt.media_dir) if attempt.media_dir else None
    shots = _load([media / s for s in attempt.shots]) if media else []
    probe = _load([media / "probe" / s for s in attempt.probe_shots]) if media else []
    ran = attempt.frames > 0
    clean = attempt.status == "ok"
    not_blank = float(np.mean([im.std() > 3 for im in shots])) if shots else 0.0
    diversity = float(np.mean([_entropy(im) for im in shots])) if shots else 0.0
    motion = float(np.mean([_changed(a, b) for a, b in itertools.pairwise(shots)])) if len(shots) > 1 else 0.0
    response = None
    if probe:
        pairs = [(a, b) for i, (a, b) in enumerate(zip(shots, probe, strict=False)) if i >= 2]
        response = float(np.mean([_changed(a, b) for a, b in pairs])) if pairs else 0.0
    if attempt.status != "ok":
        reason = _REASONS.get(attempt.status, attempt.status)
    elif not_blank < 0.5:
        reason = "blank"
    elif motion <= 0.005:
        reason = "static"
    else:
        reason = ""
    auto = (
        25 * ran + 25 * clean + 20 * not_blank + 15 * min(1.0, motion / 0.02) + 15 * min(1.0, diversity / 0.3)
    )
    return {
        "ran": ran,
        "exited_cleanly": clean,
        "not_blank": round(not_blank, 4),
        "visual_diversity": round(diversity, 4),
        "motion": round(motion, 4),
        "input_response": None if response is None else round(response, 4),
        "fps": round(attempt.frames / attempt.virtual_s, 2) if attempt.virtual_s > 0 else 0.0,
        "speedup": round(attempt.virtual_s / attempt.wall_s, 2) if attempt.wall_s > 0 else 0.0,
        "auto_score": round(auto, 2),
        "passed": reason == "",
        "fail_reason": reason,
    }


_CODE_PROMPT = """You are judging a pygame program written for this requirement:

{requirement}

Program:
```python
{code}
```

Score it with four sub-scores from 0 to 25 each: functionality_score (does it implement the
requirement and run as a 10-second auto-demo), code_quality_score, game_logic_score and
technical_score (correct pygame use: loop, events, clock, rendering). Reply with one JSON object
with those four numbers and a short "feedback" string."""

_SHOTS_PROMPT = """These are screenshots taken once per second from a pygame program written for:

{requirement}

Score what you see with four sub-scores from 0 to 25 each: visual_completeness_score,
ui_design_score, functionality_display_score and overall_quality_score. A blank or broken screen
scores 0. Reply with one JSON object with those four numbers and a short "feedback" string."""

_VIDEO_PROMPT = """These are consecutive video frames (in order) of a pygame program written for:

{requirement}

Score its motion with four sub-scores from 0 to 25 each: animation_score, interaction_score
(does the game visibly react and play itself), gameplay_flow_score and dynamic_quality_score.
Reply with one JSON object with those four numbers and a short "feedback" string."""


def _gif_frames(path: Path, n: int) -> list[np.ndarray]:
    from PIL import Image, ImageSequence

    with Image.open(path) as im:
        frames = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)]
    idx = np.linspace(0, len(frames) - 1, min(n, len(frames))).round().astype(int)
    return [frames[i] for i in idx]


def judge_attempt(
    attempt: Attempt, sample: Sample, backend: ChatBackend, video_frames: int = 8
) -> dict[str, Any]:
    """Run the three judges; returns their totals, the mean and feedback."""
    req = sample.requirement.strip()
    code_j = backend.structured(
        [user_message(_CODE_PROMPT.format(requirement=req, code=attempt.code))], CodeJudgement
    )
    media = Path(attempt.media_dir) if attempt.media_dir else None
    shots = _load([media / s for s in attempt.shots]) if media else []
    shot_j = (
        backend.structured([user_message(_SHOTS_PROMPT.format(requirement=req), shots)], ScreenshotJudgement)
        if shots
        else None
    )
    gif = media / attempt.gif if media and attempt.gif else None
    video_j = (
        backend.structured(
            [user_message(_VIDEO_PROMPT.format(requirement=req), _gif_frames(gif, video_frames))],
            VideoJudgement,
        )
        if gif and gif.is_file()
        else None
    )
    totals = [code_j.total, shot_j.total if shot_j else 0.0, video_j.total if video_j else 0.0]
    return {
        "code_score": totals[0],
        "screenshot_score": totals[1],
        "video_score": totals[2],
        "final_score": round(sum(totals) / 3, 2),
        "judge_feedback": {
            k: j.feedback for k, j in (("code", code_j), ("screenshots", shot_j), ("video", video_j)) if j
        },
    }


def score_attempt(
    attempt: Attempt, sample: Sample | None = None, backend: ChatBackend | None = None
) -> Score:
    """Automatic metrics, plus the judges when a backend is given (a judge failure is recorded)."""
    fields: dict[str, Any] = automatic_metrics(attempt)
    if backend is not None and sample is not None:
        try:
            fields.update(judge_attempt(attempt, sample, backend))
        except AigclabError as err:
            fields["judge_error"] = str(err)[:500]
    return Score(
        sample_id=attempt.sample_id,
        generator=attempt.generator,
        status=attempt.status,
        expected_failure=attempt.expected_failure,
        **fields,
    )
