"""Data modules: layouts, list files, unlabelled folders, deterministic epochs, clear errors."""
from __future__ import annotations

import pytest
import torch

from lcam.data import DataNotFoundError, DemoDataModule, FolderDataModule, ImageNetDataModule, demo_photos
from lcam.data.datasets import EpochSeededSampler, imagenet_synsets


def test_synsets_match_torchvision_names():
    from lcam.backbones import imagenet_class_names

    wnids, names = imagenet_synsets()
    assert len(wnids) == 1000 and wnids[0] == "n01440764" and wnids[217] == "n02102040"
    assert imagenet_class_names()[0] == "tench" and names[0].startswith("tench")


def test_demo_photos_are_real_rgb_images():
    photos = demo_photos()
    assert len(photos) >= 8
    assert all(img.mode == "RGB" and min(img.size) >= 200 for _, img in photos)


def test_demo_datamodule_batches_in_unit_range():
    dm = DemoDataModule(repeats=2, batch_size=4, num_workers=0, resize=72, crop=64)
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 64, 64) and 0 <= x.min() and x.max() <= 1 and (y == -1).all()
    assert len(dm.val_set) == len(demo_photos()) and len(dm.train_set) == 2 * len(dm.val_set)


def test_epoch_sampler_is_deterministic_per_epoch():
    s = EpochSeededSampler(10, seed=1)
    s.set_epoch(3)
    a = list(s)
    s.set_epoch(0)
    list(s)
    s.set_epoch(3)
    assert list(s) == a and sorted(i for i, _ in a) == list(range(10))
    s.set_epoch(4)
    assert list(s) != a


def test_seeded_augmentation_repeats():
    dm = DemoDataModule(repeats=1, batch_size=2, num_workers=0, resize=100, crop=64)
    dm.setup("fit")
    assert torch.equal(dm.train_set[(0, 123)][0], dm.train_set[(0, 123)][0])
    assert not torch.equal(dm.train_set[(0, 123)][0], dm.train_set[(0, 124)][0])


def _save_photos(folder, n, size=(80, 60)):
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, img) in enumerate(demo_photos()[:n]):
        img.resize(size).save(folder / f"{name}.jpg")


def test_folder_unlabelled_with_held_out_validation(tmp_path):
    _save_photos(tmp_path / "photos" / "nested", 9)
    dm = FolderDataModule(root=str(tmp_path / "photos"), val_fraction=0.25, batch_size=2, num_workers=0, resize=64, crop=64)
    dm.setup("fit")
    assert len(dm.train_set) + len(dm.val_set) == 9 and len(dm.val_set) == 2
    assert set(dm.train_set.items).isdisjoint(dm.val_set.items)
    assert all(label == -1 for label in dm.train_set.labels)


def test_folder_with_wnid_subfolders_gets_labels(tmp_path):
    _save_photos(tmp_path / "train" / "n01440764", 2)
    _save_photos(tmp_path / "train" / "n03888257", 2)
    _save_photos(tmp_path / "val" / "n03888257", 1)
    dm = FolderDataModule(root=str(tmp_path / "train"), val_root=str(tmp_path / "val"), num_workers=0)
    dm.setup("fit")
    assert sorted(set(dm.train_set.labels)) == [0, 701] and dm.val_set.labels == [701]


def test_imagenet_flat_val_with_list_file(tmp_path):
    _save_photos(tmp_path / "train" / "n01440764", 1)
    _save_photos(tmp_path / "val", 2)
    names = sorted(p.name for p in (tmp_path / "val").iterdir())
    (tmp_path / "list.txt").write_text(f"# the L-CAM format\n{names[0]} 5\n{names[1]} 7\n")
    dm = ImageNetDataModule(root=str(tmp_path), val_list=str(tmp_path / "list.txt"), num_workers=0)
    dm.setup("fit")
    assert dm.val_set.labels == [5, 7] and dm.train_set.labels == [0]
    (tmp_path / "bad.txt").write_text("a.jpg 1 2\n")
    with pytest.raises(ValueError, match="name label"):
        ImageNetDataModule(root=str(tmp_path), val_list=str(tmp_path / "bad.txt"), num_workers=0).setup("validate")


def test_missing_paths_name_the_config_key(tmp_path):
    with pytest.raises(DataNotFoundError, match="data.root="):
        ImageNetDataModule(root=str(tmp_path / "nope"))
    with pytest.raises(DataNotFoundError, match="data.root="):
        ImageNetDataModule(root=None)
    with pytest.raises(DataNotFoundError, match="data.root="):
        FolderDataModule(root=str(tmp_path / "nope"))
    (tmp_path / "val").mkdir()
    with pytest.raises(DataNotFoundError, match="data.val_list="):
        ImageNetDataModule(root=str(tmp_path), val_list=str(tmp_path / "missing.txt"))
