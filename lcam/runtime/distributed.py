"""Validation under DDP that counts every sample exactly once.

Lightning gives each of the ``W`` processes a ``DistributedSampler`` shard of the validation set,
and that sampler pads the set to a multiple of ``W`` by repeating its first samples: 9 images on
2 processes become 10, one image counted twice (AD/IC of 9 photos become multiples of 10%).
The padding always sits at the end of the shards: position ``p`` of rank ``r``'s shard is
position ``r + p W`` of the padded order, and positions ``>= N`` repeat earlier samples. So rank
``r`` holds ``len(range(r, N, W))`` real samples followed by padding, whatever the shuffling;
:func:`real_samples` says how many, and the module drops the rest of the epoch's batches.
"""
from __future__ import annotations

from typing import Any

from torch.utils.data import DataLoader, DistributedSampler, Sampler


def real_samples(sampler: Sampler | None) -> int | None:
    """How many of the samples ``sampler`` yields to this process are real (not padding).

    Args:
        sampler: a validation DataLoader's sampler.

    Returns:
        The count for a padding ``DistributedSampler`` (or a subclass such as Lightning's
        ``DistributedSamplerWrapper``), None when nothing is padded (no DDP, ``drop_last``, a set
        that splits evenly, an unpadded sampler).
    """
    if not isinstance(sampler, DistributedSampler) or sampler.drop_last:
        return None
    real = len(range(sampler.rank, len(sampler.dataset), sampler.num_replicas))  # type: ignore[arg-type]
    return real if real < sampler.num_samples else None


def val_sampler(trainer: Any) -> Sampler | None:
    """The sampler of the trainer's (single) validation DataLoader, as the loop uses it, else None."""
    loaders = getattr(trainer, "val_dataloaders", None) if trainer is not None else None
    return loaders.sampler if isinstance(loaders, DataLoader) else None


class RealSampleCounter:
    """Per-epoch budget of real samples for this process; :meth:`take` says how many of a batch to keep."""

    def __init__(self, real: int | None) -> None:
        self.left = real

    def take(self, batch_size: int) -> int:
        """The first ``n`` samples of the next batch are real (all of them when nothing is padded)."""
        if self.left is None:
            return batch_size
        n = max(0, min(batch_size, self.left))
        self.left -= n
        return n
