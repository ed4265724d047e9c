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

from lcam.metrics.insertion_deletion import (  # noqa: E402
    InsertionDeletion,
    auc,
    blur,
    insertion_deletion_curves,
)

__all__ += ["InsertionDeletion", "auc", "blur", "insertion_deletion_curves"]

from lcam.metrics.localisation import (  # noqa: E402
    LOCALISATION_COLUMNS,
    EnergyPointingGame,
    LocalisationMetrics,
    MaskOverlap,
    PointingGame,
    WinRate,
    ZoneTest,
    pad_boxes,
    random_point_hit_rate,
    win_rate_table,
)

__all__ += ["LOCALISATION_COLUMNS", "EnergyPointingGame", "LocalisationMetrics", "MaskOverlap", "PointingGame",
            "WinRate", "ZoneTest", "pad_boxes", "random_point_hit_rate", "win_rate_table"]

from lcam.metrics.road import ROAD, noisy_linear_impute, removal_masks, road_scores  # noqa: E402

__all__ += ["ROAD", "noisy_linear_impute", "removal_masks", "road_scores"]
