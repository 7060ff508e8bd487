"""`aigclab diffusion`: quantize a diffusion model to low bits, sample image grids, measure FID."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(no_args_is_help=True)
console = Console()

MODEL_HELP = (
    "ddpm (the zoo's pixel DDPM), ldm (the zoo's latent diffusion), scenes (pixel DDPM on procedural scenes) "
    "or tiny (random, for tests)"
)
EDIT_MODEL_HELP = "ddpm (the zoo's pixel DDPM), scenes (pixel DDPM on procedural scenes) or tiny"


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


# --- local edit directions from the masked Jacobian (jacobian_edit.py) ---

EDIT_T0 = 500
PROJECTION_HELP = (
    "nullspace (orthogonal to the top --null-rank directions of the unmasked region), per-direction "
    "(the seed's code: minus the same-index unmasked direction) or none"
)


def _inverted(model: str, weights: Path | None, image: Path, mask: Path, steps: int):  # type: ignore[no-untyped-def]
    import torch

    from aigclab.diffusion import load_model
    from aigclab.diffusion.jacobian_edit import invert, read_image, read_mask

    dm = load_model(model, weights)
    size = dm.shape[-1]
    if dm.decoder is not None:
        from aigclab.errors import AigclabError

        raise AigclabError(f"model {model!r}: edits need a pixel-space model (ddpm, scenes or tiny)")
    x, m = read_image(image, size), read_mask(mask, size)
    t0 = min(EDIT_T0, dm.train_timesteps // 2)
    with torch.no_grad():
        return dm, invert(dm, x, t0, steps), m, t0


def _save_strip(images, out: Path, cols: int, scale: int) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    from aigclab.diffusion.grid import image_grid
    from aigclab.diffusion.jacobian_edit import to_uint8

    grid = Image.fromarray(image_grid(to_uint8(images), cols=cols))
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.resize((grid.width * scale, grid.height * scale), Image.Resampling.NEAREST).save(out)


@app.command()
def directions(
    image: Path = typer.Argument(..., help="image to edit (resized to the model's size)"),
    mask: Path = typer.Option(..., help="mask image: white = region whose directions are wanted"),
    k: int = typer.Option(4, help="number of directions"),
    out: Path = typer.Option(Path("directions.png"), help="preview PNG: one row per direction, -s / 0 / +s"),
    strength: float = typer.Option(1.0, help="preview shift, in units of the bottleneck norm ||h||"),
    projection: str = typer.Option("nullspace", help=PROJECTION_HELP),
    null_rank: int | None = typer.Option(None, help="unmasked directions projected away (default: k)"),
    steps: int = typer.Option(10, help="DDIM inversion and sampling steps"),
    iters: int = typer.Option(20, help="power iterations per direction"),
    model: str = typer.Option("ddpm", help=EDIT_MODEL_HELP),
    weights: Path | None = typer.Option(None, help="folder with zoo weights"),
    scale: int = typer.Option(4, help="upscale factor of the preview"),
    seed: int = typer.Option(0),
) -> None:
    """List the top-k local edit directions of a masked region and preview each at -s, 0, +s."""
    import torch

    from aigclab.diffusion.jacobian_edit import edit, find_directions, locality

    dm, xt, m, t0 = _inverted(model, weights, image, mask, steps)
    with torch.enable_grad():
        found = find_directions(dm, xt, t0, m, k, projection, null_rank, iters, seed)  # type: ignore[arg-type]
    rows = []
    for i, u in enumerate(found.u):
        with torch.no_grad():
            strip = edit(dm, xt, t0, steps, u, [-strength * found.h_norm, 0.0, strength * found.h_norm])
        ratio = locality(strip[[0, 2]], strip[1:2], m).mean()
        console.print(f"direction {i}: sigma {found.sigma[i]:.4f}  locality (in/out change) {ratio:.1f}")
        rows.append(strip)
    _save_strip(torch.cat(rows), out, 3, scale)
    console.print(f"{k} directions ({projection}) in {found.seconds:.1f}s -> {out}")


@app.command("edit")
def edit_image(
    image: Path = typer.Argument(..., help="image to edit (resized to the model's size)"),
    mask: Path = typer.Option(..., help="mask image: white = region to edit"),
    direction: int = typer.Option(0, help="which direction (0 = the top one)"),
    strength: float = typer.Option(1.0, help="largest shift, in units of the bottleneck norm ||h||"),
    out: Path = typer.Option(Path("strip.png"), help="strip PNG: input, then -s .. +s in 5 steps"),
    projection: str = typer.Option("nullspace", help=PROJECTION_HELP),
    null_rank: int | None = typer.Option(None, help="unmasked directions projected away (default: k)"),
    steps: int = typer.Option(10, help="DDIM inversion and sampling steps"),
    edit_steps: int | None = typer.Option(None, help="shift h at the first N sampling steps (default all)"),
    iters: int = typer.Option(20, help="power iterations per direction"),
    model: str = typer.Option("ddpm", help=EDIT_MODEL_HELP),
    weights: Path | None = typer.Option(None, help="folder with zoo weights"),
    scale: int = typer.Option(4, help="upscale factor of the strip"),
    seed: int = typer.Option(0),
) -> None:
    """Edit the masked region of an image along one discovered direction; write a strip of strengths."""
    import torch

    from aigclab.diffusion.jacobian_edit import edit, find_directions, locality, read_image

    if direction < 0:
        from aigclab.errors import AigclabError

        raise AigclabError(f"--direction must be >= 0, got {direction}")
    dm, xt, m, t0 = _inverted(model, weights, image, mask, steps)
    with torch.enable_grad():
        found = find_directions(dm, xt, t0, m, direction + 1, projection, null_rank, iters, seed)  # type: ignore[arg-type]
    strengths = [f * strength * found.h_norm for f in (-1.0, -0.5, 0.0, 0.5, 1.0)]
    with torch.no_grad():
        strip = edit(dm, xt, t0, steps, found.u[direction], strengths, edit_steps)
    ratio = locality(strip[[0, 1, 3, 4]], strip[2:3], m).mean()
    _save_strip(torch.cat([read_image(image, dm.shape[-1]), strip]), out, 6, scale)
    console.print(f"direction {direction} ({projection}): locality (in/out change) {ratio:.1f} -> {out}")
