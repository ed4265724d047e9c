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


def test_flat_imagenet_root_names_val_dir_in_one_clear_hint(tmp_path):
    _save_photos(tmp_path / "flat", 2)
    with pytest.raises(DataNotFoundError) as err:
        ImageNetDataModule(root=str(tmp_path / "flat"), num_workers=0)
    msg = str(err.value)
    assert f"No val/ folder in data.root={tmp_path / 'flat'}" in msg and "data.val_dir=." in msg and "data=folder" in msg
    assert ")=/path" not in msg  # the old garbled "Set it with data.root (...)=/path/to/folder"
    dm = ImageNetDataModule(root=str(tmp_path / "flat"), val_dir=".", num_workers=0)  # what the hint says works
    dm.setup("validate")
    assert len(dm.val_set) == 2


def _truncated_jpeg(path):
    import io

    buf = io.BytesIO()
    demo_photos()[0][1].resize((80, 60)).save(buf, format="JPEG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


def test_unreadable_images_are_skipped_warned_once_and_listed(tmp_path, caplog):
    from lcam.data.unreadable import SKIPPED

    _save_photos(tmp_path / "photos", 5)
    _truncated_jpeg(tmp_path / "photos" / "zz_truncated.jpg")
    (tmp_path / "photos" / "notes.jpg").write_text("not an image")
    SKIPPED.clear()
    dm = FolderDataModule(root=str(tmp_path / "photos"), val_root=str(tmp_path / "photos"), batch_size=2, num_workers=0,
                          resize=40, crop=32, max_bad_fraction=0.5)
    dm.setup("fit")
    for _ in range(2):  # two epochs: each file is warned about once
        images = sum(x.shape[0] for x, _ in dm.train_dataloader())
        assert images == 5
    bad = {str(tmp_path / "photos" / "zz_truncated.jpg"), str(tmp_path / "photos" / "notes.jpg")}
    assert set(SKIPPED.files) == bad and SKIPPED.files[str(tmp_path / "photos" / "notes.jpg")].startswith("UnidentifiedImageError")
    assert sum("skipped unreadable image" in r.getMessage() for r in caplog.records) == 2
    SKIPPED.clear()


def test_a_batch_with_no_readable_image_is_left_out(tmp_path):
    from lcam.data.datasets import ImageListDataset
    from lcam.data.transforms import eval_transform
    from lcam.data.unreadable import SKIPPED, SkippingDataLoader

    _save_photos(tmp_path, 2)
    for k in range(2):
        (tmp_path / f"bad{k}.jpg").write_bytes(b"\xff\xd8 nope")
    files = [tmp_path / "bad0.jpg", tmp_path / "bad1.jpg", *sorted(tmp_path.glob("[!b]*.jpg"))]
    ds = ImageListDataset(files, [1, 2, 3, 4], eval_transform(40, 32), skip_unreadable=True)
    batches = list(SkippingDataLoader(ds, batch_size=2, max_bad_fraction=0.5))
    assert len(batches) == 1 and batches[0][1].tolist() == [3, 4]  # the first batch was all unreadable
    with pytest.raises(RuntimeError, match="Cannot read image .*bad0.jpg"):
        ImageListDataset(files, None, eval_transform(40, 32))[0]  # without skipping: the old error
    SKIPPED.clear()


@pytest.mark.parametrize("fraction, allowed", [(0.01, 1), (0.25, 2), (0.0, 0)])
def test_too_many_unreadable_images_stop_the_pass_naming_the_key(tmp_path, fraction, allowed):
    from lcam.data.unreadable import SKIPPED, UnreadableImagesError, allowed_unreadable

    assert allowed_unreadable(10, fraction) == allowed  # floor(fraction * 10), at least 1 when fraction > 0
    _save_photos(tmp_path, 10 - (allowed + 1))  # 10 images, one more unreadable than allowed
    for k in range(allowed + 1):
        (tmp_path / f"bad{k}.jpg").write_bytes(b"broken")
    files = sorted(tmp_path.glob("*.jpg"))
    dm = FolderDataModule(root=str(tmp_path), val_root=str(tmp_path), batch_size=4, num_workers=0, resize=40, crop=32,
                          max_bad_fraction=fraction)
    dm.setup("validate")
    assert len(dm.val_set) == len(files)
    with pytest.raises(UnreadableImagesError, match=f"{allowed + 1} of {len(files)} images in one pass are unreadable.*data.max_bad_fraction"):
        list(dm.val_dataloader())
    SKIPPED.clear()
    with pytest.raises(ValueError, match="data.max_bad_fraction must be between 0 and 1"):
        FolderDataModule(root=str(tmp_path), max_bad_fraction=1.5)
