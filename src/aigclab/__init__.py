"""aigclab: detect, explain, quantize, attack, augment and benchmark generative imaging.

The public API is re-exported here lazily, so ``import aigclab`` stays fast.

Example:
    >>> import aigclab
    >>> sorted(aigclab.__all__)[:3]
    ['AigclabError', 'DetectionMetrics', 'ImageDataset']
"""

from __future__ import annotations

from aigclab._lazy import lazy_exports

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

__getattr__, __all__ = lazy_exports("aigclab", _EXPORTS)
