"""General fake quantization: STE quantizers, quantized Conv2d/Linear wrappers, calibration, packed size.

Nothing here knows about diffusion; `aigclab.diffusion` and `aigclab.security` build on it.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from aigclab.quant import quantize_modules, storage_report
    >>> net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    >>> _ = quantize_modules(net, lambda name, m: (4, 8))
    >>> storage_report(net).compression > 4
    True
"""

from aigclab.quant.modules import BitsFn, QuantLayer, quant_layers, quantize_modules, quantizing, set_slot
from aigclab.quant.packing import (
    StorageReport,
    export_packed,
    pack_codes,
    packed_nbytes,
    storage_report,
    unpack_codes,
)
from aigclab.quant.quantizer import CalibMethod, Quantizer, fake_quantize, qrange, round_ste

__all__ = [
    "BitsFn",
    "CalibMethod",
    "QuantLayer",
    "Quantizer",
    "StorageReport",
    "export_packed",
    "fake_quantize",
    "pack_codes",
    "packed_nbytes",
    "qrange",
    "quant_layers",
    "quantize_modules",
    "quantizing",
    "round_ste",
    "set_slot",
    "storage_report",
    "unpack_codes",
]
