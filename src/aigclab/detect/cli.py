"""`aigclab detect`: score images (the main job) and run the AIGC-Mini detection protocols."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, cast

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from aigclab._cli import RunByDefault
from aigclab.errors import AigclabError
from aigclab.io import display_path
from aigclab.parallel import Engine

if TYPE_CHECKING:
    from aigclab.detect.base import Detector
    from aigclab.detect.outputs import ResultsFile
    from aigclab.detect.pipeline import FileKey

app = typer.Typer(cls=RunByDefault, no_args_is_help=True)
console = Console()


TABLE_ROWS = 40  # past this many files `--table auto` prints a summary instead of a row per file


@app.command()
def run(
    paths: list[Path] = typer.Argument(..., help="image files and/or folders (searched recursively)"),
    support: Path | None = typer.Option(None, help="few-shot support folder: real/ and fake/<generator>/"),
    detector: str = typer.Option(
        "default", help="'default' (FTNet + embedded support bank) or a trained detector file (.safetensors)"
    ),
    out: Path = typer.Option(Path("detections.jsonl"), help="results as JSONL; a CSV is written beside it"),
    threshold: float | None = typer.Option(None, help="P(fake) at or above which an image is called fake"),
    uncertain: float | None = typer.Option(
        None,
        help="call 'uncertain' within this distance of the threshold (replaces the detector's calibrated "
        "band; 0: no band)",
    ),
    device: str = typer.Option("cpu", help="torch device, e.g. cuda"),
    batch_size: int = typer.Option(64, help="images scored per batch (results are flushed per batch)"),
    cache_dir: Path | None = typer.Option(None, help="cache backbone features of the support images here"),
    engine: str = typer.Option(
        "local", help="local (process pool) or ray (extra [ray]; workers read the files)"
    ),
    address: str | None = typer.Option(
        None, help="Ray cluster address (with --engine ray), e.g. 10.0.0.1:6379"
    ),
    workers: int | None = typer.Option(None, help="decode processes (local) or Ray CPUs; default: all cores"),
    resume: bool = typer.Option(False, help="keep the rows in --out and score only files not in it yet"),
    table: str = typer.Option(
        "auto", help="auto: a row per file up to 40 files, else a summary; all: every row"
    ),
    max_patches: int | None = typer.Option(
        None,
        min=1,
        help="patches read per image (default: the detector's own, 64 for the default); fewer is faster, "
        "verdicts use the detector's band for that count where it has one (the default: 1, 2, 4, ... 64)",
    ),
) -> None:
    """Score images: probability of being AI-generated, verdict; bad files are skipped and reported."""
    import time

    from aigclab.detect.default import resolve_detector
    from aigclab.detect.outputs import ResultsFile, check_out, write_csv
    from aigclab.detect.pipeline import detect_stream, file_key
    from aigclab.io import scan_images

    if table not in ("auto", "all"):
        raise AigclabError(f"--table {table!r}: choose auto or all")
    csv_path = check_out(out)  # before any work, so a bad --out costs nothing
    det = resolve_detector(detector, str(cache_dir) if cache_dir else None, device)
    if threshold is not None:
        det.threshold = threshold
        det.band = det.count_bands = None  # a calibrated band belongs to the calibrated threshold
    if uncertain is not None:
        det.set_uncertain(uncertain)
    if max_patches is not None and max_patches != det.max_patches and not det.count_bands:
        console.print(
            f"reading {max_patches} patches per image; {detector!r} has no decision calibrated per patch "
            "count: its probabilities are noisier and its verdicts uncalibrated",
            style="yellow",
            markup=False,
            highlight=False,
        )
        det.max_patches = max_patches
    if support is not None:
        _add_support_folder(det, support)
    results = ResultsFile(out, resume=resume)
    already = 0

    def todo() -> Iterator[FileKey]:
        nonlocal already
        for root in paths:
            for path in scan_images(root):
                key = file_key(path)
                if key in results.done:
                    already += 1
                else:
                    yield key

    start, interrupted = time.perf_counter(), False
    total = sum(1 for root in paths for _ in scan_images(root)) - len(results.done) if _live() else None
    with _progress(total) as progress, _sigterm_as_interrupt(), _one_thread(engine == "local"):
        task = progress.add_task("scoring", total=total)
        try:
            for rows in detect_stream(
                det,
                todo(),
                engine=cast(Engine, engine),
                workers=workers,
                address=address,
                batch_size=batch_size,
            ):
                results.write(rows)
                progress.advance(task, len(rows))
        except KeyboardInterrupt:
            interrupted = True
    results.close()
    write_csv(out, csv_path)
    _report(results, csv_path, table, already, time.perf_counter() - start, interrupted)
    if interrupted:
        raise typer.Exit(130)


@contextmanager
def _one_thread(active: bool) -> Iterator[None]:
    """One torch/BLAS thread per scoring thread (the stream scores batches on several threads; idle
    BLAS threads would spin beside the decode workers and steal their cores)."""
    if not active:
        yield
        return
    import torch
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(threads)


def _live() -> bool:
    return console.is_terminal


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops the run like Ctrl-C: rows written so far stay valid and a summary is printed."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _progress(total: int | None) -> Progress:
    """A progress bar with images/s and ETA; silent when the output is not a terminal."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.speed:.1f} img/s" if total else ""),
        TimeRemainingColumn(),
        console=console,
        disable=not _live(),
        transient=True,
    )


