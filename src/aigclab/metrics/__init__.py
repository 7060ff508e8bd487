"""Metrics computed over a whole run: detection (functional core + accumulating class)."""

from aigclab.metrics.detection import DetectionMetrics, binary_metrics, detection_report

__all__ = ["DetectionMetrics", "binary_metrics", "detection_report"]
