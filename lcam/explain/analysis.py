"""The paper's analysis views, as functions (the explain CLI calls the same code).

* :func:`class_specific_view` - one image, maps for two or more classes side by side (Fig. 4);
* :func:`misclassification_view` - for labelled images, the map of the true class beside the map
  of the predicted class, with names and probabilities, as contact sheets (Figs. 5-9);
* :func:`method_comparison` - rows = methods, columns = images (Fig. 3).

``model`` is anything :func:`lcam.explain` accepts (an L-CAM model or checkpoint, a backbone name,
a :class:`~lcam.backbones.FrozenClassifier`...); ``method`` picks the explainer (``lcam`` for L-CAM).
"""
from __future__ import annotations

import logging
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from lcam.explain.classifier import resolve_classifier
from lcam.explain.engine import Engine, bind, make_engine
from lcam.explain.inputs import Images, InputError
from lcam.explain.result import Explanation
from lcam.explain.stream import Source, explain_batches
from lcam.explainers.targets import TargetPlan, parse_targets
from lcam.viz import comparison_grid, overlay, panel_grid, to_numpy_image

log = logging.getLogger(__name__)

#: our reading of the demo photos (``lcam.data.demo_photos``) as ImageNet classes, for the
#: misclassification view; ``astronaut`` has no fitting class and stays unlabelled.
DEMO_LABELS: dict[str, int] = {
    "chelsea": 281,     # tabby
    "coffee": 967,      # espresso
    "rocket": 657,      # missile
    "motorcycle": 665,  # moped
    "camera": 872,      # tripod
    "clock": 892,       # wall clock
    "china": 698,       # palace
    "flower": 985,      # daisy
}


def _engine(model: Any, method: str | None, **settings: Any) -> Engine:
    return model if isinstance(model, Engine) else make_engine(model, method, **settings)


# --------------------------------------------------------------------------------------------
# class-specific maps (Fig. 4)
# --------------------------------------------------------------------------------------------
def class_sheet(result: Explanation, image: int = 0, alpha: float = 0.5, cmap: str = "jet") -> Image.Image:
    """One row: the image, then one overlay per row of ``result`` that belongs to image ``image``."""
    rows = (result.image_index == image).nonzero().flatten().tolist()
    pic = result.images[image]
    panels = [[to_numpy_image(pic), *[overlay(pic, result.map(r), alpha, cmap) for r in rows]]]
    head = f"{result.names[image]}\npredicted: {result.predicted_names[image]} ({float(result.predicted_probs[image]):.2f})"
    titles = [[head, *[f"{result.class_names[r]} ({float(result.probs[r]):.2f})" for r in rows]]]
    return panel_grid(panels, titles, suptitle=f"class-specific maps ({result.method})")


def class_specific_view(model: Any, image: Images, classes: Sequence[int | str], method: str | None = None, *,
                        resize: int | None = 256, crop: int | None = 224, alpha: float = 0.5, cmap: str = "jet",
                        **settings: Any) -> Image.Image:
    """One image explained for two or more classes, side by side (paper Fig. 4).

    Args:
        model: see :func:`lcam.explain`; or a ready :class:`~lcam.explain.api.Engine`.
        image: one PIL image, file or ``(3, H, W)`` tensor in [0, 1].
        classes: class ids or names, e.g. ``[281, "Egyptian cat"]``.
        method: ``lcam`` (default for L-CAM models) or a baseline name.

    Returns:
        A PIL image: the image, then one overlay per class titled with its name and probability.
    """
    engine = _engine(model, method, **settings)
    if not classes:
        raise InputError("classes is empty: give two or more class ids or names")
    source = Source.of(image)
    if len(source) != 1:
        raise InputError(f"class_specific_view explains one image, got {len(source)}")
    plan = parse_targets([list(classes)], engine.classes, 1)
    for batch in explain_batches(engine, source, [plan], resize=resize, crop=crop, batch_size=1, bad_files="raise"):
        return class_sheet(batch.results[0], 0, alpha, cmap)
    raise InputError("No image given")


