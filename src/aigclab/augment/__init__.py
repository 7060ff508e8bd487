"""X-ray baggage simulation, Background Mixup (BGM) and detector training with mAP.

The augmentations (numpy only) load eagerly; simulator, COCO IO and the torch detectors load on first
use so ``aigclab --help`` stays fast.

Example:
    >>> from aigclab.augment import list_augmentations
    >>> list_augmentations()
    ['bgm', 'bgm-log', 'cutmix', 'mixup', 'none']
"""

from __future__ import annotations

import importlib
from typing import Any

from aigclab.augment.transforms import (
    BackgroundMixup,
    CutMix,
    DetectionAugment,
    DetSample,
    MixUp,
    create_augmentation,
    list_augmentations,
)

_LAZY = {
    "XraySimConfig": "aigclab.augment.xray_sim",
    "simulate_scan": "aigclab.augment.xray_sim",
    "render": "aigclab.augment.xray_sim",
    "build_dataset": "aigclab.augment.coco",
    "load_coco": "aigclab.augment.coco",
    "TrainConfig": "aigclab.augment.train_det",
    "create_xray_detector": "aigclab.augment.train_det",
    "train": "aigclab.augment.train_det",
    "evaluate": "aigclab.augment.train_det",
}

__all__ = [
    "BackgroundMixup",
    "CutMix",
    "DetSample",
    "DetectionAugment",
    "MixUp",
    "create_augmentation",
    "list_augmentations",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'aigclab.augment' has no attribute {name!r}")
