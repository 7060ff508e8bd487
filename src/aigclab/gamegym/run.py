"""The pipeline stages as functions over records: generate, execute (sandbox), score, leaderboard.

Each stage reads and writes plain records, so stages run separately, resume from files, and spread
over cores (``engine="local"``) or a Ray cluster (``engine="ray"``) through ``aigclab.parallel``.

Example:
    >>> from aigclab.gamegym.run import execute, generate_all
    >>> from aigclab.gamegym.records import load_samples
    >>> from aigclab.gamegym.sandbox import SandboxConfig
    >>> samples = load_samples(ids=["pong"])
    >>> attempts = execute(generate_all(samples, "reference"), SandboxConfig(), "runs/")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import shutil
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aigclab.errors import AigclabError
from aigclab.gamegym.records import Attempt, Generation, Sample, Score
from aigclab.gamegym.sandbox import DEFAULT_EVENTS, SandboxConfig, resolve_isolation, run_program

if TYPE_CHECKING:  # workers import this module: keep chat clients and scoring out of them
    from aigclab.gamegym.generate import GameGenerator
    from aigclab.llm import ChatBackend
    from aigclab.parallel import Engine

__all__ = [
    "LEADERBOARD_COLUMNS",
    "execute",
    "execute_one",
    "generate_all",
    "generate_to",
    "leaderboard",
    "score_all",
    "write_leaderboard",
]

LEADERBOARD_COLUMNS = [
    "generator",
    "n",
    "pass_rate",
    "ran",
    "exited_cleanly",
    "auto_score",
    "motion",
    "input_response",
    "fps",
    "final_score",
    "code_score",
    "screenshot_score",
    "video_score",
]


def generate_all(samples: Sequence[Sample], generator: str, **options: Any) -> list[Generation]:
    """Ask one generator for every sample (sequentially: chat servers do their own batching)."""
    from aigclab.gamegym.generate import create_generator

    gen = create_generator(generator, **options)
    return [gen.generate(s) for s in samples]


def generate_to(
    out: str | Path,
    samples: Sequence[Sample],
    gen: GameGenerator,
    *,
    resume: bool = False,
    on_start: Callable[[int, int], None] | None = None,
    on_result: Callable[[Generation], None] | None = None,
) -> tuple[list[Generation], list[Generation]]:
    """Generate into the JSONL file `out`, appending each generation as it finishes; (kept, new).

    With `resume`, the successful generations of the same generator already in `out` are kept and
    only the other samples are asked for (failed ones again); else `out` starts empty. An interrupted
    batch loses only the generation in progress. `on_start(kept, todo)` is called before the first.
    """
    from aigclab.gamegym.records import read_records

    out = Path(out)
    label = getattr(gen, "label", gen.name)
    kept = [g for g in read_records(out, Generation) if not g.error] if resume and out.is_file() else []
    others = sorted({g.generator for g in kept} - {label})
    if others:
        raise AigclabError(f"{out}: holds generations of {', '.join(others)}, not {label}; use another --out")
    done = {g.sample_id for g in kept}
    todo = [s for s in samples if s.id not in done]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(g.model_dump_json() + "\n" for g in kept))
    if on_start:
        on_start(len(kept), len(todo))
    new = []
    with out.open("a") as sink:
        for sample in todo:
            generation = gen.generate(sample)
            sink.write(generation.model_dump_json() + "\n")
            sink.flush()
            new.append(generation)
            if on_result:
                on_result(generation)
    return kept, new


def execute_one(job: tuple[Generation, SandboxConfig, str | None, bool]) -> Attempt:
    """Run one generation in the sandbox (with the no-input probe when `probe`); never raises."""
    gen, cfg, media_root, probe = job
    base: dict[str, Any] = {
        "sample_id": gen.sample_id,
        "generator": gen.generator,
        "code": gen.code,
        "generation_error": gen.error,
        "expected_failure": gen.expected_failure,
    }
    if not gen.code.strip():
        return Attempt(status="no_code", **base)
    digest = hashlib.sha1(gen.code.encode()).hexdigest()[:8]  # distinct programs never share a folder
    media = (
        Path(media_root) / _safe(gen.generator) / f"{_safe(gen.sample_id)}-{digest}" if media_root else None
    )
    try:
        result = run_program(gen.code, cfg, media, DEFAULT_EVENTS, probe=probe)
    except AigclabError:
        raise  # e.g. no isolation: a setting for the whole batch, not this attempt
    except Exception as err:  # the machine or the harness, not the program: reported apart; the batch goes on
        return Attempt(status="sandbox_error", stderr=f"{type(err).__name__}: {err}"[:2000], **base)
    return Attempt(**result.model_dump(), **base, media_dir=str(media) if media else None)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[:80] or "_"


def _init_worker(tmp_root: str) -> None:
    tempfile.tempdir = tmp_root  # attempt dirs land under the run's temp root, removed by the parent


def _local(
    jobs: list[tuple], workers: int, tmp_root: str, on_result: Callable[[int, Attempt], None]
) -> list[Attempt]:
    results: list[Attempt | None] = [None] * len(jobs)
    if workers == 1:
        saved, tempfile.tempdir = tempfile.tempdir, tmp_root
        try:
            for i, job in enumerate(jobs):
                results[i] = execute_one(job)
                on_result(i, results[i])  # type: ignore[arg-type]
        finally:
            tempfile.tempdir = saved
        return results  # type: ignore[return-value]
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(tmp_root,))
    try:
        futures = {pool.submit(execute_one, job): i for i, job in enumerate(jobs)}
        for fut in as_completed(futures):
            i = futures[fut]
            results[i] = fut.result()
            on_result(i, results[i])  # type: ignore[arg-type]
    except BaseException:
        # interrupted: stop the workers now; their zygotes and sandboxes die with them (PDEATHSIG)
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return results  # type: ignore[return-value]


def _ray(
    jobs: list[tuple], workers: int, address: str | None, on_result: Callable[[int, Attempt], None]
) -> list[Attempt]:
    """On a Ray cluster, in chunks, so finished attempts are kept as they come."""
    from aigclab.parallel import map_items, ray_session

    with ray_session(workers, address):
        results: list[Attempt] = []
        for lo in range(0, len(jobs), 2 * workers):
            for j, att in enumerate(map_items(execute_one, jobs[lo : lo + 2 * workers], engine="ray")):
                results.append(att)
                on_result(lo + j, att)
        return results


def execute(
    generations: Sequence[Generation],
    cfg: SandboxConfig,
    media_root: str | Path | None = None,
    *,
    probe: bool = True,
    engine: Engine = "local",
    workers: int | None = None,
    address: str | None = None,
    on_result: Callable[[int, Attempt], None] | None = None,
) -> list[Attempt]:
    """Run every generation in its own sandbox, `workers` at a time; `on_result(i, attempt)` as each ends.

    The isolation is settled first (IsolationUnavailable rather than running unsandboxed); temp
    dirs of all runs live under one root that is removed at the end, interrupted or not.
    """
    cfg = cfg.model_copy(update={"isolation": resolve_isolation(cfg.isolation)})
    jobs = [(g, cfg, str(media_root) if media_root else None, probe) for g in generations]
    workers = min(workers or os.cpu_count() or 1, max(1, len(jobs)))
    callback = on_result or (lambda i, a: None)
    if engine not in ("local", "ray"):
        raise AigclabError(f"unknown engine {engine!r}; choose 'local' or 'ray'")
    tmp_root = tempfile.mkdtemp(prefix="aigclab-gamegym-")
    try:
        if engine == "ray":
            return _ray(jobs, workers, address, callback)
        return _local(jobs, workers, tmp_root, callback)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)


def score_all(
    attempts: Sequence[Attempt], samples: Sequence[Sample], backend: ChatBackend | None = None
) -> list[Score]:
    from aigclab.gamegym.score import score_attempt

    by_id = {s.id: s for s in samples}
    return [score_attempt(a, by_id.get(a.sample_id), backend) for a in attempts]


def _mean(values: list[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return round(float(np.mean(vals)), 4) if vals else None


def leaderboard(scores: Sequence[Score]) -> list[dict[str, Any]]:
    """One row per generator, best final (or automatic) score first."""
    groups: dict[str, list[Score]] = defaultdict(list)
    for s in scores:
        groups[s.generator].append(s)
    rows = []
    for name, group in groups.items():
        row: dict[str, Any] = {
            "generator": name,
            "n": len(group),
            "pass_rate": _mean([s.passed for s in group]),
        }
        for key in LEADERBOARD_COLUMNS[3:]:
            row[key] = _mean([getattr(s, key) for s in group])
        row["fail_reasons"] = dict(Counter(s.fail_reason for s in group if s.fail_reason))
        rows.append(row)
    return sorted(
        rows, key=lambda r: -(r["final_score"] if r["final_score"] is not None else r["auto_score"])
    )


def write_leaderboard(
    scores: Sequence[Score], out_dir: str | Path, name: str = "leaderboard"
) -> list[dict[str, Any]]:
    """`<name>.json`, `<name>.md` and `<name>.png` (pass rate and scores per generator)."""
    from aigclab.reports import markdown_table, write_json  # imports torch: keep it out of the workers

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = leaderboard(scores)
    write_json(out / f"{name}.json", {"leaderboard": rows, "scores": [s.model_dump() for s in scores]})
    cols = [c for c in LEADERBOARD_COLUMNS if any(r.get(c) is not None for r in rows)]
    (out / f"{name}.md").write_text(f"# GameGym {name}\n\n" + markdown_table(rows, cols) + "\n")
    _plot(rows, out / f"{name}.png")
    return rows


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["generator"] for r in rows]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(names) + 2), 3.5))
    series = [
        ("pass rate x100", [100 * (r["pass_rate"] or 0) for r in rows]),
        ("auto score", [r["auto_score"] or 0 for r in rows]),
        ("judge final", [r["final_score"] or 0 for r in rows]),
    ]
    for i, (label, vals) in enumerate(series):
        ax.bar(x + (i - 1) * 0.27, vals, 0.27, label=label)
    ax.set(xticks=x, xticklabels=names, ylim=(0, 100), ylabel="0-100", title="GameGym leaderboard")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
