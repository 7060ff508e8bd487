"""MPQ-DM (Feng et al., AAAI 2025, arXiv 2412.11549): mixed-precision quantization for low-bit diffusion.

Two ideas, both here:

**OMQ, outlier-driven mixed quantization.** Per layer: (1) smooth, per input channel i,
``s_i = sqrt(max|X_i| / max|W_:,i|)``, so that ``W * s`` and ``X / s`` share the outliers; (2) rank
output channels by the (Pearson) kurtosis of their smoothed weights; (3) give the top-k channels N+1 bits,
the bottom-k N-1 bits and the rest N, so the mean bit-width is exactly N; (4) choose k among
``0, g, 2g, ... <= max_fraction * C_out`` (g = ``group * C_out``) by the layer's output MSE against full
precision on calibration inputs, with weights and inputs quantized.

**TRD, time-smoothed relation distillation.** The features of the UNet's last up block are averaged over
neighbouring denoising steps, L2-normalised over channels and turned into a self-similarity map
``S = F^T F`` (positions x positions); the loss is ``KL(softmax(S_teacher) || softmax(S_student))``, row
by row. Unlike the released code (whose hooks store detached features, so the term gives no gradient),
the student's features stay attached, so the term trains the student as the paper describes.

The pipeline that uses these (calibration, LoRA fine-tuning) is `aigclab.diffusion.quantize`.

Example:
    >>> import torch
    >>> from aigclab.diffusion.mpq import mixed_bits
    >>> bits = mixed_bits(torch.tensor([0.5, 9.0, 1.0, 3.0]), k=1, bits=3)
    >>> bits.tolist(), bits.float().mean().item()
    ([2, 4, 3, 3], 3.0)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from aigclab.diffusion.config import preset_entry
from aigclab.quant import Quantizer, QuantLayer
from aigclab.quant.quantizer import CalibMethod

__all__ = [
    "choose_k",
    "kurtosis_per_channel",
    "mixed_bits",
    "omq_candidates",
    "relation_map",
    "smoothing_factors",
    "trd_loss",
]


def smoothing_factors(act_absmax: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per-input-channel ``sqrt(max|X_i| / max|W_:,i|)``; 1 where either side is all zero."""
    w_absmax = weight.detach().abs().transpose(0, 1).reshape(weight.shape[1], -1).amax(1)
    ok = (act_absmax > 0) & (w_absmax > 0)
    s = torch.sqrt(act_absmax / w_absmax.clamp(min=1e-12))
    return torch.where(ok, s, torch.ones_like(s))


def kurtosis_per_channel(weight: torch.Tensor) -> torch.Tensor:
    """Pearson (non-excess) kurtosis of each output channel's weights, with the unbiased std."""
    flat = weight.detach().reshape(weight.shape[0], -1)
    centred = flat - flat.mean(1, keepdim=True)
    return centred.pow(4).mean(1) / flat.std(1).pow(4).clamp(min=1e-20)


def mixed_bits(kurtosis: torch.Tensor, k: int, bits: int) -> torch.Tensor:
    """N+1 bits for the k most kurtotic channels, N-1 for the k least, N elsewhere (mean exactly N)."""
    n = kurtosis.numel()
    if not 0 <= 2 * k <= n:
        raise ValueError(f"k={k} needs 2k <= {n} channels")
    out = torch.full((n,), bits, dtype=torch.int64)
    if k:
        order = torch.argsort(kurtosis, descending=True, stable=True)
        out[order[:k]] = bits + 1
        out[order[n - k :]] = bits - 1
    return out


def omq_candidates(n_channels: int, group: float, max_fraction: float) -> list[int]:
    """The k values searched: multiples of ``max(1, floor(group * n))`` up to ``max_fraction * n``."""
    step = max(1, int(group * n_channels))
    top = min(int(max_fraction * n_channels), n_channels // 2)
    return list(range(0, top + 1, step))


@torch.no_grad()
def choose_k(
    layer: QuantLayer,
    inputs: torch.Tensor,
    bits: int,
    a_bits: int | None,
    candidates: Sequence[int],
    calib: CalibMethod = "mse",
) -> tuple[int, dict[int, float]]:
    """Set the layer's per-channel bits to the candidate k with least output MSE on `inputs`.

    The layer's smoothing must already be set. Returns the chosen k and every candidate's MSE.
    """
    if layer.w_quant is None:
        raise ValueError("choose_k needs a layer with a weight quantizer")
    reference = layer.apply_weight(inputs, layer.weight)
    x = layer.smoothed_input(inputs)
    if a_bits is not None:
        act = Quantizer(a_bits)
        act.calibrate(x, calib)
        x = act(x)
    kurt = kurtosis_per_channel(layer.merged_weight())
    errors: dict[int, float] = {}
    for k in candidates:
        layer.w_quant.bits.copy_(mixed_bits(kurt, k, bits))
        layer.calibrate_weight(calib)
        errors[k] = F.mse_loss(layer.apply_weight(x, layer.w_quant(layer.merged_weight())), reference).item()
    best = min(errors, key=lambda k: errors[k])
    layer.w_quant.bits.copy_(mixed_bits(kurt, best, bits))
    layer.calibrate_weight(calib)
    return best, errors


def relation_map(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, HW, HW) cosine self-similarity between spatial positions."""
    f = F.normalize(features.flatten(2), dim=1)
    return f.transpose(1, 2) @ f


def trd_loss(
    student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor], temperature: float = 1.0
) -> torch.Tensor:
    """KL(teacher || student) between row-softmaxed relation maps of step-averaged features.

    `student` and `teacher` hold the features of the same consecutive denoising steps. The result is
    summed over map rows and averaged over the batch; it is 0 when the two sides are equal.
    """
    fs = torch.stack(list(student)).mean(0)
    ft = torch.stack(list(teacher)).mean(0).detach()
    log_s = (relation_map(fs) / temperature).log_softmax(-1)
    log_t = (relation_map(ft) / temperature).log_softmax(-1)
    return F.kl_div(log_s, log_t, log_target=True, reduction="sum") / fs.shape[0]


preset_entry("mpq-dm", "MPQ-DM: OMQ mixed precision + LoRA distillation with the TRD loss.")
preset_entry("omq-only", "Ablation: OMQ mixed precision + LoRA distillation with the noise MSE only.")
preset_entry("trd-only", "Ablation: uniform precision + LoRA distillation with the TRD loss.")