def _report(
    results: ResultsFile, csv_path: Path, table: str, already: int, seconds: float, interrupted: bool
) -> None:
    from aigclab.detect.outputs import iter_rows

    n_rows = sum(results.counts.values()) + already
    if table == "all" or n_rows <= TABLE_ROWS:
        _print_table(iter_rows(results.path))
    else:
        _print_skipped(iter_rows(results.path), limit=10)
    c = results.counts
    scored = c["fake"] + c["real"] + c["uncertain"]
    head = "interrupted" if interrupted else "done"
    console.print(
        Text(
            f"{head}: {scored} scored ({c['fake']} fake, {c['real']} real, {c['uncertain']} uncertain), "
            f"{c['skipped']} skipped, {already} already in the output; "
            f"{scored / max(seconds, 1e-9):.1f} images/s"
        ),
        soft_wrap=True,
    )
    console.print(
        Text(f"results: {display_path(results.path)} (all rows) and {display_path(csv_path)}"), soft_wrap=True
    )
    if interrupted:
        console.print(Text("run the same command with --resume to score the rest"))


def _print_table(rows: Iterator[dict]) -> None:
    table = Table(title="aigclab detect")
    table.add_column("file", overflow="fold")
    table.add_column("probability")
    table.add_column("verdict")
    skipped = []
    for r in rows:
        if "skipped" in r:
            skipped.append(r)
            continue
        colour = {"fake": "red", "real": "green"}.get(r["verdict"], "yellow")
        table.add_row(Text(display_path(r["file"])), f"{r['probability']:.3f}", Text(r["verdict"], colour))
    console.print(table)
    _print_skipped(iter(skipped), limit=None)


def _print_skipped(rows: Iterator[dict], limit: int | None) -> None:
    shown = extra = 0
    for r in rows:
        if "skipped" not in r:
            continue
        if limit is not None and shown >= limit:
            extra += 1
            continue
        console.print(
            Text.assemble(("skipped ", "yellow"), f"{display_path(r['file'])}: {r['skipped']}"),
            soft_wrap=True,
        )
        shown += 1
    if extra:
        console.print(Text(f"... and {extra} more skipped (listed in the JSONL)"))


def _add_support_folder(det: Detector, support: Path) -> None:
    from aigclab.datasets import ImageDataset, scan_folder

    ds = ImageDataset(scan_folder(support))
    items = list(ds)
    _add_support(det, items, support)
    for path, reason in ds.skipped:
        console.print(Text.assemble(("skipped support ", "yellow"), f"{display_path(path)}: {reason}"))


