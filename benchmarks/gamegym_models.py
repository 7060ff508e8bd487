"""GameGym leaderboard with real code models beside the calibration rows (run by hand, not in CI).

Rows: ``reference``, each ``broken`` mode and each planted ``degenerate`` program over all shipped
samples, and every real model whose generations were made through the CLI as a user would, e.g.

    aigclab models fetch qwen2.5-coder-1.5b
    nice -n 10 aigclab gamegym generate chat --backend llamacpp --model qwen2.5-coder-1.5b \\
        --threads 1 --max-tokens 2048 --out benchmarks/results/gamegym_models/qwen2.5-coder-1.5b.jsonl --resume

(``--generate NAME`` runs that command from here; it resumes, so partial progress is kept). Every
program runs in the sandbox (virtual clock, no probe: ``auto_score`` does not use it) and is scored;
per row: pass rate, mean ``auto_score`` with a seeded 95% bootstrap interval, generation seconds and
tokens per game, finish reasons and fail reasons. A model that has done only part of the samples is
reported on those (``n``), with the reference's mean on the same samples beside it.

Run: ``python benchmarks/gamegym_models.py`` -> benchmarks/results/gamegym_models.{json,md}
(about 10 minutes for the ~370 calibration programs on one loaded core; ``--quick``: 4 games).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

# Only light imports at the top: the sandbox workers are spawned and import this module again.
from aigclab.gamegym.records import Generation, Score, attempt_key, load_samples, read_records
from aigclab.gamegym.run import execute, score_all
from aigclab.gamegym.sandbox import SandboxConfig

OUT = Path(__file__).parent / "results"
WORK = OUT / "gamegym_models"  # the real models' generations (small JSONL, kept with the results)
BOOT = 2000
# The CLI's wall limit; 5 CPU-s is 5x what a reference game needs and caps the busy-loop programs' cost.
SANDBOX = SandboxConfig(wall_s=20, cpu_s=5)


def bootstrap_ci(values: list[float], seed: int = 0) -> list[float]:
    """95% percentile interval of the mean over BOOT resamples (seeded)."""
    if not values:
        return [0.0, 0.0]
    arr = np.asarray(values, float)
    means = arr[np.random.default_rng(seed).integers(0, len(arr), (BOOT, len(arr)))].mean(axis=1)
    return [round(float(np.percentile(means, 2.5)), 2), round(float(np.percentile(means, 97.5)), 2)]


def calibration_generations(samples) -> list[Generation]:  # type: ignore[no-untyped-def]
    from aigclab.errors import AigclabError
    from aigclab.gamegym.generate import BROKEN_MODES, DEGENERATE_MODES, create_generator

    gens = [create_generator("reference").generate(s) for s in samples]
    for mode in BROKEN_MODES:
        for s in samples:
            try:
                gens.append(
                    create_generator("broken", mode=mode)
                    .generate(s)
                    .model_copy(update={"generator": f"broken:{mode}"})
                )
            except AigclabError as err:
                print(f"skipped: {err}")
    for mode in DEGENERATE_MODES:
        gens += [create_generator("degenerate", mode=mode).generate(s) for s in samples]
    return gens


def generate_with_cli(name: str, ids: list[str] | None, max_tokens: int) -> Path:
    """The user's command: `aigclab gamegym generate chat --backend llamacpp ... --resume`."""
    out = WORK / f"{name}.jsonl"
    exe = shutil.which("aigclab") or str(Path(sys.executable).with_name("aigclab"))
    cmd = [exe, "gamegym", "generate", "chat", "--backend", "llamacpp"]
    cmd += ["--model", name, "--threads", "1", "--max-tokens", str(max_tokens), "--out", str(out), "--resume"]
    cmd += [a for i in ids or [] for a in ("--id", i)]
    subprocess.run(cmd, check=True)
    return out


def run_and_score(gens, samples, media: Path, workers: int):  # type: ignore[no-untyped-def]
    """Scores (and sandbox wall seconds) of every generation; programs already scored in an earlier
    run (same sample, generator and code, cached in `media`/scores.jsonl) are not run again."""
    cache_path = media / "scores.jsonl"
    cache = {}
    if cache_path.is_file():
        for line in cache_path.read_text().splitlines():
            item = json.loads(line)
            cache[tuple(item["key"])] = item
    todo = [g for g in gens if attempt_key(g.sample_id, g.generator, g.code) not in cache]
    print(f"{len(gens) - len(todo)} programs scored before; running {len(todo)}")
    media.mkdir(parents=True, exist_ok=True)
    with cache_path.open("a") as sink:

        def keep(i: int, attempt) -> None:  # type: ignore[no-untyped-def]
            (score,) = score_all([attempt], samples)
            item = {"key": list(attempt.key), "score": score.model_dump(), "wall_s": attempt.wall_s}
            cache[attempt.key] = item
            sink.write(json.dumps(item) + "\n")
            sink.flush()

        execute(todo, SANDBOX, media, probe=False, workers=workers, on_result=keep)
    items = [cache[attempt_key(g.sample_id, g.generator, g.code)] for g in gens]
    scores = [Score(**item["score"]) for item in items]
    return scores, {(s.generator, s.sample_id): item["wall_s"] for s, item in zip(scores, items, strict=True)}


