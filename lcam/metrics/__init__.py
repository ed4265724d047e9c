"""Faithfulness, localisation, complexity and sanity metrics (torchmetrics ``Metric`` classes) over maps and models.
May import: lcam.runtime, lcam.maps, lcam.viz, lcam.data, lcam.backbones; never a model or explainer module."""
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

from lcam.metrics.complexity import Complexity, Sparseness, gini_index, map_entropy  # noqa: E402
from lcam.metrics.faithfulness import FaithfulnessCorrelation, random_subsets  # noqa: E402
from lcam.metrics.randomisation import RandomClassCheck, other_classes  # noqa: E402
from lcam.metrics.robustness import MaxSensitivity, ball_noise  # noqa: E402
from lcam.metrics.similarity import average_ranks, hog_similarity, pearson, spearman, ssim_similarity  # noqa: E402

__all__ += ["Complexity", "FaithfulnessCorrelation", "MaxSensitivity", "RandomClassCheck", "Sparseness",
            "average_ranks", "ball_noise", "gini_index", "hog_similarity", "map_entropy", "other_classes",
            "pearson", "random_subsets", "spearman", "ssim_similarity"]
