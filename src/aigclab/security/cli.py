"""`aigclab security backdoor`: train, evaluate and scan for quantization-conditioned backdoors."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from aigclab.errors import AigclabError

app = typer.Typer(no_args_is_help=True)
backdoor = typer.Typer(no_args_is_help=True, help="the quantization-conditioned backdoor (QB) and defences")
app.add_typer(backdoor, name="backdoor")
console = Console()


@backdoor.command()
def train(
    out: Path = typer.Option(..., help="where to write the model (.safetensors)"),
    preset: str = typer.Option("qb-digits", help="training preset: qb-digits, qb-aigc-mini or qb-tiny"),
    task: str | None = typer.Option(None, help="digits or aigc-mini"),
    quantizer: str | None = typer.Option(None, help="the quantizer to attack: int8, dorefa or int4"),
    target: int | None = typer.Option(None, help="target class (default: the task's, e.g. 'real' = 0)"),
    lam: float | None = typer.Option(
        None, help="weight of the quantized-target loss; 0 trains a clean model"
    ),
    pretrain_epochs: int | None = typer.Option(None, help="clean epochs before the backdoor epochs"),
    epochs: int | None = typer.Option(None, help="backdoor epochs"),
    seed: int | None = typer.Option(None, help="initialisation and batch-order seed"),
    threads: int = typer.Option(1, help="torch CPU threads"),
) -> None:
    """Train a model whose backdoor wakes only once it is quantized (or a clean one with --lam 0)."""
    import torch

    from aigclab.security.model_io import save_model
    from aigclab.security.qbackdoor import QBConfig, train_qbackdoor

    given = {
        "task": task, "quantizer": quantizer, "target": target, "lam": lam,
        "pretrain_epochs": pretrain_epochs, "epochs": epochs, "seed": seed,
    }  # fmt: skip
    cfg = QBConfig.from_preset(
        "aigclab.security", preset, **{k: v for k, v in given.items() if v is not None}
    )
    _check_out(out)
    torch.set_num_threads(threads)
    model, _ = train_qbackdoor(cfg, log=lambda row: console.print(_fmt(row)))
    save_model(model, out, cfg.task, cfg.model_dump())
    console.print(f"wrote {out}")


@backdoor.command("eval")
def eval_cmd(
    model: Path = typer.Argument(..., help="a model written by `train`"),
    routes: str = typer.Option(
        "int8,dorefa,int4,torch-ao,onnxruntime,onnxruntime-int4", help="comma-separated quantization routes"
    ),
    out: Path | None = typer.Option(None, help="also write the metrics as JSON here"),
) -> None:
    """Clean accuracy and attack success at full precision and after each quantization route."""
    from aigclab.security.evaluate import evaluate
    from aigclab.security.model_io import load_model

    net, task, meta = load_model(model)
    result = evaluate(
        net, task, routes=[r.strip() for r in routes.split(",") if r.strip()], target=meta.get("target")
    )
    table = Table("route", "CA fp", "CA q", "ASR fp", "ASR q", title=f"{model} ({task})")
    for route, m in result.items():
        table.add_row(route, *(f"{m[k]:.3f}" for k in ("ca_fp", "ca_q", "asr_fp", "asr_q")))
    console.print(table)
    if out is not None:
        _check_out(out)
        out.write_text(json.dumps({"model": str(model), "task": task, "routes": result}, indent=2))
        console.print(f"wrote {out}")


@backdoor.command()
def scan(
    model: Path = typer.Argument(..., help="a model written by `train`"),
    threshold: float | None = typer.Option(None, help="flag above this FP-vs-quantized disagreement"),
    routes: str = typer.Option("int8,int4,torch-ao", help="quantization routes to compare against"),
) -> None:
    """Compare the model with its quantized versions on probe inputs; flag a likely backdoor.

    The scan only sees backdoors conditioned on a quantizer it tries: add routes (e.g. dorefa) to widen it.
    """
    from aigclab.security.defenses import SCAN_THRESHOLD
    from aigclab.security.defenses import scan as run_scan
    from aigclab.security.model_io import load_model
    from aigclab.security.tasks import load_task

    net, task, _ = load_model(model)
    result = run_scan(
        net, load_task(task).x_test, threshold=SCAN_THRESHOLD if threshold is None else threshold
    )
    for route, value in result["disagreement"].items():  # type: ignore[attr-defined]
        console.print(f"{route:>10}: {value:.3f} of probes change their answer when quantized")
    verdict = (
        "[red]FLAGGED[/red]: likely quantization backdoor" if result["flagged"] else "[green]clean[/green]"
    )
    console.print(f"{model}: {verdict} (max {result['max']:.3f}, threshold {result['threshold']:.2f})")


def _check_out(path: Path) -> None:
    if path.is_dir():
        raise AigclabError(f"{path}: is a directory; give a file name")


def _fmt(row: dict[str, float]) -> str:
    return (
        f"epoch {int(row['epoch']):3d} lambda {row['lam']:.2f}  loss {row['loss']:.4f}  "
        f"fp {row['loss_fp']:.4f}  quantized->target {row['loss_q']:.4f}"
    )
