"""Post-training calibration helpers that work on any model holding `QuantLayer`s.

`calibrate_activations` runs the model in full precision (quantization off), observes what every
quantized layer receives, and fits each activation quantizer to it, as a min-max observer does in a
post-training quantization toolchain. `calibrate_weights` refits every weight quantizer to the current
weights (useful while the weights are being trained: the range follows them, as a deploy-time toolchain
would compute it from the final weights).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from aigclab.quant import quantize_modules, quantizing
    >>> from aigclab.quant.calibrate import calibrate_activations, calibrate_weights
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> _ = quantize_modules(net, lambda name, m: (8, 8))
    >>> calibrate_weights(net)
    >>> calibrate_activations(net, torch.randn(16, 4))
    >>> with quantizing(net, True):
    ...     y = net(torch.randn(3, 4))
    >>> y.shape
    torch.Size([3, 2])
"""

from __future__ import annotations

import torch
from torch import nn

from aigclab.quant.modules import quant_layers, quantizing
from aigclab.quant.quantizer import CalibMethod

__all__ = ["calibrate_activations", "calibrate_weights"]


@torch.no_grad()
def calibrate_weights(model: nn.Module, method: CalibMethod = "minmax") -> None:
    """Fit every weight quantizer of `model` to its current (merged) weight."""
    for layer in quant_layers(model).values():
        layer.calibrate_weight(method)


@torch.no_grad()
def calibrate_activations(model: nn.Module, inputs: torch.Tensor, method: CalibMethod = "minmax") -> None:
    """Fit every activation quantizer to the inputs its layer sees when `model(inputs)` runs in full precision."""
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for name, layer in quant_layers(model).items():

        def hook(module: nn.Module, args: tuple[torch.Tensor, ...], name: str = name) -> None:
            seen[name] = module.smoothed_input(args[0]).detach()  # type: ignore[operator]

        handles.append(layer.register_forward_pre_hook(hook))
    try:
        with quantizing(model, False):
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    for name, layer in quant_layers(model).items():
        if layer.a_quant is not None and name in seen:
            layer.a_quant.calibrate(seen[name], method)
