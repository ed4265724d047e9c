"""Which images an evaluation process explains: shards, resume and N processes, each image exactly once.

The evaluated dataset has a fixed order (index ``0 .. N-1``). Three things narrow it down:

* a **shard** (``data.shard=I/N``, ``0 <= I < N``): the images whose index is ``I`` modulo ``N``,
  a disjoint and deterministic ``N``-th of the set (every class is spread over all shards of a
  class-sorted folder); shards merge back with ``python evaluate.py merge=[...]``;
* **resume**: the images that already have a record of the method are left out;
* **processes**: what remains (the method's *to-do* list, fixed by global rank 0 at the start of
  the method and broadcast) is cut into batches of ``batch_size`` consecutive images and the
  batches are dealt out round-robin (batch ``j`` to rank ``j mod world``): no padding, no repeat,
  so every image is explained and counted exactly once on any number of processes (Lightning's
  ``DistributedSampler`` would pad the last batch with repeated images). Dealing whole batches
  keeps every batch's images the same on 1 or N processes, so batch-dependent float rounding
  (convolution kernels chosen by batch size) gives the same numbers to the last bit; a resumed
  method's to-do list is made of whole batches of the first attempt (records are written per
  batch), so it is cut into the same batches again (at the same ``batch_size``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from torch.utils.data import Dataset, Sampler, default_collate

from lcam.data.unreadable import ReadBatch, Unreadable
from lcam.runtime.errors import UserError

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based)."""

    index: int = 0
    count: int = 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def indices(self, n_images: int) -> list[int]:
        """The dataset indices of this shard, ascending."""
        return list(range(self.index, n_images, self.count))


def parse_shard(spec: Any) -> Shard:
    """``None`` -> the whole set; ``"I/N"`` -> :class:`Shard` (``0 <= I < N``), else a message naming ``data.shard``."""
    if spec in (None, "", "null"):
        return Shard()
    m = _SHARD.match(str(spec))
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise UserError(f"data.shard={spec!r} is not I/N with 0 <= I < N (e.g. data.shard=0/4 ... data.shard=3/4, "
                        "or data.shard=$SLURM_ARRAY_TASK_ID/4)")
    return Shard(int(m.group(1)), int(m.group(2)))


def process_rank() -> tuple[int, int]:
    """``(global rank, world size)`` of this process (``(0, 1)`` outside ``torch.distributed``)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class TodoSampler(Sampler):
    """Yields this process's part of the to-do list: its batches ``j = rank, rank + world, ...`` of
    ``batch_size`` consecutive images (set :attr:`todo` before a pass; ``batch_size`` must be the
    loader's, so the loader's batches are these).

    Rank and world size are read when the sampler is used (inside Lightning's test loop, after
    the process group exists), so the same object serves 1 or N processes.
    """

    def __init__(self, todo: Sequence[int] = (), batch_size: int = 1) -> None:
        self.todo = list(todo)
        self.batch_size = int(batch_size)

    def mine(self) -> list[int]:
        rank, world = process_rank()
        b = self.batch_size
        return [i for start in range(rank * b, len(self.todo), world * b) for i in self.todo[start:start + b]]

    def __iter__(self) -> Iterator[int]:
        return iter(self.mine())

    def __len__(self) -> int:
        return len(self.mine())


class EvaluationSamples(Dataset):
    """A dataset's samples as dicts with their index and name (and boxes when given).

    Args:
        dataset: an ``(image, label)`` dataset with ``names`` (e.g. :class:`lcam.data.ImageListDataset`)
            that returns :class:`~lcam.data.unreadable.Unreadable` for files it cannot read.
        boxed: the same dataset wrapped in :class:`lcam.data.boxes.BoxedDataset` (``boxes=``), or None.

    Returns (per item): ``{"image": (3, H, W), "label": int, "index": int, "name": str}`` plus
    ``"boxes"`` ``(K, 4)`` and ``"scale"`` (transformed pixels per stored pixel) with boxes; or the
    :class:`Unreadable` record.
    """

    def __init__(self, dataset: Any, boxed: Any = None) -> None:
        self.dataset = dataset
        self.boxed = boxed
        self.names = [str(n) for n in getattr(dataset, "names", range(len(dataset)))]

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any] | Unreadable:
        sample = self.dataset[index]
        if isinstance(sample, Unreadable):
            return sample
        out = {"image": sample[0], "label": int(sample[1]), "index": int(index), "name": self.names[index]}
        if self.boxed is not None:
            out["boxes"] = self.boxed.boxes[index]
            out["scale"] = float(self.boxed.scales[index])
        return out


def collate_samples(samples: Sequence[Any]) -> ReadBatch:
    """Readable samples -> one dict batch (``images`` ``(B, 3, H, W)``, ``labels``/``indices`` ``(B,)``,
    ``names``, ``boxes`` ``(B, K, 4)``, ``scales`` ``(B,)``), plus the unreadable ones as
    ``unreadable``: ``[(index, file, error), ...]``. The batch is never ``None``, so a batch of
    unreadable images still reaches the evaluator, which records them."""
    bad = [s for s in samples if isinstance(s, Unreadable)]
    good = [s for s in samples if not isinstance(s, Unreadable)]
    batch: dict[str, Any] = {"unreadable": [(u.index, u.file, u.error) for u in bad], "names": [g["name"] for g in good]}
    if good:
        batch["images"] = torch.stack([g["image"] for g in good])
        batch["labels"] = torch.tensor([g["label"] for g in good], dtype=torch.long)
        batch["indices"] = torch.tensor([g["index"] for g in good], dtype=torch.long)
        if "boxes" in good[0]:
            batch["boxes"] = default_collate([g["boxes"] for g in good])
            batch["scales"] = torch.tensor([g["scale"] for g in good], dtype=torch.float64)
    return ReadBatch(batch, bad)
