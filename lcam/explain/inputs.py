"""What can be explained: tensors, PIL images, image files, folders, globs and the demo photos.

Files are read lazily (a :class:`~torch.utils.data.Dataset` over paths), so folders of any size
stream through a ``DataLoader`` in batches. A file that cannot be read is reported, not raised,
by :func:`iter_batches`: the caller decides whether to skip it (CLI) or fail (Python API).
"""
from __future__ import annotations

import glob as globlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence, Union

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from lcam.io import load_image

#: ``inputs="demo"``: the photos bundled with scikit-image / scikit-learn
DEMO = "demo"
UNLABELLED = -1
_GLOB_CHARS = set("*?[")
_INTERPOLATIONS = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC,
                   "nearest": T.InterpolationMode.NEAREST}

ImageSource = Union[Image.Image, str, os.PathLike]
Images = Union[Tensor, ImageSource, Sequence[ImageSource], Mapping[str, ImageSource]]


class InputError(ValueError):
    """Bad user input (no images, bad class id, unknown method...); the message is one line."""


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


def make_transform(resize: int | None = 256, crop: int | None = 224, interpolation: str | None = "bilinear") -> Callable[[Image.Image], Tensor]:
    """PIL image -> ``(3, H, W)`` tensor in [0, 1].

    Args:
        resize: shorter side after resizing (``None``: keep the image's size).
        crop: side of the centre crop (``None``: keep the whole image).
        interpolation: ``bilinear``, ``bicubic`` or ``nearest`` (the backbone's own, from its spec).
    """
    mode = _INTERPOLATIONS.get(interpolation or "bilinear")
    if mode is None:
        raise InputError(f"interpolation must be one of {sorted(_INTERPOLATIONS)}, got '{interpolation}'")
    steps: list[Any] = []
    if resize:
        steps.append(T.Resize(int(resize), interpolation=mode, antialias=True))
    if crop:
        steps.append(T.CenterCrop(int(crop)))
    return T.Compose([*steps, T.ToTensor()])


def _is_glob(text: str) -> bool:
    return any(c in text for c in _GLOB_CHARS)


def _visible_files(root: Path, exclude: Sequence[Path]) -> list[Path]:
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).parts
        if any(part.startswith(".") for part in rel) or not p.is_file():
            continue
        if any(_inside(p, e) for e in exclude):
            continue
        out.append(p)
    return out


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _stem(rel: Path) -> str:
    return rel.with_suffix("").as_posix() if rel.suffix else rel.as_posix()


@lru_cache(maxsize=1)
def _wnids() -> dict[str, int]:
    from lcam.data.datasets import wnid_to_index

    return wnid_to_index()


def _wnid_label(path: Path) -> int:
    """The ImageNet class of a file in a synset folder (``n02123045/x.jpg``), else -1."""
    return _wnids().get(path.parent.name, UNLABELLED)


def _expand_one(source: ImageSource, index: int, exclude: Sequence[Path]) -> list[InputItem]:
    if isinstance(source, Image.Image):
        name = Path(getattr(source, "filename", "") or f"image{index}").stem
        return [InputItem(name, source)]
    text = os.path.expanduser(str(source))
    if text == DEMO and not Path(text).exists():
        from lcam.data.demo import demo_photos

        return [InputItem(name, img) for name, img in demo_photos()]
    path = Path(text)
    if path.is_dir():
        return [InputItem(_stem(f.relative_to(path)), f, _wnid_label(f)) for f in _visible_files(path, exclude)]
    if path.is_file():
        return [InputItem(path.stem, path, _wnid_label(path))]
    if _is_glob(text):
        matches = sorted(Path(m) for m in globlib.glob(text, recursive=True))
        files = [m for m in matches if m.is_file() and not any(_inside(m, e) for e in exclude)]
        base = Path(os.path.commonpath([str(f.parent) for f in files])) if files else Path(".")
        return [InputItem(_stem(f.relative_to(base)), f, _wnid_label(f)) for f in files]
    raise InputError(f"Input not found: '{source}' is neither an image file, a folder, a glob pattern nor '{DEMO}'")


def _named_item(name: str, source: Any) -> InputItem:
    if isinstance(source, Image.Image):
        return InputItem(name, source)
    path = Path(os.path.expanduser(str(source)))
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
    ex = [Path(os.path.expanduser(str(e))) for e in exclude]
    if labels is not None and not isinstance(labels, Mapping):
        ex.append(Path(os.path.expanduser(str(labels))))
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


def read_label_file(path: str | os.PathLike) -> dict[str, int]:
    """A list file of ``name label`` lines (blank lines and ``#`` comments ignored) -> mapping."""
    p = Path(os.path.expanduser(str(path)))
    if not p.is_file():
        raise InputError(f"Label file not found: {p} (expected lines 'name label')")
    out: dict[str, int] = {}
    for n, line in enumerate(p.read_text().splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise InputError(f"{p}:{n}: expected 'name label' (label an integer class id), got '{line.strip()}'")
        out[parts[0]] = int(parts[1])
    return out


def apply_labels(items: Sequence[InputItem], labels: Mapping[str, int] | str | os.PathLike) -> None:
    """Set :attr:`InputItem.label` from a mapping or a list file (matched by relative path, file name or stem)."""
    table = dict(labels) if isinstance(labels, Mapping) else read_label_file(labels)
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
        item = self.items[index]
        try:
            img = item.source if isinstance(item.source, Image.Image) else load_image(item.source)
            return index, self.transform(img), ""
        except Exception as err:  # noqa: BLE001 - reported to the caller, one line
            message = " ".join(str(err).split()) or type(err).__name__
            return index, None, f"{type(err).__name__}: {message}"


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
