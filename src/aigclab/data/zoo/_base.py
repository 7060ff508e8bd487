"""What every zoo generator shares: its config base, uint8 <-> [-1, 1] conversion, sampling and training loops."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from aigclab._config import Config

__all__ = ["ZooConfig", "ZooGenerator", "fit", "from_uint8", "to_uint8"]


class ZooConfig(Config):
    """Training settings common to every family; each family adds its architecture fields."""

    name: str
    family: str
    size: int = 32
    steps: int = 2000
    batch_size: int = 64
    lr: float = 2e-4
    seed: int = 0
    weights: str = ""  # weights file stem; default: `name` (DDIM reuses "ddpm")


def from_uint8(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) float in [-1, 1] -> (N, H, W, 3) uint8 (clipped, rounded)."""
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


class ZooGenerator(nn.Module):
    """A trainable image generator. Subclasses define `_sample`, `train_step` and `configure`."""

    config: ZooConfig
    training_only: tuple[str, ...] = ()  # state-dict prefixes that sampling does not need (not shipped)

    @property
    def family(self) -> str:
        return self.config.family

    @property
    def weights_name(self) -> str:
        return self.config.weights or self.config.name

    def configure(self) -> None:
        """Create the optimizers (called once before training)."""
        raise NotImplementedError

    def train_step(self, x: torch.Tensor, generator: torch.Generator) -> dict[str, float]:
        """One optimisation step on a batch `x` in [-1, 1]; returns the losses."""
        raise NotImplementedError

    def _sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, batch_size: int = 250) -> np.ndarray:
        """`n` images as (n, size, size, 3) uint8, drawn with `generator` (default: seed 0)."""
        generator = generator or torch.Generator().manual_seed(0)
        was_training = self.training
        self.eval()
        out = [to_uint8(self._sample(min(batch_size, n - i), generator)) for i in range(0, n, batch_size)]
        self.train(was_training)
        return np.concatenate(out) if out else np.zeros((0, self.config.size, self.config.size, 3), np.uint8)


def fit(
    model: ZooGenerator,
    images: np.ndarray,
    log: Callable[[str], None] = print,
    log_every: int = 200,
    checkpoint: Path | None = None,
) -> ZooGenerator:
    """Train `model` on uint8 `images` for `config.steps` steps (random batches, random h-flips).

    Batches, flips and the model's own noise all come from one `torch.Generator` seeded with
    `config.seed`, so a single-threaded CPU run is repeatable bit for bit. With `checkpoint`, the weights
    are saved there (`save_generator`, fp16) at every log step, so a long run can be inspected while it
    trains and leaves a usable model if stopped.
    """
    cfg = model.config
    gen = torch.Generator().manual_seed(cfg.seed)
    data = from_uint8(images)
    model.configure()
    model.train()
    start = time.perf_counter()
    for step in range(1, cfg.steps + 1):
        idx = torch.randint(0, len(data), (cfg.batch_size,), generator=gen)
        x = data[idx]
        flip = torch.rand(cfg.batch_size, generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        losses = model.train_step(x, gen)
        if step % log_every == 0 or step == cfg.steps:
            parts = " ".join(f"{k}={v:.4f}" for k, v in losses.items())
            log(f"{cfg.name} step {step}/{cfg.steps} {parts} ({time.perf_counter() - start:.0f}s)")
            if checkpoint is not None:
                from aigclab.data.zoo import save_generator

                save_generator(model, checkpoint)
    model.eval()
    return model


def weights_path(root: Path, model: ZooGenerator) -> Path:
    return root / f"{model.weights_name}.safetensors"
