"""Evaluate several explainers on the same images in Lightning's test loop, one method at a time.

``evaluate.py`` runs ``trainer.test`` once per method (:meth:`ExplainerEvaluator.methods_in_turn`),
so each method gets its own progress bar (name, images done, ETA), which moves per chunk of
masked passes inside the slow methods. Every method explains the classifier's top-1 class of each
image; the AD/IC metric (and optional insertion/deletion) is updated per method; ``#FW`` is counted
by a forward hook and time per image by the wall clock (synchronised on GPUs). Metrics are
torchmetrics objects, so DDP runs reduce them across processes.
"""
from __future__ import annotations

import contextlib
import time
from typing import Any, Iterator, Mapping, Sequence

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torchmetrics import SumMetric

from lcam.backbones.frozen import FrozenClassifier
from lcam.evaluation.counting import ForwardCounter
from lcam.metrics import DEFAULT_THRESHOLDS, AverageDropIncrease, explanation_confidence


class ExplainerEvaluator(pl.LightningModule):
    """Args:
        model: the frozen classifier (shared by every explainer).
        explainers: display name -> explainer (``explainer(images, targets) -> (B, H, W)``).
        thresholds: AD/IC thresholds (fractions kept).
        extra_metrics: display-name-independent metric factories, e.g. insertion/deletion:
            ``name -> callable(model) -> Metric`` with ``update(images, maps, targets)``.
        keep_maps: keep the maps of the first ``keep_maps`` images for figures.
        progress_total: images per process, for the per-method progress bars (``0``: no bars).
    """

    def __init__(self, model: FrozenClassifier, explainers: Mapping[str, nn.Module],
                 thresholds: Sequence[float] = DEFAULT_THRESHOLDS, extra_metrics: Mapping[str, Any] | None = None,
                 keep_maps: int = 0, progress_total: int = 0) -> None:
        super().__init__()
        self.model = model
        self.explainers = nn.ModuleDict(dict(explainers))
        self.method_names = list(explainers)
        self.thresholds = tuple(thresholds)
        self.confidence = nn.ModuleDict({k: AverageDropIncrease(self.thresholds) for k in self.method_names})
        self.forward_passes = nn.ModuleDict({k: SumMetric() for k in self.method_names})
        self.seconds = nn.ModuleDict({k: SumMetric() for k in self.method_names})
        self.images_seen = nn.ModuleDict({k: SumMetric() for k in self.method_names})
        factories = dict(extra_metrics or {})
        self.extra = nn.ModuleDict({f"{m}__{n}": make(model) for m in self.method_names for n, make in factories.items()})
        self.extra_names = list(factories)
        self.keep_maps = int(keep_maps)
        self.kept_images: list[Tensor] = []
        self.kept_maps: dict[str, list[Tensor]] = {k: [] for k in self.method_names}
        self.kept_titles: list[str] = []
        self.results: list[dict[str, Any]] = []
        self.active: list[str] = list(self.method_names)
        self.progress_total = int(progress_total)
        self._bar: Any = None

    def methods_in_turn(self) -> Iterator[str]:
        """Make each method the only active one in turn (run ``trainer.test`` inside the loop)."""
        try:
            for name in self.method_names:
                self.active = [name]
                yield name
        finally:
            self.active = list(self.method_names)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def on_test_epoch_start(self) -> None:
        if self.progress_total and self.trainer.is_global_zero and len(self.active) == 1:
            from lcam.explain.stream import progress_bar

            self._bar = progress_bar(self.progress_total, self.active[0], delay=0.0)

    def _advance(self, start: float, images: int) -> Any:
        """The progress callback of one method on a batch of ``images`` (fraction done -> the bar)."""
        from lcam.explain.stream import Advance

        return Advance(self._bar, start, images) if self._bar is not None else None

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images = batch[0]
        b = images.shape[0]
        with torch.no_grad():
            logits = self.model(images)
        targets = logits.argmax(1)
        first = self.active[0] == self.method_names[0]
        kept = sum(x.shape[0] for x in self.kept_maps[self.active[0]])
        keep = max(0, min(b, self.keep_maps - kept))
        if keep and first:
            base = logits.softmax(1).gather(1, targets.view(-1, 1)).squeeze(1)
            self.kept_images.append(images[:keep].cpu())
            self.kept_titles += [f"{self.model.class_name(int(t))} ({p:.2f})" for t, p in zip(targets[:keep], base[:keep].tolist())]
        for name in self.active:
            explainer = self.explainers[name]
            start = self._bar.n if self._bar is not None else 0.0
            reporting = getattr(explainer, "reporting", None)
            progress = reporting(self._advance(start, b)) if reporting is not None else contextlib.nullcontext()
            with ForwardCounter(self.model) as fw, progress:
                self._sync()
                t0 = time.perf_counter()
                maps = explainer(images, targets)
                self._sync()
                elapsed = time.perf_counter() - t0
            self.forward_passes[name].update(torch.tensor(float(fw.images)))
            self.seconds[name].update(torch.tensor(elapsed))
            self.images_seen[name].update(torch.tensor(float(b)))
            y, o = explanation_confidence(self.model, images, maps, targets, self.thresholds)
            self.confidence[name].update(y, o)
            for metric in self.extra_names:
                extra = self.extra[f"{name}__{metric}"]  # localisation metrics also take the boxes (issue 12)
                extra.update(images, maps, targets, *(batch[2:] if getattr(extra, "takes_boxes", False) else ()))
            if keep:
                self.kept_maps[name].append(maps[:keep].cpu())
            if self._bar is not None:
                self._advance(start, b)(1.0)

    def on_test_epoch_end(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        for name in self.active:
            n = float(self.images_seen[name].compute())
            row: dict[str, Any] = {"method": name}
            row.update({k: float(v) for k, v in self.confidence[name].compute().items()})
            row["#FW"] = float(self.forward_passes[name].compute()) / max(n, 1.0)
            row["s/img"] = float(self.seconds[name].compute()) / max(n, 1.0)
            for metric in self.extra_names:
                value = self.extra[f"{name}__{metric}"].compute()
                if isinstance(value, dict):
                    row.update({k: float(v) for k, v in value.items()})
                else:
                    row[metric] = float(value)
            for key, value in row.items():
                if key != "method":
                    self.log(f"test/{name}/{key}", value, sync_dist=False)
            self.results = [r for r in self.results if r["method"] != name] + [{**row, "images": int(n)}]
        order = {m: i for i, m in enumerate(self.method_names)}
        self.results.sort(key=lambda r: order[r["method"]])

    def figure_inputs(self) -> tuple[Tensor, dict[str, Tensor], list[str]] | None:
        """Images ``(N, 3, H, W)``, method -> maps ``(N, H, W)``, titles; None if nothing was kept."""
        if not self.kept_images:
            return None
        return torch.cat(self.kept_images), {k: torch.cat(v) for k, v in self.kept_maps.items() if v}, self.kept_titles
