"""Backbones from other libraries, always with weights from a LOCAL safetensors file (nothing downloads).

``timm``: ``create_backbone("timm", model_name="resnet18", weights="resnet18.safetensors")``; layers are
``block1`` ... ``blockN`` (timm's `forward_intermediates` stages, or transformer blocks) and ``pooled``
(the model's pooled embedding, `num_classes=0`).

``open-clip``: ``create_backbone("open-clip", model_name="ViT-B-32", weights="vit-b-32.safetensors")``,
optionally ``model_config="my-config.json"`` (an open_clip model-config file, registered under its file
stem so `model_name` can name it). Layers are the vision tower's blocks and ``pooled`` (`encode_image`).
FTNet-style features use a middle block, e.g. ``layer="block6"`` of a 12-block ViT.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from aigclab.errors import ConfigError
from aigclab.nn.backbones import BACKBONES, Backbone, load_local_weights, spatial_pool

__all__ = ["OpenClipBackbone", "TimmBackbone"]


def _block_names(n: int) -> tuple[str, ...]:
    return (*(f"block{i}" for i in range(1, n + 1)), "pooled")


class TimmBackbone(Backbone):
    """A timm model without classifier; inputs resized to its default input size unless `input_size` given."""

    model: Any

    def __init__(self, model_name: str, weights: str | Path, input_size: int | None = None):
        super().__init__()
        import timm

        try:
            self.model = timm.create_model(model_name, pretrained=False, num_classes=0)
        except RuntimeError as err:
            raise ConfigError(f"timm model {model_name!r}: {err}") from None
        load_local_weights(self.model, weights)
        self.model.eval()
        cfg: Any = self.model.pretrained_cfg
        self.mean, self.std = tuple(cfg["mean"]), tuple(cfg["std"])
        self.input_size = input_size or int(cfg["input_size"][-1])
        probe = torch.zeros(1, 3, self.input_size, self.input_size)
        with torch.no_grad():
            n = len(self.model.forward_intermediates(probe, intermediates_only=True))
        self.layers = _block_names(n)

    def forward_layers(self, x: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        blocks = [int(name.removeprefix("block")) - 1 for name in layers if name != "pooled"]
        if blocks:
            maps = self.model.forward_intermediates(
                x, indices=list(range(max(blocks) + 1)), intermediates_only=True
            )
            out |= {f"block{i + 1}": spatial_pool(maps[i]) for i in blocks}
        if "pooled" in layers:
            out["pooled"] = self.model(x)
        return out


class OpenClipBackbone(Backbone):
    """An open_clip vision tower (ViT or ResNet) with CLIP normalisation at the model's image size."""

    def __init__(self, model_name: str, weights: str | Path, model_config: str | Path | None = None):
        super().__init__()
        import open_clip
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

        if model_config is not None:
            path = Path(model_config)
            if not path.is_file():
                raise ConfigError(f"{path}: open_clip model config not found")
            open_clip.add_model_config(path)
        try:
            model = open_clip.create_model(model_name, pretrained=None)
        except RuntimeError as err:
            raise ConfigError(f"open_clip model {model_name!r}: {err}") from None
        load_local_weights(model, weights)
        self.visual: Any = model.visual
        self.mean, self.std = OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
        size = self.visual.image_size
        self.input_size = int(size[0] if isinstance(size, tuple | list) else size)
        n = len(self.visual.transformer.resblocks)
        self.layers = (*_block_names(n)[:-1], *(f"block{i}-cls" for i in range(1, n + 1)), "pooled")

    def forward_layers(self, x: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
        """``blockN``: patch tokens of block N averaged; ``blockN-cls``: its class token (FTNet's feature,
        before the final norm and projection); ``pooled``: the projected image embedding."""
        out: dict[str, torch.Tensor] = {}
        wanted = [name for name in layers if name != "pooled"]
        if wanted:
            index = {name: int(name.removeprefix("block").removesuffix("-cls")) - 1 for name in wanted}
            res = self.visual.forward_intermediates(
                x,
                indices=sorted(set(index.values())),
                intermediates_only=True,
                stop_early=True,
                output_extra_tokens=True,
            )
            order = {b: k for k, b in enumerate(sorted(set(index.values())))}
            for name, b in index.items():
                if name.endswith("-cls"):
                    out[name] = res["image_intermediates_prefix"][order[b]][:, 0]
                else:
                    out[name] = spatial_pool(res["image_intermediates"][order[b]])
        if "pooled" in layers:
            out["pooled"] = self.visual(x)
        return out


@BACKBONES.register("timm")
def timm_backbone(model_name: str, weights: str | Path, **kwargs: Any) -> TimmBackbone:
    """A timm architecture with local safetensors weights."""
    return TimmBackbone(model_name, weights, **kwargs).eval()


@BACKBONES.register("open-clip")
def open_clip_backbone(model_name: str, weights: str | Path, **kwargs: Any) -> OpenClipBackbone:
    """An open_clip image tower with local safetensors weights."""
    return OpenClipBackbone(model_name, weights, **kwargs).eval()
