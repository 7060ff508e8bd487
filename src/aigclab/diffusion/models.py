"""The diffusion models that the diffusion part quantizes, and their plain DDIM sampling loop.

A `DiffusionModel` is a diffusers `UNet2DModel` plus what sampling needs: the training schedule, the shape
it denoises and, for latent diffusion, the decoder that maps latents to images. The loop in `ddim_sample`
is written out here (not hidden in a pipeline) because quantization needs two things from it: the step
index, passed to every quantized layer with `set_slot` before each UNet call, and a per-step callback
that distillation and calibration hook into.

Models: ``ddpm`` (the zoo's pixel DDPM, 32x32), ``ldm`` (the zoo's latent diffusion, UNet on 8x8x4),
``scenes`` (the same pixel DDPM trained on procedural scenes, `aigclab.data.scenes`) and ``tiny`` (a randomly
initialised small UNet for tests; no weights needed).

Example:
    >>> import torch
    >>> from aigclab.diffusion.models import ddim_sample, load_model
    >>> model = load_model("tiny")
    >>> ddim_sample(model, 2, steps=3, generator=torch.Generator().manual_seed(0)).shape
    (2, 16, 16, 3)
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from diffusers import DDIMScheduler, UNet2DModel
from torch import nn

from aigclab.errors import AigclabError
from aigclab.quant import set_slot

__all__ = ["MODELS", "DiffusionModel", "StepFn", "ddim_sample", "load_model", "record_trajectory"]

MODELS = ("ddpm", "ldm", "scenes", "tiny")
PIXEL_MODELS = ("ddpm", "scenes")

# Called at every step with (step index, timestep, x_t, eps); may return a replacement eps.
StepFn = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor | None]


@dataclass
class DiffusionModel:
    """A noise-prediction UNet with its schedule, sample shape and optional latent decoder."""

    name: str
    unet: nn.Module  # a diffusers UNet2DModel
    train_timesteps: int
    beta_schedule: str
    shape: tuple[int, int, int]
    clip_sample: bool = False
    decoder: Callable[[torch.Tensor], torch.Tensor] | None = None

    def scheduler(self) -> Any:
        """A fresh deterministic DDIM scheduler (diffusers `DDIMScheduler`) for this model's schedule."""
        return DDIMScheduler(
            num_train_timesteps=self.train_timesteps,
            beta_schedule=self.beta_schedule,
            clip_sample=self.clip_sample,
        )

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Final denoised tensor -> images in [-1, 1]."""
        return x if self.decoder is None else self.decoder(x)

    def copy(self) -> DiffusionModel:
        """A copy with its own UNet (the decoder is shared and never quantized)."""
        return DiffusionModel(
            self.name, copy.deepcopy(self.unet), self.train_timesteps, self.beta_schedule, self.shape,
            self.clip_sample, self.decoder,
        )  # fmt: skip


def _tiny() -> DiffusionModel:
    gen_state = torch.random.fork_rng()
    with gen_state:
        torch.manual_seed(0)
        unet = UNet2DModel(
            sample_size=16, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(8, 16),
            down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
            norm_num_groups=4,
        )  # fmt: skip
    return DiffusionModel("tiny", cast(nn.Module, unet).eval(), 100, "linear", (3, 16, 16))


def _trained_config(name: str, weights: Path | None) -> dict[str, Any]:
    """The config saved beside the weights (``<name>.json``), so schedule and shape match the training run."""
    from aigclab.data.zoo import weights_dir

    path = (weights or weights_dir()) / f"{name}.json"
    if not path.is_file():
        how = "python scripts/train_scenes_ddpm.py" if name == "scenes" else "aigclab data build-mini"
        raise AigclabError(f"{path}: no trained {name!r} weights config; run `{how}`")
    meta = json.loads(path.read_text())
    return {k: v for k, v in meta.items() if k not in ("name", "unet_config")}


def load_model(name: str, weights: Path | None = None) -> DiffusionModel:
    """Load `name` (one of `MODELS`); zoo models read trained weights from `weights` or the shipped zoo."""
    if name == "tiny":
        return _tiny()
    if name not in MODELS:
        raise AigclabError(f"unknown diffusion model {name!r}; known: {', '.join(MODELS)}")
    from aigclab.data.zoo import load_generator

    gen: Any = load_generator(name, root=weights, **_trained_config(name, weights))
    cfg = gen.config
    unet: nn.Module = gen.unet.eval()
    for p in unet.parameters():
        p.requires_grad_(False)
    clip = bool(getattr(cfg, "clip_sample", False))
    if name in PIXEL_MODELS:
        return DiffusionModel(
            name, unet, cfg.train_timesteps, cfg.beta_schedule, (3, cfg.size, cfg.size), clip
        )
    decoder: nn.Module = gen.decoder
    scale = float(gen.latent_scale)
    for p in decoder.parameters():
        p.requires_grad_(False)

    def decode(z: torch.Tensor) -> torch.Tensor:
        return decoder(z / scale)

    shape = (int(cfg.latent_channels), cfg.size // 4, cfg.size // 4)
    return DiffusionModel(name, unet, cfg.train_timesteps, cfg.beta_schedule, shape, clip, decode)


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def denoise(
    model: DiffusionModel,
    noise: torch.Tensor,
    steps: int,
    unet: nn.Module | None = None,
    on_step: StepFn | None = None,
) -> torch.Tensor:
    """Run `steps` deterministic DDIM steps (eta = 0) from `noise`; returns the final x_0 estimate.

    `unet` (default: the model's) predicts the noise; at step i every quantized layer gets slot i.
    `on_step(i, t, x_t, eps)` may return another eps to step with (e.g. the teacher's).
    """
    unet = unet or model.unet
    scheduler = model.scheduler()
    scheduler.set_timesteps(steps)
    x = noise
    for i, t in enumerate(scheduler.timesteps):
        set_slot(unet, i)
        eps = unet(x, t).sample
        if on_step is not None:
            eps = on_step(i, t, x, eps) or eps
        x = scheduler.step(eps, t, x).prev_sample
    set_slot(unet, None)
    return x


@torch.no_grad()
def ddim_sample(
    model: DiffusionModel,
    n: int,
    steps: int,
    generator: torch.Generator,
    unet: nn.Module | None = None,
    batch_size: int = 100,
) -> np.ndarray:
    """`n` images, (n, H, W, 3) uint8, from `steps` DDIM steps; noise drawn from `generator`."""
    out = []
    for start in range(0, n, batch_size):
        noise = torch.randn((min(batch_size, n - start), *model.shape), generator=generator)
        out.append(_to_uint8(model.decode(denoise(model, noise, steps, unet))))
    return np.concatenate(out)


@torch.no_grad()
def record_trajectory(
    model: DiffusionModel, noise: torch.Tensor, steps: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (x_t, t) inputs the full-precision UNet sees at each of `steps` DDIM steps from `noise`."""
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def keep(i: int, t: torch.Tensor, x: torch.Tensor, eps: torch.Tensor) -> None:
        seen.append((x.clone(), t.clone()))

    denoise(model, noise, steps, on_step=keep)
    return seen
