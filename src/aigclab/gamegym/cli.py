"""`aigclab gamegym`: curate, generate, run, score and report visual game programs."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(no_args_is_help=True)
console = Console()


class Features(StrEnum):
    structural = "structural"
    minilm = "minilm"


DATASET = typer.Option(
    None,
    "--dataset",
    help="official V-GameGym JSONL/JSON/parquet or our Sample JSONL; default: embedded games",
)
IDS = typer.Option(None, "--id", help="only these sample ids (repeat the option)")


def _backend_options(base_url: str | None, model: str | None, json_mode: str | None) -> dict:
    opts = {"base_url": base_url, "model": model, "json_mode": json_mode}
    return {k: v for k, v in opts.items() if v is not None}


@app.command()
def curate(
    out: Path = typer.Option(Path("gamegym/curated.jsonl"), help="samples with cluster_id and quality_score"),
    dataset: Path | None = DATASET,
    features: Features = typer.Option(Features.structural, help="structural features or minilm embeddings"),
    k: int = typer.Option(10, help="number of k-means clusters"),
    seed: int = typer.Option(0),
) -> None:
    """Embed the programs, cluster them, pick one representative per cluster, report coverage."""
    from aigclab.gamegym.curate import CurateConfig
    from aigclab.gamegym.curate import curate as run_curate
    from aigclab.gamegym.records import load_samples, write_records
    from aigclab.reports import write_json

    result = run_curate(load_samples(dataset), CurateConfig(features=features.value, k=k, seed=seed))
    write_records(out, result.samples)
    reps = [s for s in result.samples if s.id in result.representatives]
    write_records(out.with_name(out.stem + "_representatives.jsonl"), reps)
    write_json(out.with_name(out.stem + "_coverage.json"), result.coverage)
    table = Table(title=f"{k} clusters ({features}); themes covered {result.coverage['theme_coverage']:.0%}")
    for col in ("cluster", "size", "representative", "quality", "themes"):
        table.add_column(col)
    for c in result.coverage["clusters"]:
        themes = ", ".join(f"{t}:{n}" for t, n in c["themes"].items())
        table.add_row(str(c["cluster"]), str(c["size"]), c["representative"], f"{c['quality']:.1f}", themes)
    console.print(table)
    console.print(f"wrote {out} and the representatives / coverage files beside it")


def _chat_options(
    backend: str,
    base_url: str | None,
    model: str | None,
    max_tokens: int | None,
    timeout: float | None,
    stream: bool,
    threads: int | None,
) -> dict:
    """The CLI's generation options under each backend's own config names."""
    if backend == "openai":
        opts = {"base_url": base_url, "model": model, "max_tokens": max_tokens, "timeout_s": timeout}
        opts["stream"] = stream or None
    elif backend == "llamacpp":
        opts = {"model_path": model, "max_tokens": max_tokens, "n_threads": threads}
    elif backend == "transformers":
        opts = {"model_path": model, "max_new_tokens": max_tokens}
    else:
        opts = {"model": model}
    return {k: v for k, v in opts.items() if v is not None}


def _progress():  # type: ignore[no-untyped-def]
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("games"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
    )


@app.command()
def generate(
    generator: str = typer.Argument(..., help="reference | broken | degenerate | chat"),
    out: Path = typer.Option(Path("gamegym/generations.jsonl"), help="JSONL, one line per finished game"),
    dataset: Path | None = DATASET,
    ids: list[str] | None = IDS,
    backend: str = typer.Option("openai", help="chat backend: openai | llamacpp | transformers"),
    base_url: str | None = typer.Option(None, help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1"),
    model: str | None = typer.Option(
        None,
        help="openai: the server's model name; llamacpp: a GGUF file or a fetched name "
        "(qwen2.5-coder-1.5b); transformers: a local model folder",
    ),
    label: str | None = typer.Option(None, help="name on the leaderboard (default backend:model)"),
    mode: str | None = typer.Option(None, help="broken: force one defect; degenerate: which one"),
    max_tokens: int | None = typer.Option(
        None, help="chat: token limit of one reply (a reply cut there is marked truncated)"
    ),
    timeout: float | None = typer.Option(
        None, help="openai: seconds to wait for the reply (with --stream: for the next token); never retried"
    ),
    stream: bool = typer.Option(False, "--stream", help="openai: stream the reply token by token"),
    threads: int | None = typer.Option(None, help="llamacpp: CPU threads (default 1: see the backend's doc)"),
    resume: bool = typer.Option(
        False, "--resume", help="keep the successful generations already in --out and do the rest"
    ),
) -> None:
    """Write one program per sample with the chosen generator, appending each to --out as it finishes.

    Each record holds the code, seconds, tokens and finish reason (a reply cut at the token limit is
    marked truncated). Interrupted, run again with --resume to continue where it stopped.
    """
    from aigclab.gamegym.generate import create_generator
    from aigclab.gamegym.records import Generation, load_samples
    from aigclab.gamegym.run import generate_to

    options: dict = {}
    if generator == "chat":
        chat = _chat_options(backend, base_url, model, max_tokens, timeout, stream, threads)
        options = {"backend": backend, "label": label, **chat}
    elif generator in ("broken", "degenerate") and mode:
        options = {"mode": mode}
    samples = load_samples(dataset, ids)
    gen = create_generator(generator, **options)
    tokens, seconds = 0, 0.0
    with _progress() as bar:
        task = bar.add_task("generate", total=len(samples), rate="")

        def started(kept: int, todo: int) -> None:
            if kept:
                console.print(f"kept {kept} finished generations from {out}; generating the other {todo}")
            bar.update(task, completed=kept)

        def finished(g: Generation) -> None:
            nonlocal tokens, seconds
            tokens, seconds = tokens + (g.tokens or 0), seconds + g.seconds
            rate = f"{tokens / seconds:.1f} tok/s" if tokens and seconds > 0 else ""
            bar.update(task, advance=1, rate=rate)

        kept, new = generate_to(out, samples, gen, resume=resume, on_start=started, on_result=finished)
    failed = sum(1 for g in new if g.error)
    cut = sum(1 for g in new if g.truncated)
    console.print(
        f"wrote {len(kept) + len(new)} generations to {out} ({len(new)} new, {failed} failed, {cut} truncated)"
    )


class IsolationChoice(StrEnum):
    auto = "auto"
    namespaces = "namespaces"
    user_namespaces = "user-namespaces"
    none = "none"


@app.command()
def run(
    generations: list[Path] = typer.Argument(..., help="generation JSONL file(s)"),
    out: Path = typer.Option(Path("gamegym/attempts.jsonl")),
    media: Path = typer.Option(Path("gamegym/media"), help="screenshots and video frames go here"),
    engine: str = typer.Option("local", help="local | ray"),
    workers: int | None = typer.Option(None, help="parallel sandboxes (default: CPU count)"),
    address: str | None = typer.Option(None, help="Ray cluster address"),
    probe: bool = typer.Option(
        True, help="also run without input (forked at the first input) for input response"
    ),
    isolation: IsolationChoice = typer.Option(
        IsolationChoice.auto,
        help="auto refuses to run when no namespaces work; 'none' runs programs UNSANDBOXED (trusted code only)",
    ),
    resume: bool = typer.Option(True, help="keep the finished attempts already in --out and run the rest"),
    export: bool = typer.Option(False, help="also write PNG screenshots and gameplay.gif per attempt"),
    wall_s: float = typer.Option(20.0),
    cpu_s: int = typer.Option(10),
    memory_mb: int = typer.Option(1024, help="memory of the whole attempt, all its processes together"),
) -> None:
    """Run every program in the sandbox; each ends as one flat record, written as it finishes.

    Interrupted (Ctrl-C, SIGTERM), every sandbox dies, temp dirs go, and the attempts that finished
    stay in --out; run the same command again to do the rest.
    """
    import signal
    from collections import Counter

    from aigclab.gamegym.frames import ArtefactError, export_media
    from aigclab.gamegym.records import Attempt, Generation, attempt_key, read_records
    from aigclab.gamegym.run import execute
    from aigclab.gamegym.sandbox import SandboxConfig, resolve_isolation

    gens = [g for path in generations for g in read_records(path, Generation)]
    kept = read_records(out, Attempt) if resume and out.is_file() else []
    done = {a.key for a in kept}
    todo = [g for g in gens if attempt_key(g.sample_id, g.generator, g.code) not in done]
    if kept:
        console.print(f"kept {len(kept)} finished attempts from {out}; running the other {len(todo)}")
    if not todo:
        console.print(f"nothing to run: all {len(kept)} attempts are in {out}")
        return
    mode = resolve_isolation(isolation.value)  # refuses here, before anything runs, when none works
    if mode == "none":
        console.print(
            "[yellow]warning:[/yellow] --isolation none: the programs run UNSANDBOXED (no namespaces, "
            "your files and network are reachable); use it only for trusted code"
        )
    else:
        console.print(f"running {len(todo)} programs in the sandbox (isolation: {mode})")
    cfg = SandboxConfig(wall_s=wall_s, cpu_s=cpu_s, memory_mb=memory_mb, isolation=mode)  # type: ignore[arg-type]
    out.parent.mkdir(parents=True, exist_ok=True)
    sink = out.open("a" if kept else "w")

    def keep(i: int, attempt: Attempt) -> None:
        if export and attempt.media_dir:
            try:
                export_media(attempt.media_dir)
            except ArtefactError as err:
                console.print(f"[yellow]skipped export:[/yellow] {err}")
        sink.write(attempt.model_dump_json() + "\n")
        sink.flush()

    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM unwinds like Ctrl-C
    try:
        attempts = execute(
            todo,
            cfg,
            media,
            probe=probe,
            engine=engine,  # type: ignore[arg-type]
            workers=workers,
            address=address,
            on_result=keep,
        )
    except KeyboardInterrupt:
        sink.close()
        console.print(f"[yellow]interrupted:[/yellow] finished attempts are in {out}; run again to resume")
        raise typer.Exit(130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        sink.close()
    counts = Counter(a.status for a in [*kept, *attempts])
    console.print(
        f"wrote {len(kept) + len(attempts)} attempts to {out} (isolation {mode}): "
        + ", ".join(f"{k} {v}" for k, v in counts.items())
    )


@app.command()
def score(
    attempts: Path = typer.Argument(..., help="attempts JSONL from `run`"),
    out: Path = typer.Option(Path("gamegym/scores.jsonl")),
    dataset: Path | None = DATASET,
    judge: str | None = typer.Option(
        None, help="chat backend for the three judges (e.g. openai); default: none"
    ),
    base_url: str | None = typer.Option(None),
    model: str | None = typer.Option(None),
    json_mode: str | None = typer.Option(None, help="json_schema | json_object | off"),
) -> None:
    """Automatic metrics for every attempt, plus the code/screenshot/video judges when --judge is set."""
    from aigclab.gamegym.records import Attempt, load_samples, read_records, write_records
    from aigclab.gamegym.run import score_all
    from aigclab.llm import create_backend

    backend = create_backend(judge, **_backend_options(base_url, model, json_mode)) if judge else None
    scores = score_all(read_records(attempts, Attempt), load_samples(dataset), backend)
    write_records(out, scores)
    passed = sum(s.passed for s in scores)
    console.print(f"wrote {len(scores)} scores to {out}: {passed} passed")


@app.command()
def report(
    scores: list[Path] = typer.Argument(..., help="score JSONL file(s)"),
    out: Path = typer.Option(Path("gamegym/report"), help="folder for leaderboard.json/.md/.png"),
) -> None:
    """Leaderboard over generators: pass rate, automatic and judge scores."""
    from aigclab.gamegym.records import Score, read_records
    from aigclab.gamegym.run import LEADERBOARD_COLUMNS, write_leaderboard

    rows = write_leaderboard([s for p in scores for s in read_records(p, Score)], out)
    table = Table(title="GameGym leaderboard")
    cols = [c for c in LEADERBOARD_COLUMNS if any(r.get(c) is not None for r in rows)]
    for col in cols:
        table.add_column(col)
    for row in rows:
        table.add_row(*[f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in cols])
    console.print(table)
    console.print(json.dumps({r["generator"]: r["fail_reasons"] for r in rows}))
    console.print(f"wrote {out}/leaderboard.json, .md and .png")
