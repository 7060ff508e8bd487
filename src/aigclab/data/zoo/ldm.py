"""Latent diffusion: a small autoencoder (32x32x3 <-> 8x8x4) and a diffusers UNet trained in its latent.

Training runs in two phases inside one step budget: the first `ae_steps` steps fit the autoencoder
(L1 reconstruction), after which the latent scale is fixed from one batch (as Stable Diffusion's
`scaling_factor`) and the remaining steps train the latent UNet with the DDPM loss. Sampling runs
`sample_steps` DDIM steps in the latent and decodes.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel
from torch import nn

from aigclab.data.zoo._base import ZooGenerator
from aigclab.data.zoo.ddpm import DDPMConfig, denoise_loop, diffusion_loss, make_scheduler, unet_config

__all__ = ["LDM", "LDMConfig"]


class LDMConfig(DDPMConfig):
    """`channels` are the latent UNet's; `ae_channels` the autoencoder's."""

    ae_channels: int = 64
    latent_channels: int = 4
    ae_steps: int = 1500
    ae_lr: float = 1e-3
    sampler: str = "ddim"  # type: ignore[assignment]
    sample_steps: int = 25
    clip_sample: bool = False  # latents are not bounded


class LDM(ZooGenerator):
    config: LDMConfig
    latent_scale: torch.Tensor

    def __init__(self, config: LDMConfig):
        super().__init__()
        self.config = config
        c, lc = config.ae_channels, config.latent_channels
        self.encoder = nn.Sequential(
            nn.Conv2d(3, c, 3, 1, 1),
            nn.SiLU(),
            nn.Conv2d(c, c, 4, 2, 1),
            nn.SiLU(),
            nn.Conv2d(c, 2 * c, 4, 2, 1),
            nn.SiLU(),
            nn.Conv2d(2 * c, lc, 3, 1, 1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(lc, 2 * c, 3, 1, 1),
            nn.SiLU(),
            nn.ConvTranspose2d(2 * c, c, 4, 2, 1),
            nn.SiLU(),
            nn.ConvTranspose2d(c, c, 4, 2, 1),
            nn.SiLU(),
            nn.Conv2d(c, 3, 3, 1, 1),
            nn.Tanh(),
        )
        latent = config.model_copy(update={"size": config.size // 4, "in_channels": lc})
        self.unet: Any = UNet2DModel(**unet_config(latent))
        self.register_buffer("latent_scale", torch.ones(()))
        self.step_count = 0

    def _sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        cfg = self.config
        shape = (n, cfg.latent_channels, cfg.size // 4, cfg.size // 4)
        z = denoise_loop(self.unet, make_scheduler(cfg), shape, cfg.sample_steps, generator)
        return self.decoder(z / self.latent_scale)

    def configure(self) -> None:
        ae = [*self.encoder.parameters(), *self.decoder.parameters()]
        self.opt_ae = torch.optim.Adam(ae, lr=self.config.ae_lr)
        self.opt = torch.optim.Adam(self.unet.parameters(), lr=self.config.lr)
        self.train_scheduler = make_scheduler(self.config, "ddpm")
        self.step_count = 0

    def train_step(self, x: torch.Tensor, generator: torch.Generator) -> dict[str, float]:
        self.step_count += 1
        if self.step_count <= self.config.ae_steps:
            loss = F.l1_loss(self.decoder(self.encoder(x)), x)
            self.opt_ae.zero_grad()
            loss.backward()
            self.opt_ae.step()
            return {"ae_l1": loss.item()}
        with torch.no_grad():
            z = self.encoder(x)
            if self.step_count == self.config.ae_steps + 1:
                self.latent_scale.fill_(1.0 / z.std().item())
        loss = diffusion_loss(self.unet, self.train_scheduler, z * self.latent_scale, generator)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"mse": loss.item()}
