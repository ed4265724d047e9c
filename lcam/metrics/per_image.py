"""Metrics whose table value is the mean of one value per image: the shape every evaluation metric takes.

``evaluate.py`` keeps one record per (image, method) and computes its table from those records
only (:mod:`lcam.evaluation.records`). A metric joins the records by saying what it measures on
each image, :meth:`PerImageMetric.per_image`; the table's cell is the mean of that column over the
images where it is defined (NaN marks an image the metric does not score, e.g. one without boxes
for the pointing game). The same class is a torchmetrics ``Metric`` for Python users:
``update`` adds the per-image values, ``compute`` returns the same means, so the records, the
table and ``compute()`` can never disagree.

A subclass sets :attr:`columns`, implements :meth:`per_image`, and says what else it reads:
``takes_boxes`` (the batch's boxes as a fourth argument), ``takes_labels`` (the dataset labels,
``-1`` where unknown, as a keyword), ``needs_explainer`` (built with the explainer, e.g. to
re-explain noisy inputs).
"""
from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any, ClassVar, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric


class PerImageMetric(Metric):
    """Base: ``per_image(images, maps, targets, *extra) -> {column: (B,)}``; ``compute()`` = NaN-aware means.

    Attributes:
        columns: the column names this metric writes (records and table), in table units.
        takes_boxes: ``update`` / ``per_image`` take the boxes ``(B, K, 4)`` after ``targets``.
        needs_explainer: the metric is built as ``cls(model, explainer, **settings)``.
    """

    full_state_update = False
    higher_is_better = None
    columns: ClassVar[tuple[str, ...]] = ()
    takes_boxes: ClassVar[bool] = False
    needs_explainer: ClassVar[bool] = False

    def __init__(self, columns: Sequence[str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if columns is not None:
            self.columns = tuple(columns)
        n = len(self.columns)
        self.add_state("value_sum", default=torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("value_count", default=torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")

    @abstractmethod
    def per_image(self, images: Tensor, maps: Tensor, targets: Tensor, *extra: Any) -> dict[str, Tensor]:
        """``{column: (B,) float}`` for images ``(B, 3, H, W)`` in [0, 1], maps ``(B, H, W)`` in [0, 1],
        targets ``(B,)``; NaN where the image is not scored."""

    def update(self, images: Tensor, maps: Tensor, targets: Tensor, *extra: Any) -> None:  # type: ignore[override]
        values = self.per_image(images, maps, targets, *extra)
        for i, name in enumerate(self.columns):
            v = values[name].detach().double().flatten()
            ok = ~torch.isnan(v)
            self.value_sum[i] += v[ok].sum()
            self.value_count[i] += ok.sum()

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        return {name: (self.value_sum[i] / self.value_count[i] if self.value_count[i] > 0
                       else torch.tensor(math.nan, dtype=torch.float64)).float()
                for i, name in enumerate(self.columns)}
