"""Defences against quantization-conditioned backdoors, and a scan for them.

- `noise_defense`: Gaussian noise on the weights before quantization, with a standard deviation of `sigma`
  quantization steps of the deploy quantizer per output channel (steps of symmetric per-channel min-max
  quantization at `bits`); the backdoor rests on where weights sit between rounding levels, and noise
  of about half a step moves them across.
- `finetune_defense`: a short full-precision fine-tuning on clean data that the defender holds (by default
  10% of the training split), which Qu-ANTI-zation reports as the consistently effective counter-measure.
- `scan`: compares the full-precision model with its quantized versions on probe inputs and flags the model
  when their top-1 answers disagree on more than `threshold` of the probes. Quantizing a clean model changes
  few answers; a backdoored one changes many, in one direction. The threshold (default 0.10) is documented
  here and measured in `benchmarks/qbackdoor.py` on clean and backdoored models. The scan only sees a
  backdoor conditioned on a quantizer close to one it tries (`SCAN_ROUTES` by default: int8, int4 and
  torch.ao; a DoReFa-conditioned backdoor is missed unless ``dorefa`` is added).

Example:
    >>> import torch
    >>> from aigclab.security.qbackdoor import QBConfig, train_qbackdoor
    >>> from aigclab.security.defenses import scan
    >>> from aigclab.security.tasks import load_task
    >>> model, _ = train_qbackdoor(QBConfig(task="digits", epochs=3, lam=0.0))
    >>> scan(model, load_task("digits").x_test)["flagged"]
    False
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from aigclab.security.evaluate import predict, quantize_route
from aigclab.security.tasks import TaskData

__all__ = ["SCAN_ROUTES", "SCAN_THRESHOLD", "finetune_defense", "noise_defense", "scan"]

SCAN_THRESHOLD = 0.10
SCAN_ROUTES = ("int8", "int4", "torch-ao")


@torch.no_grad()
def noise_defense(model: nn.Module, sigma: float = 0.5, bits: int = 8, seed: int = 0) -> nn.Module:
    """A copy of `model` whose Conv2d/Linear weights get N(0, (sigma * step)^2) noise per output channel."""
    noisy = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    qmax = 2 ** (bits - 1) - 1
    for m in noisy.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            w = m.weight
            step = w.abs().flatten(1).amax(1).clamp(min=1e-12) / qmax
            shape = (-1,) + (1,) * (w.ndim - 1)
            w.add_(torch.randn(w.shape, generator=gen) * sigma * step.reshape(shape))
    return noisy


def finetune_defense(
    model: nn.Module,
    data: TaskData,
    share: float = 0.1,
    epochs: int = 3,
    lr: float = 1e-4,
    batch_size: int = 64,
    seed: int = 0,
) -> nn.Module:
    """A copy of `model` fine-tuned at full precision on a seeded `share` of the clean training split."""
    tuned = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    n = len(data.x_train)
    keep = torch.randperm(n, generator=gen)[: max(1, int(share * n))]
    x, y = data.x_train[keep], data.y_train[keep]
    opt = torch.optim.Adam(tuned.parameters(), lr=lr)
    tuned.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(batch_size):
            loss = F.cross_entropy(tuned(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return tuned.eval()


def scan(
    model: nn.Module,
    probes: torch.Tensor,
    routes: Sequence[str] = SCAN_ROUTES,
    threshold: float = SCAN_THRESHOLD,
    calib_size: int = 256,
) -> dict[str, object]:
    """Top-1 disagreement between `model` and each quantized version on `probes`; flagged above `threshold`.

    The first `calib_size` probes calibrate the quantizers; the rest are compared.
    """
    if len(probes) <= calib_size:
        calib_size = len(probes) // 2
    calib, test = probes[:calib_size], probes[calib_size:]
    fp = predict(model, test)
    disagreement = {r: float((quantize_route(model, r, calib)(test) != fp).mean()) for r in routes}
    worst = max(disagreement.values())
    return {"disagreement": disagreement, "max": worst, "threshold": threshold, "flagged": worst > threshold}
