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

from aigclab._lazy import lazy_exports

# Lazy, so a sandbox worker process imports only what running a program needs.
_REC, _RUN, _SCORE = "aigclab.gamegym.records", "aigclab.gamegym.run", "aigclab.gamegym.score"
__getattr__, __all__ = lazy_exports(
    "aigclab.gamegym",
    {
        "GENERATORS": "aigclab.gamegym.generate",
        "create_generator": "aigclab.gamegym.generate",
        "Attempt": _REC,
        "Generation": _REC,
        "Sample": _REC,
        "Score": _REC,
        "load_samples": _REC,
        "read_records": _REC,
        "write_records": _REC,
        "CurateConfig": "aigclab.gamegym.curate",
        "curate": "aigclab.gamegym.curate",
        "execute": _RUN,
        "generate_all": _RUN,
        "leaderboard": _RUN,
        "score_all": _RUN,
        "write_leaderboard": _RUN,
        "SandboxConfig": "aigclab.gamegym.sandbox",
        "run_program": "aigclab.gamegym.sandbox",
        "automatic_metrics": _SCORE,
        "judge_attempt": _SCORE,
        "score_attempt": _SCORE,
    },
)