# --------------------------------------------------------------------------------------------
# misclassification view (Figs. 5-9)
# --------------------------------------------------------------------------------------------
class MisclassificationSheets:
    """Collects rows ``image | map of the true class | map of the predicted class`` and renders
    a contact sheet every ``per_page`` rows.

    Feed it results made with ``TargetPlan("label_pred")`` (two rows per image: label, prediction).

    Args:
        only_errors: keep only images whose label differs from the prediction.
    """

    def __init__(self, per_page: int = 8, only_errors: bool = True, alpha: float = 0.5, cmap: str = "jet") -> None:
        if per_page < 1:
            raise InputError(f"per_page must be >= 1, got {per_page}")
        self.per_page, self.only_errors, self.alpha, self.cmap = int(per_page), bool(only_errors), alpha, cmap
        self.panels: list[list[np.ndarray]] = []
        self.titles: list[list[str]] = []
        self.pages = 0
        self.labelled = 0
        self.errors = 0

    def add(self, result: Explanation) -> list[Image.Image]:
        """Add the labelled images of one batch; returns the pages completed by it."""
        done = []
        for b in range(result.num_images):
            label, pred = int(result.labels[b]), int(result.predicted[b])
            if label < 0:
                continue
            self.labelled += 1
            self.errors += int(label != pred)
            if self.only_errors and label == pred:
                continue
            rows = (result.image_index == b).nonzero().flatten().tolist()
            true_row, pred_row = rows[0], rows[1]
            pic = result.images[b]
            mark = "WRONG" if label != pred else "right"
            self.panels.append([to_numpy_image(pic), overlay(pic, result.map(true_row), self.alpha, self.cmap),
                                overlay(pic, result.map(pred_row), self.alpha, self.cmap)])
            self.titles.append([f"{result.names[b]} ({mark})",
                                f"true: {result.class_names[true_row]} ({float(result.probs[true_row]):.2f})",
                                f"predicted: {result.class_names[pred_row]} ({float(result.probs[pred_row]):.2f})"])
            if len(self.panels) == self.per_page:
                done.append(self._render(result.method))
        return done

    def flush(self, method: str = "") -> list[Image.Image]:
        """The last, partly filled page (if any)."""
        return [self._render(method)] if self.panels else []

    def _render(self, method: str) -> Image.Image:
        self.pages += 1
        sheet = panel_grid(self.panels, self.titles, suptitle=f"true vs predicted class ({method}), page {self.pages}")
        self.panels, self.titles = [], []
        return sheet


def misclassification_pages(model: Any, images: Images, labels: Mapping[str, int] | str | None = None, method: str | None = None, *,
                            only_errors: bool = True, per_page: int = 8, resize: int | None = 256, crop: int | None = 224,
                            batch_size: int = 16, alpha: float = 0.5, cmap: str = "jet", **settings: Any) -> Iterator[Image.Image]:
    """Stream :func:`misclassification_view` pages (any number of images; unreadable files are
    skipped with a warning)."""
    engine = _engine(model, method, **settings)
    sheets = MisclassificationSheets(per_page, only_errors, alpha, cmap)
    source = Source.of(images, labels=labels)
    for batch in explain_batches(engine, source, [TargetPlan("label_pred")], resize=resize, crop=crop, batch_size=batch_size,
                                 bad_files="skip"):
        if batch.results:
            yield from sheets.add(batch.results[0])
    if sheets.labelled == 0:
        log.warning("misclassification view: no labelled images (give labels=... or use synset folders)")
    yield from sheets.flush(engine.method)


def misclassification_view(model: Any, images: Images, labels: Mapping[str, int] | str | None = None, method: str | None = None,
                           **kwargs: Any) -> list[Image.Image]:
    """For labelled images: the map of the true class beside the map of the predicted class,
    with both names and probabilities, ``per_page`` images per contact sheet (paper Figs. 5-9).

    Args:
        model: see :func:`lcam.explain`.
        images: files, a folder, a glob, PIL images, ``"demo"``, or a tensor (labels by ``imageN``).
        labels: ``name -> class id`` (e.g. :data:`DEMO_LABELS`) or a ``name label`` list file;
            ImageNet synset folders label their files without it.
        only_errors (kwarg): only misclassified images (default ``True``).
        per_page (kwarg): images per sheet (default 8).

    Returns:
        The sheets as PIL images (empty when no image qualifies).
    """
    return list(misclassification_pages(model, images, labels, method, **kwargs))


