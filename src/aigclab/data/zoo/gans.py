"""GANs: DCGAN (transposed convolutions) and UpGAN (nearest/bilinear upsampling + 3x3 convolutions).

Both use the same convolutional discriminator and the non-saturating GAN loss; they differ only in how
the generator upsamples, which is what leaves their spectral fingerprints (checkerboard peaks from
transposed convolutions, smoother replication artefacts from interpolation).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from aigclab.data.zoo._base import ZooConfig, ZooGenerator

__all__ = ["GAN", "GANConfig"]


class GANConfig(ZooConfig):
    """A 32x32 GAN: 4x4 seed, three 2x upsamplings."""

    z_dim: int = 64
    channels: int = 48
    upsample: Literal["transposed", "nearest", "bilinear"] = "transposed"
    beta1: float = 0.5


def _up(cin: int, cout: int, mode: str) -> nn.Module:
    if mode == "transposed":
        return nn.ConvTranspose2d(cin, cout, 4, 2, 1)
    return nn.Sequential(nn.Upsample(scale_factor=2, mode=mode), nn.Conv2d(cin, cout, 3, 1, 1))


class GAN(ZooGenerator):
    """Generator + discriminator; `sample` uses the generator only."""

    config: GANConfig
    training_only = ("disc.",)

    def __init__(self, config: GANConfig):
        super().__init__()
        self.config = config
        c, m = config.channels, config.upsample
        self.fc = nn.Linear(config.z_dim, 4 * c * 16)
        self.gen = nn.Sequential(
            nn.BatchNorm2d(4 * c),
            nn.ReLU(),
            _up(4 * c, 2 * c, m),
            nn.BatchNorm2d(2 * c),
            nn.ReLU(),
            _up(2 * c, c, m),
            nn.BatchNorm2d(c),
            nn.ReLU(),
            _up(c, 3, m),
            nn.Tanh(),
        )
        self.disc = nn.Sequential(
            nn.Conv2d(3, c, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(c, 2 * c, 4, 2, 1),
            nn.BatchNorm2d(2 * c),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * c, 4 * c, 4, 2, 1),
            nn.BatchNorm2d(4 * c),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(4 * c * 16, 1),
        )

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        c = self.config.channels
        return self.gen(self.fc(z).view(-1, 4 * c, 4, 4))

    def _sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.generate(torch.randn(n, self.config.z_dim, generator=generator))

    def configure(self) -> None:
        betas = (self.config.beta1, 0.999)
        g_params = [*self.fc.parameters(), *self.gen.parameters()]
        self.opt_g = torch.optim.Adam(g_params, lr=self.config.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=self.config.lr, betas=betas)

    def train_step(self, x: torch.Tensor, generator: torch.Generator) -> dict[str, float]:
        z = torch.randn(len(x), self.config.z_dim, generator=generator)
        fake = self.generate(z)
        d_real, d_fake = self.disc(x), self.disc(fake.detach())
        loss_d = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        self.opt_d.zero_grad()
        loss_d.backward()
        self.opt_d.step()
        loss_g = F.softplus(-self.disc(fake)).mean()
        self.opt_g.zero_grad()
        loss_g.backward()
        self.opt_g.step()
        return {"d": loss_d.item(), "g": loss_g.item()}
