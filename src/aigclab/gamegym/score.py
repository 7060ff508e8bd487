"""Scoring: automatic metrics from the captured frames, and the three V-GameGym judges.

Automatic (always): ``ran`` (at least one frame), ``exited_cleanly`` (stopped by itself with code 0
after running its expected time, ``min_run_s``, and within the virtual time limit; quitting earlier
is ``early_exit``), ``not_blank`` (share of screenshots with pixel std > 3), ``content`` (a ramp
from 3% to 8% of ``coverage``: the share of the cells of a 20x15 grid that held pixels away from
their screenshot's dominant colour in any screenshot; a timer on a black screen covers ~2%, one ball
crossing the screen ~20%, the emptiest reference game 15%),
``motion_footprint`` (share of grid cells in which anything changed between consecutive screenshots,
over the whole run: a ticking timer alone covers ~1%, the stillest reference 14%), ``moving`` (share
of consecutive screenshot pairs where something visibly moved: at least max(16, 0.01% of the pixels)
changed), ``visual_diversity`` (mean colour entropy over 64 bins / 6 bits), ``motion`` (mean share of
pixels that change between consecutive screenshots), ``input_response`` (share of pixels that differ
between the run with scripted input and the probe forked at the first input that runs on without it,
at t >= 2 s), ``fps`` (frames per virtual second) and ``speedup`` (virtual / wall seconds).

``auto_score`` (0-100) = 10 ran + 10 life + 80 life x content x animated, where ``life`` is 1 for a
clean exit after the expected time and otherwise 0.1 x the share of that time the program ran (an
early exit, a crash, a timeout or a program that never exits keeps at most a tenth), and
``animated`` = moving x a ramp of ``motion_footprint`` from 2% to 8%. So one frame, an early exit, a
blank or text-only screen, frames that do not change (or only the timer does) and a program that
never exits each score at most 20, while a game that runs its time, fills the screen and moves
scores near 100. A program *passes* when it ran and exited cleanly, content >= 0.5 and animated
>= 0.5 (else ``blank`` or ``static``). A media archive that cannot be read within bounds fails that
attempt only (``bad_artefact``, auto_score 0); the batch goes on.

Judges (optional, any chat backend): code (requirement + code), screenshots (up to 10 images) and
video (8 of the video frames sent as images, for servers without video input), each four 0-25
sub-scores as in the paper; ``final_score`` = mean of the three totals; missing media gives that
judge 0.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, Field

from aigclab.errors import AigclabError
from aigclab.gamegym.frames import ArtefactError, load_frames, load_shots
from aigclab.gamegym.records import Attempt, Sample, Score
from aigclab.gamegym.sandbox import SandboxConfig
from aigclab.llm import ChatBackend, user_message

__all__ = [
    "CodeJudgement",
    "ScreenshotJudgement",
    "VideoJudgement",
    "automatic_metrics",
    "judge_attempt",
    "score_attempt",
]

_REASONS = {"virtual_limit": "no_exit", "cpu_limit": "timeout", "no_frames": "no_frames"}  # else the status
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


def _entropy(img: np.ndarray) -> float:
    q = (img // 64).reshape(-1, 3).astype(np.int64)
    counts = np.bincount(q[:, 0] * 16 + q[:, 1] * 4 + q[:, 2], minlength=64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum() / 6.0)


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2) > 10


def _changed(a: np.ndarray, b: np.ndarray) -> float:
    return 1.0 if a.shape != b.shape else float(_diff(a, b).mean())


def _moved(a: np.ndarray, b: np.ndarray) -> bool:
    """Something visibly moved: at least max(16 px, 0.01% of the frame) changed (a starfield counts)."""
    return a.shape != b.shape or int(_diff(a, b).sum()) >= max(16, a.shape[0] * a.shape[1] // 10_000)


GRID = (15, 20)  # rows, columns of the cells that content and the motion footprint count


def _cells(mask: np.ndarray) -> np.ndarray:
    """Which cells of the GRID hold any True pixel of `mask`."""
    rows, cols = GRID
    h, w = mask.shape
    ys = np.minimum(np.arange(h) * rows // h, rows - 1)
    xs = np.minimum(np.arange(w) * cols // w, cols - 1)
    hits = np.zeros(GRID, bool)
    yy, xx = np.nonzero(mask)
    hits[ys[yy], xs[xx]] = True
    return hits


def _ramp(x: float, lo: float, hi: float) -> float:
    return float(np.clip((x - lo) / (hi - lo), 0.0, 1.0))


def _coverage(shots: list[np.ndarray]) -> float:
    """Share of grid cells that held pixels away from their shot's dominant colour in any screenshot
    (a lone timer text: ~2%; one ball crossing the screen: ~20%)."""
    hits = np.zeros(GRID, bool)
    for img in shots:
        flat = img.reshape(-1, 3)
        colours, counts = np.unique(flat[:: max(1, len(flat) // 20_000)], axis=0, return_counts=True)
        background = colours[counts.argmax()].astype(np.int16)
        hits |= _cells(np.abs(img.astype(np.int16) - background).max(axis=2) > 10)
    return float(hits.mean())


def _footprint(shots: list[np.ndarray]) -> float:
    """Share of grid cells where anything changed between consecutive screenshots, over the run."""
    hits = np.zeros(GRID, bool)
    for a, b in itertools.pairwise(shots):
        hits |= np.ones(GRID, bool) if a.shape != b.shape else _cells(_diff(a, b))
    return float(hits.mean())


def _media(attempt: Attempt) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The run's screenshots and the probe's, read with bounds (ArtefactError on a bad archive)."""
    if not attempt.media_dir:
        return {}, {}
    media = Path(attempt.media_dir)
    return load_shots(media, attempt.shots), load_shots(media / "probe", attempt.probe_shots)


