"""`aigclab explain`: verdict, forensic evidence, heat map and a readable explanation per image."""

from __future__ import annotations

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
    images: list[Path] = typer.Argument(..., help="image files or folders"),
    backend: str = typer.Option("cues", help="cues (no LLM), openai or transformers"),
    base_url: str = typer.Option("http://127.0.0.1:8000/v1", help="openai: the server's /v1 URL"),
    model: str = typer.Option("default", help="openai: model name; transformers: local model directory"),
    out: Path = typer.Option(Path("explanations.jsonl"), help="one JSON record per image"),
    heatmaps: Path = typer.Option(Path("heatmaps"), help="folder for attribution heat-map PNGs"),
    detector: str = typer.Option("default", help="'default' or a saved detector .safetensors"),
    anomaly_model: str = typer.Option(
        "",
        help="also list semantic anomalies as quadruples: reasoner, a reasoner .safetensors, openai, transformers",
    ),
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
    anomalies = _anomaly_model(anomaly_model, base_url, model) if anomaly_model else None
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
        if anomalies is not None:
            quads = anomalies.predict([img])[0]
            records[-1]["anomalies"] = [q.model_dump(exclude_none=True) for q in quads]
            _show_quadruples(quads)
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


@app.command("train-reasoner")
def train_reasoner_cmd(
    out: Path = typer.Option(
        None, help="weights file (default: the shipped assets/explain/anom_reasoner.safetensors)"
    ),
    n_train: int = typer.Option(3000, help="AnomReason-Mini train scenes"),
    epochs: int = typer.Option(14),
    seed: int = typer.Option(0),
) -> None:
    """Train the anomaly reasoner on AnomReason-Mini's train split (fixed seed; one CPU thread)."""
    import torch

    from aigclab.explain.reasoner import ReasonerConfig, reasoner_path, train_reasoner

    torch.set_num_threads(1)
    path = out or reasoner_path()
    train_reasoner(ReasonerConfig(n_train=n_train, epochs=epochs, seed=seed), out=path, log=console.print)
    console.print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB) and {path.with_suffix('.json').name}")


def _anomaly_model(name: str, base_url: str, model: str):  # type: ignore[no-untyped-def]
    from aigclab.explain.anomaly_models import create_anomaly_model

    if name.endswith(".safetensors"):
        return create_anomaly_model("reasoner", path=name)
    kwargs = {"openai": {"base_url": base_url, "model": model}, "transformers": {"model_path": model}}
    return create_anomaly_model(name, **kwargs.get(name, {}))


def _show_quadruples(quads) -> None:  # type: ignore[no-untyped-def]
    if not quads:
        console.print("semantic anomalies: none found")
        return
    table = Table(title="semantic anomalies", show_header=True)
    for col in ("name", "phenomenon", "reasoning", "severity", "confidence"):
        table.add_column(col)
    for q in quads:
        conf = "" if q.confidence is None else f"{q.confidence:.2f}"
        table.add_row(q.name, q.phenomenon, q.reasoning, str(q.severity), conf)
    console.print(table)


