"""What to explain: the one target parser of the project (Python API, CLI, analysis, explainers).

One meaning everywhere::

    None               each image's top-1 class
    281 / "tiger cat"  that class for every image (an id or a name, case-insensitive)
    "topk"             each image's k most probable classes (k rows per image, most probable first)
    [281, "tabby"]     one target per image (a list of length 1 is used for every image)
    [[281, 285], 967]  an inner list: several classes for that image (one row each)
    [[281, 285]]       several classes for every image
    Box(x1, y1, x2, y2, label)  a box, for detector explainers (D-RISE); a classifier refuses it

A tensor is read the same way: a scalar for every image, ``(B,)`` one per image, ``(B, R)`` R per
image. Out-of-range ids and unknown names are one-line :class:`~lcam.runtime.io.InputError` s that name the
valid range or the closest names.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Sequence, Union

import torch
from torch import Tensor

from lcam.runtime.io import InputError

TOPK = "topk"


@dataclass(frozen=True)
class Box:
    """A box target for detector explainers: corners in pixels of the explained image, and
    optionally the class it should be detected as (id or name)."""

    x1: float
    y1: float
    x2: float
    y2: float
    label: int | str | None = None


ClassRef = Union[int, str]
Target = Union[ClassRef, Box]
Targets = Union[None, ClassRef, Box, Sequence[Any], Tensor]


@dataclass(frozen=True)
class ClassSpace:
    """The classes a model can explain: ``num_classes`` ids, optional display names and synonyms."""

    num_classes: int
    names: Sequence[str] | None = None
    synonyms: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, num_classes: int, names: Sequence[str] | None = None) -> "ClassSpace":
        """The class space of a classifier; the 1000 ImageNet classes also accept synset synonyms."""
        synonyms: dict[str, int] = {}
        if num_classes == 1000 and names is not None:
            from lcam.data.classes import imagenet_synonyms

            synonyms = imagenet_synonyms()
        return cls(int(num_classes), list(names) if names is not None else None, synonyms)

    def index(self, ref: Any) -> int:
        """A class id from an int (or digit string) or a class name, range-checked."""
        n = self.num_classes
        if isinstance(ref, Tensor):
            ref = int(ref)
        if isinstance(ref, str) and not ref.strip().lstrip("-").isdigit():
            key = ref.strip().lower()
            lowered = {c.lower(): i for i, c in enumerate(self.names or [])}
            if key in lowered:
                return lowered[key]
            if key in self.synonyms:
                return self.synonyms[key]
            close = difflib.get_close_matches(key, list(lowered), n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else f"; give a class id 0..{n - 1}"
            raise InputError(f"Unknown class name {ref!r}{hint}")
        if isinstance(ref, bool) or not isinstance(ref, (int, str)) and not hasattr(ref, "__index__"):
            raise InputError(f"A target must be a class id, a class name, 'topk' or a list of them, got {ref!r}")
        value = int(ref)
        if not 0 <= value < n:
            raise InputError(f"Class id {value} out of range: valid class ids are 0..{n - 1}")
        return value


@dataclass
class TargetPlan:
    """Which rows to explain per image.

    kind: ``top1``; ``topk`` (``k`` rows); ``given`` (``rows[i]`` for image ``i``, or ``rows[0]``
    for every image when it has one entry: class ids or boxes); ``label_pred`` (the label where
    known, else the prediction; then the prediction: the misclassification view).
    """

    kind: str = "top1"
    rows: list[list[int | Box]] | None = None
    k: int = 1

    def for_image(self, position: int) -> list[int | Box]:
        """The fixed targets of image ``position`` (``kind == "given"``)."""
        assert self.rows is not None
        return self.rows[0] if len(self.rows) == 1 else self.rows[position]

    def resolve(self, logits: Tensor, positions: Sequence[int], labels: Tensor | None = None) -> list[list[int | Box]]:
        """Targets per image of a batch, best first: ``logits`` ``(B, C)``, ``positions`` the images'
        indices in the whole input, ``labels`` ``(B,)`` (-1 unknown)."""
        pred = logits.argmax(dim=1).tolist()
        if self.kind == "top1":
            return [[p] for p in pred]
        if self.kind == "topk":
            return logits.topk(self.k, dim=1).indices.tolist()
        if self.kind == "label_pred":
            lab = labels.tolist() if labels is not None else [-1] * len(pred)
            return [[lb if lb >= 0 else p, p] for lb, p in zip(lab, pred)]
        return [list(self.for_image(int(pos))) for pos in positions]

    @property
    def has_boxes(self) -> bool:
        return any(isinstance(t, Box) for row in self.rows or [] for t in row)


def _entry(entry: Any, classes: ClassSpace) -> list[int | Box]:
    """One image's targets: a class, a box, or a list of them."""
    if isinstance(entry, Tensor):
        entry = entry.tolist()
    if isinstance(entry, (list, tuple)):
        if not entry:
            raise InputError("An image's list of targets is empty: give at least one class id or name")
        out: list[int | Box] = []
        for target in (_single(e, classes) for e in entry):
            if isinstance(target, Box) or target not in out:  # a class named twice (id and name) is one row
                out.append(target)
        return out
    return [_single(entry, classes)]


