"""What can be explained: tensors, PIL images, image files, folders, globs and the demo photos.

Files are read lazily (a :class:`~torch.utils.data.Dataset` over paths), so folders of any size
stream through a ``DataLoader`` in batches. A file that cannot be read is reported, not raised,
by :func:`iter_batches`: the caller decides whether to skip it (CLI) or fail (Python API).
"""
from __future__ import annotations

import glob as globlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence, Union

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lcam.data.classes import wnid_to_index
from lcam.data.files import UNLABELLED, expand, inside, list_images, read_list_file
from lcam.data.unreadable import describe_error, try_read
from lcam.runtime.io import InputError

#: ``inputs="demo"``: the photos bundled with scikit-image / scikit-learn
DEMO = "demo"
_GLOB_CHARS = set("*?[")

ImageSource = Union[Image.Image, str, os.PathLike]
Images = Union[Tensor, ImageSource, Sequence[ImageSource], Mapping[str, ImageSource]]

__all__ = ["DEMO", "ExplainDataset", "ImageSource", "Images", "InputError", "InputItem", "apply_labels", "collect_inputs",
           "group_by_shape", "iter_batches", "tensor_items"]


@dataclass
class InputItem:
    """One image to explain.

    Attributes:
        name: display name and output-file stem; for files inside a folder, the path relative to
            that folder without its suffix (``"sub/cat"``), so outputs mirror the input tree.
        source: an in-memory PIL image, or the file to read.
        label: ground-truth class id, or -1 when unknown.
    """

    name: str
    source: Image.Image | Path
    label: int = UNLABELLED

    @property
    def file(self) -> str:
        """The file path, or ``<name>`` for an in-memory image."""
        return str(self.source) if isinstance(self.source, Path) else f"<{self.name}>"


def _is_glob(text: str) -> bool:
    return any(c in text for c in _GLOB_CHARS)


def _stem(rel: Path) -> str:
    return rel.with_suffix("").as_posix() if rel.suffix else rel.as_posix()


def _wnid_label(path: Path) -> int:
    """The ImageNet class of a file in a synset folder (``n02123045/x.jpg``), else -1."""
    return wnid_to_index().get(path.parent.name, UNLABELLED)


def _expand_one(source: ImageSource, index: int, exclude: Sequence[Path]) -> list[InputItem]:
    if isinstance(source, Image.Image):
        name = Path(getattr(source, "filename", "") or f"image{index}").stem
        return [InputItem(name, source)]
    text = str(expand(source))
    if text == DEMO and not Path(text).exists():
        from lcam.data.demo import demo_photos

        return [InputItem(name, img) for name, img in demo_photos()]
    path = Path(text)
    if path.is_dir():
        return [InputItem(_stem(f.relative_to(path)), f, _wnid_label(f)) for f in list_images(path, images_only=False, exclude=exclude)]
    if path.is_file():
        return [InputItem(path.stem, path, _wnid_label(path))]
    if _is_glob(text):
        matches = sorted(Path(m) for m in globlib.glob(text, recursive=True))
        files = [m for m in matches if m.is_file() and not any(inside(m, e) for e in exclude)]
        base = Path(os.path.commonpath([str(f.parent) for f in files])) if files else Path(".")
        return [InputItem(_stem(f.relative_to(base)), f, _wnid_label(f)) for f in files]
    raise InputError(f"Input not found: '{source}' is neither an image file, a folder, a glob pattern nor '{DEMO}'")


def _named_item(name: str, source: Any) -> InputItem:
    if isinstance(source, Image.Image):
        return InputItem(name, source)
    path = expand(source)
    if not path.is_file():
        raise InputError(f"Input not found: '{source}' (for '{name}') is not a file")
    return InputItem(name, path, _wnid_label(path))


def _unique(items: list[InputItem]) -> list[InputItem]:
    seen: dict[str, int] = {}
    for item in items:
        n = seen.get(item.name, 0)
        seen[item.name] = n + 1
        if n:
            item.name = f"{item.name}_{n}"
    return items


