"""Bounding boxes for the localisation metrics: a boxes file, and boxes that follow an image's transform.

A boxes file has one line per annotated object, ``name x1 y1 x2 y2``, in pixels of the *stored*
image (``name`` = the image's file name; ``#`` comments and blank lines are skipped)::

    ILSVRC2012_val_00000347.JPEG 9.1 105.9 50.4 176.8

A line that does not parse, or whose box lies outside its image, gets one warning naming the file,
the line and the fix, and that image is left out of the localisation columns (status
``bad boxes``); an image without any line gets ``no boxes``. Other metrics still score both.

Boxes follow the image through the evaluation transform (``Resize`` of the shorter side or to a
fixed size, then ``CenterCrop``, as :func:`lcam.data.transforms.eval_transform`), and are clipped
to the crop; a box cropped away entirely is dropped.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import transforms as T

#: per-image status in :class:`BoxedDataset`
OK, NO_BOXES, BAD_BOXES, UNREADABLE = "ok", "no boxes", "bad boxes", "unreadable"


def pad_boxes(boxes: Sequence[Tensor | Sequence[Sequence[float]]], device: torch.device | None = None) -> Tensor:
    """Per-image boxes (``n_i x 4`` each, ``n_i`` may be 0) -> ``(B, K, 4)`` float, NaN-padded, ``K = max(1, n_i)``."""
    rows = [torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4) for b in boxes]
    k = max([1, *(r.shape[0] for r in rows)])
    out = torch.full((len(rows), k, 4), math.nan)
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
    return out.to(device) if device is not None else out


class BoxWarning(UserWarning):
    """A boxes-file line that was left out."""


@dataclass
class BoxFile:
    """Boxes of a boxes file: ``boxes[name]`` = list of ``(x1, y1, x2, y2)`` and the 1-based line of each."""

    path: Path
    boxes: dict[str, list[tuple[float, float, float, float]]] = field(default_factory=dict)
    lines: dict[str, list[int]] = field(default_factory=dict)
    bad: set[str] = field(default_factory=set)  # names with a line that did not parse

    def __len__(self) -> int:
        return sum(len(v) for v in self.boxes.values())


def _warn(path: Path, lineno: int, what: str) -> None:
    warnings.warn(f"{path}:{lineno}: {what}; this image is left out of the localisation columns "
                  "(fix the line as 'name x1 y1 x2 y2' in pixels of the stored image)", BoxWarning, stacklevel=3)


def read_boxes(path: str | os.PathLike) -> BoxFile:
    """Parse a boxes file (see the module docstring); one :class:`BoxWarning` per bad line.

    Raises:
        FileNotFoundError: the file is missing (the message says how to set it).
    """
    p = Path(os.path.expanduser(str(path)))
    if not p.is_file():
        raise FileNotFoundError(f"Boxes file not found: {p}. Give boxes=/path/to/boxes.txt (lines 'name x1 y1 x2 y2')")
    out = BoxFile(p)
    for n, raw in enumerate(p.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        name = parts[0]
        try:
            if len(parts) != 5:
                raise ValueError(f"expected 5 fields, got {len(parts)}")
            x1, y1, x2, y2 = (float(v) for v in parts[1:])
        except ValueError as err:
            out.bad.add(name)
            _warn(p, n, f"cannot parse {line!r} ({err})")
            continue
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or not (x2 > x1 and y2 > y1):
            out.bad.add(name)
            _warn(p, n, f"box {x1:g} {y1:g} {x2:g} {y2:g} is empty or not finite (need x2 > x1 and y2 > y1)")
            continue
        out.boxes.setdefault(name, []).append((x1, y1, x2, y2))
        out.lines.setdefault(name, []).append(n)
    return out


# -- geometry --------------------------------------------------------------------------------------
def _resized_size(size: Any, width: int, height: int, max_size: int | None) -> tuple[int, int]:
    """torchvision ``Resize``'s output ``(width, height)`` for an input of ``(width, height)``."""
    if isinstance(size, int) or (isinstance(size, Sequence) and len(size) == 1):
        s = size if isinstance(size, int) else size[0]
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = s, int(s * long / short)
        if max_size is not None and new_long > max_size:
            new_short, new_long = int(max_size * new_short / new_long), max_size
        return (new_short, new_long) if width <= height else (new_long, new_short)
    h, w = size
    return int(w), int(h)


