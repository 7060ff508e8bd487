"""A convolutional VAE: Gaussian encoder, bilinear-upsampling decoder, samples decoded from the prior."""

from __future__ import annotations

import torch
from torch import nn

from aigclab.data.zoo._base import ZooConfig, ZooGenerator

__all__ = ["VAE", "VAEConfig"]


class VAEConfig(ZooConfig):
    """`beta` weighs the KL term against the summed squared error (in [-1, 1] pixel units)."""

    z_dim: int = 128
    channels: int = 48
    beta: float = 1.0
    lr: float = 1e-3


class VAE(ZooGenerator):
    config: VAEConfig
    training_only = ("enc.",)

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        c, z = config.channels, config.z_dim
        self.enc = nn.Sequential(
            nn.Conv2d(3, c, 4, 2, 1),
            nn.SiLU(),
            nn.Conv2d(c, 2 * c, 4, 2, 1),
            nn.SiLU(),
            nn.Conv2d(2 * c, 4 * c, 4, 2, 1),
            nn.SiLU(),
            nn.Flatten(),
            nn.Linear(4 * c * 16, 2 * z),
        )
        self.fc = nn.Linear(z, 4 * c * 16)
        layers: list[nn.Module] = []
        for cin, cout in ((4 * c, 2 * c), (2 * c, c), (c, c)):
            layers += [nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(cin, cout, 3, 1, 1), nn.SiLU()]
        self.dec = nn.Sequential(*layers, nn.Conv2d(c, 3, 3, 1, 1), nn.Tanh())

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.dec(self.fc(z).view(len(z), -1, 4, 4))

    def _sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.decode(torch.randn(n, self.config.z_dim, generator=generator))

    def configure(self) -> None:
        self.opt = torch.optim.Adam(self.parameters(), lr=self.config.lr)

    def train_step(self, x: torch.Tensor, generator: torch.Generator) -> dict[str, float]:
        mu, logvar = self.enc(x).chunk(2, dim=1)
        z = mu + torch.randn(mu.shape, generator=generator) * (0.5 * logvar).exp()
        rec = ((self.decode(z) - x) ** 2).sum(dim=(1, 2, 3)).mean()
        kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(dim=1).mean()
        loss = rec + self.config.beta * kl
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"rec": rec.item(), "kl": kl.item()}
