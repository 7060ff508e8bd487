"""`aigclab detect`: score images (the main job) and run the AIGC-Mini detection protocols."""

from __future__ import annotations

import csv
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from aigclab._cli import RunByDefault
from aigclab.errors import AigclabError

app = typer.Typer(cls=RunByDefault, no_args_is_help=True)
console = Console()


@app.command()
def run(
    paths: list[Path] = typer.Argument(..., help="image files and/or folders (searched recursively)"),
    support: Path | None = typer.Option(None, help="few-shot support folder: real/ and fake/<generator>/"),
    detector: str = typer.Option(
        "default", help="'default' (FTNet + embedded support bank) or a trained detector file (.safetensors)"
    ),
    out: Path = typer.Option(Path("detections.jsonl"), help="results as JSONL; a CSV is written beside it"),
    threshold: float = typer.Option(0.5, help="probability at or above which an image is called fake"),
    device: str = typer.Option("cpu", help="torch device, e.g. cuda"),
    batch_size: int = typer.Option(256, help="images scored per batch"),
    cache_dir: Path | None = typer.Option(None, help="cache backbone features here"),
    engine: str = typer.Option("local", help="feature extraction engine: local or ray (extra [ray])"),
) -> None:
    """Score images: probability of being AI-generated, verdict; bad files are skipped and reported."""
    from aigclab.datasets import ImageDataset, scan_folder
    from aigclab.detect.default import resolve_detector
    from aigclab.io import iter_images, list_images, write_jsonl

    det = resolve_detector(detector, str(cache_dir) if cache_dir else None, device, engine)
    if support is not None:
        ds = ImageDataset(scan_folder(support))
        items = list(ds)
        _add_support(det, items, support)
        for path, reason in ds.skipped:
            console.print(f"[yellow]skipped support[/yellow] {path}: {reason}")
    files: list[Path] = []
    for p in paths:
        files += list_images(p) if p.is_dir() else [p]
    skipped: list[tuple[str, str]] = []
    rows = []
    batch: list[tuple[str, object]] = []
    for item in iter_images(files, skipped):
        batch.append(item)
        if len(batch) == batch_size:
            rows += _score_batch(det, batch, threshold)
            batch = []
    rows += _score_batch(det, batch, threshold)
    _print_table(rows, skipped)
    write_jsonl(out, rows + [{"file": p, "skipped": reason} for p, reason in skipped])
    with out.with_suffix(".csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "probability", "verdict"])
        writer.writeheader()
        writer.writerows(rows)
    console.print(f"wrote {out} and {out.with_suffix('.csv')}: {len(rows)} scored, {len(skipped)} skipped")


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


def _score_batch(det, batch, threshold: float) -> list[dict]:  # type: ignore[no-untyped-def]
    if not batch:
        return []
    probs = det.score([img for _, img in batch])
    return [
        {"file": path, "probability": round(float(p), 4), "verdict": "fake" if p >= threshold else "real"}
        for (path, _), p in zip(batch, probs, strict=True)
    ]


def _print_table(rows: list[dict], skipped: list[tuple[str, str]]) -> None:
    table = Table(title="aigclab detect")
    for col in ("file", "probability", "verdict"):
        table.add_column(col)
    for r in rows[:200]:
        colour = "red" if r["verdict"] == "fake" else "green"
        table.add_row(r["file"], f"{r['probability']:.3f}", f"[{colour}]{r['verdict']}[/{colour}]")
    console.print(table)
    if len(rows) > 200:
        console.print(f"... and {len(rows) - 200} more (see the output files)")
    for path, reason in skipped:
        console.print(f"[yellow]skipped[/yellow] {path}: {reason}")


@app.command()
def bench(
    protocol: str = typer.Option("cross-generator", help="cross-generator or few-shot"),
    out: Path = typer.Option(Path("runs/detect"), help="report folder (JSON, markdown, ROC and bar plots)"),
    compression: str | None = typer.Option(None, help="test condition, e.g. jpeg50 or osn-wechat"),
    seeds: int = typer.Option(3, help="few-shot episode seeds"),
    cache_dir: Path | None = typer.Option(Path(".cache/features"), help="feature cache"),
) -> None:
    """Run an AIGC-Mini protocol and write its report."""
    from aigclab.detect import bench as b

    cache = str(cache_dir) if cache_dir else None
    if protocol == "cross-generator":
        b.cross_generator(out, compression=compression, cache_dir=cache)
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
