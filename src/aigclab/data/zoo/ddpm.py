"""Pixel-space diffusion: a diffusers `UNet2DModel` trained with the DDPM noise-prediction loss.

One network serves two zoo entries: ``ddpm`` samples with ancestral DDPM steps (`DDPMScheduler`,
`sample_steps` evenly strided steps) and ``ddim`` samples deterministically with a few DDIM steps
(`DDIMScheduler`, eta = 0). Both read the weights file ``ddpm.safetensors``; its UNet config is
`unet_config()` (also written beside the weights as ``ddpm.json``), so other parts can rebuild the
network with ``UNet2DModel(**unet_config(cfg))``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

from aigclab.data.zoo._base import ZooConfig, ZooGenerator

__all__ = ["DDPM", "DDPMConfig", "denoise_loop", "diffusion_loss", "make_scheduler", "unet_config"]


class DDPMConfig(ZooConfig):
    """UNet shape, noise schedule and sampler."""

    channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    attention: bool = False
    train_timesteps: int = 1000
    beta_schedule: str = "linear"
    sampler: Literal["ddpm", "ddim"] = "ddpm"
    sample_steps: int = 100
    clip_sample: bool = True  # clip predicted clean images to [-1, 1] at each sampling step
    lr: float = 2e-4
    in_channels: int = 3


def unet_config(cfg: DDPMConfig) -> dict[str, Any]:
    """Keyword arguments of `UNet2DModel` for this config."""
    n = len(cfg.channels)
    down = ["DownBlock2D"] * n
    up = ["UpBlock2D"] * n
    if cfg.attention:
        down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
    return {
        "sample_size": cfg.size,
        "in_channels": cfg.in_channels,
        "out_channels": cfg.in_channels,
        "layers_per_block": cfg.layers_per_block,
        "block_out_channels": list(cfg.channels),
        "down_block_types": down,
        "up_block_types": up,
        "norm_num_groups": 8,
    }


def make_scheduler(cfg: DDPMConfig, sampler: str | None = None) -> Any:
    """The scheduler for training (`ddpm`) or for the config's sampler."""
    cls = DDIMScheduler if (sampler or cfg.sampler) == "ddim" else DDPMScheduler
    return cls(
        num_train_timesteps=cfg.train_timesteps, beta_schedule=cfg.beta_schedule, clip_sample=cfg.clip_sample
    )


def diffusion_loss(unet: Any, scheduler: Any, x0: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mean squared error between the true and the predicted noise at random timesteps."""
    t = torch.randint(0, scheduler.config.num_train_timesteps, (len(x0),), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    return F.mse_loss(unet(scheduler.add_noise(x0, noise, t), t).sample, noise)


def denoise_loop(
    unet: Any, scheduler: Any, shape: tuple[int, ...], steps: int, generator: torch.Generator
) -> torch.Tensor:
    """Start from Gaussian noise and apply `steps` scheduler steps (ancestral for DDPM, eta=0 for DDIM).

    With `clip_sample` (pixel DDPM/DDIM) the scheduler clips the predicted clean image to [-1, 1] at every
    step, which keeps the small, briefly trained UNet from drifting into saturated colours.
    """
    scheduler.set_timesteps(steps)
    x = torch.randn(shape, generator=generator)
    for t in scheduler.timesteps:
        eps = unet(x, t).sample
        x = scheduler.step(eps, t, x, generator=generator).prev_sample
    return x


class DDPM(ZooGenerator):
    config: DDPMConfig

    def __init__(self, config: DDPMConfig):
        super().__init__()
        self.config = config
        self.unet: Any = UNet2DModel(**unet_config(config))

    def _sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        cfg = self.config
        shape = (n, 3, cfg.size, cfg.size)
        return denoise_loop(self.unet, make_scheduler(cfg), shape, cfg.sample_steps, generator)

    def configure(self) -> None:
        self.opt = torch.optim.Adam(self.unet.parameters(), lr=self.config.lr)
        self.train_scheduler = make_scheduler(self.config, "ddpm")

    def train_step(self, x: torch.Tensor, generator: torch.Generator) -> dict[str, float]:
        loss = diffusion_loss(self.unet, self.train_scheduler, x, generator)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"mse": loss.item()}
