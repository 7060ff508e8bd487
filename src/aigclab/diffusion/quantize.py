"""The quantization pipeline shared by every method: wrap, calibrate, (OMQ), (LoRA distillation with TRD).

1. Wrap every `Conv2d`/`Linear` of the UNet in a `QuantLayer`: the first and last convolutions at
   `first_last_bits`, the rest at W`w_bits`A`a_bits`; activations get one parameter row per DDIM step.
2. Record the full-precision DDIM trajectory of `calib_samples` noise seeds; replay it to collect each
   layer's per-input-channel activation maxima and a few inputs (`omq_samples` seeds at 4 steps).
3. OMQ (if on): smoothing, then per-layer mixed bit-widths (`mpq.choose_k`).
4. Calibrate the weight quantizers, then the activation quantizers step by step on the replayed
   trajectory (inputs from the full-precision network).
5. Fine-tune (if `finetune_steps`): LoRA on every quantized layer; at each DDIM step of the teacher's
   trajectory the student predicts the noise; every `window` steps one optimiser step on the summed
   noise MSE, plus `trd_weight` x the TRD loss over that window's last-up-block features if `trd`
   (or, with `step_every_denoise`, one step per denoising step as the released code does).

`distillation_error` measures what fine-tuning minimises, on noise of the caller's choosing.

Example:
    >>> import torch
    >>> from aigclab.diffusion import create_quant_config, load_model, quantize_diffusion
    >>> model = load_model("tiny")
    >>> cfg = create_quant_config("mpq-dm", w_bits=2, a_bits=4, steps=2, calib_samples=2, finetune_steps=1,
    ...                           batch_size=2, lora_rank=2)
    >>> result = quantize_diffusion(model, cfg)
    >>> result.report.total_bytes < result.report.fp32_bytes / 4
    True
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from aigclab.diffusion.config import QuantConfig
from aigclab.diffusion.models import DiffusionModel, denoise, load_model, record_trajectory
from aigclab.diffusion.mpq import choose_k, omq_candidates, smoothing_factors, trd_loss
from aigclab.errors import AigclabError
from aigclab.quant import QuantLayer, StorageReport, quantize_modules, quantizing, set_slot, storage_report

__all__ = ["QuantResult", "distillation_error", "load_quantized", "quantize_diffusion", "save_quantized"]

_MAX_CALIB_VALUES = 1 << 16


@dataclass
class QuantResult:
    """The quantized model (its UNet holds the `QuantLayer`s), its config and what the run measured."""

    model: DiffusionModel
    config: QuantConfig
    report: StorageReport
    omq_k: dict[str, int] = field(default_factory=dict)
    losses: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    omq_errors: dict[str, dict[int, float]] = field(default_factory=dict)

    @property
    def layers(self) -> dict[str, QuantLayer]:
        return {n: m for n, m in self.model.unet.named_modules() if isinstance(m, QuantLayer)}


def _kept_names(unet: nn.Module, cfg: QuantConfig) -> set[str]:
    """The first `keep_first` and last `keep_last` Conv2d/Linear layers (module order): `first_last_bits`."""
    names = [n for n, m in unet.named_modules() if isinstance(m, nn.Conv2d | nn.Linear | QuantLayer)]
    return set(names[: cfg.keep_first]) | set(names[len(names) - cfg.keep_last :] if cfg.keep_last else [])


def _wrap(unet: nn.Module, cfg: QuantConfig) -> dict[str, QuantLayer]:
    kept = _kept_names(unet, cfg)

    def bits(name: str, module: nn.Module) -> tuple[int, int]:
        if name in kept:
            return cfg.first_last_bits, cfg.first_last_bits
        return cfg.w_bits, cfg.a_bits

    return quantize_modules(unet, bits, act_slots=cfg.steps)


def _sample_values(x: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """At most `n` random elements of `x`, always including its minimum and maximum."""
    flat = x.detach().flatten()
    if flat.numel() <= n:
        return flat
    idx = torch.randint(0, flat.numel(), (n,), generator=generator)
    return torch.cat([flat[idx], flat.min()[None], flat.max()[None]])


def _replay(unet: nn.Module, trajectory: list[tuple[torch.Tensor, torch.Tensor]], hook: Callable) -> None:
    """Run the full-precision UNet over the recorded trajectory with `hook(layer_name, step, input)`."""
    layers = {n: m for n, m in unet.named_modules() if isinstance(m, QuantLayer)}
    step = [0]
    handles = [
        m.register_forward_pre_hook(lambda mod, args, name=name: hook(name, step[0], args[0]))
        for name, m in layers.items()
    ]
    with torch.no_grad(), quantizing(unet, False):
        for i, (x, t) in enumerate(trajectory):
            step[0] = i
            unet(x, t)
    for h in handles:
        h.remove()


def _collect_stats(
    unet: nn.Module, trajectory: list[tuple[torch.Tensor, torch.Tensor]], cfg: QuantConfig
) -> tuple[dict[str, torch.Tensor], dict[str, list[torch.Tensor]]]:
    absmax: dict[str, torch.Tensor] = {}
    inputs: dict[str, list[torch.Tensor]] = {}
    keep_steps = set(torch.linspace(0, len(trajectory) - 1, 4).round().long().tolist())

    def hook(name: str, step: int, x: torch.Tensor) -> None:
        dims = [d for d in range(x.ndim) if d != (1 if x.ndim == 4 else x.ndim - 1)]
        m = x.abs().amax(dim=dims)
        absmax[name] = m if name not in absmax else torch.maximum(absmax[name], m)
        if step in keep_steps:
            inputs.setdefault(name, []).append(x[: cfg.omq_samples].clone())

    _replay(unet, trajectory, hook)
    return absmax, inputs


def _apply_omq(
    layers: dict[str, QuantLayer], trajectory: list, unet: nn.Module, cfg: QuantConfig
) -> tuple[dict[str, int], dict[str, dict[int, float]]]:
    """Smoothing and the per-layer k search; returns the chosen k and every candidate's output MSE."""
    absmax, inputs = _collect_stats(unet, trajectory, cfg)
    kept = _kept_names(unet, cfg)
    chosen: dict[str, int] = {}
    errors: dict[str, dict[int, float]] = {}
    for name, layer in layers.items():
        if name in kept:
            continue
        layer.smooth.copy_(smoothing_factors(absmax[name], layer.weight))
        candidates = omq_candidates(layer.weight.shape[0], cfg.omq_group, cfg.omq_max_fraction)
        x = torch.cat(inputs[name])
        chosen[name], errors[name] = choose_k(layer, x, cfg.w_bits, cfg.a_bits, candidates, cfg.calib)
    return chosen, errors


