"""Pretrained backbones from the npm package nsfwjs 4.4.0 (MIT, Infinite Red): Keras MobileNetV2 and InceptionV3.

Both were initialised from ImageNet and then fine-tuned as a 5-class content classifier (drawing,
hentai, neutral, porn, sexy). Their intermediate layers are generic image features; they are NOT the
torchvision or Keras ImageNet checkpoints, and InceptionV3 here is not the standard FID network.

- ``mobilenetv2-nsfwjs``: shipped in the package (``assets/weights/backbones/mobilenetv2-nsfwjs.*``,
  made by ``python scripts/convert_nsfwjs.py``). Layers ``block0`` ... ``block16``, ``pooled`` (1280),
  ``probs`` (the 5 class probabilities).
- ``inceptionv3-nsfwjs``: 22 M parameters, not shipped; ``aigclab models fetch nsfwjs`` converts it into
  the user's cache. Layers ``mixed0`` ... ``mixed10``, ``pooled`` (2048), ``probs``.

Input is RGB x / 255 at any size (no resizing unless `input_size` is given; InceptionV3 upsamples
images smaller than 75 px). Weight files keep the published uint8 values and per-tensor min/scale, so
the dequantised weights equal TensorFlow.js's bit for bit.

Example:
    >>> import numpy as np
    >>> from aigclab.nn import create_backbone
    >>> bb = create_backbone("mobilenetv2-nsfwjs")
    >>> bb.features(np.zeros((2, 96, 96, 3), np.uint8), layer="block5").shape
    (2, 32)
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from aigclab.errors import AigclabError, ConfigError
from aigclab.nn.backbones import BACKBONES, Backbone, spatial_pool
from aigclab.nn.keras_ports import KerasInceptionV3, KerasMobileNetV2, fold_batchnorm, load_keras_weights
from aigclab.nn.nsfwjs_fetch import NSFWJS_VERSION, default_cache_dir
from aigclab.nn.tfjs import QuantTensor

__all__ = [
    "NsfwjsBackbone",
    "compare_with_reference",
    "load_quantized",
    "nsfwjs_weights_path",
    "save_quantized",
    "shipped_weights_path",
]

_QSUFFIX = "::min_scale"


def save_quantized(weights: dict[str, QuantTensor], path: Path, metadata: dict[str, str]) -> None:
    """One uint8 tensor per Keras weight plus ``<name>::min_scale`` (float64 [min, scale])."""
    tensors: dict[str, np.ndarray] = {}
    for name, t in sorted(weights.items()):
        tensors[name] = np.ascontiguousarray(t.q)
        tensors[name + _QSUFFIX] = np.array([t.min, t.scale], np.float64)
    # one metadata key: safetensors writes several in hash order, which would make files differ run to run
    meta = json.dumps({"format": "aigclab-uint8-minscale", **metadata}, sort_keys=True)
    save_file(tensors, str(path), metadata={"aigclab": meta})


def load_quantized(path: str | Path) -> dict[str, np.ndarray]:
    """Keras weight name -> float32, dequantised as TensorFlow.js does: float32(q * scale + min)."""
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        raise ConfigError(f"{path}: not a .safetensors weights file")
    try:
        raw = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise ConfigError(f"{path}: unreadable safetensors ({err})") from None
    out: dict[str, np.ndarray] = {}
    for name, q in raw.items():
        if name.endswith(_QSUFFIX):
            continue
        if name + _QSUFFIX not in raw or q.dtype != np.uint8:
            raise ConfigError(f"{path}: {name} is not a uint8 weight with min/scale")
        lo, scale = raw[name + _QSUFFIX].astype(np.float64)
        out[name] = (q.astype(np.float64) * scale + lo).astype(np.float32)
    return out


def shipped_weights_path() -> Path:
    return Path(
        str(
            resources.files("aigclab") / "assets" / "weights" / "backbones" / "mobilenetv2-nsfwjs.safetensors"
        )
    )


def nsfwjs_weights_path(net: str) -> Path:
    """The converted weights of `net`: the shipped MobileNetV2, else the user's cache."""
    if net == "mobilenetv2" and shipped_weights_path().is_file():
        return shipped_weights_path()
    return default_cache_dir() / f"nsfwjs-{NSFWJS_VERSION}" / f"{net}.safetensors"


