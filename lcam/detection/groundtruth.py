"""Ground-truth boxes for detection metrics and analyses: a list file of ``name x1 y1 x2 y2 [class]`` lines.

``name`` is matched against an input's name (relative path without suffix), its file name or its
stem; boxes are in the file's pixels; ``class`` is a class id or a name of the detector (names with
spaces: use the id), or absent (then the box matches a detection of any class). Lines starting
with ``#`` and blank lines are skipped.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from lcam.detection.base import Detector

#: the class of a ground-truth box given without one: it matches detections of any class
ANY_CLASS = -1


class GroundTruth:
    """Boxes per image name; :meth:`get` returns them in an explained image's working pixels."""

    def __init__(self, boxes: dict[str, list[tuple[list[float], int]]]) -> None:
        self.boxes = boxes

    def __len__(self) -> int:
        return sum(len(v) for v in self.boxes.values())

    def lookup(self, name: str, file: str | None = None) -> list[tuple[list[float], int]]:
        keys = [name, Path(name).name]
        if file and not file.startswith("<"):
            keys += [Path(file).name, Path(file).stem, Path(file).as_posix()]
        for key in keys:
            if key in self.boxes:
                return self.boxes[key]
        return []

    def get(self, item, scale: tuple[float, float] = (1.0, 1.0)) -> tuple[Tensor, Tensor]:
        """``(boxes (G, 4), labels (G,))`` of ``item`` (an :class:`~lcam.explain.inputs.InputItem`)
        in working pixels (file pixels divided by ``scale``); labels ``-1`` match any class."""
        found = self.lookup(item.name, item.file)
        sx, sy = scale
        if not found:
            return torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)
        boxes = torch.tensor([b for b, _ in found], dtype=torch.float32) / torch.tensor([sx, sy, sx, sy])
        return boxes, torch.tensor([c for _, c in found], dtype=torch.long)


def read_ground_truth(path: str | os.PathLike, detector: Detector | None = None) -> GroundTruth:
    """Read a ``name x1 y1 x2 y2 [class]`` list file (one-line ``ValueError`` naming the bad line)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"Ground-truth list not found: {p}. Give a file of 'name x1 y1 x2 y2 [class]' lines")
    table: dict[str, list[tuple[list[float], int]]] = {}
    for n, raw in enumerate(p.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) < 5:
            raise ValueError(f"{p}:{n}: expected 'name x1 y1 x2 y2 [class]', got {line!r}")
        try:
            box = [float(v) for v in parts[1:5]]
        except ValueError as err:
            raise ValueError(f"{p}:{n}: box coordinates must be numbers, got {parts[1:5]}") from err
        if not (box[0] < box[2] and box[1] < box[3]):
            raise ValueError(f"{p}:{n}: box {box} needs x1 < x2 and y1 < y2")
        cls = ANY_CLASS
        if len(parts) > 5:
            ref = " ".join(parts[5:])
            if detector is not None:
                try:
                    cls = detector.class_index(ref)
                except ValueError as err:
                    raise ValueError(f"{p}:{n}: {err}") from err
            elif ref.lstrip("-").isdigit():
                cls = int(ref)
            else:
                raise ValueError(f"{p}:{n}: class names need the detector; give class ids")
        table.setdefault(parts[0], []).append((box, cls))
    return GroundTruth(table)