def _add_support(det, items, where: Path) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    from aigclab.detect import FTNet, to_patches

    if not isinstance(det, FTNet):
        raise AigclabError("--support needs a few-shot detector (FTNet)")
    if not items:
        raise AigclabError(f"{where}: no readable support images")
    patches, labels = [], []
    for img, label, _gen in items:
        p = to_patches(img, det.patch_size, det.max_patches)
        patches.append(p)
        labels += [label] * len(p)
    det.add_support(np.concatenate(patches), np.array(labels))


@app.command()
def bench(
    protocol: str = typer.Option("cross-generator", help="cross-generator or few-shot"),
    out: Path = typer.Option(Path("runs/detect"), help="report folder (JSON, markdown, ROC and bar plots)"),
    compression: str | None = typer.Option(None, help="test condition, e.g. jpeg50 or osn-wechat"),
    seeds: int = typer.Option(3, help="few-shot episode seeds"),
    cache_dir: Path | None = typer.Option(Path(".cache/features"), help="feature cache"),
    quick: bool = typer.Option(False, help="tiny run (smoke test): few images, one seed, K=1"),
) -> None:
    """Run an AIGC-Mini protocol and write its report."""
    from aigclab.detect import bench as b

    cache = str(cache_dir) if cache_dir else None
    if protocol == "cross-generator" and quick:
        b.cross_generator(
            out, methods=("univfd-tiny", "ftnet-tiny"), compression=compression, cache_dir=cache,
            max_queries=16, max_train=32,
        )  # fmt: skip
    elif protocol == "cross-generator":
        b.cross_generator(out, compression=compression, cache_dir=cache)
    elif protocol == "few-shot" and quick:
        b.few_shot(
            out, ks=(1,), seeds=[0], finetune_k=(), cnn_k=(), baselines=("univfd-tiny",), refit_k=(1,),
            calibration_k=1, compression=compression, cache_dir=cache, max_queries=32, max_train=64,
        )  # fmt: skip
    elif protocol == "few-shot":
        b.few_shot(out, seeds=list(range(seeds)), compression=compression, cache_dir=cache)
    else:
        raise AigclabError(f"unknown protocol {protocol!r}; choose cross-generator or few-shot")
    console.print(f"reports written to {out}")


@app.command()
def train(
    name: str = typer.Argument(..., help="a trainable registered detector, e.g. plada-tiny or cnndet-tiny"),
    data: str = typer.Option(
        ...,
        "--data",
        "--labeled",
        help="'aigc-mini', or a folder (real/, fake/<generator>/) or CSV/JSONL manifest",
    ),
    out: Path = typer.Option(
        Path("model.safetensors"), help="trained detector (.safetensors, config JSON beside)"
    ),
    unlabeled: Path | None = typer.Option(
        None, help="unlabelled images, for detectors that use them (DPGNet)"
    ),
    seed: int = typer.Option(0, help="seed for initialisation and training"),
    set_: list[str] = typer.Option([], "--set", help="config override key=value (JSON value), repeatable"),
    max_patches: int = typer.Option(
        16, help="patches cut from each training image larger than the patch size"
    ),
) -> None:
    """Train a detector and save it; score images with it by `aigclab detect PATH --detector OUT`."""
    from aigclab.detect.train import parse_overrides, train_detector

    summary = train_detector(
        name,
        data,
        out,
        unlabeled=unlabeled,
        seed=seed,
        overrides=parse_overrides(set_),
        max_patches=max_patches,
        log=lambda msg: console.print(msg, highlight=False),
    )
    console.print(" ".join(f"{k}={v}" for k, v in summary.items()), highlight=False)
    console.print(f"wrote {out}; use it with: aigclab detect IMAGES --detector {out}")
