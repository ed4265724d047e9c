"""``evaluate.py ... boxes=FILE``: boxes for the test images, the localisation columns and the Win% table.

The evaluation job calls two hooks (metrics in :mod:`lcam.metrics.localisation`):

* :func:`boxed_dataset` wraps the test dataset in :class:`lcam.data.boxes.BoxedDataset`, so each
  image gets its boxes moved through the evaluation transform, and the scale of that transform
  (the pointing-game tolerance is measured in pixels of the stored, annotated image);
* :func:`localisation_metrics` adds :class:`lcam.metrics.LocalisationMetrics` per method, whose
  columns ``PG, EPG, IoU, Dice, ZoneKeep, ZoneDrop`` join the records and ``results.md`` / ``results.csv``.

The localisation columns explain the ground-truth label where an image has one
(``localisation.target: label``, the pointing-game protocol), else its top-1 class.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from omegaconf import DictConfig, OmegaConf

from lcam.data.boxes import BoxedDataset
from lcam.metrics.localisation import LocalisationMetrics

#: the name of the extra metric in the evaluator (``<method>__localisation``)
METRIC = "localisation"


def boxed_dataset(dataset: Any, boxes: str | None) -> BoxedDataset | None:
    """``dataset`` with its boxes (:class:`BoxedDataset`) when a boxes file is given, else None."""
    if not boxes:
        return None
    boxed = BoxedDataset(dataset, boxes)
    counts = ", ".join(f"{n} {status}" for status, n in boxed.counts().items())
    print(f"Boxes: {boxed.box_file.path} ({len(boxed.box_file)} boxes): {counts}", flush=True)
    return boxed


def localisation_metrics(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Callable[[Any], LocalisationMetrics]]:
    """``{"localisation": model -> LocalisationMetrics}`` when ``cfg.boxes`` is set, else ``{}``.

    Settings come from ``cfg.localisation`` (``tolerance``, ``threshold``, ``keep_top``; ``target``
    is read by the evaluator).
    """
    if not cfg.get("boxes"):
        return {}
    node = cfg.get("localisation") or {}
    settings = dict(OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node)
    settings.pop("target", None)
    LocalisationMetrics(lambda x: x, **settings)  # bad settings fail before any image is explained
    return {METRIC: lambda model: LocalisationMetrics(model, **settings)}
