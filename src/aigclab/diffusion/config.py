"""The quantization config shared by every diffusion quantization method, and the method registry.

A method is a named preset of `QuantConfig` (``presets/<name>.json``): the uniform baseline, the
EfficientDM-like LoRA distillation, MPQ-DM and its two ablations differ only in these switches, so they
run through one pipeline (`aigclab.diffusion.quantize`) and compare fairly.

Example:
    >>> from aigclab.diffusion import create_quant_config, parse_bits
    >>> parse_bits("W2A4")
    (2, 4)
    >>> cfg = create_quant_config("mpq-dm", w_bits=2, a_bits=4)
    >>> cfg.omq, cfg.trd
    (True, True)
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field

from aigclab._config import Config
from aigclab._registry import Registry
from aigclab.errors import ConfigError
from aigclab.quant import CalibMethod

__all__ = ["QUANT_METHODS", "QuantConfig", "create_quant_config", "list_quant_methods", "parse_bits"]


class QuantConfig(Config):
    """How to quantize a diffusion UNet.

    Calibration: `calib_samples` noise seeds run through the full-precision sampler for `steps` DDIM
    steps; activations get one (step, zero-point) pair per step. OMQ: smoothing plus kurtosis-ranked
    mixed bit-widths per output channel. Fine-tuning: `finetune_steps` optimiser steps of LoRA
    distillation from the full-precision model along its DDIM trajectory, one step per `window`
    consecutive denoising steps, with the TRD relation loss if `trd`.

    Where the defaults differ from the released MPQ-DM/EfficientDM code (each switch exists so that the
    difference can be ablated; ``benchmarks/mpq_dm.py --deviations`` does):

    - `trd_weight` 1 (code: 100);
    - `keep_first`/`keep_last` 1/1: only ``conv_in`` and ``conv_out`` at `first_last_bits` (code: the
      first three quantized layers, i.e. input conv and the two time-embedding linears, and the last);
    - `lora_rank` 8 (code: 32);
    - `lora_lr_mode` "fixed": one Adam rate `lora_lr` (code: "scale-aware", per layer the mean weight
      quantization step / 2500), `lr_schedule` "constant" (code: "linear" decay to 0, no warm-up);
    - `step_every_denoise` False: one optimiser step per `window` of denoising steps with the summed
      noise MSE (code: True, a step at every denoising step, the TRD term added every `window` steps).
    """

    method: str = "custom"
    w_bits: int = Field(4, ge=1, le=8)
    a_bits: int = Field(8, ge=2, le=16)
    first_last_bits: int = Field(8, ge=2, le=16)
    keep_first: int = Field(1, ge=0)
    keep_last: int = Field(1, ge=0)
    calib: CalibMethod = "mse"
    calib_samples: int = Field(32, ge=1)
    steps: int = Field(20, ge=1)
    omq: bool = False
    omq_group: float = Field(0.1, gt=0, le=0.5)
    omq_max_fraction: float = Field(0.5, gt=0, le=0.5)
    omq_samples: int = Field(4, ge=1)
    trd: bool = False
    trd_weight: float = Field(1.0, ge=0)
    window: int = Field(2, ge=1)
    finetune_steps: int = Field(0, ge=0)
    batch_size: int = Field(8, ge=1)
    lora_rank: int = Field(8, ge=1)
    lora_lr: float = Field(1e-3, gt=0)
    lora_lr_mode: Literal["fixed", "scale-aware"] = "fixed"
    lr_schedule: Literal["constant", "linear"] = "constant"
    step_every_denoise: bool = False
    act_lr: float = Field(5e-4, ge=0)
    seed: int = 0

    @property
    def setting(self) -> str:
        return f"W{self.w_bits}A{self.a_bits}"


QUANT_METHODS: Registry[QuantConfig] = Registry("diffusion-quant")


def preset_entry(name: str, doc: str) -> None:
    """Register method `name` as its preset ``presets/<name>.json``."""

    def factory(**overrides: Any) -> QuantConfig:
        return QuantConfig.from_preset("aigclab.diffusion", name, **overrides)

    factory.__doc__ = doc
    QUANT_METHODS.register(name)(factory)


def create_quant_config(name: str, **overrides: Any) -> QuantConfig:
    """The config of method `name` (see `list_quant_methods`), with field overrides."""
    from aigclab.diffusion import baselines, mpq  # noqa: F401  (registers every method)

    return QUANT_METHODS.create(name, **overrides)


def list_quant_methods() -> list[str]:
    from aigclab.diffusion import baselines, mpq  # noqa: F401

    return QUANT_METHODS.list()


def parse_bits(setting: str) -> tuple[int, int]:
    """``"W2A4"`` -> (2, 4)."""
    match = re.fullmatch(r"[wW](\d+)[aA](\d+)", setting.strip())
    if not match:
        raise ConfigError(f"bit setting {setting!r}: expected the form W<bits>A<bits>, e.g. W4A8")
    return int(match[1]), int(match[2])
