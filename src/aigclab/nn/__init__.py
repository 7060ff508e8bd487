"""Shared network pieces: feature backbones (`create_backbone`), the embedded CNN and library adapters.

Example:
    >>> from aigclab.nn import create_backbone, list_backbones
    >>> list_backbones()
    ['aigclab-tiny', 'inceptionv3-nsfwjs', 'mobilenetv2-nsfwjs', 'open-clip', 'residual-spectrum', 'timm']
"""

from aigclab.nn import adapters, nsfwjs, spectrum, tiny
from aigclab.nn.backbones import BACKBONES, Backbone, create_backbone, list_backbones, load_local_weights
from aigclab.nn.tiny import TinyCNN, TinyConfig, train_tiny

__all__ = [
    "BACKBONES",
    "Backbone",
    "TinyCNN",
    "TinyConfig",
    "adapters",
    "create_backbone",
    "list_backbones",
    "load_local_weights",
    "nsfwjs",
    "spectrum",
    "tiny",
    "train_tiny",
]
