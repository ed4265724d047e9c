"""Datasets of image files with optional labels, and scanners for the supported layouts.

Samples are ``(image, label)`` with ``image`` ``(3, H, W)`` in [0, 1] and ``label`` the ImageNet
class id, or ``-1`` when unknown (L-CAM then uses the classifier's own prediction).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from lcam.data.classes import imagenet_synsets, wnid_to_index  # noqa: F401 - re-exported (one place: lcam.data.classes)
from lcam.data.files import list_images  # noqa: F401 - re-exported (one place: lcam.data.files)
from lcam.data.files import read_list_file as read_name_label_file
from lcam.data.unreadable import Unreadable, try_read

UNLABELLED = -1


class DataNotFoundError(FileNotFoundError):
    """A dataset path is missing; the message names it and the config key that sets it."""


def require_dir(path: str | os.PathLike, key: str) -> Path:
    p = Path(os.path.expanduser(str(path)))
    if not p.is_dir():
        raise DataNotFoundError(f"Dataset folder not found: {p}. Set it with {key}=/path/to/folder")
    return p


def scan_synset_folders(root: Path) -> tuple[list[Path], list[int]]:
    """``root/<wnid>/*.JPEG`` -> files and ImageNet class ids (unknown folder names -> -1)."""
    index = wnid_to_index()
    files: list[Path] = []
    labels: list[int] = []
    for sub in sorted(d for d in root.iterdir() if d.is_dir()):
        imgs = list_images(sub)
        files += imgs
        labels += [index.get(sub.name, UNLABELLED)] * len(imgs)
    return files, labels


def read_list_file(list_file: Path, root: Path) -> tuple[list[Path], list[int]]:
    """Lines ``name label`` (the L-CAM / ILSVRC list format) -> files under ``root`` and labels.

    Blank lines and lines starting with ``#`` are ignored; a line without a label gets -1.
    """
    rows = read_name_label_file(list_file)  # the one list-file reader (lcam.data.files)
    files, labels = [root / name for name, _ in rows], [label for _, label in rows]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise DataNotFoundError(f"{len(missing)} file(s) of {list_file} are missing under {root}, e.g. {missing[0]}")
    return files, labels


def scan_folder(root: Path, list_file: str | os.PathLike | None = None) -> tuple[list[Path], list[int]]:
    """Files and labels of a folder: a list file if given; synset sub-folders if all are wnids;
    otherwise every image under ``root`` unlabelled."""
    if list_file:
        lf = Path(os.path.expanduser(str(list_file)))
        if not lf.is_file():
            raise DataNotFoundError(f"List file not found: {lf}. Set it with data.val_list=/path/to/list.txt (lines 'name label')")
        return read_list_file(lf, root)
    subdirs = [d for d in root.iterdir() if d.is_dir()]
    if subdirs and all(d.name in wnid_to_index() for d in subdirs):
        return scan_synset_folders(root)
    files = list_images(root)
    return files, [UNLABELLED] * len(files)


class ImageListDataset(Dataset):
    """Images from files (or in-memory PIL images) with labels.

    ``__getitem__`` accepts an index or ``(index, seed)``: with a seed, the random transform
    is drawn from a generator seeded with it, so augmentations do not depend on worker
    layout or on how many batches ran before (exact resume).

    With ``skip_unreadable=True`` a file that cannot be read gives an
    :class:`~lcam.data.unreadable.Unreadable` record instead of a sample (for
    :class:`~lcam.data.unreadable.SkippingDataLoader`); otherwise it raises.
    """

    def __init__(self, items: Sequence[Path | Image.Image], labels: Sequence[int] | None,
                 transform: Callable[[Image.Image], Tensor], names: Sequence[str] | None = None,
                 skip_unreadable: bool = False) -> None:
        if labels is not None and len(labels) != len(items):
            raise ValueError("items and labels differ in length")
        self.items = list(items)
        self.labels = list(labels) if labels is not None else [UNLABELLED] * len(self.items)
        self.transform = transform
        self.names = list(names) if names is not None else [getattr(i, "name", str(k)) for k, i in enumerate(self.items)]
        self.skip_unreadable = bool(skip_unreadable)

    def __len__(self) -> int:
        return len(self.items)

    def image(self, index: int) -> Image.Image:
        """The RGB image of ``index``; raises naming the file when it cannot be read."""
        img, error = try_read(self.items[index])
        if img is None:
            raise RuntimeError(f"Cannot read image {self.items[index]}: {error}. Remove or fix the file")
        return img

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Tensor, int] | Unreadable:
        index, seed = key if isinstance(key, tuple) else (key, None)
        if self.skip_unreadable:
            img, error = try_read(self.items[index])
            if img is None:
                return Unreadable(index, str(self.items[index]), error)
        else:
            img = self.image(index)
        if seed is None:
            x = self.transform(img)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                x = self.transform(img)
        return x, self.labels[index]


class EpochSeededSampler(Sampler):
    """Shuffles with a generator seeded by ``(seed, epoch)`` and yields ``(index, sample_seed)``.

    Lightning calls :meth:`set_epoch` each epoch, so epoch ``e`` has the same order and the same
    augmentations whether the run went straight through or was resumed.
    """

    def __init__(self, num_samples: int, seed: int = 0, shuffle: bool = True) -> None:
        self.num_samples, self.seed, self.shuffle, self.epoch = num_samples, int(seed), shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.num_samples, generator=g) if self.shuffle else torch.arange(self.num_samples)
        seeds = torch.randint(0, 2**31 - 1, (self.num_samples,), generator=g)
        for i in order.tolist():
            yield i, int(seeds[i])
