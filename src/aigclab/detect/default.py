"""The embedded default detector, and resolving a detector given by name or saved file.

Example:
    >>> from aigclab.detect.default import resolve_detector
    >>> det = resolve_detector("default")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aigclab.detect.base import Detector, create_detector, load_detector
from aigclab.detect.ftnet import FTNet

__all__ = ["DEFAULT_DETECTOR", "default_detector", "resolve_detector"]

DEFAULT_DETECTOR = "ftnet-tiny"


def default_detector(
    per_generator: int = 64, cache_dir: str | None = None, device: str = "cpu", engine: str = "local"
) -> FTNet:
    """FTNet on the embedded features with a support bank of AIGC-Mini training images.

    The bank holds `per_generator` train fakes of every zoo generator and as many real train patches.
    """
    from aigclab.data.mini import load_mini

    train = load_mini("train")
    rng = np.random.default_rng(0)
    generators = sorted(set(train.generators.tolist()) - {"real"})
    counts = {g: per_generator for g in generators} | {"real": per_generator * len(generators)}
    pick = []
    for gen, n in sorted(counts.items()):
        idx = np.flatnonzero(train.generators == gen)
        pick.append(rng.choice(idx, size=min(n, len(idx)), replace=False))
    bank = train.subset(np.concatenate(pick))
    det = create_detector(DEFAULT_DETECTOR, cache_dir=cache_dir, device=device, engine=engine)
    return det.add_support(bank.images, bank.labels)  # type: ignore[return-value]


def resolve_detector(
    spec: str, cache_dir: str | None = None, device: str = "cpu", engine: str = "local"
) -> Detector:
    """``"default"`` (see `default_detector`) or the path of a saved detector ``.safetensors``."""
    if spec == "default":
        return default_detector(cache_dir=cache_dir, device=device, engine=engine)
    return load_detector(Path(spec))