class NsfwjsBackbone(Backbone):
    """A Keras-ported nsfwjs network behind the `Backbone` interface (RGB x / 255, no normalisation)."""

    mean = (0.0, 0.0, 0.0)
    std = (1.0, 1.0, 1.0)

    def __init__(
        self,
        net: str,
        weights: str | Path | None = None,
        pretrained: bool = True,
        input_size: int | None = None,
    ):
        super().__init__()
        self.net = net
        self.model: KerasMobileNetV2 | KerasInceptionV3 = (
            KerasMobileNetV2() if net == "mobilenetv2" else KerasInceptionV3()
        )
        self.layers = self.model.layer_names
        self.input_size = input_size
        self.min_size = getattr(self.model, "min_size", 1)
        if pretrained:
            path = Path(weights) if weights is not None else nsfwjs_weights_path(net)
            if weights is None and not path.is_file():
                raise AigclabError(
                    f"{path}: nsfwjs {net} weights are not converted yet; run `aigclab models fetch nsfwjs`"
                )
            weights_np = load_quantized(path)  # its errors name the file
            try:
                load_keras_weights(self.model, weights_np)
            except ConfigError as err:
                raise ConfigError(f"{path}: {err}") from None
        self.eval()

    def preprocess(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = super().preprocess(images)
        if min(x.shape[-2:]) < self.min_size:  # InceptionV3's valid-padded stem needs 75 px
            scale = self.min_size / min(x.shape[-2:])
            size = (
                max(self.min_size, round(x.shape[-2] * scale)),
                max(self.min_size, round(x.shape[-1] * scale)),
            )
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x

    def for_inference(self) -> NsfwjsBackbone:
        """Eval mode, no gradients, BatchNorm folded into the convolutions (about 2x faster on CPU)."""
        fold_batchnorm(self.model)
        return self.eval().requires_grad_(False)

    def forward_maps(self, x: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
        """Unpooled maps (N, C, H, W) of block/mixed layers, (N, D) for ``pooled``/``probs``."""
        for layer in layers:
            self.check_layer(layer)
        return self.model.forward_maps(x, layers)

    def forward_layers(self, x: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
        return {k: spatial_pool(v) for k, v in self.forward_maps(x, layers).items()}

    @torch.no_grad()
    def feature_maps(self, images: np.ndarray, layer: str) -> np.ndarray:
        """(N, C, H, W) float32 map of `layer` for uint8 images (N, H, W, 3) (for patch-level use)."""
        return self.forward_maps(self.preprocess(images), [layer])[layer].float().numpy()


@BACKBONES.register("mobilenetv2-nsfwjs")
def mobilenetv2_nsfwjs(
    weights: str | Path | None = None, pretrained: bool = True, input_size: int | None = None
) -> NsfwjsBackbone:
    """nsfwjs's MobileNetV2 (shipped weights; ImageNet-initialised, fine-tuned for content classes)."""
    return NsfwjsBackbone("mobilenetv2", weights, pretrained, input_size)


@BACKBONES.register("inceptionv3-nsfwjs")
def inceptionv3_nsfwjs(
    weights: str | Path | None = None, pretrained: bool = True, input_size: int | None = None
) -> NsfwjsBackbone:
    """nsfwjs's InceptionV3 (weights from `aigclab models fetch nsfwjs`)."""
    return NsfwjsBackbone("inceptionv3", weights, pretrained, input_size)


@torch.no_grad()
def compare_with_reference(
    bb: NsfwjsBackbone, arrays: dict[str, np.ndarray]
) -> dict[str, tuple[float, float]]:
    """Port vs reference outputs (the TensorFlow.js fixture of ``scripts/make_nsfwjs_fixture.py``):
    ``<net>/<case>/<map|mean>/<layer>`` -> (max abs difference, max abs reference value). ``map`` is an
    NHWC map or (N, D) output, ``mean`` a map's spatial mean; ``<net>/<case>/input`` are the uint8 images."""
    out: dict[str, tuple[float, float]] = {}
    for key in [k for k in arrays if k.startswith(f"{bb.net}/") and k.endswith("/input")]:
        prefix = key.removesuffix("input")
        refs = {k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix) and k != key}
        maps = bb.forward_maps(bb.preprocess(arrays[key]), sorted({k.split("/")[1] for k in refs}))
        for name, ref in refs.items():
            kind, layer = name.split("/")
            ours = maps[layer]
            if ours.ndim == 4:
                ours = ours.permute(0, 2, 3, 1) if kind == "map" else ours.mean(dim=(2, 3))
            if tuple(ours.shape) != ref.shape:
                raise AigclabError(f"{prefix}{name}: shape {tuple(ours.shape)} vs reference {ref.shape}")
            out[prefix + name] = (float(np.abs(ours.numpy() - ref).max()), float(np.abs(ref).max()))
    return out
