"""aigclab: detect, explain, quantize, attack, augment and benchmark generative imaging.

The public API is re-exported here lazily, so ``import aigclab`` stays fast.

Example:
    >>> import aigclab
    >>> sorted(aigclab.__all__)[:3]
    ['AigclabError', 'DetectionMetrics', 'ImageDataset']
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "AigclabError": "aigclab.errors",
    "ImageError": "aigclab.errors",
    "load_image": "aigclab.io",
    "load_images": "aigclab.io",
    "ImageDataset": "aigclab.datasets",
    "ImageRecord": "aigclab.datasets",
    "load_records": "aigclab.datasets",
    "create_degradation": "aigclab.degradations",
    "parse_degradation": "aigclab.degradations",
    "DetectionMetrics": "aigclab.metrics",
    "binary_metrics": "aigclab.metrics",
    "write_detection_report": "aigclab.reports",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'aigclab' has no attribute {name!r}")
