"""The `aigclab` command. Each part mounts its own typer group from ``aigclab.<part>.cli``."""

from __future__ import annotations

import importlib
import platform
import sys
from importlib import metadata, resources

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from aigclab.errors import AigclabError

# Parts that have landed, in the order `aigclab --help` lists them.
PARTS: dict[str, str] = {
    "data": "datasets, degradations and the embedded benchmark",
    "detect": "score images as real or AI-generated; run detection benchmarks",
    "explain": "forensic evidence, heat maps and (M)LLM explanations of detector verdicts",
    "augment": "X-ray baggage simulator, Background Mixup and detector training with mAP",
    "gamegym": "V-GameGym harness: curate, generate, sandboxed runs, scoring and leaderboard",
    "diffusion": "low-bit diffusion quantization (MPQ-DM and baselines), sampling and FID",
    "models": "fetch pretrained backbones from package registries (nsfwjs) into the user's cache",
    "security": "quantization-conditioned backdoors: train, evaluate through real toolchains, scan",
    "serve": "HTTP API and web page: detect, explain, review AnomAgent quadruples (needs the serve extra)",
}

# Modules whose import fills the registries (`aigclab info` and the contract test import them all).
REGISTRY_MODULES: tuple[str, ...] = (
    *(f"aigclab.{part}" for part in PARTS),
    "aigclab.degradations",
    "aigclab.detect.ftnet",
    "aigclab.detect.dpgnet",
    "aigclab.detect.baselines",
    "aigclab.detect.plada",
    "aigclab.diffusion.baselines",
    "aigclab.diffusion.mpq",
    "aigclab.nn",
    "aigclab.data.zoo",
    "aigclab.llm",
    "aigclab.augment.train_det",
    "aigclab.gamegym.generate",
    "aigclab.security.tasks",
    "aigclab.explain.anomaly_models",
)

app = typer.Typer(
    help="aigclab: trustworthy generative imaging toolkit.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()

for _part, _help in PARTS.items():
    app.add_typer(importlib.import_module(f"aigclab.{_part}.cli").app, name=_part, help=_help)


@app.command()
def info() -> None:
    """Print versions, the compute device, every registry's entries and the shipped assets."""
    import torch

    from aigclab._registry import all_registries

    for module in REGISTRY_MODULES:
        importlib.import_module(module)
    versions = Table(title="versions", show_header=False)
    versions.add_row("aigclab", metadata.version("aigclab"))
    versions.add_row("python", platform.python_version())
    for pkg in ("torch", "torchvision", "numpy", "pillow"):
        versions.add_row(pkg, metadata.version(pkg))
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    versions.add_row("device", f"cpu ({torch.get_num_threads()} threads); cuda: {cuda}")
    console.print(versions)
    regs = Table(title="registries")
    regs.add_column("kind")
    regs.add_column("entries")
    for kind, reg in sorted(all_registries().items()):
        regs.add_row(kind, ", ".join(reg.list()))
    console.print(regs)
    assets = Table(title="shipped assets")
    assets.add_column("file")
    assets.add_column("size", justify="right")
    root = resources.files("aigclab") / "assets"
    for path in sorted(_walk(root)):
        assets.add_row(path[0], f"{path[1] / 1024:.0f} KiB")
    console.print(assets)


def _walk(root, prefix: str = ""):  # type: ignore[no-untyped-def]
    for entry in root.iterdir():
        if entry.is_dir():
            yield from _walk(entry, f"{prefix}{entry.name}/")
        elif not entry.name.startswith((".", "__")):
            yield f"{prefix}{entry.name}", len(entry.read_bytes())


def main() -> None:
    """Entry point: user errors print one line, not a traceback."""
    try:
        app()
    except AigclabError as err:
        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {escape(str(err))}", highlight=False)
        sys.exit(2)
