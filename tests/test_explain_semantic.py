"""SemAP / SemF1 against hand-worked values, with a hand-made embedder (and one check on MiniLM)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aigclab.explain.quadruples import Quadruple
from aigclab.llm import LLMError, create_backend
from aigclab.metrics.semantic import (
    EmbeddingSimilarity,
    JudgeSimilarity,
    SemanticMatchMetric,
    match_pairs,
    scores_from_similarity,
    semantic_scores,
)


class TableEmbedder:
    """Texts -> fixed unit vectors, so cosines are known by construction; counts calls."""

    def __init__(self, table: dict[str, tuple[float, ...]]):
        self.table, self.calls = table, 0

    def embed(self, texts):
        self.calls += 1
        return np.array([self.table[t] for t in texts], dtype=float)


def q(name, conf=None, sev=3, phen="x"):
    return Quadruple(name=name, phenomenon=phen, reasoning="r", severity=sev, confidence=conf)


# g1: (1,0,0); g2: (0,1,0); p3 is g2 at cosine 0.8; p2 unrelated (0,0,1)
TABLE = {
    "g1: x": (1, 0, 0),
    "g2: x": (0, 1, 0),
    "p1: x": (1, 0, 0),
    "p2: x": (0, 0, 1),
    "p3: x": (0, 0.8, 0.6),
}


def _sim():
    return EmbeddingSimilarity(TableEmbedder(TABLE))


def test_hand_worked_semap_semf1_averaged_over_thresholds():
    preds = [[q("p1", 0.9), q("p2", 0.8), q("p3", 0.7)]]
    gts = [[q("g1"), q("g2")]]
    r = semantic_scores(preds, gts, _sim(), thresholds=(0.5, 0.9))
    # tau 0.5: ranks TP, FP, TP -> P 1, 1/2, 2/3 at R 1/2, 1/2, 1 -> AP = 1/2*1 + 1/2*2/3; F1 = 2*(2/3)*1/(5/3)
    assert r["per_threshold"]["0.50"]["semap"] == pytest.approx(0.5 + 1 / 3)
    assert r["per_threshold"]["0.50"]["semf1"] == pytest.approx(0.8)
    # tau 0.9: p3 (cos 0.8) no longer matches -> AP 1/2, P 1/3, R 1/2, F1 0.4
    assert r["per_threshold"]["0.90"]["semap"] == pytest.approx(0.5)
    assert r["per_threshold"]["0.90"]["semf1"] == pytest.approx(0.4)
    assert r["semap"] == pytest.approx((0.5 + 1 / 3 + 0.5) / 2)
    assert r["semf1"] == pytest.approx(0.6)


def test_ranking_by_confidence_matters_for_ap_not_f1():
    gts = [[q("g1"), q("g2")]]
    good = semantic_scores([[q("p1", 0.9), q("p2", 0.1)]], gts, _sim(), thresholds=(0.5,))
    bad = semantic_scores([[q("p1", 0.1), q("p2", 0.9)]], gts, _sim(), thresholds=(0.5,))
    assert good["semf1"] == bad["semf1"] == pytest.approx(0.5)
    assert good["semap"] == pytest.approx(0.5) and bad["semap"] == pytest.approx(0.25)


def test_matching_is_one_to_one_and_maximises_the_number_of_matches():
    sim = np.array([[0.95, 0.31], [0.31, 0.0]])
    assert sorted(match_pairs(sim, 0.3)) == [(0, 1), (1, 0)]  # a max-similarity matching would keep 1 pair
    assert match_pairs(sim, 0.5) == [(0, 0)]
    # two predictions of the same ground truth: only one can be a true positive
    r = semantic_scores([[q("p1", 0.9), q("p1", 0.8)]], [[q("g1")]], _sim(), thresholds=(0.5,))
    assert r["precision"] == pytest.approx(0.5) and r["recall"] == pytest.approx(1.0)


def test_severity_weighting_hand_worked():
    preds = [[q("p1", 0.9, sev=5), q("p2", 0.8, sev=2)]]
    gts = [[q("g1", sev=5), q("g2", sev=1)]]
    plain = semantic_scores(preds, gts, _sim(), thresholds=(0.5,))
    weighted = semantic_scores(preds, gts, _sim(), thresholds=(0.5,), severity_weighted=True)
    assert plain["semf1"] == pytest.approx(0.5) and plain["semap"] == pytest.approx(0.5)
    p, r = 1 / 1.4, 1 / 1.2  # TP weight 1, FP 2/5, FN 1/5
    assert weighted["semf1"] == pytest.approx(2 * p * r / (p + r))
    assert weighted["semap"] == pytest.approx(r)
    assert weighted["sev_mae"] == pytest.approx(0.0)


def test_edge_cases_empty_perfect_and_no_ground_truth():
    gts = [[q("g1"), q("g2")], [q("g1")]]
    assert semantic_scores([[], []], gts, _sim())["semap"] == 0.0
    assert semantic_scores([[], []], gts, _sim())["semf1"] == 0.0
    perfect = semantic_scores([[q("g1", 0.9), q("g2", 0.8)], [q("g1", 0.7)]], gts, _sim())
    assert perfect["semap"] == pytest.approx(1.0) and perfect["semf1"] == pytest.approx(1.0)
    assert semantic_scores([[]], [[]], _sim())["semf1"] == 1.0
    assert semantic_scores([[q("p1", 0.5)]], [[]], _sim())["semf1"] == 0.0


def test_accumulating_class_equals_one_shot_and_caches_embeddings():
    sim = _sim()
    preds = [[q("p1", 0.9)], [q("p2", 0.8), q("p3", 0.4)], []]
    gts = [[q("g1")], [q("g2")], [q("g1")]]
    m = SemanticMatchMetric(sim, thresholds=(0.5, 0.7))
    for i in range(3):
        m.update(preds[i : i + 1], gts[i : i + 1], tags=[[f"img{i}"]])
    once = semantic_scores(preds, gts, _sim(), thresholds=(0.5, 0.7))
    assert m.compute()["semap"] == pytest.approx(once["semap"]) and m.compute()["n_gt"] == 3
    assert m.compute(tag="img0")["semf1"] == pytest.approx(1.0)
    calls = sim.embedder.calls
    m.update(preds, gts)  # every text already embedded
    assert sim.embedder.calls == calls
    m.reset()
    with pytest.raises(ValueError, match="2 prediction lists and 1"):
        m.update([[], []], [[]])


def test_functional_core_matches_docstring_example():
    r = scores_from_similarity(
        [np.array([[0.9, 0.1], [0.2, 0.3]])], [np.array([0.8, 0.4])], [np.ones(2)], [np.ones(2)], (0.5,)
    )
    assert (r["semap"], r["semf1"]) == (0.5, 0.5)


def test_llm_judge_similarity_through_the_chat_server(chat_server):
    chat_server.set_script(json.dumps({"scores": [[0.9, 0.2], [0.1, 0.3]]}))
    backend = create_backend("openai", base_url=chat_server.base_url, model="judge", backoff_s=0.01)
    judge = JudgeSimilarity(backend)
    r = semantic_scores([[q("a", 0.9), q("b", 0.5)]], [[q("c"), q("d")]], judge, thresholds=(0.5,))
    assert r["semf1"] == pytest.approx(0.5)
    assert "1. a: x" in chat_server.requests[0]["messages"][0]["content"]
    judge.matrix(["a: x", "b: x"], ["c: x", "d: x"])
    assert len(chat_server.requests) == 1  # cached
    chat_server.set_script(json.dumps({"scores": [[0.9]]}))
    with pytest.raises(LLMError, match="1, 1"):
        JudgeSimilarity(backend).matrix(["a", "b"], ["c"])


def test_minilm_scores_paraphrases_above_unrelated_anomalies():
    sim = EmbeddingSimilarity()
    m = sim.matrix(
        ["the clock: the clock face has 13 hour marks"],
        [
            "clock dial: the dial shows thirteen hour ticks instead of twelve",
            "the ball: it floats above the grass",
        ],
    )
    assert m[0, 0] > 0.6 > 0.3 > m[0, 1]
