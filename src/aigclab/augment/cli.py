"""`aigclab augment xray`: simulate X-ray datasets, train detectors with BGM and friends, evaluate mAP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

app = typer.Typer(no_args_is_help=True)
xray = typer.Typer(no_args_is_help=True, help="X-ray baggage simulator, Background Mixup and detection")
app.add_typer(xray, name="xray")
console = Console()


@xray.command()
def build(
    out: Path = typer.Argument(
        ..., help="output folder: train/, test-vendor-a/, test-vendor-b/ in COCO format"
    ),
    preset: str = typer.Option("xray-default", help="simulator preset (xray-default, xray-tiny)"),
    n_train: int = typer.Option(300, help="training scans"),
    n_test: int = typer.Option(100, help="test scans (rendered once per scanner vendor)"),
    seed: int = typer.Option(0, help="dataset seed"),
) -> None:
    """Simulate dual-energy bags with prohibited items and export them in COCO format."""
    from aigclab.augment.coco import build_dataset
    from aigclab.augment.xray_sim import XraySimConfig

    cfg = XraySimConfig.from_preset("aigclab.augment", preset)
    for split, path in build_dataset(out, cfg, n_train, n_test, seed).items():
        console.print(f"{split}: {path}")


@xray.command("train")
def train_cmd(
    data: Path = typer.Argument(..., help="dataset folder from `build` (uses its train/ split)"),
    out: Path = typer.Argument(..., help="output folder for model.safetensors and config.json"),
    preset: str = typer.Option("train-default", help="training preset (train-default, train-tiny)"),
    detector: str | None = typer.Option(None, help="faster-rcnn-tiny or fcos-tiny"),
    augmentation: str | None = typer.Option(None, help="none, mixup, cutmix, bgm, bgm-log or bgm-self"),
    steps: int | None = typer.Option(None, help="training steps"),
    seed: int | None = typer.Option(None, help="training seed"),
    threads: int = typer.Option(1, help="torch CPU threads"),
) -> None:
    """Train a detector from scratch on the training split with a mixing augmentation."""
    import torch

    from aigclab.augment.coco import load_coco
    from aigclab.augment.train_det import TrainConfig, save_detector, train

    torch.set_num_threads(threads)
    samples = load_coco(data / "train")
    given = {"detector": detector, "augmentation": augmentation, "steps": steps, "seed": seed}
    overrides = {k: v for k, v in given.items() if v is not None}
    cfg = TrainConfig.from_preset(
        "aigclab.augment", preset, image_size=samples[0].image.shape[0], **overrides
    )
    model, timing = train(cfg, samples)
    save_detector(model, cfg, out)
    console.print(
        f"trained {cfg.detector} with {cfg.augmentation} in {timing['train_seconds']:.1f} s -> {out}"
    )


@xray.command("eval")
def eval_cmd(
    model_dir: Path = typer.Argument(..., help="folder written by `train`"),
    data: Path = typer.Argument(..., help="a COCO split folder, e.g. data/test-vendor-b"),
    out: Path | None = typer.Option(None, help="also write the metrics to this JSON file"),
    threads: int = typer.Option(1, help="torch CPU threads"),
) -> None:
    """Compute mAP and mAP50 of a trained detector on a COCO split."""
    import torch

    from aigclab.augment.coco import load_coco
    from aigclab.augment.train_det import evaluate, load_detector

    torch.set_num_threads(threads)
    model, cfg = load_detector(model_dir)
    metrics: dict[str, Any] = {"detector": cfg.detector, "augmentation": cfg.augmentation, "data": str(data)}
    metrics |= evaluate(model, load_coco(data))
    console.print(json.dumps(metrics))
    if out is not None:
        from aigclab.reports import write_json

        write_json(out, metrics)
