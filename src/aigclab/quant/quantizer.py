"""Uniform affine fake quantization with a straight-through estimator (STE) and learnable LSQ-style parameters.

`fake_quantize` is the functional core: ``q = clamp(round(x / s) + z, qmin, qmax)``, returned de-quantized as
``(q - z) * s``. Rounding passes gradients straight through, and the clamp passes them inside the range, so
the step `s` and the zero-point `z` receive LSQ's gradients by plain autograd.

`Quantizer` holds `s` and `z` as parameters, per tensor or per channel, with a bit-width per channel (so
one quantizer can mix precisions across channels) and one row of parameters per *slot*: a slot is, for
example, a diffusion sampling step, always chosen by an explicit index at call time.

Example:
    >>> import torch
    >>> from aigclab.quant import Quantizer
    >>> q = Quantizer(bits=4, channel_axis=0, n_channels=2)
    >>> w = torch.randn(2, 9)
    >>> q.calibrate(w, method="minmax")
    >>> (q(w) - w).abs().max().item() <= q.step().max().item() / 2 + 1e-6
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

__all__ = ["CalibMethod", "Quantizer", "fake_quantize", "qrange", "round_ste"]

CalibMethod = Literal["minmax", "mse"]
_EPS = 1e-8


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round to the nearest integer; the gradient passes through unchanged."""
    return x + (x.round() - x).detach()


