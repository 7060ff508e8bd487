"""The generator zoo: small image generators of seven families, trained here on training-photo patches.

| name | family | fingerprint source |
|---|---|---|
| ``dcgan`` | gan-transposed | transposed-convolution upsampling (checkerboard) |
| ``upgan`` | gan-upsample | nearest-neighbour upsampling + 3x3 convs |
| ``vae`` | vae | Gaussian decoder from the prior (blur), bilinear upsampling |
| ``ddpm`` | pixel-diffusion | diffusers `UNet2DModel`, ancestral DDPM sampling (100 steps) |
| ``ddim`` | pixel-diffusion-ddim | the same UNet, 10 deterministic DDIM steps |
| ``ldm`` | latent-diffusion | UNet in an 8x8x4 autoencoder latent, decoded by transposed convs |
| ``flow`` | flow | Glow-style normalizing flow (actnorm, 1x1 conv, affine coupling) |

`create_generator(name)` builds an untrained model from the preset ``presets/<name>.json`` (``<name>-tiny``
for tests); `load_generator(name)` loads the trained, shipped weights. Every model samples uint8 images:

Example:
    >>> import torch
    >>> from aigclab.data.zoo import create_generator
    >>> g = create_generator("dcgan", preset="dcgan-tiny")
    >>> g.sample(4, generator=torch.Generator().manual_seed(0)).shape
    (4, 32, 32, 3)

The trained DDPM is a plain diffusers UNet: ``load_generator("ddpm").unet`` (a `UNet2DModel`), its
constructor arguments `unet_config(cfg)`; weights in ``assets/weights/zoo/ddpm.safetensors`` with the
config in ``ddpm.json``.

``scenes`` is not part of AIGC-Mini: the same pixel DDPM trained on procedural scenes
(`aigclab.data.scenes`, objects with known colour, shape, size and position) by
``scripts/train_scenes_ddpm.py``, so that local edits can be checked against ground truth.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from aigclab._registry import Registry
from aigclab.data.zoo._base import ZooConfig, ZooGenerator, fit, from_uint8, to_uint8
from aigclab.data.zoo.ddpm import DDPM, DDPMConfig, unet_config
from aigclab.data.zoo.flow import Flow, FlowConfig
from aigclab.data.zoo.gans import GAN, GANConfig
from aigclab.data.zoo.ldm import LDM, LDMConfig
from aigclab.data.zoo.vae import VAE, VAEConfig
from aigclab.errors import DataError

__all__ = [
    "GENERATORS",
    "ZooConfig",
    "ZooGenerator",
    "create_generator",
    "fit",
    "from_uint8",
    "list_generators",
    "load_generator",
    "save_generator",
    "to_uint8",
    "unet_config",
    "weights_dir",
]

GENERATORS: Registry[ZooGenerator] = Registry("generator")

_FAMILIES: dict[str, tuple[type[ZooConfig], type[ZooGenerator]]] = {
    "gan": (GANConfig, GAN),
    "vae": (VAEConfig, VAE),
    "ddpm": (DDPMConfig, DDPM),
    "ldm": (LDMConfig, LDM),
    "flow": (FlowConfig, Flow),
}


def weights_dir() -> Path:
    """Where the shipped zoo weights live (``aigclab/assets/weights/zoo``)."""
    return Path(str(resources.files("aigclab") / "assets" / "weights" / "zoo"))


def _build(kind: str, preset: str, overrides: dict[str, Any]) -> ZooGenerator:
    cfg_cls, model_cls = _FAMILIES[kind]
    cfg = cfg_cls.from_preset("aigclab.data.zoo", preset, **overrides)
    with torch.random.fork_rng():  # parameter init is seeded and leaves the global RNG alone
        torch.manual_seed(cfg.seed)
        return model_cls(cfg)


def _entry(name: str, kind: str) -> None:
    def factory(preset: str = name, **overrides: Any) -> ZooGenerator:
        return _build(kind, preset, overrides)

    factory.__doc__ = f"Untrained `{name}` generator from preset `{name}` (or `preset`)."
    GENERATORS.register(name)(factory)


for _name, _kind in [
    ("dcgan", "gan"), ("upgan", "gan"), ("vae", "vae"), ("ddpm", "ddpm"), ("ddim", "ddpm"),
    ("ldm", "ldm"), ("flow", "flow"), ("scenes", "ddpm"),
]:  # fmt: skip
    _entry(_name, _kind)


def create_generator(name: str, **overrides: Any) -> ZooGenerator:
    """Untrained generator `name`; `preset="<name>-tiny"` gives the test size, other kwargs override fields."""
    return GENERATORS.create(name, **overrides)


def list_generators() -> list[str]:
    return GENERATORS.list()


def save_generator(model: ZooGenerator, root: Path | None = None) -> Path:
    """Write weights (fp16 safetensors) and config JSON as ``<weights name>.safetensors/.json`` in `root`.

    Only what sampling needs is kept: parts under `model.training_only` (a GAN's discriminator, a VAE's
    encoder) are left out to keep the shipped zoo small.
    """
    root = root or weights_dir()
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{model.weights_name}.safetensors"
    state = {
        k: (v.half() if v.is_floating_point() else v).contiguous()
        for k, v in model.state_dict().items()
        if not k.startswith(model.training_only)
    }
    save_file(state, path)
    meta = model.config.model_dump(mode="json")
    if isinstance(model, DDPM):
        meta["unet_config"] = unet_config(model.config)  # type: ignore[arg-type]
    (root / f"{model.weights_name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    return path


def round_to_fp16(model: ZooGenerator) -> ZooGenerator:
    """Round every float tensor to fp16 precision in place, so the model equals its saved weights."""
    with torch.no_grad():
        for v in model.state_dict().values():
            if v.is_floating_point():
                v.copy_(v.half().float())
    return model


def load_generator(name: str, root: Path | None = None, **overrides: Any) -> ZooGenerator:
    """Generator `name` with trained weights from `root` (default: the shipped zoo weights)."""
    model = create_generator(name, **overrides)
    path = (root or weights_dir()) / f"{model.weights_name}.safetensors"
    if not path.is_file():
        raise DataError(f"{path}: no trained weights for generator {name!r}; run `aigclab data build-mini`")
    state = load_file(path)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(model.training_only)]
    if missing or unexpected:
        raise DataError(
            f"{path}: weights do not fit {name!r} (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return model.eval()
