"""Evaluate explainers image by image in Lightning's test loop, one method at a time, keeping a record per image.

``evaluate.py`` runs ``trainer.test`` once per method (:meth:`ExplainerEvaluator.methods_in_turn`).
At the start of each method (:meth:`setup`, after the processes have joined) global rank 0 lists
the images that still lack a record of the method (a resumed run skips the rest) and broadcasts
that to-do list; every process then explains its batches of it, dealt round-robin
(:class:`lcam.evaluation.sampling.TodoSampler`), so N processes explain every image exactly once.

For each batch and method: AD/IC explain the classifier's top-1 class (the L-CAM protocol);
localisation metrics explain the ground-truth label where the image has one (``localisation_cue
= "label"``, the pointing-game protocol; ``"top1"`` uses the predicted class), re-explaining only
the images whose label differs from the prediction. ``#FW`` is counted by a forward hook on the
AD/IC explanation, time by the wall clock (synchronised on GPUs). Each (image, method) becomes a
record (:mod:`lcam.evaluation.records`), appended and fsynced after every batch; unreadable
images become records with status ``unreadable``. Nothing is aggregated here: the table comes
from the records (:mod:`lcam.evaluation.statistics`).
"""
from __future__ import annotations

import contextlib
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from lcam.backbones.frozen import FrozenClassifier
from lcam.evaluation.counting import ForwardCounter
from lcam.evaluation.records import OK, UNREADABLE, RecordWriter, done_indices, method_dir, method_slug
from lcam.evaluation.sampling import Shard, TodoSampler
from lcam.metrics import DEFAULT_THRESHOLDS, explanation_confidence, threshold_tag
from lcam.metrics.confidence import drop_increase_per_image
from lcam.runtime.io import atomic_write

CUES = ("label", "top1")


@dataclass(frozen=True)
class MetricSpec:
    """An extra metric of every method: ``build(model, explainer) -> metric`` with ``per_image(images, maps, targets, ...)``.

    ``localisation``: the metric reads the batch's boxes and scales and explains the localisation
    cue's class (see the module doc).
    """

    name: str
    build: Callable[[FrozenClassifier, nn.Module], Any]
    localisation: bool = False