@app.command()
def annotate(
    images: list[Path] = typer.Argument(..., help="image files or folders"),
    db: Path = typer.Option(Path("anomagent.db"), help="SQLite store of the run (created if missing)"),
    backend: str = typer.Option("openai", help="chat backend: openai or transformers"),
    base_url: str = typer.Option("http://127.0.0.1:8000/v1", help="openai: the server's /v1 URL"),
    model: str = typer.Option("default", help="openai: model name; transformers: local model directory"),
    prompts: Path = typer.Option(
        None, help="folder with anomagent_<step>.json files overriding the shipped prompts"
    ),
    price_prompt: float = typer.Option(0.0, help="USD per 1,000 prompt tokens"),
    price_completion: float = typer.Option(0.0, help="USD per 1,000 completion tokens"),
) -> None:
    """AnomAgent: describe, propose, reason, rate and criticise anomalies per image; resumable."""
    from aigclab.explain.annotation_store import AnnotationStore
    from aigclab.explain.anomagent import AgentConfig, AnomAgent
    from aigclab.io import list_images
    from aigclab.llm import create_backend

    kwargs = {"openai": {"base_url": base_url, "model": model}, "transformers": {"model_path": model}}
    chat = create_backend(backend, **kwargs.get(backend, {}))
    cfg = AgentConfig(
        model=f"{backend}:{model}", price_prompt_per_1k=price_prompt, price_completion_per_1k=price_completion
    )
    store = AnnotationStore(db)
    files: list[Path] = []
    for p in images:
        files += list_images(p) if p.is_dir() else [p]
    summary = AnomAgent(chat, store, cfg, prompts).run(
        files, on_image=lambda p, m: console.print(f"{p}: {m}")
    )
    for path, reason in summary["skipped"]:
        console.print(f"[yellow]skipped[/yellow] {path}: {reason}")
    usage = store.usage()
    tokens = sum((u["prompt_tokens"] or 0) + (u["completion_tokens"] or 0) for u in usage.values())
    cost = sum(u["cost"] or 0 for u in usage.values())
    console.print(
        f"{summary['annotated']} annotated, {summary['reused']} reused from {db}, {len(summary['skipped'])} skipped; "
        f"{summary['calls']} calls this run; store total {tokens} tokens, ${cost:.4f}"
    )


@app.command()
def review(
    db: Path = typer.Argument(..., help="AnomAgent store"),
    reviewer: str = typer.Option("", help="your name, stored with each decision"),
    all_: bool = typer.Option(False, "--all", help="also revisit proposals already reviewed"),
) -> None:
    """Review proposals in the terminal: a accept, e edit, r reject, s skip, b back, q quit."""
    from aigclab.explain.annotation_store import AnnotationStore
    from aigclab.explain.review import review_terminal

    store = AnnotationStore(db, create=False)
    review_terminal(
        store,
        typer.getchar,
        lambda text, default: typer.prompt(text, default=default),
        console,
        reviewer,
        include_reviewed=all_,
    )


@app.command()
def export(
    db: Path = typer.Argument(..., help="AnomAgent store"),
    out: Path = typer.Argument(..., help="ground-truth quadruple JSONL"),
) -> None:
    """Export reviewed quadruples (accepted or edited) of fully reviewed images as ground truth."""
    from aigclab.explain.annotation_store import AnnotationStore
    from aigclab.explain.quadruples import write_quadruples

    records, stats = AnnotationStore(db, create=False).export_reviewed()
    write_quadruples(out, records)
    console.print(
        f"wrote {out}: {stats['exported']} images; {stats['partially_reviewed']} left out (review pending)"
    )


@app.command()
def mini(
    out: Path = typer.Argument(..., help="folder for the PNGs and ground-truth JSONL"),
    split: str = typer.Option("test", help="train, val or test (disjoint seed ranges)"),
    n: int = typer.Option(100, help="number of scenes"),
    anomaly_rate: float = typer.Option(0.7, help="fraction of scenes with planted anomalies"),
) -> None:
    """Render AnomReason-Mini scenes with planted anomalies and their exact quadruples."""
    from PIL import Image

    from aigclab.explain.anomreason_mini import SPLIT_SEEDS, render_scene
    from aigclab.explain.quadruples import ImageAnomalies, write_quadruples

    if split not in SPLIT_SEEDS:
        raise AigclabError(f"--split must be one of {', '.join(SPLIT_SEEDS)}, got {split!r}")
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        scene = render_scene(SPLIT_SEEDS[split] + i, anomaly_rate)
        name = f"{split}_{i:05d}.png"
        Image.fromarray(scene.image).save(out / name)
        records.append(
            ImageAnomalies(image=name, anomalies=scene.anomalies, meta={"seed": scene.meta["seed"]})
        )
    write_quadruples(out / "ground_truth.jsonl", records)
    console.print(f"wrote {n} scenes and {out / 'ground_truth.jsonl'}")


