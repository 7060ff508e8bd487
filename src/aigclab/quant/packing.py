"""True storage size of a fake-quantized model: integer codes packed bit by bit.

`pack_codes` writes b-bit codes densely (``ceil(n * b / 8)`` bytes); `export_packed` turns every
`QuantLayer` into such arrays plus its float side information (steps, zero-points, smoothing, bias,
per-channel bit-widths where they differ), and keeps every other parameter and buffer as float32.
`storage_report` sums the bytes of exactly those arrays, so the reported size is the size of a file that
holds the model, not a formula.

Example:
    >>> import numpy as np
    >>> from aigclab.quant import pack_codes, unpack_codes
    >>> codes = np.array([3, 0, 1, 2, 3], dtype=np.int64)
    >>> packed = pack_codes(codes, bits=2)
    >>> packed.nbytes, unpack_codes(packed, bits=2, n=5).tolist()
    (2, [3, 0, 1, 2, 3])
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from aigclab.quant.modules import QuantLayer, quant_layers

__all__ = ["StorageReport", "export_packed", "pack_codes", "packed_nbytes", "storage_report", "unpack_codes"]


def packed_nbytes(n: int, bits: int) -> int:
    """Bytes needed for `n` codes of `bits` bits each."""
    return (n * bits + 7) // 8


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack non-negative integer codes (< 2**bits) densely into uint8, least significant bit first."""
    flat = np.asarray(codes, dtype=np.int64).ravel()
    if flat.size and (flat.min() < 0 or flat.max() >= 2**bits):
        raise ValueError(f"codes must lie in [0, {2**bits - 1}] for {bits} bits")
    planes = (flat[:, None] >> np.arange(bits)) & 1
    return np.packbits(planes.astype(np.uint8).ravel(), bitorder="little")


def unpack_codes(packed: np.ndarray, bits: int, n: int) -> np.ndarray:
    """Inverse of `pack_codes` for `n` codes."""
    planes = np.unpackbits(packed, bitorder="little")[: n * bits].reshape(n, bits).astype(np.int64)
    return (planes << np.arange(bits)).sum(1)


def _f32(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy().astype(np.float32)


def _export_layer(layer: QuantLayer) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    weight = layer.merged_weight().detach()
    if layer.w_quant is None:
        out["weight"] = _f32(weight)
    else:
        wq = layer.w_quant
        codes = wq.codes(weight).reshape(weight.shape[0], -1).numpy()
        bits = wq.bits.numpy()
        for b in np.unique(bits):
            rows = bits == b
            out[f"codes_{int(b)}bit"] = pack_codes(codes[rows], int(b))
        if len(np.unique(bits)) > 1:
            out["channel_bits"] = bits.astype(np.uint8)
        out["w_scale"] = _f32(wq.step())
        out["w_zero_point"] = wq.zero_point.detach().round().numpy().astype(np.int32)[0]
    if not bool((layer.smooth == 1).all()):
        out["smooth"] = _f32(layer.smooth)
    if layer.a_quant is not None:
        out["a_scale"] = _f32(layer.a_quant.scale.abs())
        out["a_zero_point"] = layer.a_quant.zero_point.detach().round().numpy().astype(np.int32)
    if layer.bias is not None:
        out["bias"] = _f32(layer.bias)
    return out


def export_packed(model: nn.Module) -> dict[str, np.ndarray]:
    """Every array needed to store `model`: packed codes for quantized layers, float32 for the rest."""
    layers = quant_layers(model)
    out: dict[str, np.ndarray] = {}
    for name, layer in layers.items():
        for key, arr in _export_layer(layer).items():
            out[f"{name}.{key}"] = arr
    covered = {id(t) for layer in layers.values() for t in (*layer.parameters(), *layer.buffers())}
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if id(t) not in covered:
            out[name] = _f32(t)
    return out


@dataclass(frozen=True)
class StorageReport:
    """Bytes of the packed model: total, in quantized layers, in full-precision tensors, per layer."""

    total_bytes: int
    quantized_bytes: int
    float_bytes: int
    fp32_bytes: int
    per_layer: dict[str, int] = field(default_factory=dict)

    @property
    def compression(self) -> float:
        """How many times smaller than the same model stored in float32."""
        return self.fp32_bytes / max(self.total_bytes, 1)


def storage_report(model: nn.Module) -> StorageReport:
    """Size in bytes of `export_packed(model)`, and of the model in float32 for comparison."""
    arrays = export_packed(model)
    layers = quant_layers(model)
    per_layer = {
        name: sum(a.nbytes for k, a in arrays.items() if k.startswith(f"{name}.")) for name in layers
    }
    total = sum(a.nbytes for a in arrays.values())
    quantized = sum(per_layer.values())
    fp32 = 0
    seen: set[int] = set()
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if name.split(".")[-1].startswith("lora_") or ".w_quant." in name or ".a_quant." in name:
            continue
        if name.endswith(".smooth") or id(t) in seen:
            continue
        seen.add(id(t))
        fp32 += t.numel() * 4
    return StorageReport(total, quantized, total - quantized, fp32, per_layer)
