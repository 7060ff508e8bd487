"""How unusual a cue value is: its position in the distribution of real training patches.

`build_reference` measures every cue on AIGC-Mini *train* patches (real and fake), keeps the real
quantiles and, for information, the train-split AUC of fakes against reals, and writes
``assets/explain/cue_reference.json`` (``aigclab explain build-reference``).

`strength` is two-sided: ``|2 F(v) - 1|`` where F is the real patches' CDF, so 0 means a typical real
value and 1 means beyond every real training patch, in either direction. One direction cannot serve:
on AIGC-Mini the same cue is too high for some generator families and too low for others (see
benchmarks/results/explain_cues.md).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from aigclab.errors import DataError
from aigclab.explain.cues import CUES

__all__ = ["build_reference", "load_reference", "real_cdf", "reference_path", "strength"]


def reference_path() -> Path:
    return Path(str(resources.files("aigclab") / "assets" / "explain" / "cue_reference.json"))


def cue_scores(images: np.ndarray, size: int = 32) -> dict[str, np.ndarray]:
    return {name: np.array([fn(img, size).score for img in images]) for name, fn in CUES.items()}


def build_reference(per_class: int = 600, seed: int = 0, path: Path | None = None) -> dict[str, Any]:
    """Measure the cues on AIGC-Mini train patches and write the reference JSON."""
    from sklearn.metrics import roc_auc_score

    from aigclab.data.mini import load_mini

    train = load_mini("train")
    rng = np.random.default_rng(seed)
    real = rng.choice(np.flatnonzero(train.labels == 0), per_class, replace=False)
    fake = rng.choice(np.flatnonzero(train.labels == 1), per_class, replace=False)
    real_s, fake_s = cue_scores(train.images[real]), cue_scores(train.images[fake])
    ref: dict[str, Any] = {
        "source": "AIGC-Mini train split",
        "per_class": per_class,
        "seed": seed,
        "cues": {},
    }
    for name in CUES:
        y = np.r_[np.zeros(per_class), np.ones(per_class)]
        auc = float(roc_auc_score(y, np.r_[real_s[name], fake_s[name]]))
        ref["cues"][name] = {
            "train_auc": auc,
            "real_quantiles": np.quantile(real_s[name], np.linspace(0, 1, 101)).tolist(),
        }
    path = path or reference_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ref, indent=1) + "\n")
    load_reference.cache_clear()
    return ref


@cache
def load_reference(path: str | None = None) -> dict[str, Any]:
    p = Path(path) if path else reference_path()
    if not p.is_file():
        raise DataError(f"{p}: cue reference missing; run `aigclab explain build-reference`")
    return json.loads(p.read_text())


def real_cdf(name: str, value: float, reference: dict[str, Any] | None = None) -> float:
    """Fraction of real training patches with a lower value of cue `name`."""
    q = np.asarray((reference or load_reference())["cues"][name]["real_quantiles"])
    return float(np.interp(value, q, np.linspace(0, 1, len(q))))


def strength(name: str, value: float, reference: dict[str, Any] | None = None) -> float:
    """Two-sided unusualness against real training patches: 0 typical, 1 beyond all of them."""
    return abs(2.0 * real_cdf(name, value, reference) - 1.0)