def qrange(bits: torch.Tensor, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer code range per element of `bits`: [0, 2^b - 1], or [-2^(b-1), 2^(b-1) - 1] if symmetric."""
    levels = torch.pow(2.0, bits.float())
    if symmetric:
        return -levels / 2, levels / 2 - 1
    return torch.zeros_like(levels), levels - 1


def fake_quantize(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    qmin: torch.Tensor,
    qmax: torch.Tensor,
) -> torch.Tensor:
    """Quantize then de-quantize `x` (all arguments broadcast); differentiable by the STE."""
    if not torch.is_grad_enabled() or not (
        x.requires_grad or scale.requires_grad or zero_point.requires_grad
    ):
        zero = zero_point.round()
        return torch.round(x / scale).add_(zero).clamp_(qmin, qmax).sub_(zero).mul_(scale)
    codes = torch.clamp(round_ste(x / scale) + round_ste(zero_point), qmin, qmax)
    return (codes - round_ste(zero_point)) * scale


def _channel_extrema(x: torch.Tensor, axis: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    if axis is None:
        return x.min().reshape(1), x.max().reshape(1)
    flat = x.detach().movedim(axis, 0).reshape(x.shape[axis], -1)
    return flat.min(1).values, flat.max(1).values


class Quantizer(nn.Module):
    """A uniform quantizer with learnable step and zero-point.

    Args:
        bits: one bit-width (2-8 typical, 1-16 allowed) or one per channel.
        symmetric: signed codes and a fixed zero-point of 0.
        channel_axis: the tensor axis that holds channels (``None``: one step for the whole tensor).
        n_channels: the number of channels (1 when per tensor).
        slots: independent parameter rows, chosen by the `slot` argument of `forward`.
    """

    def __init__(
        self,
        bits: int | Sequence[int] | torch.Tensor,
        symmetric: bool = False,
        channel_axis: int | None = None,
        n_channels: int = 1,
        slots: int = 1,
    ):
        super().__init__()
        if channel_axis is None and n_channels != 1:
            raise ValueError("a per-tensor quantizer has n_channels=1")
        bits_t = torch.as_tensor(bits, dtype=torch.int64).flatten()
        if bits_t.numel() == 1:
            bits_t = bits_t.expand(n_channels).clone()
        if bits_t.numel() != n_channels:
            raise ValueError(f"got {bits_t.numel()} bit-widths for {n_channels} channels")
        if bool((bits_t < 1).any()) or bool((bits_t > 16).any()):
            raise ValueError(f"bit-widths must be in 1..16, got {sorted(set(bits_t.tolist()))}")
        self.symmetric = symmetric
        self.channel_axis = channel_axis
        self.bits: torch.Tensor
        self.register_buffer("bits", bits_t)
        self.scale = nn.Parameter(torch.ones(slots, n_channels))
        self.zero_point = nn.Parameter(torch.zeros(slots, n_channels), requires_grad=not symmetric)

    @property
    def slots(self) -> int:
        return self.scale.shape[0]

    @property
    def n_channels(self) -> int:
        return self.scale.shape[1]

    def _row(self, slot: int | None) -> int:
        if slot is None:
            if self.slots > 1:
                raise ValueError(f"this quantizer has {self.slots} slots; pass the slot index")
            return 0
        if not 0 <= slot < self.slots:
            raise IndexError(f"slot {slot} out of range for {self.slots} slots")
        return slot

    def _shape(self, t: torch.Tensor, ndim: int) -> torch.Tensor:
        if self.channel_axis is None:
            return t.reshape(())
        shape = [1] * ndim
        shape[self.channel_axis] = -1
        return t.reshape(shape)

    def step(self, slot: int | None = None) -> torch.Tensor:
        """The quantization step per channel (absolute value of the learnable scale)."""
        return self.scale[self._row(slot)].abs() + _EPS

    def forward(self, x: torch.Tensor, slot: int | None = None) -> torch.Tensor:
        row = self._row(slot)
        qmin, qmax = qrange(self.bits, self.symmetric)
        return fake_quantize(
            x,
            self._shape(self.scale[row].abs() + _EPS, x.ndim),
            self._shape(self.zero_point[row], x.ndim),
            self._shape(qmin, x.ndim),
            self._shape(qmax, x.ndim),
        )

    def codes(self, x: torch.Tensor, slot: int | None = None) -> torch.Tensor:
        """Integer codes of `x` shifted to start at 0 (what a packed file stores), as int64."""
        row = self._row(slot)
        qmin, qmax = qrange(self.bits, self.symmetric)
        s = self._shape(self.scale[row].detach().abs() + _EPS, x.ndim)
        z = self._shape(self.zero_point[row].detach().round(), x.ndim)
        q = torch.clamp((x.detach() / s).round() + z, self._shape(qmin, x.ndim), self._shape(qmax, x.ndim))
        return (q - self._shape(qmin, x.ndim)).long()

    @torch.no_grad()
    def set_range(self, lo: torch.Tensor, hi: torch.Tensor, slot: int | None = None) -> None:
        """Set step and zero-point so that [lo, hi] (per channel) maps onto the code range."""
        row = self._row(slot)
        qmin, qmax = qrange(self.bits, self.symmetric)
        lo, hi = torch.minimum(lo, torch.zeros_like(lo)), torch.maximum(hi, torch.zeros_like(hi))
        if self.symmetric:
            scale = torch.maximum(hi, -lo) / qmax.clamp(min=1)
            zero = torch.zeros_like(scale)
        else:
            scale = (hi - lo) / (qmax - qmin)
            zero = (qmin - lo / scale.clamp(min=_EPS)).round()
        self.scale[row] = scale.clamp(min=_EPS)
        self.zero_point[row] = zero

    @torch.no_grad()
    def calibrate(
        self, x: torch.Tensor, method: CalibMethod = "mse", slot: int | None = None, grid: int = 40
    ) -> None:
        """Fit the range to `x`: its min/max, or the shrink of it (of `grid` candidates) with least MSE."""
        lo, hi = _channel_extrema(x, self.channel_axis)
        if method == "minmax":
            self.set_range(lo, hi, slot)
            return
        if method != "mse":
            raise ValueError(f"unknown calibration method {method!r}; known: minmax, mse")
        best_err = torch.full_like(lo, float("inf"))
        best_lo, best_hi = lo.clone(), hi.clone()
        for shrink in torch.linspace(1.0, 0.1, grid):
            self.set_range(lo * shrink, hi * shrink, slot)
            err = self._channel_error(x, slot)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_lo = torch.where(better, lo * shrink, best_lo)
            best_hi = torch.where(better, hi * shrink, best_hi)
        self.set_range(best_lo, best_hi, slot)

    def _channel_error(self, x: torch.Tensor, slot: int | None) -> torch.Tensor:
        err = (self.forward(x, slot) - x).pow(2)
        if self.channel_axis is None:
            return err.mean().reshape(1)
        return err.movedim(self.channel_axis, 0).reshape(x.shape[self.channel_axis], -1).mean(1)

    def extra_repr(self) -> str:
        bits = sorted(set(self.bits.tolist()))
        return (
            f"bits={bits}, symmetric={self.symmetric}, channel_axis={self.channel_axis}, "
            f"channels={self.n_channels}, slots={self.slots}"
        )
