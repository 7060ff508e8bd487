"""Detect AI-generated images: FTNet few-shot detection, DPGNet (unlabeled data) and baselines behind one API.

Example:
    >>> from aigclab.detect import create_detector
    >>> det = create_detector("cnndet-tiny", epochs=1)
    >>> type(det).__name__
    'CNNDetector'
"""

from aigclab._lazy import lazy_exports

_BASE = "aigclab.detect.base"
__getattr__, __all__ = lazy_exports(
    "aigclab.detect",
    {
        "DETECTORS": _BASE,
        "Detector": _BASE,
        "FeatureConfig": _BASE,
        "FeatureExtractor": _BASE,
        "FitOnLabeled": _BASE,
        "Trainable": _BASE,
        "create_detector": _BASE,
        "grid_count": _BASE,
        "list_detectors": _BASE,
        "load_detector": _BASE,
        "save_tensors": _BASE,
        "to_patches": _BASE,
        "CNNDetector": "aigclab.detect.baselines",
        "LinearProbe": "aigclab.detect.baselines",
        "FTNet": "aigclab.detect.ftnet",
        "DPGNet": "aigclab.detect.dpgnet",
        "DPGNetConfig": "aigclab.detect.dpgnet",
        "dpgnet": "aigclab.detect.dpgnet",
        "PLADA": "aigclab.detect.plada",
        "PLADAConfig": "aigclab.detect.plada",
        "FTNetConfig": "aigclab.detect.ftnet",
        "default_detector": "aigclab.detect.default",
        "resolve_detector": "aigclab.detect.default",
        "baselines": "aigclab.detect.baselines",
        "ftnet": "aigclab.detect.ftnet",
        "plada": "aigclab.detect.plada",
    },
)
