"""`aigclab explain`: verdict, forensic evidence, heat map and a readable explanation per image."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from aigclab._cli import RunByDefault

app = typer.Typer(cls=RunByDefault, no_args_is_help=True)
console = Console()


@app.command()
def run(
    images: list[Path] = typer.Argument(..., help="image files or folders"),
    backend: str = typer.Option("cues", help="cues (no LLM), openai or transformers"),
    base_url: str = typer.Option("http://127.0.0.1:8000/v1", help="openai: the server's /v1 URL"),
    model: str = typer.Option("default", help="openai: model name; transformers: local model directory"),
    out: Path = typer.Option(Path("explanations.jsonl"), help="one JSON record per image"),
    heatmaps: Path = typer.Option(Path("heatmaps"), help="folder for attribution heat-map PNGs"),
    detector: str = typer.Option("default", help="'default' or a saved detector .safetensors"),
) -> None:
    """Explain why each image is judged real or AI-generated; bad files are skipped and reported."""
    from aigclab.detect.default import resolve_detector
    from aigclab.explain import create_explainer, explain_image, save_heatmap
    from aigclab.io import iter_images, list_images, write_jsonl

    kwargs = {"openai": {"base_url": base_url, "model": model}, "transformers": {"model_path": model}}.get(
        backend, {}
    )
    explainer = create_explainer(backend, **kwargs)
    det = resolve_detector(detector)
    files: list[Path] = []
    for p in images:
        files += list_images(p) if p.is_dir() else [p]
    heatmaps.mkdir(parents=True, exist_ok=True)
    skipped: list[tuple[str, str]] = []
    records = []
    for i, (path, img) in enumerate(iter_images(files, skipped)):
        result = explain_image(img, det, explainer)
        heat = save_heatmap(heatmaps / f"{i:04d}_{Path(path).stem}.png", img, result.heatmap)
        records.append({"file": path, "heatmap": str(heat), **result.to_record()})
        _show(path, result)
    write_jsonl(out, records + [{"file": p, "skipped": r} for p, r in skipped])
    for path, reason in skipped:
        console.print(f"[yellow]skipped[/yellow] {path}: {reason}")
    console.print(
        f"wrote {out} ({len(records)} explained, {len(skipped)} skipped) and heat maps in {heatmaps}"
    )


def _show(path: str, result) -> None:  # type: ignore[no-untyped-def]
    e = result.explanation
    colour = "red" if e.verdict.label == "fake" else "green"
    console.rule(
        f"{path}: [{colour}]{e.verdict.label}[/{colour}] (p={e.verdict.probability:.2f}, {result.backend})"
    )
    table = Table(show_header=True)
    for col in ("attribute", "finding", "strength"):
        table.add_column(col)
    for ev in e.evidence:
        table.add_row(ev.attribute, ev.finding + (f" {ev.region}" if ev.region else ""), f"{ev.strength:.2f}")
    console.print(table)
    console.print(e.summary)


@app.command("build-reference")
def build_reference_cmd(per_class: int = typer.Option(600, help="train patches per class")) -> None:
    """Rebuild the cue reference distribution from AIGC-Mini's train split (fixed seed)."""
    from aigclab.explain.reference import build_reference, reference_path

    ref = build_reference(per_class=per_class)
    for name, r in ref["cues"].items():
        console.print(f"{name}: train AUC of fakes vs reals {r['train_auc']:.3f}")
    console.print(f"wrote {reference_path()}")