def collect_inputs(inputs: ImageSource | Sequence[ImageSource] | Mapping[str, ImageSource], labels: Mapping[str, int] | str | os.PathLike | None = None,
                   exclude: Sequence[str | os.PathLike] = ()) -> list[InputItem]:
    """Expand inputs into the list of images to explain (files are not opened here).

    Args:
        inputs: a PIL image, an image file, a folder (every non-hidden file below it, recursively;
            files that are not images are reported as failed later), a glob pattern (``"a/*.jpg"``,
            ``"a/**/*.png"``), ``"demo"`` (the bundled photos), a list of these, or a mapping
            ``name -> PIL image or file`` (names used in outputs).
        labels: ground truth for the misclassification view: a mapping ``name -> class id`` (names as
            in :attr:`InputItem.name`, or file names), or a list file of ``name label`` lines (the
            ImageNet/L-CAM format). Files in ImageNet synset folders (``n02123045/x.jpg``) are
            labelled from the folder name anyway.
        exclude: folders whose files are never inputs (e.g. the output folder).

    Raises:
        InputError: nothing to explain, or an input that does not exist (one line each).
    """
    if isinstance(inputs, Mapping):  # {name: PIL image or file}
        named = [_named_item(str(k), v) for k, v in inputs.items()]
        if not named:
            raise InputError("No inputs given: the mapping of images is empty")
        if labels is not None:
            apply_labels(named, labels)
        return _unique(named)
    sources: list[Any] = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    if not sources:
        raise InputError("No inputs given: pass image files, a folder, a glob pattern or 'demo'")
    ex = [expand(e) for e in exclude]
    if labels is not None and not isinstance(labels, Mapping):
        ex.append(expand(labels))
    ex_dirs = [e for e in ex if e.is_dir()]
    ex_files = {e.resolve() for e in ex if e.is_file()}
    items: list[InputItem] = []
    for i, src in enumerate(sources):
        items += _expand_one(src, i, ex_dirs)
    items = [it for it in items if not (isinstance(it.source, Path) and it.source.resolve() in ex_files)]
    if not items:
        shown = ", ".join(str(s) for s in sources[:3]) + (" ..." if len(sources) > 3 else "")
        raise InputError(f"No images to explain in {shown}: give image files, a folder with images, a glob pattern or 'demo'")
    if labels is not None:
        apply_labels(items, labels)
    return _unique(items)


def apply_labels(items: Sequence[InputItem], labels: Mapping[str, int] | str | os.PathLike) -> None:
    """Set :attr:`InputItem.label` from a mapping or a list file (matched by relative path, file name or stem)."""
    table = dict(labels) if isinstance(labels, Mapping) else dict(read_list_file(labels))
    for item in items:
        keys = [item.name]
        if isinstance(item.source, Path):
            keys += [item.source.name, item.source.as_posix()]
        for key in keys:
            if key in table:
                item.label = int(table[key])
                break
        else:
            stem_matches = [v for k, v in table.items() if Path(k).with_suffix("").as_posix() == item.name]
            if stem_matches:
                item.label = int(stem_matches[0])


class ExplainDataset(Dataset):
    """``dataset[i] -> (i, image (3, H, W) in [0, 1] or None, error message or "")``; never raises on bad files."""

    def __init__(self, items: Sequence[InputItem], transform: Callable[[Image.Image], Tensor]) -> None:
        self.items = list(items)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, Tensor | None, str]:
        img, error = try_read(self.items[index].source)  # shared with training/evaluation (lcam.data.unreadable)
        if img is None:
            return index, None, error
        try:
            return index, self.transform(img), ""
        except Exception as err:  # noqa: BLE001 - reported to the caller, one line
            return index, None, describe_error(err)


def tensor_items(images: Tensor) -> tuple[Tensor, list[InputItem]]:
    """A ``(B, 3, H, W)`` / ``(3, H, W)`` tensor in [0, 1] (or uint8) and its items ``image0``, ``image1``..., checked."""
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4 or images.shape[1] != 3:
        raise InputError(f"An image tensor must be (B, 3, H, W) or (3, H, W), got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        images = images.float() / 255.0
    if not images.is_floating_point():
        raise InputError(f"An image tensor must be float in [0, 1] (or uint8), got {images.dtype}")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise InputError(f"Image tensors must be in [0, 1], got values in [{lo:.3g}, {hi:.3g}]: pass unnormalised images "
                         "(the backbone normalises them)")
    return images, [InputItem(f"image{i}", Image.new("RGB", (1, 1))) for i in range(images.shape[0])]


def _keep_list(batch: list) -> list:
    return batch


def iter_batches(items: Sequence[InputItem], transform: Callable[[Image.Image], Tensor], batch_size: int = 16,
                 num_workers: int = 0) -> Iterator[tuple[list[tuple[int, Tensor]], list[tuple[int, str]]]]:
    """Read and transform images in batches (workers in parallel when ``num_workers > 0``).

    Yields:
        ``(loaded, failed)`` per batch: ``loaded`` = ``[(item index, image (3, H, W)), ...]``,
        ``failed`` = ``[(item index, error message), ...]``.
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    dataset = ExplainDataset(items, transform)
    workers = max(0, int(num_workers)) if len(dataset) > batch_size else 0
    loader = DataLoader(dataset, batch_size=int(batch_size), shuffle=False, num_workers=workers, collate_fn=_keep_list,
                        persistent_workers=False)
    for batch in loader:
        loaded = [(i, x) for i, x, err in batch if x is not None]
        failed = [(i, err) for i, x, err in batch if x is None]
        yield loaded, failed


def group_by_shape(loaded: Sequence[tuple[int, Tensor]]) -> list[tuple[list[int], Tensor]]:
    """Stack images of equal size: ``[(item indices, (B, 3, H, W)), ...]`` in first-seen order."""
    groups: dict[tuple[int, ...], list[tuple[int, Tensor]]] = {}
    for i, x in loaded:
        groups.setdefault(tuple(x.shape), []).append((i, x))
    return [([i for i, _ in g], torch.stack([x for _, x in g])) for g in groups.values()]
