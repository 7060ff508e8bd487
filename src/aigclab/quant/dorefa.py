"""DoReFa-Net weight quantization (Zhou et al., 2016) as a drop-in weight quantizer for `QuantLayer`.

DoReFa maps a weight tensor through ``t = tanh(w)``, normalises it to [0, 1] with ``t / (2 max|t|) + 1/2``,
rounds that to k bits and maps back to [-1, 1]. The original network is trained with that mapping; to keep
a network trained without it usable, this version multiplies the result by ``max|t|`` (so small weights map
close to themselves), a choice stated here because DoReFa implementations differ on it. The range is
computed from the tensor at every call, so `calibrate` does nothing.

Example:
    >>> import torch
    >>> from aigclab.quant.dorefa import DoReFaQuantizer
    >>> q = DoReFaQuantizer(bits=8)
    >>> w = torch.randn(4, 9) * 0.1
    >>> bool((q(w) - w).abs().max() < 0.01)
    True
"""

from __future__ import annotations

import torch

from aigclab.quant.quantizer import CalibMethod, Quantizer, round_ste

__all__ = ["DoReFaQuantizer"]


class DoReFaQuantizer(Quantizer):
    """k-bit DoReFa weight quantizer over the whole tensor (the learnable step of `Quantizer` is unused)."""

    def __init__(self, bits: int):
        super().__init__(bits)

    def _normalised(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        t = torch.tanh(x)
        peak = t.abs().max().clamp(min=1e-8)
        levels = float(2 ** int(self.bits[0]) - 1)
        return t / (2 * peak) + 0.5, peak, levels

    def forward(self, x: torch.Tensor, slot: int | None = None) -> torch.Tensor:
        unit, peak, levels = self._normalised(x)
        return peak * (2 * round_ste(unit * levels) / levels - 1)

    def codes(self, x: torch.Tensor, slot: int | None = None) -> torch.Tensor:
        unit, _, levels = self._normalised(x.detach())
        return (unit * levels).round().long()

    def calibrate(
        self, x: torch.Tensor, method: CalibMethod = "mse", slot: int | None = None, grid: int = 40
    ) -> None:
        """Nothing to fit: the range comes from the tensor at each call."""
