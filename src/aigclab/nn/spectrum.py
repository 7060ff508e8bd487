"""A training-free forensic feature: the log amplitude spectrum of an image's high-pass residual.

Generators leave periodic traces in the noise residual (up-sampling grids, denoiser smoothing), so the
residual spectrum is a classic fingerprint feature (Zhang et al. 2019 "AutoGAN"; Frank et al. 2020).
It has no weights, so it generalises nothing from a training family and suits few-shot comparison.

Example:
    >>> import numpy as np
    >>> from aigclab.nn import create_backbone
    >>> create_backbone("residual-spectrum").features(np.zeros((2, 32, 32, 3), np.uint8)).shape
    (2, 544)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from aigclab.nn.backbones import BACKBONES, Backbone

__all__ = ["ResidualSpectrum"]


class ResidualSpectrum(Backbone):
    """log |rfft2(x - box3x3(x))|, averaged over colour channels and flattened (H * (W // 2 + 1) values)."""

    layers = ("spectrum",)

    def forward_layers(self, x: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
        smooth = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), 3, stride=1)
        amplitude = torch.fft.rfft2(x - smooth).abs().mean(dim=1)
        return {"spectrum": torch.log(amplitude + 1e-3).flatten(1)}


@BACKBONES.register("residual-spectrum")
def residual_spectrum() -> ResidualSpectrum:
    """The training-free residual-spectrum feature."""
    return ResidualSpectrum().eval()