# --------------------------------------------------------------------------------------------
# method comparison (Fig. 3)
# --------------------------------------------------------------------------------------------
class ComparisonSheets:
    """Collects columns (images) of maps from several methods for the same classes and renders a
    grid, rows = methods, every ``per_page`` images."""

    def __init__(self, engines: Sequence[Engine], per_page: int = 8) -> None:
        if per_page < 1:
            raise InputError(f"per_page must be >= 1, got {per_page}")
        self.engines, self.per_page = list(engines), int(per_page)
        self.images: list[Tensor] = []
        self.maps: dict[str, list[Tensor]] = {e.method: [] for e in self.engines}
        self.titles: list[str] = []
        self.pages = 0

    def add(self, images: Tensor, targets: Tensor, names: Sequence[str], titles: Sequence[str]) -> list[Image.Image]:
        """Explain ``images`` ``(B, 3, H, W)`` for ``targets`` ``(B,)`` with every method."""
        done = []
        per_method = {e.method: e.maps_for(images, targets) for e in self.engines}
        for b in range(images.shape[0]):
            self.images.append(images[b].cpu())
            self.titles.append(f"{names[b]}\n{titles[b]}")
            for m, maps in per_method.items():
                self.maps[m].append(maps[b])
            if len(self.images) == self.per_page:
                done.append(self._render())
        return done

    def flush(self) -> list[Image.Image]:
        return [self._render()] if self.images else []

    def _render(self) -> Image.Image:
        self.pages += 1
        shapes = {tuple(x.shape) for x in self.images}
        if len(shapes) > 1:  # uncropped images of different sizes: one panel grid instead
            rows = [[to_numpy_image(x) for x in self.images]] + [[overlay(x, m) for x, m in zip(self.images, ms)] for ms in self.maps.values()]
            sheet = panel_grid(rows, [self.titles] + [[""] * len(self.images)] * len(self.maps), row_labels=["image", *self.maps])
        else:
            sheet = comparison_grid(torch.stack(self.images), {m: torch.stack(v) for m, v in self.maps.items()}, self.titles)
        self.images, self.titles = [], []
        self.maps = {m: [] for m in self.maps}
        return sheet


def comparison_engines(model: Any, methods: Sequence[str], settings: Mapping[str, Mapping[str, Any]] | None = None) -> list[Engine]:
    """One engine per method, all on the same classifier (loaded once; an engine's classifier is reused)."""
    if not methods:
        raise InputError("methods is empty: give e.g. ['lcam', 'gradcam', 'scorecam']")
    classifier = model.classifier if isinstance(model, Engine) else resolve_classifier(model)
    return [bind(classifier, m, **dict((settings or {}).get(m, {}))) for m in methods]


def method_comparison(model: Any, images: Images, methods: Sequence[str] = ("lcam", "gradcam"), targets: Any = None,
                      *, resize: int | None = 256, crop: int | None = 224, batch_size: int = 16,
                      settings: Mapping[str, Mapping[str, Any]] | None = None) -> Image.Image:
    """Rows = methods, columns = images, every method explaining the same class (paper Fig. 3).

    Args:
        model: see :func:`lcam.explain` (an L-CAM model to include ``lcam`` among the methods).
        images: a few images (all become columns of one grid).
        methods: method names, e.g. ``["lcam", "gradcam", "gradcampp", "scorecam"]``.
        targets: as for :func:`lcam.explain`, one class per image: ``None`` (each image's top-1
            class), one class for all, or one per image.
        settings: per-method explainer settings, e.g. ``{"rise": {"n_masks": 1000}}``.
    """
    engines = comparison_engines(model, methods, settings)
    sheets = ComparisonSheets(engines, per_page=10**9)
    first = engines[0]
    source = Source.of(images)
    plan = parse_targets(targets, first.classes, len(source))
    for batch in explain_batches(first, source, [plan], resize=resize, crop=crop, batch_size=batch_size, bad_files="raise"):
        result = batch.results[0]
        if len(result) != result.num_images:
            raise InputError("method_comparison explains one class per image: give None, one class, or one per image")
        titles = [f"{first.class_name(int(c))} ({float(p):.2f})" for c, p in zip(result.classes, result.probs)]
        sheets.add(batch.images, result.classes, result.names, titles)
    pages = sheets.flush()
    if not pages:
        raise InputError("No images given")
    return pages[0]