def row(scores: list[Score], gens: dict[tuple[str, str], Generation], walls: list[float]) -> dict:
    values = [s.auto_score for s in scores]
    own = [gens[(s.generator, s.sample_id)] for s in scores]
    tokens = [g.tokens for g in own if g.tokens is not None]
    seconds = [g.seconds for g in own]
    return {
        "n": len(scores),
        "pass_rate": round(float(np.mean([s.passed for s in scores])), 4),
        "mean_score": round(float(np.mean(values)), 2),
        "score_ci95": bootstrap_ci(values),
        "max_score": max(values),
        "seconds_per_game": round(float(np.mean(seconds)), 2),
        "tokens_per_game": round(float(np.mean(tokens)), 1) if tokens else None,
        "tokens_per_s": round(sum(tokens) / sum(seconds), 2) if tokens and sum(seconds) else None,
        "finish_reasons": dict(Counter(g.finish_reason for g in own if g.finish_reason)),
        "truncated": sum(g.truncated for g in own),
        "generation_errors": sum(g.error is not None for g in own),
        "fail_reasons": dict(Counter(s.fail_reason or "passed" for s in scores)),
        "sandbox_wall_s_per_game": round(float(np.mean(walls)), 3),
    }


def main() -> None:
    from aigclab.reports import markdown_table, write_json

    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="4 games only")
    parser.add_argument("--models", nargs="*", default=None, help="generation JSONL files of real models")
    parser.add_argument("--generate", nargs="*", default=[], help="GGUF names to generate with first")
    parser.add_argument("--max-tokens", type=int, default=2048)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--media", default="/tmp/aigclab-gamegym-models")
    args = parser.parse_args()
    samples = load_samples()[:4] if args.quick else load_samples()
    ids = [s.id for s in samples]
    model_files = [Path(p) for p in args.models] if args.models is not None else sorted(WORK.glob("*.jsonl"))
    model_files += [generate_with_cli(n, ids if args.quick else None, args.max_tokens) for n in args.generate]
    model_gens = [g for p in model_files for g in read_records(p, Generation) if g.sample_id in ids]
    gens = calibration_generations(samples) + model_gens
    load_before, start = os.getloadavg()[0], time.monotonic()
    scores, wall = run_and_score(gens, samples, Path(args.media), args.workers)
    by_gen = {(g.generator, g.sample_id): g for g in gens}
    names = list(dict.fromkeys(s.generator for s in scores))
    rows = {
        name: row(
            [s for s in scores if s.generator == name],
            by_gen,
            [wall[(name, s.sample_id)] for s in scores if s.generator == name],
        )
        for name in names
    }
    ref = {s.sample_id: s.auto_score for s in scores if s.generator == "reference"}
    model_names = sorted({g.generator for g in model_gens})
    for name in model_names:
        done = [s.sample_id for s in scores if s.generator == name]
        rows[name]["reference_mean_on_same_samples"] = round(float(np.mean([ref[i] for i in done])), 2)
        rows[name]["samples_done"] = f"{len(done)}/{len(samples)}"
    planted = [n for n in names if n.startswith(("broken:", "degenerate:"))]
    result = {
        "rows": rows,
        "degenerate_max_score": max(rows[n]["mean_score"] for n in planted),
        "degenerate_max_single_score": max(rows[n]["max_score"] for n in planted),
        "reference_mean_score": rows["reference"]["mean_score"],
        "separates": rows["reference"]["mean_score"] >= 80
        and all(rows[n]["mean_score"] <= 25 for n in planted),
        "models": model_names,
        "n_samples": len(samples),
        "settings": {
            "sandbox": f"virtual clock, wall {SANDBOX.wall_s:g} s, cpu {SANDBOX.cpu_s} s, probe off",
            "generation": f"llamacpp, 1 thread, greedy, max_tokens {args.max_tokens} (as in the CLI runs)",
            "bootstrap": f"{BOOT} resamples, seed 0, 95% percentile interval of the mean auto_score",
        },
        "machine": {
            "load_avg_before": round(load_before, 2),
            "load_avg_after": round(os.getloadavg()[0], 2),
            "cpus": os.cpu_count(),
            "note": "2 cores shared with other jobs: seconds are pessimistic",
        },
        "scoring_wall_s": round(time.monotonic() - start, 1),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    write_json(OUT / "gamegym_models.json", result)
    table = [
        {"row": n, **r, "score_ci95": f"{r['score_ci95'][0]}-{r['score_ci95'][1]}"} for n, r in rows.items()
    ]
    cols = ["row", "n", "pass_rate", "mean_score", "score_ci95", "seconds_per_game", "tokens_per_game"]
    cols += ["finish_reasons", "fail_reasons"]
    md = "# GameGym: real code models beside the calibration rows\n\n" + markdown_table(table, cols)
    md += (
        f"\n\nreference mean {result['reference_mean_score']}; worst planted program row (broken or degenerate)"
        f" mean {result['degenerate_max_score']}, worst single planted program {result['degenerate_max_single_score']}."
        f"\nseconds_per_game is generation time (0 for programs made by rewriting the reference). "
        f"Machine shared (load {result['machine']['load_avg_before']}): seconds are pessimistic.\n"
    )
    (OUT / "gamegym_models.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
