"""Baselines behind the same interface as MPQ-DM.

- ``uniform``: post-training quantization at one bit-width everywhere (first and last layer at 8 bits),
  weights per output channel and activations per tensor and per sampling step, both fitted by min-max.
- ``efficientdm``: EfficientDM-like (Ho et al., ICLR 2024): MSE-calibrated uniform quantization, then LoRA
  merged into the weights before quantization and trained, with the activation steps, to match the
  full-precision noise prediction along its DDIM trajectory. No mixed precision, no relation loss.

Example:
    >>> from aigclab.diffusion import create_quant_config
    >>> cfg = create_quant_config("uniform", w_bits=3)
    >>> cfg.calib, cfg.finetune_steps, cfg.setting
    ('minmax', 0, 'W3A8')
"""

from __future__ import annotations

from aigclab.diffusion.config import preset_entry

preset_entry("uniform", "Uniform min-max post-training quantization.")
preset_entry(
    "efficientdm", "Uniform MSE calibration + LoRA distillation of the noise prediction (EfficientDM-like)."
)
