"""Detect AI-generated images: FTNet few-shot detection and strong baselines behind one API.

Example:
    >>> from aigclab.detect import create_detector
    >>> det = create_detector("cnndet-tiny", epochs=1)
    >>> type(det).__name__
    'CNNDetector'
"""

from aigclab.detect import baselines, ftnet
from aigclab.detect.base import (
    DETECTORS,
    Detector,
    FeatureExtractor,
    create_detector,
    list_detectors,
    load_detector,
    save_tensors,
    to_patches,
)
from aigclab.detect.baselines import CNNDetector, LinearProbe
from aigclab.detect.ftnet import FTNet, FTNetConfig

__all__ = [
    "DETECTORS",
    "CNNDetector",
    "Detector",
    "FTNet",
    "FTNetConfig",
    "FeatureExtractor",
    "LinearProbe",
    "baselines",
    "create_detector",
    "ftnet",
    "list_detectors",
    "load_detector",
    "save_tensors",
    "to_patches",
]
