"""From anything a user calls "a model" to a frozen classifier (and, for L-CAM, its own explainer).

Accepted: an L-CAM model (anything with ``as_explainer()``), an L-CAM checkpoint path, a backbone
preset or model name (``"vgg16"``, ``"resnet50"``, ``"efficientnet_lite0"``, any torchvision/timm
name), a backbone config dict, a :class:`~lcam.backbones.FrozenClassifier`, or a plain classifier
``nn.Module`` that expects ImageNet-normalised input.

A plain module is explained at the layer its architecture's papers use: a VGG-style trunk that
ends in pooling at the last activation before it (VGG-16: conv5_3 after its ReLU, ``features.29``),
otherwise at the end of the convolutional trunk (ResNet ``layer4``; DenseNet, MobileNet,
EfficientNet, ConvNeXt ``features``). Any layer can be named instead (``layer="features.28"``).
Nothing the caller passed is changed: the wrapper is built under :func:`lcam.explain.state.borrowed`.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import nn

from lcam.backbones import BackboneSpec, FrozenClassifier, build_backbone
from lcam.backbones.split import SplitError, default_layer, split_model
from lcam.data.files import resolve_device
from lcam.explain.state import borrowed
from lcam.runtime.configs import backbone_preset
from lcam.runtime.io import InputError

#: pooling modules that end a VGG-style trunk (the explained layer is the activation before them)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
#: normalisation a plain torchvision/timm classifier expects
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Classifier:
    """A resolved model.

    Attributes:
        backbone: the frozen classifier every method explains.
        explainer: the model's own explainer (an L-CAM model or checkpoint), else ``None``.
        caller_modules: the modules the caller passed (left as they were by every call).
    """

    backbone: FrozenClassifier
    explainer: Any = None
    caller_modules: list[nn.Module] = field(default_factory=list)

    @property
    def layer(self) -> str | None:
        return self.backbone.spec.layer if self.backbone.spec is not None else None


def backbone_config(name: str) -> dict[str, Any]:
    """The backbone identity for ``name``: a preset (``conf/backbone/<name>.yaml``, e.g. ``vgg16`` ->
    conv5_3 after its ReLU), else ``{"name": name}`` (torchvision/timm, explained at its default layer)."""
    return backbone_preset(name) or {"name": name}


def plain_layer(model: nn.Module) -> str:
    """The layer to explain in a plain classifier: the end of its convolutional trunk; in a trunk
    that ends in pooling (VGG, AlexNet) the last module before the pooling (VGG-16: ``features.29``)."""
    layer = default_layer(model)
    child = model.get_submodule(layer)
    if isinstance(child, nn.Sequential):
        mods = list(child.named_children())
        i = len(mods)
        while i > 0 and isinstance(mods[i - 1][1], _POOLS):
            i -= 1
        if 0 < i < len(mods):
            layer = f"{layer}.{mods[i - 1][0]}"
    return layer


@torch.no_grad()
def _split_after_relu(model: nn.Module, layer: str, probe_size: int = 96) -> tuple[nn.Module, nn.Module]:
    """DenseNet-style split: the trunk ``layer`` (top level) then a functional ReLU, global average
    pooling and the classifier; verified against the model's logits on a probe."""
    children = list(model.named_children())
    names = [n for n, _ in children]
    if layer not in names:
        raise SplitError(f"No top-level layer '{layer}'")
    i = names.index(layer)
    features = nn.Sequential(*[m for _, m in children[: i + 1]], nn.ReLU())
    classify = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), *[m for _, m in children[i + 1:]])
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    probe = torch.randn(2, 3, probe_size, probe_size, generator=torch.Generator().manual_seed(0)).to(device)
    expected = model(probe)
    try:
        out = classify(features(probe.clone()))
    except (RuntimeError, ValueError, TypeError) as err:
        raise SplitError(f"Cannot split {type(model).__name__} at '{layer}': {err}") from None
    if out.shape != expected.shape or not torch.allclose(out, expected, atol=1e-4, rtol=1e-4):
        raise SplitError(f"Could not split {type(model).__name__} at '{layer}' so that classify(features(x)) == model(x)")
    return features, classify


def _candidates(model: nn.Module) -> list[str]:
    names = [n for n, _ in model.named_children()]
    try:
        first = [plain_layer(model)]
    except SplitError:
        first = []
    return first + [n for n in reversed(names) if n not in first]


def _split(model: nn.Module, layer: str) -> tuple[nn.Module, nn.Module]:
    try:
        return split_model(model, layer)
    except SplitError as err:
        try:
            return _split_after_relu(model, layer)
        except SplitError:
            raise err from None


