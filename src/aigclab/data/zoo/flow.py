"""A Glow-style normalizing flow: squeeze, then steps of actnorm, invertible 1x1 conv and affine coupling.

The image is dequantized with uniform noise and mapped to logit space; two levels (12x16x16 and
48x8x8) of `steps_per_level` flow steps map it to a standard normal. Training maximises the exact
log-likelihood; sampling inverts the flow from Gaussian noise scaled by `temperature`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from aigclab.data.zoo._base import ZooConfig, ZooGenerator

__all__ = ["Flow", "FlowConfig"]

_ALPHA = 0.05


class FlowConfig(ZooConfig):
    steps_per_level: int = 6
    hidden: int = 64
    temperature: float = 0.8
    lr: float = 1e-3


def squeeze(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, 4 * c, h // 2, w // 2)


def unsqueeze(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    x = x.view(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c // 4, 2 * h, 2 * w)


class FlowStep(nn.Module):
    """Actnorm (data-initialised), invertible 1x1 convolution, affine coupling."""

    initialised: torch.Tensor

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.logscale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))
        self.weight = nn.Parameter(torch.linalg.qr(torch.randn(channels, channels))[0])
        half = channels // 2
        self.net = nn.Sequential(
            nn.Conv2d(half, hidden, 3, 1, 1), nn.ReLU(), nn.Conv2d(hidden, hidden, 1), nn.ReLU(),
            nn.Conv2d(hidden, 2 * (channels - half), 3, 1, 1),
        )  # fmt: skip
        last: Any = self.net[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def _coupling(self, xa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shift, raw = self.net(xa).chunk(2, dim=1)
        return shift, torch.sigmoid(raw + 2.0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hw = x.shape[2] * x.shape[3]
        if not self.initialised:
            with torch.no_grad():
                self.loc.copy_(-x.mean(dim=(0, 2, 3), keepdim=True))
                self.logscale.copy_(-x.std(dim=(0, 2, 3), keepdim=True).add(1e-6).log())
                self.initialised.fill_(True)
        x = (x + self.loc) * self.logscale.exp()
        x = nn.functional.conv2d(x, self.weight[:, :, None, None])
        xa, xb = x.chunk(2, dim=1)
        shift, scale = self._coupling(xa)
        x = torch.cat([xa, (xb + shift) * scale], dim=1)
        logdet = hw * (self.logscale.sum() + torch.linalg.slogdet(self.weight)[1])
        return x, logdet + scale.log().flatten(1).sum(1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        ya, yb = y.chunk(2, dim=1)
        shift, scale = self._coupling(ya)
        x = torch.cat([ya, yb / scale - shift], dim=1)
        x = nn.functional.conv2d(x, torch.linalg.inv(self.weight)[:, :, None, None])
        return x * (-self.logscale).exp() - self.loc


class Flow(ZooGenerator):
    config: FlowConfig

    def __init__(self, config: FlowConfig):
        super().__init__()
        self.config = config
        k, h = config.steps_per_level, config.hidden
        self.level1: Any = nn.ModuleList(FlowStep(12, h) for _ in range(k))
        self.level2: Any = nn.ModuleList(FlowStep(48, h) for _ in range(k))

    def log_prob(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Log-likelihood in nats per image of uint8-valued images given in [-1, 1]."""
        pixels = ((x + 1) * 127.5).round()
        y = (pixels + torch.rand(x.shape, generator=generator)) / 256.0
        s = _ALPHA + (1 - 2 * _ALPHA) * y
        v = s.log() - (1 - s).log()
        logdet = (math.log(1 - 2 * _ALPHA) - s.log() - (1 - s).log()).flatten(1).sum(1)
        v = squeeze(v)
        for step in self.level1:
            v, ld = step(v)
            logdet = logdet + ld
        v = squeeze(v)
        for step in self.level2:
            v, ld = step(v)
            logdet = logdet + ld
        prior = -0.5 * (v**2 + math.log(2 * math.pi)).flatten(1).sum(1)
        return prior + logdet - x[0].numel() * math.log(256.0)

    def _sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        size = self.config.size
        v = torch.randn(n, 48, size // 4, size // 4, generator=generator) * self.config.temperature
        for step in reversed(self.level2):
            v = step.inverse(v)
        v = unsqueeze(v)
        for step in reversed(self.level1):
            v = step.inverse(v)
        y = (torch.sigmoid(unsqueeze(v)) - _ALPHA) / (1 - 2 * _ALPHA)
        return y * 2 - 1

    def configure(self) -> None:
        self.opt = torch.optim.Adam(self.parameters(), lr=self.config.lr)

    def train_step(self, x: torch.Tensor, generator: torch.Generator) -> dict[str, float]:
        bpd = -self.log_prob(x, generator).mean() / (x[0].numel() * math.log(2.0))
        self.opt.zero_grad()
        bpd.backward()
        nn.utils.clip_grad_norm_(self.parameters(), 50.0)
        self.opt.step()
        return {"bpd": bpd.item()}