def _single(ref: Any, classes: ClassSpace) -> int | Box:
    if isinstance(ref, Box):
        return ref if ref.label is None else Box(ref.x1, ref.y1, ref.x2, ref.y2, classes.index(ref.label))
    if isinstance(ref, (list, tuple)):
        raise InputError("Targets nest at most two levels: [[281, 285], 967] (classes per image)")
    if isinstance(ref, str) and ref.strip().lower() == TOPK:
        raise InputError("'topk' applies to every image: pass targets='topk' (with k=...), not inside a list")
    return classes.index(ref)


def parse_targets(targets: Targets, classes: ClassSpace, num_images: int | None, k: int = 3,
                  boxes: bool = False) -> TargetPlan:
    """Parse any accepted ``targets`` (see the module docstring) into a :class:`TargetPlan`.

    Args:
        classes: the model's classes (range and names).
        num_images: how many images the targets are for (``None``: not known yet; a list must
            then have one entry).
        k: classes per image for ``"topk"``.
        boxes: whether box targets are allowed (detector explainers).

    Raises:
        InputError: a one-line message naming the valid range, choices or the fix.
    """
    if targets is None:
        return TargetPlan("top1")
    if isinstance(targets, str) and targets.strip().lower() == TOPK:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= classes.num_classes:
            raise InputError(f"k must be an integer in 1..{classes.num_classes}, got {k!r}")
        return TargetPlan("topk", k=int(k))
    if isinstance(targets, Tensor):
        targets = targets.item() if targets.ndim == 0 else targets.tolist()
    if isinstance(targets, (list, tuple)):
        entries = list(targets)
        if not entries:
            raise InputError("targets is an empty list: give None (top-1), a class, 'topk' or one target per image")
        if len(entries) != 1 and num_images is not None and len(entries) != num_images:
            raise InputError(f"Got {len(entries)} targets for {num_images} images: a list gives one target per image "
                             f"(or one for all); several classes for every image: [[{', '.join(map(repr, entries[:2]))}]]")
        if len(entries) != 1 and num_images is None:
            raise InputError(f"Got {len(entries)} targets for an unknown number of images: give one per image")
        rows = [_entry(e, classes) for e in entries]
    else:
        rows = [_entry(targets, classes)]
    plan = TargetPlan("given", rows=rows)
    if plan.has_boxes and not boxes:
        raise InputError("Box targets need a detector explainer (lcam.detection); a classifier explains class ids or names")
    return plan


def class_ids(targets: Targets, batch_size: int, classes: ClassSpace, device: torch.device,
              logits: Tensor | None = None) -> Tensor:
    """Exactly one class id per image, ``(B,)`` long on ``device``: the form an explainer call takes
    (``None`` needs ``logits`` ``(B, C)`` and picks each image's top-1 class)."""
    if targets is None:
        if logits is None:
            raise ValueError("targets=None needs the logits of the images to pick the top-1 class")
        return logits.detach().argmax(dim=1).to(device)
    if isinstance(targets, Tensor) and targets.dtype != torch.bool and not targets.is_floating_point() and targets.ndim <= 1:
        t = targets.to(device=device, dtype=torch.long).reshape(-1)  # the fast path of every batched caller
        if t.numel() not in (1, batch_size):
            raise InputError(f"Got {t.numel()} targets for {batch_size} images: a list gives one target per image (or one for all)")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= classes.num_classes):
            bad = int(t[(t < 0) | (t >= classes.num_classes)][0])
            raise InputError(f"Class id {bad} out of range: valid class ids are 0..{classes.num_classes - 1}")
        return t.expand(batch_size).contiguous()
    plan = parse_targets(targets, classes, batch_size)
    if plan.kind != "given" or any(len(r) != 1 for r in plan.rows or []):
        raise InputError("An explainer call takes one class per image; for several classes or 'topk' use lcam.explain(...)")
    ids = [plan.for_image(i)[0] for i in range(batch_size)]
    return torch.tensor(ids, dtype=torch.long, device=device)
