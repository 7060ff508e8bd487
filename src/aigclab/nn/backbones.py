"""Feature backbones behind one interface: uint8 images in, pooled features of a chosen layer out.

Entries of the ``backbone`` registry:

- ``aigclab-tiny``: the embedded CNN trained on AIGC-Mini's cross-generator training split (shipped
  weights; `aigclab.nn.tiny`);
- ``timm``: any timm architecture with weights from a local safetensors file;
- ``open-clip``: an open_clip image tower with weights from a local safetensors file (and optionally
  a local model-config JSON).

Every backbone lists its selectable `layers` (``block1`` ... and ``pooled``, the final embedding);
`features(images, layer=...)` returns (N, D) float32, intermediate maps averaged over space (or tokens).

Example:
    >>> import numpy as np
    >>> from aigclab.nn import create_backbone
    >>> bb = create_backbone("aigclab-tiny")
    >>> imgs = np.zeros((2, 32, 32, 3), np.uint8)
    >>> bb.features(imgs, layer="block3").shape
    (2, 64)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from aigclab._registry import Registry
from aigclab.errors import AigclabError, ConfigError

__all__ = ["BACKBONES", "Backbone", "create_backbone", "list_backbones", "load_local_weights"]

BACKBONES: Registry[Backbone] = Registry("backbone")


class Backbone(nn.Module):
    """Base class: subclasses set `layers`, `mean`, `std`, `input_size` and implement `forward_layers`."""

    layers: tuple[str, ...] = ("pooled",)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    input_size: int | None = None  # resize inputs to this side (bilinear) when set

    def forward_layers(self, x: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
        """Pooled (N, D) features of each layer in `layers` for a preprocessed batch `x`."""
        raise NotImplementedError

    def preprocess(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> normalised float (N, 3, H', W')."""
        x = torch.as_tensor(np.array(images, copy=True)).permute(0, 3, 1, 2).float().div(255.0)
        if self.input_size is not None and x.shape[-1] != self.input_size:
            x = F.interpolate(
                x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False
            )
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (x - mean) / std

    def for_inference(self) -> Backbone:
        """This backbone made ready for forward passes only, in place: eval mode, no gradients.

        Subclasses may also fuse layers; outputs then equal the eval-mode ones up to float rounding."""
        return self.eval().requires_grad_(False)

    def check_layer(self, layer: str) -> str:
        if layer not in self.layers:
            raise AigclabError(
                f"{type(self).__name__} has no layer {layer!r}; known: {', '.join(self.layers)}"
            )
        return layer

    @torch.no_grad()
    def features(self, images: np.ndarray, layer: str = "pooled", batch_size: int = 256) -> np.ndarray:
        """(N, D) float32 features of uint8 `images` (N, H, W, 3) at `layer`."""
        self.check_layer(layer)
        was_training = self.training
        self.eval()
        out = [
            self.forward_layers(self.preprocess(images[i : i + batch_size]), [layer])[layer]
            for i in range(0, len(images), batch_size)
        ]
        self.train(was_training)
        return torch.cat(out).float().numpy() if out else np.zeros((0, 0), np.float32)


def spatial_pool(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C); (N, T, C) token maps -> (N, C); (N, C) unchanged."""
    if x.ndim == 4:
        return x.mean(dim=(2, 3))
    if x.ndim == 3:
        return x.mean(dim=1)
    return x


def load_local_weights(module: nn.Module, path: str | Path, strict: bool = True) -> None:
    """Load a local safetensors state dict into `module`, naming the file on any mismatch."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ConfigError(f"{path}: weights must be a .safetensors file (pickled checkpoints are not loaded)")
    if not path.is_file():
        raise ConfigError(f"{path}: weights file not found")
    state = load_file(path)
    try:
        module.load_state_dict(state, strict=strict)
    except RuntimeError as err:
        first = str(err).splitlines()[0:3]
        raise ConfigError(f"{path}: weights do not fit {type(module).__name__}: {' '.join(first)}") from None


def create_backbone(name: str, **overrides: Any) -> Backbone:
    """Backbone `name` (see module docstring), e.g. ``create_backbone("timm", model_name=..., weights=...)``."""
    import aigclab.nn  # noqa: F401  (registers every entry)

    return BACKBONES.create(name, **overrides)


def list_backbones() -> list[str]:
    import aigclab.nn  # noqa: F401

    return BACKBONES.list()
