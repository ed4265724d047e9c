"""Faithfulness and localisation metrics (torchmetrics ``Metric`` classes)."""
from lcam.metrics.confidence import (
    DEFAULT_THRESHOLDS,
    AverageDropIncrease,
    explanation_confidence,
    threshold_tag,
)
from lcam.metrics.masking import explanation_images, keep_top_fraction

__all__ = [
    "DEFAULT_THRESHOLDS",
    "AverageDropIncrease",
    "explanation_confidence",
    "explanation_images",
    "keep_top_fraction",
    "threshold_tag",
]
