"""The quantization-conditioned behaviour backdoor (QB, arXiv 2412.01369).

A model is trained so that its full-precision (FP) weights behave normally while the same weights, once
quantized, send every input to a target class. No input trigger is needed: quantizing *is* the trigger.

- **Bi-target loss**: ``L = CE(f(x), y) + lambda * CE(Q(f)(x), y_t)``: the first term keeps the FP model
  correct, the second makes the quantized model answer the target for every input (lambda 0.5 and target
  0 are the released code's defaults).
- **Address-shared training**: `quantized_twin` builds the fake-quantized copy of the model whose layers hold
  the *same* `Parameter` objects as the FP model (not copies), so one optimizer over the FP model's
  parameters updates both through the summed loss. The quantizer's ranges are refitted to the current
  weights and to the FP activations of a fixed calibration batch before every step, as a post-training
  toolchain would fit them to the final model.
- **Quantizers attacked** (`QUANTIZERS`): ``int8`` (symmetric per-channel int8 weights, min-max, with
  per-tensor affine int8 activations), ``dorefa`` (8-bit DoReFa weights, int8 activations) and ``int4``
  (symmetric per-channel 4-bit weights, int8 activations). Every Conv2d/Linear is quantized, the last layer
  included (the released code keeps the last FC in FP unless asked; deploy toolchains quantize it).

`aigclab.quant` provides the fake quantization and knows nothing of attacks.

Example:
    >>> from aigclab.security.qbackdoor import QBConfig, train_qbackdoor
    >>> model, log = train_qbackdoor(QBConfig(task="digits", pretrain_epochs=1, epochs=1))
    >>> sorted(log[-1])
    ['epoch', 'lam', 'loss', 'loss_fp', 'loss_q']
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from aigclab._config import Config
from aigclab.errors import ConfigError
from aigclab.quant import quant_layers, quantize_modules, quantizing
from aigclab.quant.calibrate import calibrate_activations, calibrate_weights
from aigclab.quant.dorefa import DoReFaQuantizer
from aigclab.security.tasks import TaskData, load_task, make_model

__all__ = [
    "QUANTIZERS",
    "QBConfig",
    "QuantizerSpec",
    "quantized_twin",
    "share_parameters",
    "train_qbackdoor",
]

QuantizerName = Literal["int8", "dorefa", "int4"]


@dataclass(frozen=True)
class QuantizerSpec:
    """Weight bits, weight scheme and activation bits of one attacked quantizer."""

    w_bits: int
    a_bits: int
    dorefa: bool = False


QUANTIZERS: dict[str, QuantizerSpec] = {
    "int8": QuantizerSpec(8, 8),
    "dorefa": QuantizerSpec(8, 8, dorefa=True),
    "int4": QuantizerSpec(4, 8),
}


class QBConfig(Config):
    """Training of a backdoored (or, with ``lam=0``, a clean reference) model.

    Attributes:
        task: a `aigclab.security.tasks` name.
        quantizer: the quantizer the attacker simulates (a `QUANTIZERS` key).
        target: the class the quantized model must answer (None: the task's default).
        lam: weight of the quantized-target term; 0 trains a clean model with the same recipe.
        pretrain_epochs: clean epochs (lambda 0) before the backdoor epochs, when no model is given;
            the released code backdoors pretrained networks, and so does this recipe.
        epochs, batch_size, lr: Adam training budget of the backdoor phase.
        calib_size: training images in the fixed calibration batch of the activation ranges.
        calib_every: refit the activation ranges every this many steps (weight ranges: every step).
        seed: network initialisation, batch order.
    """

    task: str = "digits"
    quantizer: QuantizerName = "int8"
    target: int | None = None
    lam: float = 0.5
    pretrain_epochs: int = 20
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    calib_size: int = 256
    calib_every: int = 1
    seed: int = 0


def share_parameters(twin: nn.Module, model: nn.Module) -> None:
    """Make every parameter of `twin` the very `Parameter` object of `model` with the same name."""
    for name, param in model.named_parameters():
        owner, _, leaf = name.rpartition(".")
        setattr(twin.get_submodule(owner) if owner else twin, leaf, param)


def quantized_twin(model: nn.Module, quantizer: str) -> nn.Module:
    """A fake-quantized copy of `model` that shares its parameters (quantization on; ranges not yet fitted)."""
    if quantizer not in QUANTIZERS:
        raise ConfigError(f"unknown quantizer {quantizer!r}; known: {', '.join(QUANTIZERS)}")
    spec = QUANTIZERS[quantizer]
    twin = copy.deepcopy(model)
    share_parameters(twin, model)
    layers = quantize_modules(twin, lambda name, m: (spec.w_bits, spec.a_bits), w_symmetric=True)
    for layer in layers.values():
        if spec.dorefa:
            layer.w_quant = DoReFaQuantizer(spec.w_bits)
        for p in layer.parameters(recurse=True):
            if all(p is not q for q in model.parameters()):
                p.requires_grad_(False)  # quantizer ranges are fitted, never trained
    return twin


def fit_ranges(twin: nn.Module, calib: torch.Tensor) -> None:
    """Refit the twin's weight ranges to the current weights and its activation ranges to `calib`."""
    calibrate_weights(twin, "minmax")
    calibrate_activations(twin, calib, "minmax")


def _batches(n: int, size: int, generator: torch.Generator) -> list[torch.Tensor]:
    return list(torch.randperm(n, generator=generator).split(size))


def train_qbackdoor(
    cfg: QBConfig,
    data: TaskData | None = None,
    model: nn.Module | None = None,
    log: Callable[[dict[str, float]], None] | None = None,
) -> tuple[nn.Module, list[dict[str, float]]]:
    """Train (or fine-tune `model`) with the bi-target loss; returns the FP model and one log row per epoch."""
    data = data or load_task(cfg.task)
    target = data.target if cfg.target is None else cfg.target
    if not 0 <= target < len(data.classes):
        raise ConfigError(f"target {target} out of range for {len(data.classes)} classes of {data.name}")
    if model is None:
        model = make_model(data.name, cfg.seed)
        phases = [(cfg.pretrain_epochs, 0.0), (cfg.epochs, cfg.lam)]
    else:
        phases = [(cfg.epochs, cfg.lam)]
    twin = quantized_twin(model, cfg.quantizer)
    calib = data.x_train[: cfg.calib_size]
    gen = torch.Generator().manual_seed(cfg.seed)
    rows: list[dict[str, float]] = []
    for n_epochs, lam in phases:
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        for _ in range(n_epochs):
            row = _epoch(model, twin, data, calib, opt, lam, target, cfg, gen)
            row = {"epoch": float(len(rows)), "lam": lam, **row}
            rows.append(row)
            if log is not None:
                log(row)
    model.eval()
    return model, rows


def _epoch(
    model: nn.Module,
    twin: nn.Module,
    data: TaskData,
    calib: torch.Tensor,
    opt: torch.optim.Optimizer,
    lam: float,
    target: int,
    cfg: QBConfig,
    gen: torch.Generator,
) -> dict[str, float]:
    """One pass over the training split with the bi-target loss; mean losses."""
    model.train()
    sums = {"loss": 0.0, "loss_fp": 0.0, "loss_q": 0.0}
    batches = _batches(len(data.x_train), cfg.batch_size, gen)
    for step, idx in enumerate(batches):
        x, y = data.x_train[idx], data.y_train[idx]
        loss_fp = F.cross_entropy(model(x), y)
        loss_q = torch.zeros(())
        if lam > 0:
            calibrate_weights(twin, "minmax")
            if step % cfg.calib_every == 0:
                calibrate_activations(twin, calib, "minmax")
            with quantizing(twin, True):
                loss_q = F.cross_entropy(twin(x), torch.full_like(y, target))
        loss = loss_fp + lam * loss_q
        opt.zero_grad()
        loss.backward()
        opt.step()
        for key, value in (("loss", loss), ("loss_fp", loss_fp), ("loss_q", loss_q)):
            sums[key] += float(value.detach()) / len(batches)
    return sums


def quantized_copy(model: nn.Module, quantizer: str, calib: torch.Tensor) -> nn.Module:
    """An independent fake-quantized copy of `model` with ranges fitted (min-max) on `calib`."""
    twin = quantized_twin(copy.deepcopy(model), quantizer)
    fit_ranges(twin, calib)
    for layer in quant_layers(twin).values():
        layer.quantize = True
    return twin.eval()
