"""Metrics computed over a whole run: detection and semantic anomaly matching (functional core + accumulating class)."""

from aigclab.metrics.detection import DetectionMetrics, binary_metrics, detection_report
from aigclab.metrics.semantic import (
    EmbeddingSimilarity,
    JudgeSimilarity,
    MiniLMEmbedder,
    SemanticMatchMetric,
    scores_from_similarity,
    semantic_scores,
)

__all__ = [
    "DetectionMetrics",
    "EmbeddingSimilarity",
    "JudgeSimilarity",
    "MiniLMEmbedder",
    "SemanticMatchMetric",
    "binary_metrics",
    "detection_report",
    "scores_from_similarity",
    "semantic_scores",
]