def _calibrate(layers: dict[str, QuantLayer], trajectory: list, unet: nn.Module, cfg: QuantConfig) -> None:
    for layer in layers.values():
        layer.calibrate_weight(cfg.calib)
    gen = torch.Generator().manual_seed(cfg.seed)

    def hook(name: str, step: int, x: torch.Tensor) -> None:
        layer = layers[name]
        if layer.a_quant is not None:
            values = _sample_values(layer.smoothed_input(x), _MAX_CALIB_VALUES, gen)
            layer.a_quant.calibrate(values, cfg.calib, slot=step)

    _replay(unet, trajectory, hook)


def _optimizer(
    layers: dict[str, QuantLayer], cfg: QuantConfig, gen: torch.Generator
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """Adam over LoRA (one rate, or scale-aware per layer) and activation steps, with the LR schedule."""
    groups: list[dict[str, Any]] = []
    act = []
    for layer in layers.values():
        layer.add_lora(cfg.lora_rank, generator=gen)
        lr = cfg.lora_lr
        if layer.w_quant is not None:
            if cfg.lora_lr_mode == "scale-aware":  # EfficientDM's code: mean weight step / 2500
                lr = float(layer.w_quant.step().detach().mean()) / 2500
            layer.w_quant.requires_grad_(False)
        groups.append({"params": [layer.lora_a, layer.lora_b], "lr": lr})
        if layer.a_quant is not None:
            act += [layer.a_quant.scale, layer.a_quant.zero_point]
    if cfg.act_lr > 0:
        groups.append({"params": act, "lr": cfg.act_lr})
    opt = torch.optim.Adam(groups)
    total = max(cfg.finetune_steps, 1)
    decay = cfg.lr_schedule == "linear"
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / total if decay else 1.0)


def _features(unet: nn.Module, store: list[torch.Tensor]) -> torch.utils.hooks.RemovableHandle:
    last_up_block: nn.Module = cast(Any, unet).up_blocks[-1]
    return last_up_block.register_forward_hook(lambda m, a, out: store.append(out))


def _finetune(model: DiffusionModel, student: DiffusionModel, cfg: QuantConfig) -> list[dict[str, float]]:
    """LoRA distillation along the teacher's DDIM trajectory; the feature hooks go away even on error."""
    feats_student: list[torch.Tensor] = []
    feats_teacher: list[torch.Tensor] = []
    handles = [_features(student.unet, feats_student), _features(model.unet, feats_teacher)]
    try:
        return _distill(model, student, cfg, feats_student, feats_teacher)
    finally:
        set_slot(student.unet, None)
        for h in handles:
            h.remove()


