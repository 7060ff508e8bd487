"""`aigclab data`: inspect datasets and apply degradations."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import typer
from PIL import Image
from rich.console import Console
from rich.table import Table

app = typer.Typer(no_args_is_help=True)
console = Console()


@app.command()
def scan(
    source: Path = typer.Argument(..., help="a folder (real/, fake/<generator>/) or a CSV/JSONL manifest"),
    check: bool = typer.Option(False, help="decode every image and report the unreadable ones"),
) -> None:
    """Count images per generator and split; optionally check that every file decodes."""
    from aigclab.datasets import ImageDataset, load_records

    records = load_records(source)
    table = Table(title=f"{source}: {len(records)} images")
    for col in ("generator", "label", "split", "count"):
        table.add_column(col)
    for (gen, label, split), n in sorted(Counter((r.generator, r.label, r.split) for r in records).items()):
        table.add_row(gen, "fake" if label else "real", split or "-", str(n))
    console.print(table)
    if check:
        ds = ImageDataset(records)
        n_ok = sum(1 for _ in ds)
        console.print(f"{n_ok} decoded, {len(ds.skipped)} skipped")
        for path, reason in ds.skipped:
            console.print(f"  skipped {path}: {reason}")


@app.command()
def degrade(
    source: Path = typer.Argument(..., help="an image file or a folder of images"),
    out: Path = typer.Argument(..., help="output folder (PNG files, same relative paths)"),
    spec: str = typer.Option(
        "jpeg:quality=75", help="e.g. 'jpeg:quality=30-100+blur:sigma=1' or 'osn-facebook'"
    ),
    seed: int = typer.Option(0, help="seed for random parameters"),
) -> None:
    """Apply a degradation chain to images and save the results as PNG (bad files are skipped)."""
    from aigclab.degradations import parse_degradation
    from aigclab.io import iter_images, list_images

    deg = parse_degradation(spec)
    rng = np.random.default_rng(seed)
    paths = list_images(source)
    skipped: list[tuple[str, str]] = []
    n = 0
    for path, img in iter_images(paths, skipped):
        rel = Path(path).relative_to(source) if source.is_dir() else Path(Path(path).name)
        dest = (out / rel).with_suffix(".png")
        dest.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(deg(img, rng)).save(dest)
        n += 1
    console.print(f"wrote {n} images to {out} with {deg!r}")
    for path, reason in skipped:
        console.print(f"[yellow]skipped[/yellow] {path}: {reason}")


@app.command("build-mini")
def build_mini_cmd(
    out: Path = typer.Option(None, help="benchmark folder (default: the shipped aigclab/assets/aigc_mini)"),
    work: Path = typer.Option(
        Path.home() / ".cache" / "aigclab" / "aigc-mini-work",
        help="checkpoints: zoo weights and samples (an interrupted build resumes from them)",
    ),
    quick: bool = typer.Option(False, help="tiny presets and a few samples (seconds; for tests)"),
    generators: str = typer.Option("", help="comma-separated subset of the zoo (default: all)"),
) -> None:
    """Rebuild AIGC-Mini from scratch with fixed seeds: train the zoo, sample, cut real patches, write assets."""
    import time

    from aigclab.data.build import ZOO_ORDER, build_mini
    from aigclab.data.mini import mini_root
    from aigclab.errors import AigclabError

    if quick and out is None:
        raise AigclabError(
            "--quick builds a tiny test benchmark; give --out so the shipped one is not replaced"
        )
    names = [g for g in generators.split(",") if g] or list(ZOO_ORDER)
    start = time.perf_counter()

    def log(msg: str) -> None:
        console.print(f"[{time.perf_counter() - start:6.0f}s] {msg}", highlight=False)

    manifest = build_mini(out or mini_root(), work, generators=names, quick=quick, log=log)
    console.print(f"wrote {manifest}")


@app.command()
def show(
    out: Path = typer.Argument(Path("aigc-mini-show"), help="folder for the PNG grids and summary.md"),
    root: Path = typer.Option(None, help="benchmark folder (default: the shipped one)"),
) -> None:
    """Write a PNG grid per generator and a summary table (count, Frechet distance in backbone features)."""
    from aigclab.data.show import show_mini
    from aigclab.reports import markdown_table

    rows = show_mini(out, root)
    table = Table(title="AIGC-Mini (FD: aigclab-tiny pooled features vs real test)")
    columns = ["generator", "family", "n_train", "n_test", "fd"]
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*(f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in columns))
    console.print(table)
    (out / "summary.md").write_text(markdown_table(rows, columns) + "\n")
    console.print(f"wrote {len(rows)} grids and summary.md to {out}")
