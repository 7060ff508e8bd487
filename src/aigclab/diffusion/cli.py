"""`aigclab diffusion`: quantize a diffusion model to low bits, sample image grids, measure FID."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(no_args_is_help=True)
console = Console()

MODEL_HELP = "ddpm (the zoo's pixel DDPM), ldm (the zoo's latent diffusion) or tiny (random, for tests)"


def _model(model: str, weights: Path | None, quantized: Path | None, steps: int):  # type: ignore[no-untyped-def]
    from aigclab.diffusion import load_model, load_quantized
    from aigclab.errors import AigclabError

    if quantized is None:
        return load_model(model, weights)
    loaded, cfg = load_quantized(quantized, weights)
    if cfg.steps != steps:
        raise AigclabError(f"{quantized}: quantized for {cfg.steps} sampling steps; pass --steps {cfg.steps}")
    return loaded


@app.command()
def quantize(
    out: Path = typer.Argument(..., help="output folder (quantized.safetensors/.json, packed.safetensors)"),
    model: str = typer.Option("ddpm", help=MODEL_HELP),
    method: str = typer.Option("mpq-dm", help="uniform, efficientdm, mpq-dm, omq-only or trd-only"),
    bits: str = typer.Option("W4A8", help="weight and activation bits, e.g. W2A4"),
    steps: int = typer.Option(20, help="DDIM sampling steps (one activation scale per step)"),
    finetune_steps: int | None = typer.Option(None, help="LoRA optimiser steps (default: the preset's)"),
    calib_samples: int | None = typer.Option(None, help="calibration noise seeds (default: the preset's)"),
    weights: Path | None = typer.Option(None, help="folder with zoo weights (default: the shipped ones)"),
    seed: int = typer.Option(0),
) -> None:
    """Quantize a diffusion UNet with one method at one bit setting; print its true packed size."""
    from safetensors.numpy import save_file

    from aigclab.diffusion import (
        create_quant_config,
        load_model,
        parse_bits,
        quantize_diffusion,
        save_quantized,
    )
    from aigclab.quant import export_packed

    w_bits, a_bits = parse_bits(bits)
    overrides = {"finetune_steps": finetune_steps, "calib_samples": calib_samples}
    cfg = create_quant_config(
        method, w_bits=w_bits, a_bits=a_bits, steps=steps, seed=seed,
        **{k: v for k, v in overrides.items() if v is not None},
    )  # fmt: skip
    result = quantize_diffusion(load_model(model, weights), cfg)
    save_quantized(result, out)
    save_file(export_packed(result.model.unet), str(out / "packed.safetensors"))
    rep = result.report
    console.print(
        f"{method} {cfg.setting} on {model}: {rep.total_bytes} bytes packed "
        f"({rep.compression:.1f}x smaller than fp32 {rep.fp32_bytes}); {result.seconds:.0f}s -> {out}"
    )
    if result.omq_k:
        mixed = sum(1 for k in result.omq_k.values() if k)
        console.print(f"OMQ: {mixed}/{len(result.omq_k)} layers use mixed bit-widths")
    if result.losses:
        console.print(f"distillation loss: first {result.losses[0]} last {result.losses[-1]}")


@app.command()
def sample(
    out: Path = typer.Argument(..., help="PNG image grid to write"),
    model: str = typer.Option("ddpm", help=MODEL_HELP),
    quantized: Path | None = typer.Option(
        None, help="a folder written by `quantize` (default: full precision)"
    ),
    n: int = typer.Option(64, help="number of images"),
    steps: int = typer.Option(20, help="DDIM steps"),
    weights: Path | None = typer.Option(None, help="folder with zoo weights"),
    seed: int = typer.Option(0),
) -> None:
    """Sample `n` images with DDIM and write them as one PNG grid."""
    import torch
    from PIL import Image

    from aigclab.diffusion import ddim_sample
    from aigclab.diffusion.grid import image_grid

    dm = _model(model, weights, quantized, steps)
    images = ddim_sample(dm, n, steps, torch.Generator().manual_seed(seed))
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image_grid(images)).save(out)
    console.print(f"{n} images ({images.shape[1]}x{images.shape[2]}) -> {out}")


@app.command()
def fid(
    model: str = typer.Option("ddpm", help=MODEL_HELP),
    quantized: Path | None = typer.Option(None, help="a folder written by `quantize`"),
    n: int = typer.Option(256, help="generated samples"),
    steps: int = typer.Option(20, help="DDIM steps"),
    features: str = typer.Option(
        "random-cnn",
        help="random-cnn, backbone:<name>[:layer], inception-nsfwjs[:size] (not the standard FID network; "
        "`aigclab models fetch nsfwjs`) or inception:<file>",
    ),
    weights: Path | None = typer.Option(None, help="folder with zoo weights"),
    seed: int = typer.Option(0),
) -> None:
    """FID, precision and recall of generated samples against the real training patches."""
    import torch

    from aigclab.diffusion import ddim_sample
    from aigclab.diffusion.fid import evaluate, feature_net, reference_images

    dm = _model(model, weights, quantized, steps)
    fake = ddim_sample(dm, n, steps, torch.Generator().manual_seed(seed))
    real = reference_images(fake.shape[1], n_max=max(n, 1000), seed=seed)
    console.print(json.dumps(evaluate(real, fake, feature_net(features)), indent=2))
