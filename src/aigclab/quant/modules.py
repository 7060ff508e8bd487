"""Quantized `Conv2d`/`Linear` wrappers and helpers that swap them into any model.

A `QuantLayer` keeps the original full-precision weight and computes, at each call,

    W_eff = (W + B A * alpha / r) * s        x_eff = x / s

where ``B A`` is an optional LoRA update (merged *before* quantization, as QALoRA does) and ``s`` a
per-input-channel smoothing vector (SmoothQuant; all ones unless set). The weight goes through a
per-output-channel quantizer and the input through a per-tensor activation quantizer with one parameter
row per slot. The slot is an explicit attribute that the caller sets with `set_slot` before each call;
nothing counts calls behind the caller's back.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from aigclab.quant import quantize_modules, set_slot
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> layers = quantize_modules(net, lambda name, m: (4, 8), act_slots=3)
    >>> sorted(layers)
    ['0', '2']
    >>> set_slot(net, 1)
    >>> net(torch.randn(5, 4)).shape
    torch.Size([5, 2])
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from aigclab.quant.quantizer import CalibMethod, Quantizer

__all__ = ["BitsFn", "QuantLayer", "quant_layers", "quantize_modules", "quantizing", "set_slot"]

# (name, module) -> (weight bits, activation bits), or None to keep the module in full precision.
BitsFn = Callable[[str, nn.Module], tuple[int | None, int | None] | None]


class QuantLayer(nn.Module):
    """A fake-quantized `nn.Conv2d` or `nn.Linear` (groups=1) with optional LoRA and input smoothing.

    Args:
        layer: the full-precision layer; its weight and bias are reused (not copied).
        w_bits: weight bits (int, or one per output channel); ``None`` keeps weights in full precision.
        a_bits: input-activation bits; ``None`` keeps activations in full precision.
        act_slots: parameter rows of the activation quantizer (e.g. one per sampling step).
        w_symmetric, a_symmetric: signed codes with a zero-point of 0.
    """

    def __init__(
        self,
        layer: nn.Conv2d | nn.Linear,
        w_bits: int | torch.Tensor | None,
        a_bits: int | None,
        act_slots: int = 1,
        w_symmetric: bool = False,
        a_symmetric: bool = False,
    ):
        super().__init__()
        if isinstance(layer, nn.Conv2d) and layer.groups != 1:
            raise ValueError("grouped convolutions are not supported")
        self.kind = "conv" if isinstance(layer, nn.Conv2d) else "linear"
        self.stride: Any
        self.padding: Any
        self.dilation: Any
        self.stride, self.padding, self.dilation = (
            (layer.stride, layer.padding, layer.dilation) if isinstance(layer, nn.Conv2d) else (1, 0, 1)
        )
        self.weight = layer.weight
        self.bias = layer.bias
        out_ch, in_ch = self.weight.shape[:2]
        self.register_buffer("smooth", torch.ones(in_ch))
        self.smooth: torch.Tensor
        self.w_quant: Quantizer | None = (
            None if w_bits is None else Quantizer(w_bits, w_symmetric, channel_axis=0, n_channels=out_ch)
        )
        self.a_quant: Quantizer | None = (
            None if a_bits is None else Quantizer(a_bits, a_symmetric, slots=act_slots)
        )
        self.lora_a: nn.Parameter | None = None
        self.lora_b: nn.Parameter | None = None
        self.lora_scale = 0.0
        self.slot: int | None = None
        self.quantize = True

    def add_lora(
        self, rank: int, alpha: float | None = None, generator: torch.Generator | None = None
    ) -> None:
        """Add a rank-`rank` update B A (B = 0 so the layer is unchanged until trained)."""
        fan_in = self.weight[0].numel()
        bound = 1.0 / math.sqrt(fan_in)
        a = (torch.rand(rank, fan_in, generator=generator) * 2 - 1) * bound
        self.lora_a = nn.Parameter(a)
        self.lora_b = nn.Parameter(torch.zeros(self.weight.shape[0], rank))
        self.lora_scale = (alpha or rank) / rank

    def _axis_shape(self) -> tuple[int, ...]:
        return (1, -1, 1, 1) if self.kind == "conv" else (1, -1)

    def merged_weight(self) -> torch.Tensor:
        """Full-precision weight with LoRA merged and smoothing applied (what the weight quantizer sees)."""
        w = self.weight
        if self.lora_a is not None and self.lora_b is not None:
            w = w + (self.lora_b @ self.lora_a).reshape(w.shape) * self.lora_scale
        return w * self.smooth.reshape(self._axis_shape())

    def quant_weight(self) -> torch.Tensor:
        w = self.merged_weight()
        return w if self.w_quant is None or not self.quantize else self.w_quant(w)

    def smoothed_input(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, 1, 1) if self.kind == "conv" else (-1,)
        return x / self.smooth.reshape(shape)

    def quant_input(self, x: torch.Tensor) -> torch.Tensor:
        x = self.smoothed_input(x)
        return x if self.a_quant is None or not self.quantize else self.a_quant(x, self.slot)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply_weight(self.quant_input(x), self.quant_weight())

    def apply_weight(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if self.kind == "conv":
            return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation)
        return F.linear(x, w, self.bias)

    @torch.no_grad()
    def calibrate_weight(self, method: CalibMethod = "mse") -> None:
        if self.w_quant is not None:
            self.w_quant.calibrate(self.merged_weight(), method)

    def extra_repr(self) -> str:
        lora = 0 if self.lora_a is None else self.lora_a.shape[0]
        return f"{self.kind}, weight={tuple(self.weight.shape)}, lora_rank={lora}"


def quantize_modules(
    model: nn.Module,
    bits: BitsFn,
    act_slots: int = 1,
    w_symmetric: bool = False,
    a_symmetric: bool = False,
) -> dict[str, QuantLayer]:
    """Replace, in place, every `Conv2d`/`Linear` for which `bits(name, module)` is not None.

    Returns the new layers by their qualified names.
    """
    found = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d | nn.Linear) and not isinstance(m, QuantLayer)
    ]
    layers: dict[str, QuantLayer] = {}
    for name, module in found:
        spec = bits(name, module)
        if spec is None:
            continue
        layer = QuantLayer(module, spec[0], spec[1], act_slots, w_symmetric, a_symmetric)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, layer)
        layers[name] = layer
    return layers


def quant_layers(model: nn.Module) -> dict[str, QuantLayer]:
    """Every `QuantLayer` in `model`, by qualified name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, QuantLayer)}


def set_slot(model: nn.Module, slot: int | None) -> None:
    """Select the activation-parameter row `slot` in every quantized layer of `model`."""
    for m in model.modules():
        if isinstance(m, QuantLayer):
            m.slot = slot


@contextlib.contextmanager
def quantizing(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Temporarily switch fake quantization on or off in every layer (off: the full-precision model)."""
    layers = list(quant_layers(model).values())
    before = [layer.quantize for layer in layers]
    for layer in layers:
        layer.quantize = enabled
    try:
        yield
    finally:
        for layer, flag in zip(layers, before, strict=True):
            layer.quantize = flag
