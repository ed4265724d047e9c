"""LightningDataModules: ImageNet folder layout, any image folder, and the offline demo photos.

Paths are checked when the module is built (before any model is loaded), so a missing dataset
stops a run within seconds with the path and the config key that sets it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader

from lcam.data.datasets import (
    DataNotFoundError,
    EpochSeededSampler,
    ImageListDataset,
    require_dir,
    scan_folder,
    scan_synset_folders,
)
from lcam.data.demo import demo_photos
from lcam.data.transforms import eval_transform, train_transform
from lcam.data.unreadable import DEFAULT_MAX_BAD_FRACTION, SkippingDataLoader, allowed_unreadable, collate_readable
from lcam.data.workers import resolve_num_workers

Items = tuple[list[Any], list[int], list[str]]


class ImageDataModule(pl.LightningDataModule):
    """Common loaders and transforms; subclasses say where the images are (:meth:`scan`).

    Args:
        batch_size: images per batch (per process under DDP).
        num_workers, pin_memory, persistent_workers: DataLoader settings (``num_workers=None``:
            ``min(preferred_workers, CPU cores)``).
        resize, crop, interpolation: shorter side, square crop, resize filter.
        hflip: random horizontal flips for training.
        seed: seeds the per-epoch order and augmentation of each sample.
        max_train_samples, max_val_samples: use a seeded random subset of N samples (quick runs).
        max_bad_fraction: unreadable images are skipped with one warning each and reported at the
            end of the run; the run stops only when more than this share of one pass over a
            split (an epoch) is unreadable (see :mod:`lcam.data.unreadable`).
    """

    preferred_workers = 4  # num_workers=None -> min(this, CPU cores)

    def __init__(self, batch_size: int = 64, num_workers: int | None = None, pin_memory: bool = True,
                 persistent_workers: bool = False, resize: int = 256, crop: int = 224,
                 interpolation: str = "bilinear", hflip: bool = True, seed: int = 0,
                 max_train_samples: int | None = None, max_val_samples: int | None = None,
                 max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION) -> None:
        super().__init__()
        allowed_unreadable(1, max_bad_fraction)  # 0 <= fraction <= 1, else a message naming data.max_bad_fraction
        self.max_bad_fraction = float(max_bad_fraction)
        self.batch_size, self.num_workers = int(batch_size), resolve_num_workers(num_workers, self.preferred_workers)
        self.pin_memory, self.persistent_workers = bool(pin_memory), bool(persistent_workers)
        self.resize, self.crop, self.interpolation, self.hflip = int(resize), int(crop), interpolation, hflip
        self.seed = int(seed)
        self.max_train_samples, self.max_val_samples = max_train_samples, max_val_samples
        self.train_set: ImageListDataset | None = None
        self.val_set: ImageListDataset | None = None

    # -- what subclasses provide ---------------------------------------------------------
    def scan_train(self) -> Items:
        """``(items, labels, names)`` of the training split."""
        raise NotImplementedError

    def scan_val(self) -> Items:
        """``(items, labels, names)`` of the validation split."""
        raise NotImplementedError

    # -- Lightning ---------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None:
            items, labels, names = _take(self.scan_train(), self.max_train_samples, "training", self.seed)
            tf = train_transform(self.resize, self.crop, self.interpolation, self.hflip)
            self.train_set = ImageListDataset(items, labels, tf, names, skip_unreadable=True)
        if self.val_set is None:
            items, labels, names = _take(self.scan_val(), self.max_val_samples, "validation", self.seed)
            self.val_set = ImageListDataset(items, labels, eval_transform(self.resize, self.crop, self.interpolation), names,
                                            skip_unreadable=True)

    def _loader(self, dataset: ImageListDataset, sampler: Any = None) -> DataLoader:
        return SkippingDataLoader(dataset, batch_size=self.batch_size, sampler=sampler, shuffle=False,
                                  num_workers=self.num_workers, pin_memory=self.pin_memory and torch.cuda.is_available(),
                                  persistent_workers=self.persistent_workers and self.num_workers > 0,
                                  collate_fn=collate_readable, max_bad_fraction=self.max_bad_fraction)

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None, "call setup('fit') first"
        return self._loader(self.train_set, EpochSeededSampler(len(self.train_set), seed=self.seed))

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None, "call setup() first"
        return self._loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()


def _take(items: Items, limit: int | None, split: str, seed: int = 0) -> Items:
    """All items, or a seeded random subset of ``limit`` items kept in their original order
    (a class-sorted folder still yields every class)."""
    files, labels, names = items
    if not files:
        raise DataNotFoundError(f"The {split} split has no images")
    if limit and limit < len(files):
        keep = sorted(torch.randperm(len(files), generator=torch.Generator().manual_seed(seed))[:limit].tolist())
        files, labels, names = [files[i] for i in keep], [labels[i] for i in keep], [names[i] for i in keep]
    return files, labels, names


def _named(files: Sequence[Path], labels: Sequence[int], root: Path) -> Items:
    return list(files), list(labels), [str(Path(f).relative_to(root)) if root in Path(f).parents else Path(f).name for f in files]


class ImageNetDataModule(ImageDataModule):
    """ILSVRC-2012 layout: ``root/train/<wnid>/*`` and ``root/val`` as ``<wnid>`` folders or a flat
    folder with a list file (``name label`` lines, e.g. the L-CAM 2000-image evaluation list).

    Args:
        root: dataset root. train_dir, val_dir: sub-folders. val_list: optional list file.
    """

    preferred_workers = 8  # JPEG decoding + resizing of full-size photos

    def __init__(self, root: str | None = None, train_dir: str = "train", val_dir: str = "val",
                 val_list: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not root:
            raise DataNotFoundError("No ImageNet root given. Set it with data.root=/path/to/imagenet (with train/ and val/ inside)")
        self.root = require_dir(root, "data.root")
        self.train_root = self.root / train_dir
        self.val_root = self.root / val_dir
        if not self.val_root.is_dir():
            raise DataNotFoundError(
                f"No {val_dir}/ folder in data.root={self.root} (data=imagenet reads root/{train_dir}/<wnid>/ and root/{val_dir}/). "
                f"Set data.val_dir=<sub-folder of data.root> (data.val_dir=. for images directly in data.root), "
                "or use data=folder for any folder of images")
        self.val_list = val_list
        if val_list and not Path(os.path.expanduser(val_list)).is_file():
            raise DataNotFoundError(f"List file not found: {val_list}. Set it with data.val_list=/path/to/list.txt (lines 'name label')")

    def scan_train(self) -> Items:
        root = self.train_root
        if not root.is_dir():
            raise DataNotFoundError(
                f"No {root.name}/ folder in data.root={self.root} (data=imagenet trains on root/{root.name}/<wnid>/). "
                "Set data.train_dir=<sub-folder of data.root>, or use data=folder for any folder of images")
        return _named(*scan_synset_folders(root), root)

    def scan_val(self) -> Items:
        return _named(*scan_folder(self.val_root, self.val_list), self.val_root)


class FolderDataModule(ImageDataModule):
    """Any folder of images, labelled or not.

    Labels come from a list file or from ``<wnid>`` sub-folders when present; otherwise images
    are unlabelled and L-CAM uses the classifier's own top-1 prediction as target.

    Args:
        root: training images. val_root: validation images (default: a held-out
        ``val_fraction`` of ``root``, chosen with ``seed``). train_list, val_list: optional list files.
    """

    def __init__(self, root: str | None = None, val_root: str | None = None, val_fraction: float = 0.1,
                 train_list: str | None = None, val_list: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not root:
            raise DataNotFoundError("No image folder given. Set it with data.root=/path/to/images")
        self.root = require_dir(root, "data.root")
        self.val_root = require_dir(val_root, "data.val_root") if val_root else None
        self.val_fraction, self.train_list, self.val_list = float(val_fraction), train_list, val_list
        self._split: tuple[Items, Items] | None = None

    def _held_out(self) -> tuple[Items, Items]:
        if self._split is None:
            files, labels = scan_folder(self.root, self.train_list)
            n_val = max(1, int(round(self.val_fraction * len(files)))) if len(files) > 1 else 0
            perm = torch.randperm(len(files), generator=torch.Generator().manual_seed(self.seed)).tolist()
            val_idx, train_idx = sorted(perm[:n_val]), sorted(perm[n_val:])
            pick = lambda idx: _named([files[i] for i in idx], [labels[i] for i in idx], self.root)  # noqa: E731
            self._split = (pick(train_idx), pick(val_idx))
        return self._split

    def scan_train(self) -> Items:
        if self.val_root is not None:
            return _named(*scan_folder(self.root, self.train_list), self.root)
        return self._held_out()[0]

    def scan_val(self) -> Items:
        if self.val_root is not None:
            return _named(*scan_folder(self.val_root, self.val_list), self.val_root)
        return self._held_out()[1]


class DemoDataModule(ImageDataModule):
    """The bundled offline photos: trained on random crops (``repeats`` per photo per epoch),
    validated on centre crops. Unlabelled: targets are the classifier's predictions."""

    def __init__(self, repeats: int = 8, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.repeats = int(repeats)
        self._photos: list[tuple[str, Image.Image]] | None = None

    def photos(self) -> list[tuple[str, Image.Image]]:
        if self._photos is None:
            self._photos = demo_photos()
        return self._photos

    def scan_train(self) -> Items:
        photos = self.photos() * self.repeats
        return [p for _, p in photos], [-1] * len(photos), [n for n, _ in photos]

    def scan_val(self) -> Items:
        photos = self.photos()
        return [p for _, p in photos], [-1] * len(photos), [n for n, _ in photos]
