"""Real/fake detection metrics over a whole run, overall and per generator.

Scores are probabilities of "fake" (label 1). Per generator, the metrics use every real image plus
that generator's fakes, as the field's per-generator tables do. AP and AUC come from torchmetrics in
float64; accuracy at the best threshold is the oracle accuracy reported by UnivFD-style tables.

Example:
    >>> import numpy as np
    >>> from aigclab.metrics import DetectionMetrics
    >>> m = DetectionMetrics()
    >>> m.update(np.array([0.1, 0.9, 0.8]), np.array([0, 1, 1]), ["real", "gan", "vae"])
    >>> round(m.compute()["overall"]["acc"], 3)
    1.0
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc, binary_average_precision, binary_roc

__all__ = ["DetectionMetrics", "binary_metrics", "detection_report"]


def _eer(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Equal error rate: where FPR equals FNR on the ROC, linearly interpolated."""
    fnr = 1.0 - tpr
    diff = fpr - fnr
    i = int(np.argmax(diff >= 0))  # first point where FPR >= FNR (diff is non-decreasing)
    if i == 0:
        return float((fpr[0] + fnr[0]) / 2)
    d0, d1 = diff[i - 1], diff[i]
    w = d0 / (d0 - d1) if d1 != d0 else 0.0
    return float(fpr[i - 1] + w * (fpr[i] - fpr[i - 1]))


def _best_accuracy(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Highest accuracy over all thresholds (predict fake when score >= t), and that threshold."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    n_pos, n = y.sum(), len(y)
    tp = np.cumsum(y)
    fp = np.cumsum(1 - y)
    last = np.r_[s[1:] != s[:-1], True]  # only cut between distinct scores
    correct = tp[last] + (n - n_pos - fp[last])
    best = np.argmax(np.r_[n - n_pos, correct])  # option 0: threshold above every score
    if best == 0:
        return float((n - n_pos) / n), float(s[0] + 1e-12)
    return float(np.r_[n - n_pos, correct][best] / n), float(s[last][best - 1])


def binary_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """acc, best_acc, best_threshold, ap, auc, eer, real_acc, fake_acc, n_real, n_fake."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64)
    pred = scores >= threshold
    real, fake = labels == 0, labels == 1
    out = {
        "acc": float((pred == fake).mean()),
        "real_acc": float((~pred[real]).mean()) if real.any() else float("nan"),
        "fake_acc": float(pred[fake].mean()) if fake.any() else float("nan"),
        "n_real": int(real.sum()),
        "n_fake": int(fake.sum()),
    }
    out["best_acc"], out["best_threshold"] = _best_accuracy(scores, labels)
    if real.any() and fake.any():
        s, y = torch.from_numpy(scores), torch.from_numpy(labels)
        out["ap"] = float(binary_average_precision(s, y, thresholds=None))
        out["auc"] = float(binary_auroc(s, y, thresholds=None))
        fpr, tpr, _ = binary_roc(s, y, thresholds=None)
        out["eer"] = _eer(fpr.numpy().astype(np.float64), tpr.numpy().astype(np.float64))
    else:
        out["ap"] = out["auc"] = out["eer"] = float("nan")
    return out


def detection_report(
    scores: np.ndarray, labels: np.ndarray, generators: Sequence[str], threshold: float = 0.5
) -> dict[str, dict[str, float]]:
    """Metrics overall, per fake generator (all reals + that generator's fakes), and their mean."""
    scores, labels, gens = np.asarray(scores, np.float64), np.asarray(labels), np.asarray(list(generators))
    report = {"overall": binary_metrics(scores, labels, threshold)}
    per_gen = {}
    for gen in sorted(set(gens[labels == 1].tolist())):
        keep = (labels == 0) | (gens == gen)
        per_gen[gen] = binary_metrics(scores[keep], labels[keep], threshold)
    report["per_generator"] = per_gen  # type: ignore[assignment]
    if per_gen:
        keys = [k for k in report["overall"] if not k.startswith("n_") and k != "best_threshold"]
        report["mean"] = {k: float(np.mean([m[k] for m in per_gen.values()])) for k in keys}
    return report


class DetectionMetrics:
    """Accumulates scores over a whole run; `compute()` gives :func:`detection_report`."""

    def __init__(self, threshold: float = 0.5):
        self.threshold = threshold
        self.reset()

    def reset(self) -> None:
        self._scores: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._gens: list[str] = []

    def update(self, scores: np.ndarray, labels: np.ndarray, generators: Sequence[str]) -> None:
        scores, labels = np.asarray(scores, np.float64).ravel(), np.asarray(labels).ravel()
        if not len(scores) == len(labels) == len(generators):
            raise ValueError(
                f"update got {len(scores)} scores, {len(labels)} labels, {len(generators)} generators"
            )
        self._scores.append(scores)
        self._labels.append(labels)
        self._gens.extend(generators)

    def compute(self) -> dict[str, dict[str, float]]:
        if not self._scores:
            raise ValueError("DetectionMetrics.compute() called before any update()")
        return detection_report(
            np.concatenate(self._scores), np.concatenate(self._labels), self._gens, self.threshold
        )