@app.command()
def score(
    predictions: Path = typer.Argument(..., help="JSONL with 'file' or 'image' and 'anomalies' per image"),
    ground_truth: Path = typer.Argument(
        ..., help="quadruple JSONL (e.g. from `explain export` or `explain mini`)"
    ),
    severity_weighted: bool = typer.Option(
        False, help="weight ground truths and false positives by severity"
    ),
) -> None:
    """SemAP and SemF1 of predicted quadruples against ground truth (images matched by file name)."""
    from aigclab.explain.quadruples import Quadruple, read_quadruples
    from aigclab.io import read_jsonl
    from aigclab.metrics.semantic import SemanticMatchMetric

    gt = {Path(r.image).name: r.anomalies for r in read_quadruples(ground_truth)}
    preds: dict[str, list[Quadruple]] = {}
    for i, row in enumerate(read_jsonl(predictions), 1):
        key = row.get("file") or row.get("image")
        if key is None or "skipped" in row:
            continue
        try:
            preds[Path(key).name] = [Quadruple.model_validate(q) for q in row.get("anomalies", [])]
        except ValueError as err:
            raise AigclabError(f"{predictions}:{i}: bad quadruple ({err})") from None
    missing = sorted(set(gt) - set(preds))
    names = sorted(set(gt) & set(preds))
    if not names:
        raise AigclabError(f"{predictions}: no image in common with {ground_truth}")
    metric = SemanticMatchMetric(severity_weighted=severity_weighted)
    metric.update([preds[n] for n in names], [gt[n] for n in names])
    r = metric.compute()
    console.print(
        f"SemAP {r['semap']:.4f}  SemF1 {r['semf1']:.4f}  precision {r['precision']:.3f}  recall {r['recall']:.3f}  "
        f"severity MAE {r['sev_mae']:.2f}  ({r['n_images']} images, {r['n_pred']} predicted, {r['n_gt']} true)"
    )
    if missing:
        console.print(
            f"[yellow]{len(missing)} ground-truth images have no prediction and were left out[/yellow]"
        )


@app.command()
def reasonableness(
    folder: Path = typer.Argument(..., help="one sub-folder of images per generator"),
    anomaly_model: str = typer.Option(
        "reasoner", help="reasoner, a reasoner .safetensors, openai, transformers"
    ),
    base_url: str = typer.Option("http://127.0.0.1:8000/v1"),
    model: str = typer.Option("default"),
    out: Path = typer.Option(Path("reasonableness"), help="folder for the JSON, table and bar chart"),
) -> None:
    """Generator reasonableness report: anomaly rate and mean severity per generator (table + bar chart)."""
    from aigclab.explain.reasonableness import reasonableness_report, write_report

    report = reasonableness_report(folder, _anomaly_model(anomaly_model, base_url, model))
    paths = write_report(report, out)
    console.print(paths[1].read_text())
    for s in report["skipped"]:
        console.print(f"[yellow]skipped[/yellow] {s['file']}: {s['reason']}")
    console.print("wrote " + ", ".join(str(p) for p in paths))


@app.command("finetune-vlm")
def finetune_vlm_cmd(
    model_dir: Path = typer.Argument(..., help="local Hugging Face vision-language model folder"),
    data: Path = typer.Option(..., help="quadruple JSONL (image paths relative to it)"),
    out: Path = typer.Option(Path("anomreason-lora"), help="adapter in OUT/adapter, merged model in OUT"),
    steps: int = typer.Option(100),
    rank: int = typer.Option(8),
    lr: float = typer.Option(1e-3),
    seed: int = typer.Option(0),
    device: str = typer.Option("cpu"),
) -> None:
    """LoRA fine-tuning of a local VLM on quadruple annotations (needs `pip install aigclab[lora]`)."""
    from aigclab.explain.lora_vlm import LoraTrainConfig, finetune_vlm, load_examples

    cfg = LoraTrainConfig(steps=steps, rank=rank, lr=lr, seed=seed, device=device)
    result = finetune_vlm(model_dir, load_examples(data), out, cfg, log=console.print)
    console.print(
        f"trained {result['trainable_params']} of {result['total_params']} parameters; "
        f"loss {result['losses'][0]:.3f} -> {result['losses'][-1]:.3f}; wrote {out}"
    )