class ExplainerEvaluator(pl.LightningModule):
    """Args:
        model: the frozen classifier (shared by every explainer).
        explainers: display name -> explainer (``explainer(images, targets) -> (B, H, W)``).
        run_dir: the run folder that holds the records.
        n_images: images in the evaluated dataset (indices ``0 .. n_images - 1``).
        shard: the part of the dataset this run evaluates.
        thresholds: AD/IC thresholds (fractions kept).
        metrics: extra metrics, each computed for every method.
        localisation_cue: ``"label"`` or ``"top1"`` (see the module doc).
        figure_images: keep the maps of the shard's first ``figure_images`` images for figures.
        progress: draw one progress bar per method on global rank 0.
        attempt: the token of this start of the job (new records files; rank 0's is broadcast).
    """

    def __init__(self, model: FrozenClassifier, explainers: Mapping[str, nn.Module], run_dir: str, n_images: int,
                 shard: Shard = Shard(), thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                 metrics: Sequence[MetricSpec] = (), localisation_cue: str = "label", figure_images: int = 0,
                 progress: bool = True, attempt: str | None = None) -> None:
        super().__init__()
        if localisation_cue not in CUES:
            raise ValueError(f"localisation.target must be one of {list(CUES)}, got {localisation_cue!r}")
        slugs = [method_slug(n) for n in explainers]
        clash = sorted({n for n, s in zip(explainers, slugs) if slugs.count(s) > 1})
        if clash:
            raise ValueError(f"Methods {clash} share a records folder name; give them labels that differ in letters or digits")
        self.model = model
        if hasattr(model, "num_classes"):
            model.num_classes  # noqa: B018 - the classifier's one-off shape dry run, here, not inside a counted explanation
        self.explainers = nn.ModuleDict(dict(explainers))
        self.method_names = list(explainers)
        self.run_dir = str(run_dir)
        self.n_images = int(n_images)
        self.shard = shard
        self.thresholds = tuple(thresholds)
        self.metric_specs = list(metrics)
        self.metrics: dict[str, list[tuple[MetricSpec, Any]]] = {
            name: [(spec, spec.build(model, explainers[name])) for spec in self.metric_specs] for name in self.method_names}
        self.localisation_cue = localisation_cue
        self.figure_indices = set(shard.indices(self.n_images)[: max(0, int(figure_images))])
        self.progress = bool(progress)
        self.attempt = attempt or time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self.sampler = TodoSampler()
        self.active: str = self.method_names[0] if self.method_names else ""
        self._writer: RecordWriter | None = None
        self._figure: dict[int, tuple[Tensor, Tensor]] = {}
        self._bar: Any = None
        self._explain_share = 1.0  # see on_test_epoch_start

    # -- one method at a time ------------------------------------------------------------------
    def methods_in_turn(self) -> Iterator[str]:
        """Make each method the active one in turn (run ``trainer.test`` inside the loop)."""
        for name in self.method_names:
            self.active = name
            yield name

    def todo(self, method: str) -> list[int]:
        """The shard's images without a record of ``method`` yet, ascending."""
        done = done_indices(self.run_dir, method)
        return [i for i in self.shard.indices(self.n_images) if i not in done]

    def setup(self, stage: str) -> None:
        # every process is here (Lightning's pre-setup barrier) and none writes records of the active
        # method yet: rank 0 reads them, and its to-do list and attempt token are broadcast
        plan = (self.attempt, self.todo(self.active)) if self.trainer.is_global_zero else None
        self.attempt, todo = self.trainer.strategy.broadcast(plan, src=0)
        self.sampler.todo = todo

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def on_test_epoch_start(self) -> None:
        self._writer = RecordWriter(self.run_dir, self.active, self.attempt, self.global_rank)
        self._figure = {}
        if self.progress and self.trainer.is_global_zero:
            from lcam.explain.stream import progress_bar

            self._bar = progress_bar(len(self.sampler), self.active, delay=0.0)
        # the share of a batch's time spent in the explanation (the rest: localisation re-explanations and
        # metrics, e.g. the sanity metric's explanations of randomised models); learnt per batch so the
        # bar moves with the time spent and its ETA counts the metrics too
        self._explain_share = 0.5 if self.metrics[self.active] else 1.0

    def _advance(self, start: float, images: int) -> Any:
        """The progress callback of one method on a batch of ``images`` (fraction done -> the bar)."""
        from lcam.explain.stream import Advance

        return Advance(self._bar, start, images) if self._bar is not None else None

    # -- the step ------------------------------------------------------------------------------
    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        name = self.active
        records = [{"index": int(i), "image": f, "method": name, "status": UNREADABLE, "error": e}
                   for i, f, e in batch["unreadable"]]
        if "images" in batch:
            records += self.explain_batch(name, batch)
        assert self._writer is not None
        self._writer.write(sorted(records, key=lambda r: r["index"]))

    def explain_batch(self, name: str, batch: dict[str, Any]) -> list[dict[str, Any]]:
        """Explain one batch with method ``name``; one record per image."""
        images, labels, indices = batch["images"], batch["labels"], batch["indices"]
        b = images.shape[0]
        explainer = self.explainers[name]
        with torch.no_grad():
            targets = self.model(images).argmax(1)
        start = self._bar.n if self._bar is not None else 0.0
        share = self._explain_share
        reporting = getattr(explainer, "reporting", None)
        progress = reporting(self._advance(start, b * share)) if reporting is not None else contextlib.nullcontext()
        t_batch = time.perf_counter()
        with ForwardCounter(self.model) as fw, progress:
            self._sync()
            t0 = time.perf_counter()
            maps = explainer(images, targets)
            self._sync()
            elapsed = time.perf_counter() - t0
        if self._bar is not None:
            self._advance(start, b * share)(1.0)
        y, o = explanation_confidence(self.model, images, maps, targets, self.thresholds)
        columns: dict[str, Tensor] = {"Y": y.double()}
        columns.update({f"O{threshold_tag(t)}": o[:, i].double() for i, t in enumerate(self.thresholds)})
        columns.update(drop_increase_per_image(y, o, self.thresholds))
        loc_targets, loc_maps = self.localisation_maps(explainer, images, labels, targets, maps)
        for spec, metric in self.metrics[name]:
            if spec.localisation:
                values = metric.per_image(images, loc_maps, loc_targets, batch["boxes"].to(images.device),
                                          batch["scales"].to(images.device))
            else:
                values = metric.per_image(images, maps, targets)
            columns.update({c: values[c] for c in metric.columns})
        class_name = getattr(self.model, "class_name", str)
        records = []
        for j in range(b):
            rec: dict[str, Any] = {"index": int(indices[j]), "image": batch["names"][j], "method": name, "status": OK,
                                   "label": int(labels[j]), "target": int(targets[j]),
                                   "target_name": class_name(int(targets[j]))}
            if self.metric_specs and any(s.localisation for s in self.metric_specs):
                rec["loc_target"] = int(loc_targets[j])
            rec.update({k: float(v[j]) for k, v in columns.items()})
            rec["#FW"] = fw.images / b
            rec["seconds"] = elapsed / b
            records.append(rec)
            if int(indices[j]) in self.figure_indices:
                self._figure[int(indices[j])] = (images[j].cpu(), maps[j].cpu())
        if self._bar is not None:
            self._advance(start, b)(1.0)
            self._explain_share = min(1.0, max(0.02, elapsed / max(time.perf_counter() - t_batch, 1e-9)))
        return records

    def localisation_maps(self, explainer: nn.Module, images: Tensor, labels: Tensor, targets: Tensor,
                          maps: Tensor) -> tuple[Tensor, Tensor]:
        """The localisation cue's classes ``(B,)`` and their maps ``(B, H, W)``: the label where known
        (``localisation_cue="label"``), else the top-1 class, whose map is already in ``maps``."""
        if not any(s.localisation for s in self.metric_specs):
            return targets, maps
        cue = torch.where(labels.to(targets.device) >= 0, labels.to(targets.device), targets) \
            if self.localisation_cue == "label" else targets
        other = (cue != targets).nonzero().flatten()
        if other.numel() == 0:
            return cue, maps
        out = maps.clone()
        out[other] = explainer(images[other], cue[other]).to(out.dtype)
        return cue, out

    def on_test_epoch_end(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._writer is not None:
            self._writer.close()
        if self._figure:
            keep = sorted(self._figure)
            path = method_dir(self.run_dir, self.active) / f"figure-{self.attempt}-r{self.global_rank}.pt"
            with atomic_write(path) as f:
                torch.save({"indices": keep, "images": torch.stack([self._figure[i][0] for i in keep]),
                            "maps": torch.stack([self._figure[i][1] for i in keep])}, f)
            self._figure = {}