def _life(attempt: Attempt, min_run_s: float) -> float:
    """1 for a clean exit after the expected time; else 0.1 x the share of that time it ran."""
    if attempt.status == "ok":
        return 1.0
    return 0.1 * min(1.0, attempt.virtual_s / min_run_s) if attempt.frames else 0.0


def automatic_metrics(attempt: Attempt, min_run_s: float = SandboxConfig().min_run_s) -> dict[str, Any]:
    """The automatic metrics and pass/fail reason for one attempt (reads its screenshots)."""
    try:
        shots_by_name, probe = _media(attempt)
        bad = ""
    except ArtefactError as err:
        shots_by_name, probe, bad = {}, {}, str(err)
    shots = [shots_by_name[n] for n in sorted(shots_by_name)]
    ran = attempt.frames > 0
    clean = attempt.status == "ok"
    not_blank = float(np.mean([im.std() > 3 for im in shots])) if shots else 0.0
    content = _ramp(_coverage(shots), 0.03, 0.08)
    footprint = _footprint(shots)
    diversity = float(np.mean([_entropy(im) for im in shots])) if shots else 0.0
    pairs = list(itertools.pairwise(shots))
    motion = float(np.mean([_changed(a, b) for a, b in pairs])) if pairs else 0.0
    moving = float(np.mean([_moved(a, b) for a, b in pairs])) if pairs else 0.0
    animated = moving * _ramp(footprint, 0.02, 0.08)
    response = None
    if attempt.probe_shots and not bad:
        common = [n for n in sorted(probe) if n in shots_by_name and int(n.split("_")[-1]) >= 2]
        diffs = [_changed(shots_by_name[n], probe[n]) for n in common]
        response = float(np.mean(diffs)) if diffs else 0.0
    if bad:
        reason = "bad_artefact"
    elif attempt.status != "ok":
        reason = _REASONS.get(attempt.status, attempt.status)
    elif content < 0.5:
        reason = "blank"
    elif animated < 0.5:
        reason = "static"
    else:
        reason = ""
    life = _life(attempt, min_run_s)
    auto = 10 * ran + 10 * life + 80 * life * content * animated
    return {
        "ran": ran,
        "exited_cleanly": clean,
        "not_blank": round(not_blank, 4),
        "content": round(content, 4),
        "motion_footprint": round(footprint, 4),
        "visual_diversity": round(diversity, 4),
        "motion": round(motion, 4),
        "moving": round(moving, 4),
        "input_response": None if response is None else round(response, 4),
        "fps": round(attempt.frames / attempt.virtual_s, 2) if attempt.virtual_s > 0 else 0.0,
        "speedup": round(attempt.virtual_s / attempt.wall_s, 2) if attempt.wall_s > 0 else 0.0,
        "auto_score": round(auto * (not bad), 2),
        "passed": reason == "",
        "fail_reason": reason,
        "artefact_error": bad or None,
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


def _video_frames(path: Path, n: int) -> list[np.ndarray]:
    frames = list(load_frames(path).values())
    if not frames:
        return []
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
    try:
        shots_by_name, _ = _media(attempt)
        video = _video_frames(media / attempt.video, video_frames) if media and attempt.video else []
    except ArtefactError:
        shots_by_name, video = {}, []
    shots = [shots_by_name[n] for n in sorted(shots_by_name)]
    shot_j = (
        backend.structured([user_message(_SHOTS_PROMPT.format(requirement=req), shots)], ScreenshotJudgement)
        if shots
        else None
    )
    video_j = (
        backend.structured([user_message(_VIDEO_PROMPT.format(requirement=req), video)], VideoJudgement)
        if video
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