def wrap_module(model: nn.Module, layer: str | None = None) -> FrozenClassifier:
    """A plain classifier (ImageNet-normalised input -> logits) as a :class:`FrozenClassifier`
    split at ``layer`` (default :func:`plain_layer`). ``model`` is left as it was."""
    with borrowed(model):
        candidates = [layer] if layer else _candidates(model)
        first_error: SplitError | None = None
        for chosen in candidates:  # the usual layer, else the deepest top-level child that gives (B, K, h, w) maps
            try:
                features, classify = _split(model, chosen)
                break
            except SplitError as err:
                first_error = first_error or err
        else:
            raise SplitError(f"Cannot explain {type(model).__name__}: {first_error}; name another layer (layer=...), "
                             "or wrap it with lcam.backbones.split_model and FrozenClassifier yourself")
        spec = BackboneSpec(name=type(model).__name__.lower(), layer=chosen, weights="caller", source="module",
                            mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD), interpolation="bilinear")
        wrapped = FrozenClassifier(features, classify, IMAGENET_MEAN, IMAGENET_STD, spec=spec)
        wrapped.num_classes  # the dry run, while the caller's modules are in eval mode  # noqa: B018
        if wrapped.num_classes == 1000:
            from lcam.data.classes import imagenet_class_names

            wrapped.class_names = imagenet_class_names()
    return wrapped


def _device_of(module: nn.Module) -> torch.device:
    return next((t.device for t in [*module.parameters(), *module.buffers()]), torch.device("cpu"))


def _on(module: nn.Module, device: torch.device | None) -> nn.Module:
    """``module`` itself, or a copy on ``device`` when it lives elsewhere (the caller's stays put)."""
    if device is None or _device_of(module) == device:
        return module
    return copy.deepcopy(module).to(device)


def _check_layer(backbone: FrozenClassifier, layer: str | None, what: str) -> None:
    have = backbone.spec.layer if backbone.spec is not None else None
    if layer is not None and layer != have:
        raise InputError(f"{what} explains layer '{have}'; layer='{layer}' would need another model (drop layer=...)")


def resolve_classifier(model: Any, device: str | torch.device | None = None, layer: str | None = None,
                       checkpoint_settings: Mapping[str, Any] | None = None) -> Classifier:
    """Resolve ``model`` (see the module docstring) into a :class:`Classifier`.

    Args:
        device: where to run. Modules given stay where they are unless a device is named (then a
            copy runs there); built ones are created there (default: CUDA when available).
        layer: the layer to explain (a dotted module name); default: the preset's / the
            architecture's layer (see :func:`plain_layer`). An L-CAM model explains its own layer.
        checkpoint_settings: settings of a checkpoint's own explainer (``backbone_weights``,
            ``backbone``: a config that must agree with the checkpoint's).

    Raises:
        InputError, SplitError, CheckpointError, BackboneWeightsError, FileNotFoundError.
    """
    dev = resolve_device(device) if device is not None else None
    if hasattr(model, "as_explainer"):  # an L-CAM model: it brings its own explainer
        own = _on(model, dev).as_explainer()
        _check_layer(own.model, layer, "This L-CAM model")
        return Classifier(own.model, own, [model])
    if isinstance(model, FrozenClassifier):
        chosen = _on(model, dev)
        _check_layer(chosen, layer, "This FrozenClassifier")
        return Classifier(chosen, None, [model])  # type: ignore[arg-type]
    if isinstance(model, (str, os.PathLike)):
        text = os.path.expanduser(str(model))
        if text.endswith(".ckpt") or os.path.isfile(text):
            from lcam.explainers import from_checkpoint

            own = from_checkpoint(text, **(checkpoint_settings or {})).to(dev or resolve_device())
            _check_layer(own.model, layer, f"The checkpoint {os.path.basename(text)}")
            return Classifier(own.model, own)
        cfg = backbone_config(text)
        return Classifier(build_backbone({**cfg, **({"layer": layer} if layer else {})}, device=dev or resolve_device()))
    if isinstance(model, Mapping):
        cfg = dict(model)
        return Classifier(build_backbone({**cfg, **({"layer": layer} if layer else {})}, device=dev or resolve_device()))
    if isinstance(model, nn.Module):
        return Classifier(wrap_module(_on(model, dev), layer), None, [model])
    raise TypeError(f"Cannot explain with a {type(model).__name__}: pass an LCAM model, a checkpoint path, a backbone name "
                    "or config, a FrozenClassifier or a classifier nn.Module")
