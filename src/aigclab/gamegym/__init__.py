"""GameGym: the V-GameGym benchmark harness for code models that write visual pygame games.

Stages: curate (embed + k-means + quality), generate (chat backends, ``reference``, ``broken``),
run (sandbox with limits, no network, virtual clock, frames), score (automatic metrics and three
judges), report (leaderboard). The embedded default dataset has 31 original self-playing games.

Example:
    >>> from aigclab.gamegym import load_samples, create_generator
    >>> sample = load_samples(ids=["pong"])[0]
    >>> create_generator("reference").generate(sample).code == sample.code
    True
"""

from __future__ import annotations

from aigclab.gamegym.curate import CurateConfig, curate
from aigclab.gamegym.generate import GENERATORS, create_generator
from aigclab.gamegym.records import (
    Attempt,
    Generation,
    Sample,
    Score,
    load_samples,
    read_records,
    write_records,
)
from aigclab.gamegym.run import execute, generate_all, leaderboard, score_all, write_leaderboard
from aigclab.gamegym.sandbox import SandboxConfig, run_program
from aigclab.gamegym.score import automatic_metrics, judge_attempt, score_attempt

__all__ = [
    "GENERATORS",
    "Attempt",
    "CurateConfig",
    "Generation",
    "Sample",
    "SandboxConfig",
    "Score",
    "automatic_metrics",
    "create_generator",
    "curate",
    "execute",
    "generate_all",
    "judge_attempt",
    "leaderboard",
    "load_samples",
    "read_records",
    "run_program",
    "score_all",
    "score_attempt",
    "write_leaderboard",
    "write_records",
]
