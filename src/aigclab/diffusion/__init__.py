"""Diffusion models: low-bit quantization (MPQ-DM and baselines), sampling and FID without downloads.

Example:
    >>> from aigclab.diffusion import list_quant_methods
    >>> list_quant_methods()
    ['efficientdm', 'mpq-dm', 'omq-only', 'trd-only', 'uniform']
"""

from aigclab._lazy import lazy_exports

_CONFIG, _MODELS, _QUANTIZE = (
    "aigclab.diffusion.config",
    "aigclab.diffusion.models",
    "aigclab.diffusion.quantize",
)
__getattr__, __all__ = lazy_exports(
    "aigclab.diffusion",
    {
        "QUANT_METHODS": _CONFIG,
        "QuantConfig": _CONFIG,
        "create_quant_config": _CONFIG,
        "list_quant_methods": _CONFIG,
        "parse_bits": _CONFIG,
        "MODELS": _MODELS,
        "DiffusionModel": _MODELS,
        "ddim_sample": _MODELS,
        "load_model": _MODELS,
        "QuantResult": _QUANTIZE,
        "distillation_error": _QUANTIZE,
        "load_quantized": _QUANTIZE,
        "quantize_diffusion": _QUANTIZE,
        "save_quantized": _QUANTIZE,
        "baselines": "aigclab.diffusion.baselines",
        "mpq": "aigclab.diffusion.mpq",
    },
)
