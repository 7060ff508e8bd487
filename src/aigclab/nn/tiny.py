"""The embedded backbone ``aigclab-tiny``: a small CNN trained real-vs-fake on AIGC-Mini's training family.

It sees only the cross-generator training split (real train patches + the training generator's train
fakes), so other generators are unseen by it. Layers ``block1`` (32x32) to ``block4`` (4x4) and
``pooled`` (the 128-d embedding before the logit) can be selected; `logits(images)` gives the trained
real/fake head (the reference detector of the benchmark). Weights:
``aigclab/assets/weights/backbones/aigclab-tiny.safetensors``, rebuilt by ``aigclab data build-mini``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from aigclab._config import Config
from aigclab.errors import DataError
from aigclab.nn.backbones import BACKBONES, Backbone, load_local_weights

__all__ = ["TinyCNN", "TinyConfig", "tiny_weights_path", "train_tiny"]


class TinyConfig(Config):
    channels: tuple[int, int, int, int] = (16, 32, 64, 128)
    epochs: int = 6
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0


def _conv(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class TinyCNN(Backbone):
    """Stem + four two-conv blocks (stride 2 from block2 on) + global average pool + linear logit."""

    layers = ("block1", "block2", "block3", "block4", "pooled")

    def __init__(self, config: TinyConfig):
        super().__init__()
        self.config = config
        c = config.channels
        self.stem = nn.Sequential(*_conv(3, c[0]))
        self.blocks = nn.ModuleList(
            nn.Sequential(*_conv(cin, cout, 1 if i == 0 else 2), *_conv(cout, cout))
            for i, (cin, cout) in enumerate(zip((c[0], *c[:-1]), c, strict=True))
        )
        self.head = nn.Linear(c[-1], 1)

    def forward_layers(self, x: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        x = self.stem(x)
        for i, block in enumerate(self.blocks, start=1):
            x = block(x)
            if f"block{i}" in layers:
                out[f"block{i}"] = x.mean(dim=(2, 3))
        if "pooled" in layers:
            out["pooled"] = x.mean(dim=(2, 3))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Real/fake logit (fake > 0) of a preprocessed batch."""
        return self.head(self.forward_layers(x, ["pooled"])["pooled"]).squeeze(1)

    @torch.no_grad()
    def logits(self, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """Fake-vs-real logits of uint8 images."""
        self.eval()
        out = [self(self.preprocess(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
        return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


def tiny_weights_path() -> Path:
    return Path(
        str(resources.files("aigclab") / "assets" / "weights" / "backbones" / "aigclab-tiny.safetensors")
    )


def build_tiny(config: TinyConfig) -> TinyCNN:
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        return TinyCNN(config)


def train_tiny(
    images: np.ndarray, labels: np.ndarray, config: TinyConfig, log: Callable[[str], None] = print
) -> TinyCNN:
    """Train a fresh `TinyCNN` (binary cross-entropy, random h-flips); seeded and repeatable on CPU."""
    model = build_tiny(config)
    gen = torch.Generator().manual_seed(config.seed)
    x_all = model.preprocess(images)
    y_all = torch.as_tensor(labels, dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    model.train()
    start = time.perf_counter()
    for epoch in range(config.epochs):
        order = torch.randperm(len(x_all), generator=gen)
        total = 0.0
        for i in range(0, len(order), config.batch_size):
            idx = order[i : i + config.batch_size]
            x = x_all[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
            loss = F.binary_cross_entropy_with_logits(model(x), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        log(
            f"aigclab-tiny epoch {epoch + 1}/{config.epochs} loss={total / len(order):.4f} ({time.perf_counter() - start:.0f}s)"
        )
    return model.eval()


def save_tiny(model: TinyCNN, path: Path | None = None) -> Path:
    path = path or tiny_weights_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    model.config.to_json(path.with_suffix(".json"))
    return path


@BACKBONES.register("aigclab-tiny")
def aigclab_tiny(
    pretrained: bool = True, weights: str | Path | None = None, preset: str = "aigclab-tiny", **overrides: Any
) -> TinyCNN:
    """The embedded CNN (shipped weights, or `weights` with its config JSON beside it).

    `pretrained=False` gives a freshly initialised network, e.g. at `preset="aigclab-tiny-test"`.
    """
    path = Path(weights) if weights else tiny_weights_path()
    beside = path.with_suffix(".json")
    if pretrained and weights is not None and beside.is_file():
        config = TinyConfig.from_json(beside, **overrides)
    else:
        config = TinyConfig.from_preset("aigclab.nn", preset, **overrides)
    model = build_tiny(config)
    if pretrained:
        if not path.is_file():
            raise DataError(f"{path}: embedded backbone weights missing; run `aigclab data build-mini`")
        load_local_weights(model, path)
    return model.eval()
