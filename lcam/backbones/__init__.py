"""Frozen classifiers split into ``features`` / ``classify`` (torchvision, timm, offline demo); nothing here trains.
May import: lcam.runtime, lcam.maps, lcam.viz, lcam.data (class names)."""
from lcam.backbones.builders import build_backbone, imagenet_class_names, resolve_source
from lcam.backbones.frozen import BackboneSpec, FrozenClassifier
from lcam.backbones.split import SplitError, split_model
from lcam.backbones.weights import BackboneWeightsError

__all__ = [
    "BackboneSpec",
    "BackboneWeightsError",
    "FrozenClassifier",
    "SplitError",
    "build_backbone",
    "imagenet_class_names",
    "resolve_source",
    "split_model",
]
