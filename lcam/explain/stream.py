"""The one loop over images in batches, for the Python API, the CLI and the analysis views.

    source = Source.of(images, labels=...)                 # tensors, PIL images, files, folders, globs, "demo"
    for batch in explain_batches(engine, source, plans, batch_size=16, bad_files="skip"):
        batch.results[0]                                   # an Explanation per plan
        batch.failed                                       # [(item, error)] files that could not be read

Files are read lazily through a ``DataLoader``; images of equal size are stacked (uncropped images
of different sizes run in groups). A progress bar (tqdm, to stderr) shows the method, the images
done, their rate and an ETA; it moves per chunk of masked passes inside the slow methods, and it
appears only for calls that last more than ``delay`` seconds.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

from torch import Tensor

from lcam.data.transforms import eval_transform
from lcam.explain.engine import Engine
from lcam.explain.inputs import Images, InputItem, collect_inputs, group_by_shape, iter_batches, tensor_items
from lcam.explain.result import Explanation
from lcam.explainers.targets import TargetPlan
from lcam.runtime.io import InputError

log = logging.getLogger("lcam.explain")

#: seconds before a progress bar appears (quick calls print nothing)
PROGRESS_DELAY_S = 2.0


@dataclass
class Source:
    """The images of one call: their items (names, files, labels) and, for a tensor, the tensor."""

    items: list[InputItem]
    tensor: Tensor | None = None

    @classmethod
    def of(cls, images: Images, labels: Mapping[str, int] | str | None = None, exclude: Sequence[Any] = ()) -> "Source":
        """Expand ``images`` (see :func:`lcam.explain.inputs.collect_inputs`; a tensor is used as is,
        its images named ``image0``, ``image1``... and labelled from a ``labels`` mapping)."""
        if isinstance(images, Tensor):
            tensor, items = tensor_items(images)
            if isinstance(labels, Mapping):
                for it in items:
                    it.label = int(labels.get(it.name, it.label))
            return cls(items, tensor)
        return cls(collect_inputs(images, labels=labels, exclude=exclude))

    def __len__(self) -> int:
        return len(self.items)


@dataclass
class Batch:
    """One batch of a stream: ``results`` has one :class:`Explanation` per plan."""

    items: list[InputItem]
    positions: list[int]
    images: Tensor
    results: list[Explanation]
    failed: list[tuple[InputItem, str]] = field(default_factory=list)


#: seconds between progress lines when stderr is not a terminal
LOG_REFRESH_S = 30.0


def progress_bar(total: int, desc: str, enabled: bool | None = True, delay: float = PROGRESS_DELAY_S) -> Any:
    """A tqdm bar over ``total`` images with rate and ETA (``enabled=False``: silent).

    On a terminal it redraws every 0.1 s; when stderr is a file (a cluster job's log) every
    :data:`LOG_REFRESH_S` seconds, so a long run's log stays a few lines per method.
    """
    from tqdm.auto import tqdm

    interactive = bool(getattr(sys.stderr, "isatty", lambda: False)())
    return tqdm(total=total, desc=desc, unit="img", disable=enabled is False, delay=delay, dynamic_ncols=True,
                mininterval=0.1 if interactive else LOG_REFRESH_S,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total} img [{elapsed}<{remaining}, {rate_fmt}]")


class Advance:
    """Moves a bar to ``start + scale * done`` as a batch progresses (never backwards).

    ``scale = 1``: ``done`` counts images; ``scale = B``: ``done`` is the fraction of a batch of B
    images (an explainer's progress callback, :meth:`lcam.explainers.base.Explainer.reporting`).
    """

    def __init__(self, bar: Any, start: float, scale: float = 1.0) -> None:
        self.bar, self.start, self.scale = bar, start, scale

    def __call__(self, done: float) -> None:
        target = self.start + self.scale * done
        if target > self.bar.n:
            self.bar.update(target - self.bar.n)


def explain_batches(engine: Engine, source: Source, plans: Sequence[TargetPlan], *, resize: int | None = 256,
                    crop: int | None = 224, batch_size: int = 16, num_workers: int = 0, bad_files: str = "raise",
                    progress: bool | None = True, delay: float = PROGRESS_DELAY_S) -> Iterator[Batch]:
    """Explain ``source`` in batches of ``batch_size`` images, each batch for every plan.

    Args:
        resize, crop: the evaluation transform for files and PIL images (a tensor is used as is).
        num_workers: ``DataLoader`` processes reading files.
        bad_files: ``"raise"`` (an :class:`InputError` naming the file) or ``"skip"`` (one warning
            line each; the batch lists them in ``failed``).
        progress: show a progress bar (method, images, ETA) for calls longer than ``delay`` seconds.
    """
    if bad_files not in ("raise", "skip"):
        raise ValueError(f"bad_files must be 'raise' or 'skip', got {bad_files!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    bar = progress_bar(len(source), f"{engine.method} @ {engine.layer}", progress, delay)
    try:
        for batch in _batches(engine, source, resize, crop, batch_size, num_workers, bad_files):
            items, positions, x, failed = batch
            start = bar.n
            results = engine.run(x, plans, items, positions, Advance(bar, start)) if x is not None else []
            Advance(bar, start)(len(items) + len(failed))
            yield Batch(items, positions, x, results, failed)
    finally:
        bar.close()


def _batches(engine: Engine, source: Source, resize: int | None, crop: int | None, batch_size: int, num_workers: int,
             bad_files: str) -> Iterator[tuple[list[InputItem], list[int], Tensor | None, list[tuple[InputItem, str]]]]:
    items = source.items
    if source.tensor is not None:
        for start in range(0, len(items), batch_size):
            pos = list(range(start, min(start + batch_size, len(items))))
            yield [items[i] for i in pos], pos, source.tensor[pos[0]:pos[-1] + 1], []
        return
    transform = eval_transform(resize, crop, engine.interpolation)
    for loaded, failed in iter_batches(items, transform, batch_size, num_workers):
        bad = [(items[i], err) for i, err in failed]
        for item, err in bad:
            if bad_files == "raise":
                raise InputError(f"Cannot read image {item.file}: {err}")
            log.warning("skipped %s: %s", item.file, err)
        groups = group_by_shape(loaded)
        if not groups:
            yield [], [], None, bad
        for n, (idx, x) in enumerate(groups):
            yield [items[i] for i in idx], idx, x, bad if n == 0 else []


def explain_all(engine: Engine, source: Source, plan: TargetPlan, **kwargs: Any) -> Explanation:
    """Every image of ``source`` for one plan, joined in input order (bad files raise)."""
    parts = [b.results[0] for b in explain_batches(engine, source, [plan], bad_files="raise", **kwargs) if b.results]
    return Explanation.concat(parts)
