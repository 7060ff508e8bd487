"""`aigclab models`: fetch and convert pretrained weights into the user's cache; list what is installed."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(no_args_is_help=True)
console = Console()

SOURCES = ("nsfwjs",)


@app.command()
def fetch(
    source: str = typer.Argument(
        ..., help="what to fetch: nsfwjs (npm nsfwjs@4.4.0: MobileNetV2 + InceptionV3)"
    ),
    tarball: Path | None = typer.Option(
        None, help="use this local nsfwjs-4.4.0.tgz (from `npm pack`) offline"
    ),
    out: Path | None = typer.Option(None, help="model folder (default: $XDG_CACHE_HOME/aigclab/models)"),
    net: list[str] = typer.Option(["mobilenetv2", "inceptionv3"], help="networks to convert"),
    registry: str | None = typer.Option(
        None, help="npm registry URL (default: $NPM_CONFIG_REGISTRY or npmjs)"
    ),
) -> None:
    """Download the package from its registry, check its pinned sha512 and write safetensors."""
    from aigclab.errors import AigclabError
    from aigclab.nn.nsfwjs_fetch import fetch_nsfwjs

    if source not in SOURCES:
        raise AigclabError(f"unknown model source {source!r}; known: {', '.join(SOURCES)}")
    for name, path in fetch_nsfwjs(out, tarball, tuple(net), registry).items():
        console.print(f"{name}: {path} ({path.stat().st_size / 2**20:.1f} MiB)")


@app.command("list")
def list_models() -> None:
    """Where each pretrained backbone's weights are, and whether they are installed."""
    from aigclab.nn.nsfwjs import nsfwjs_weights_path, shipped_weights_path

    table = Table(title="pretrained backbones")
    for col in ("backbone", "weights", "status"):
        table.add_column(col)
    for net in ("mobilenetv2", "inceptionv3"):
        path = nsfwjs_weights_path(net)
        status = "shipped" if path == shipped_weights_path() else "fetched" if path.is_file() else "missing"
        hint = "" if path.is_file() else " (run `aigclab models fetch nsfwjs`)"
        table.add_row(f"{net}-nsfwjs", str(path), status + hint)
    console.print(table)