def _crop_offsets(crop: Any, width: int, height: int) -> tuple[int, int, int, int]:
    """torchvision ``CenterCrop``: ``(left, top, crop_w, crop_h)``; negative offsets where it pads."""
    ch, cw = (crop, crop) if isinstance(crop, int) else ((crop[0], crop[0]) if len(crop) == 1 else (crop[0], crop[1]))
    pad_l, pad_r = ((cw - width) // 2, (cw - width + 1) // 2) if cw > width else (0, 0)
    pad_t, pad_b = ((ch - height) // 2, (ch - height + 1) // 2) if ch > height else (0, 0)
    w, h = width + pad_l + pad_r, height + pad_t + pad_b
    top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
    return left - pad_l, top - pad_t, int(cw), int(ch)


#: transforms that do not move pixels
_NEUTRAL = (T.ToTensor, T.Normalize, T.ConvertImageDtype, T.PILToTensor, T.ToPILImage)


def follow_transform(boxes: Tensor, image_size: tuple[int, int], transform: Callable | None) -> tuple[Tensor, tuple[int, int]]:
    """Move boxes ``(n, 4)`` of an image of ``image_size = (width, height)`` through ``transform``.

    Supports ``T.Compose`` of ``Resize``, ``CenterCrop`` and transforms that do not move pixels;
    boxes are clipped to the final image and boxes cropped away are dropped.

    Returns:
        ``(boxes (m, 4), (width, height))`` in the transformed image's pixels.

    Raises:
        ValueError: a transform that boxes cannot follow (random crops, flips ...).
    """
    steps = transform.transforms if isinstance(transform, T.Compose) else ([] if transform is None else [transform])
    b = boxes.clone().float().reshape(-1, 4)
    w, h = image_size
    for step in steps:
        if isinstance(step, T.Resize):
            nw, nh = _resized_size(step.size, w, h, step.max_size)
            b = b * torch.tensor([nw / w, nh / h, nw / w, nh / h])
            w, h = nw, nh
        elif isinstance(step, T.CenterCrop):
            left, top, cw, ch = _crop_offsets(step.size, w, h)
            b = b - torch.tensor([left, top, left, top], dtype=b.dtype)
            w, h = cw, ch
        elif not isinstance(step, _NEUTRAL):
            raise ValueError(f"Boxes cannot follow the transform {type(step).__name__}; localisation metrics need a "
                             "deterministic Resize/CenterCrop evaluation transform (lcam.data.transforms.eval_transform)")
    b[:, 0::2] = b[:, 0::2].clamp(0, w)
    b[:, 1::2] = b[:, 1::2].clamp(0, h)
    keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    return b[keep], (w, h)


def transform_scale(image_size: tuple[int, int], transform: Callable | None) -> float:
    """Transformed-image pixels per stored-image pixel: the product of the ``Resize`` factors of
    :func:`follow_transform` (crops and neutral steps keep the scale). A resize that changes the
    aspect ratio scales x and y differently; the geometric mean of the two is returned, so a
    distance of ``d`` stored pixels becomes about ``d * scale`` transformed pixels in any direction.

    Args:
        image_size: ``(width, height)`` of the stored image.
        transform: the evaluation transform.
    """
    steps = transform.transforms if isinstance(transform, T.Compose) else ([] if transform is None else [transform])
    w, h = image_size
    scale = 1.0
    for step in steps:
        if isinstance(step, T.Resize):
            nw, nh = _resized_size(step.size, w, h, step.max_size)
            scale *= math.sqrt((nw / w) * (nh / h))
            w, h = nw, nh
    return scale


def image_size(item: Any) -> tuple[int, int]:
    """``(width, height)`` of a PIL image or an image file (reads the header only)."""
    if isinstance(item, Image.Image):
        return item.size
    with Image.open(item) as im:
        return im.size


class BoxedDataset(Dataset):
    """An image dataset whose samples gain their boxes: ``(image, label, boxes (K, 4))``.

    ``boxes`` are in the pixels of the transformed image, NaN-padded to the same ``K`` for every
    sample (so the default collate stacks them to ``(B, K, 4)``, the localisation metrics'
    input); an image with status other than ``ok`` has only NaN rows.

    Args:
        dataset: a dataset with ``items`` (files or PIL images), ``names`` (file names, matched
            against the boxes file) and a deterministic ``transform`` (see :func:`follow_transform`),
            e.g. :class:`lcam.data.datasets.ImageListDataset`.
        boxes: a :class:`BoxFile` or the path of a boxes file.

    Attributes:
        status: per-sample ``ok``, ``no boxes``, ``bad boxes`` or ``unreadable`` (left to the data loader).
        scales: ``(N,)`` transformed-image pixels per stored-image pixel (:func:`transform_scale`;
            NaN where the image has no usable boxes), to measure a tolerance in stored pixels.
    """

    def __init__(self, dataset: Any, boxes: BoxFile | str | os.PathLike) -> None:
        self.dataset = dataset
        self.box_file = boxes if isinstance(boxes, BoxFile) else read_boxes(boxes)
        for attr in ("items", "names", "transform"):
            if not hasattr(dataset, attr):
                raise TypeError(f"BoxedDataset needs a dataset with '{attr}' (e.g. lcam.data.ImageListDataset), "
                                f"got {type(dataset).__name__}")
        per_image: list[Tensor] = []
        self.status: list[str] = []
        scales = [math.nan] * len(dataset.items)
        for position, (item, name) in enumerate(zip(dataset.items, dataset.names)):
            key = Path(str(name)).name
            rows = self.box_file.boxes.get(key, [])
            if key in self.box_file.bad:
                self.status.append(BAD_BOXES)
                per_image.append(torch.zeros(0, 4))
                continue
            if not rows:
                self.status.append(NO_BOXES)
                per_image.append(torch.zeros(0, 4))
                continue
            try:
                w, h = image_size(item)
            except Exception:  # noqa: BLE001 - the data loader reports and skips unreadable images
                self.status.append(UNREADABLE)
                per_image.append(torch.zeros(0, 4))
                continue
            outside = [(n, r) for n, r in zip(self.box_file.lines[key], rows)
                       if r[0] < -0.5 or r[1] < -0.5 or r[2] > w + 0.5 or r[3] > h + 0.5]
            for n, r in outside:
                _warn(self.box_file.path, n, f"box {' '.join(f'{v:g}' for v in r)} lies outside the {w}x{h} image {key}")
            if outside:
                self.status.append(BAD_BOXES)
                per_image.append(torch.zeros(0, 4))
                continue
            moved, _ = follow_transform(torch.tensor(rows), (w, h), dataset.transform)
            self.status.append(OK if moved.shape[0] else NO_BOXES)
            per_image.append(moved)
            if moved.shape[0]:
                scales[position] = transform_scale((w, h), dataset.transform)
        self.boxes = pad_boxes(per_image)  # (N, K, 4)
        self.scales = torch.tensor(scales, dtype=torch.float64)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Any) -> Any:
        sample = self.dataset[key]
        if not isinstance(sample, tuple):  # e.g. an unreadable-image record: the data loader skips it
            return sample
        index = key[0] if isinstance(key, tuple) else key
        return sample[0], sample[1], self.boxes[index]

    def counts(self) -> dict[str, int]:
        """Images per status, e.g. ``{"ok": 1290, "no boxes": 10}``."""
        out: dict[str, int] = {}
        for s in self.status:
            out[s] = out.get(s, 0) + 1
        return out
