"""Diffusion models: low-bit quantization (MPQ-DM and baselines), sampling and FID without downloads.

Example:
    >>> from aigclab.diffusion import list_quant_methods
    >>> list_quant_methods()
    ['efficientdm', 'mpq-dm', 'omq-only', 'trd-only', 'uniform']
"""

from aigclab.diffusion import baselines, mpq
from aigclab.diffusion.config import (
    QUANT_METHODS,
    QuantConfig,
    create_quant_config,
    list_quant_methods,
    parse_bits,
)
from aigclab.diffusion.models import MODELS, DiffusionModel, ddim_sample, load_model
from aigclab.diffusion.quantize import QuantResult, load_quantized, quantize_diffusion, save_quantized

__all__ = [
    "MODELS",
    "QUANT_METHODS",
    "DiffusionModel",
    "QuantConfig",
    "QuantResult",
    "baselines",
    "create_quant_config",
    "ddim_sample",
    "list_quant_methods",
    "load_model",
    "load_quantized",
    "mpq",
    "parse_bits",
    "quantize_diffusion",
    "save_quantized",
]