def _distill(
    model: DiffusionModel,
    student: DiffusionModel,
    cfg: QuantConfig,
    feats_student: list[torch.Tensor],
    feats_teacher: list[torch.Tensor],
) -> list[dict[str, float]]:
    """One optimiser step per `window` denoising steps (or per step if `step_every_denoise`)."""
    layers = {n: m for n, m in student.unet.named_modules() if isinstance(m, QuantLayer)}
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    opt, sched = _optimizer(layers, cfg, gen)
    scheduler = model.scheduler()
    scheduler.set_timesteps(cfg.steps)
    last = len(scheduler.timesteps) - 1
    history: list[dict[str, float]] = []

    def step(mse: torch.Tensor, trd: torch.Tensor) -> None:
        opt.zero_grad()
        (mse + cfg.trd_weight * trd).backward()
        opt.step()
        sched.step()
        history.append({"mse": mse.item(), "trd": trd.item()})

    while len(history) < cfg.finetune_steps:
        x = torch.randn((cfg.batch_size, *model.shape), generator=gen)
        mse_terms: list[torch.Tensor] = []
        for i, t in enumerate(scheduler.timesteps):
            with torch.no_grad():
                eps_teacher = model.unet(x, t).sample
            set_slot(student.unet, i)
            eps_student = student.unet(x, t).sample
            mse_terms.append(F.mse_loss(eps_student, eps_teacher, reduction="sum") / len(x))
            window_done = len(feats_teacher) == cfg.window or i == last
            trd = trd_loss(feats_student, feats_teacher) if cfg.trd and window_done else torch.zeros(())
            if cfg.step_every_denoise:
                step(mse_terms.pop(), trd)
                # earlier steps' graphs are freed: keep their features as constants for the window's TRD
                feats_student[:] = [f.detach() for f in feats_student]
            elif window_done:
                step(torch.stack(mse_terms).sum(), trd)
                mse_terms.clear()
            if window_done:
                feats_student.clear()
                feats_teacher.clear()
            if len(history) == cfg.finetune_steps:
                break
            x = scheduler.step(eps_teacher, t, x).prev_sample
    return history


@torch.no_grad()
def distillation_error(model: DiffusionModel, student: nn.Module, noise: torch.Tensor, steps: int) -> float:
    """Mean squared error between the student's and the teacher's noise predictions along the teacher's
    DDIM trajectory from `noise` (per sample and step): the quantity the fine-tuning lowers."""
    errors: list[float] = []

    def compare(i: int, t: torch.Tensor, x: torch.Tensor, eps: torch.Tensor) -> None:
        set_slot(student, i)
        errors.append(F.mse_loss(student(x, t).sample, eps, reduction="sum").item() / len(x))

    denoise(model, noise, steps, on_step=compare)
    set_slot(student, None)
    return sum(errors) / len(errors)


def quantize_diffusion(model: DiffusionModel, cfg: QuantConfig) -> QuantResult:
    """Quantize a copy of `model` as `cfg` says; `model` itself is left unchanged and used as teacher."""
    start = time.perf_counter()
    student = model.copy()
    for p in student.unet.parameters():
        p.requires_grad_(False)
    layers = _wrap(student.unet, cfg)
    noise = torch.randn((cfg.calib_samples, *model.shape), generator=torch.Generator().manual_seed(cfg.seed))
    trajectory = record_trajectory(model, noise, cfg.steps)
    chosen, errors = _apply_omq(layers, trajectory, student.unet, cfg) if cfg.omq else ({}, {})
    _calibrate(layers, trajectory, student.unet, cfg)
    history = _finetune(model, student, cfg) if cfg.finetune_steps else []
    report = storage_report(student.unet)
    return QuantResult(student, cfg, report, chosen, history, time.perf_counter() - start, errors)


def save_quantized(result: QuantResult, out: Path) -> None:
    """Write ``quantized.safetensors`` (fake-quant state), ``quantized.json`` (how to rebuild it)."""
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in result.model.unet.state_dict().items()}
    save_file(state, out / "quantized.safetensors")
    meta = {
        "model": result.model.name,
        "config": result.config.model_dump(mode="json"),
        "lora": any(layer.lora_a is not None for layer in result.layers.values()),
        "bytes": result.report.total_bytes,
        "omq_k": result.omq_k,
    }
    (out / "quantized.json").write_text(json.dumps(meta, indent=2) + "\n")


def load_quantized(folder: Path, weights: Path | None = None) -> tuple[DiffusionModel, QuantConfig]:
    """Rebuild a model written by `save_quantized` (its base model comes from `load_model`)."""
    meta_path, state_path = folder / "quantized.json", folder / "quantized.safetensors"
    if not meta_path.is_file() or not state_path.is_file():
        raise AigclabError(f"{folder}: not a quantized model folder (needs quantized.json + .safetensors)")
    meta = json.loads(meta_path.read_text())
    cfg = QuantConfig.model_validate(meta["config"])
    model = load_model(meta["model"], weights)
    layers = _wrap(model.unet, cfg)
    if meta["lora"]:
        for layer in layers.values():
            layer.add_lora(cfg.lora_rank)
    model.unet.load_state_dict(load_file(state_path))
    return model, cfg
