"""Unreadable image files are skipped, counted and reported instead of ending a run.

A dataset returns an :class:`Unreadable` record in place of a sample whose file cannot be read
(truncated JPEG, not an image, permission denied). :func:`collate_readable` drops those records
from the batch and :class:`SkippingDataLoader` (a ``DataLoader``) hands them to the process's
:data:`SKIPPED` log, which prints one warning line per file (the first time it is met) and keeps
the list for the end-of-run report (``unreadable_images.txt`` in the run directory, the
``data/unreadable_images`` metric, the W&B summary). A batch with no readable image is left out.

The run stops only when more than ``max_bad_fraction`` of one pass over a split (an epoch of
this process's shard) is unreadable, with an error that names ``data.max_bad_fraction``: a
broken dataset (wrong folder, disk gone) ends early instead of training on nothing. At least
one unreadable file per pass is tolerated whenever ``max_bad_fraction > 0``; ``0`` stops at the first.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from torch.utils.data import DataLoader, default_collate

from lcam.runtime.errors import UserError
from lcam.runtime.io import SKIPPED, SkippedImages, describe_error, try_read  # noqa: F401 - the one reader and its log

DEFAULT_MAX_BAD_FRACTION = 0.01


class UnreadableImagesError(UserError, RuntimeError):
    """More unreadable images than ``data.max_bad_fraction`` allows."""


@dataclass(frozen=True)
class Unreadable:
    """Returned by a dataset in place of a sample it could not read."""

    index: int
    file: str
    error: str


@dataclass
class ReadBatch:
    """What a worker sends: the collated readable samples (or None) and the unreadable ones."""

    batch: Any
    unreadable: list[Unreadable]


def collate_readable(samples: Sequence[Any]) -> ReadBatch:
    """``default_collate`` of the readable samples; the :class:`Unreadable` ones are set aside."""
    bad = [s for s in samples if isinstance(s, Unreadable)]
    good = [s for s in samples if not isinstance(s, Unreadable)]
    return ReadBatch(default_collate(good) if good else None, bad)


def allowed_unreadable(total: int, max_bad_fraction: float) -> int:
    """How many of ``total`` images may be unreadable: ``floor(fraction * total)``, at least 1 when
    the fraction is positive; 0 when it is 0."""
    fraction = float(max_bad_fraction)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"data.max_bad_fraction must be between 0 and 1, got {max_bad_fraction}")
    return 0 if fraction == 0 else max(1, math.floor(fraction * total))


class SkippingDataLoader(DataLoader):
    """A ``DataLoader`` over a dataset that may return :class:`Unreadable` records (use
    ``collate_fn=collate_readable``): yields only readable batches, logs the unreadable files in
    :data:`SKIPPED`, and raises :class:`UnreadableImagesError` when one pass meets more than
    ``max_bad_fraction`` of its images unreadable."""

    def __init__(self, *args: Any, max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION, **kwargs: Any) -> None:
        kwargs.setdefault("collate_fn", collate_readable)
        super().__init__(*args, **kwargs)
        allowed_unreadable(1, max_bad_fraction)  # checks the range
        self.max_bad_fraction = float(max_bad_fraction)

    def _pass_size(self) -> int:
        sampler = getattr(self.batch_sampler, "sampler", None) or self.sampler
        try:
            return len(sampler)
        except TypeError:
            return len(self.dataset)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        total = self._pass_size()
        allowed = allowed_unreadable(total, self.max_bad_fraction)
        bad = 0
        for item in super().__iter__():
            if not isinstance(item, ReadBatch):  # a collate_fn of the caller's own
                yield item
                continue
            if item.unreadable:
                SKIPPED.record(item.unreadable)
                bad += len(item.unreadable)
                if bad > allowed:
                    raise UnreadableImagesError(
                        f"{bad} of {total} images in one pass are unreadable, more than data.max_bad_fraction="
                        f"{self.max_bad_fraction:g} allows ({allowed}); e.g. {item.unreadable[0].file} "
                        f"({item.unreadable[0].error}). Fix or remove the files, or raise data.max_bad_fraction"
                    )
            if item.batch is not None:
                yield item.batch
