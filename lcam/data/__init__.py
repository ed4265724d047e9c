"""Data: ImageNet folder layout, generic image folders, the offline demo photos, boxes, skipping unreadable files.
May import: lcam.runtime, lcam.maps, lcam.viz."""
from lcam.data.datamodules import DemoDataModule, FolderDataModule, ImageDataModule, ImageNetDataModule
from lcam.data.datasets import DataNotFoundError, ImageListDataset, imagenet_synsets
from lcam.data.demo import demo_photos
from lcam.data.transforms import eval_transform, train_transform

__all__ = [
    "DataNotFoundError",
    "DemoDataModule",
    "FolderDataModule",
    "ImageDataModule",
    "ImageListDataset",
    "ImageNetDataModule",
    "demo_photos",
    "eval_transform",
    "imagenet_synsets",
    "train_transform",
]
