"""Detection metrics against scikit-learn, over whole runs and per generator."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score, roc_curve

from aigclab.metrics import DetectionMetrics, binary_metrics, detection_report


def _data(seed: int, n: int = 400, ties: bool = False):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    scores = np.clip(rng.normal(0.35 + 0.3 * labels, 0.2), 0, 1)
    if ties:
        scores = np.round(scores, 1)
    return scores, labels


def _sk_eer(scores, labels) -> float:
    fpr, tpr, _ = roc_curve(labels, scores)
    fnr = 1 - tpr
    i = np.nanargmin(np.abs(fnr - fpr))
    return float((fpr[i] + fnr[i]) / 2)


@pytest.mark.parametrize(("seed", "ties"), [(0, False), (1, True), (2, False), (3, True)])
def test_binary_metrics_match_sklearn(seed: int, ties: bool) -> None:
    scores, labels = _data(seed, ties=ties)
    m = binary_metrics(scores, labels)
    assert m["acc"] == pytest.approx(accuracy_score(labels, scores >= 0.5), abs=1e-6)
    assert m["ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-6)
    assert m["auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
    assert m["real_acc"] == pytest.approx(
        accuracy_score(labels[labels == 0], scores[labels == 0] >= 0.5), abs=1e-6
    )
    assert m["fake_acc"] == pytest.approx(
        accuracy_score(labels[labels == 1], scores[labels == 1] >= 0.5), abs=1e-6
    )
    # the EER lies between the two nearest ROC points; sklearn's nearest-point estimate is within a step
    assert m["eer"] == pytest.approx(_sk_eer(scores, labels), abs=0.02)
    brute = max(accuracy_score(labels, scores >= t) for t in np.r_[np.unique(scores), np.inf])
    assert m["best_acc"] == pytest.approx(brute, abs=1e-9)
    assert accuracy_score(labels, scores >= m["best_threshold"]) == pytest.approx(brute, abs=1e-9)


def test_eer_on_hand_worked_example() -> None:
    # reals 0.1 0.4, fakes 0.35 0.8: the ROC crosses FPR = FNR = 0.5 exactly
    m = binary_metrics(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    assert m["eer"] == pytest.approx(0.5)
    assert m["auc"] == pytest.approx(0.75)
    perfect = binary_metrics(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1]))
    assert perfect["eer"] == pytest.approx(0.0) and perfect["best_acc"] == 1.0


def test_per_generator_uses_all_reals_plus_that_generators_fakes() -> None:
    scores, labels = _data(5, 300)
    gens = np.where(labels == 0, "real", np.where(np.arange(300) % 2 == 0, "gan", "vae"))
    rep = detection_report(scores, labels, gens.tolist())
    for g in ("gan", "vae"):
        keep = (labels == 0) | (gens == g)
        assert rep["per_generator"][g]["auc"] == pytest.approx(
            roc_auc_score(labels[keep], scores[keep]), abs=1e-6
        )
        assert rep["per_generator"][g]["n_real"] == int((labels == 0).sum())
    assert rep["mean"]["acc"] == pytest.approx(
        np.mean([rep["per_generator"][g]["acc"] for g in ("gan", "vae")])
    )


def test_accumulating_over_batches_equals_one_shot() -> None:
    scores, labels = _data(7, 257)
    gens = ["real" if y == 0 else "g" for y in labels]
    m = DetectionMetrics()
    for i in range(0, 257, 50):  # uneven batches: a per-batch average would differ
        m.update(scores[i : i + 50], labels[i : i + 50], gens[i : i + 50])
    assert m.compute() == detection_report(scores, labels, gens)
    m.reset()
    with pytest.raises(ValueError, match="before any update"):
        m.compute()


def test_single_class_gives_nan_ranking_metrics() -> None:
    m = binary_metrics(np.array([0.2, 0.7]), np.array([1, 1]))
    assert np.isnan(m["auc"]) and m["fake_acc"] == 0.5 and np.isnan(m["real_acc"])
