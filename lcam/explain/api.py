"""Explain images with L-CAM or any registered explainer, from Python.

    from lcam import LCAM
    model = LCAM.load_from_checkpoint("run/checkpoints/last.ckpt")
    result = model.explain(images)                 # PIL images, paths, a folder, or (B, 3, H, W) in [0, 1]
    result.maps, result.classes, result.probs      # (N, H, W) in [0, 1], class ids (N,), probabilities (N,)
    model.explain(images, targets=[281, 285])      # one class per image; or targets="topk", k=3
    result.overlays(); result.save("out/")

    import lcam
    lcam.explain("vgg16", images, method="gradcam")   # any method on any supported classifier
    result.layer                                      # "features.29": conv5_3 after its ReLU

One row of a result is one (image, class) pair: ``N = B`` for ``targets=None``, a class or one
class per image, ``N = B * k`` for ``targets="topk"`` (rows image-major: image 0's top-1..top-k,
then image 1's ...); ``result.image_index`` maps rows to images. Targets are parsed by
:mod:`lcam.explainers.targets` (the same meaning in the CLI).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from lcam.explain.engine import Engine, make_engine
from lcam.explain.inputs import Images
from lcam.explain.result import Explanation
from lcam.explain.stream import Source, explain_all
from lcam.explainers.targets import Targets, parse_targets


def explain_with(engine: Engine, images: Images, targets: Targets = None, k: int = 3, *, resize: int | None = 256,
                 crop: int | None = 224, batch_size: int = 16, labels: Mapping[str, int] | str | None = None,
                 num_workers: int = 0, progress: bool | None = True) -> Explanation:
    """:func:`explain` with a ready :class:`~lcam.explain.engine.Engine` (reuse it across calls)."""
    source = Source.of(images, labels=labels)
    plan = parse_targets(targets, engine.classes, len(source), k)
    return explain_all(engine, source, plan, resize=resize, crop=crop, batch_size=batch_size, num_workers=num_workers,
                       progress=progress)


def explain(model: Any, images: Images, targets: Targets = None, k: int = 3, method: str | Mapping[str, Any] | None = None, *,
            resize: int | None = 256, crop: int | None = 224, batch_size: int = 16, device: str | torch.device | None = None,
            layer: str | None = None, labels: Mapping[str, int] | str | None = None, progress: bool | None = True,
            **settings: Any) -> Explanation:
    """Saliency maps of ``images`` for a classifier, with L-CAM or any registered explainer.

    Args:
        model: an L-CAM model or checkpoint path, or any classifier: a backbone preset or name
            (``"vgg16"``, ``"resnet50"``, ``"efficientnet_lite0"``, any torchvision/timm name), a
            backbone config dict, a :class:`~lcam.backbones.FrozenClassifier` or a plain ``nn.Module``
            expecting ImageNet-normalised input (see :func:`lcam.explain.classifier.resolve_classifier`).
            The model is left exactly as it was (train/eval mode, ``requires_grad``, hooks).
        images: a ``(B, 3, H, W)`` (or ``(3, H, W)``) tensor in [0, 1], used as is; or PIL images,
            image files, folders, glob patterns or ``"demo"`` (one, a list, or a mapping
            ``name -> image`` whose names are used in outputs), resized so their shorter side is
            ``resize`` and centre-cropped to ``crop`` (the backbone's interpolation). ``crop=None``
            keeps the whole image; ``resize=None, crop=None`` keeps the file's own size.
        targets: ``None`` (top-1), a class id or name for every image, a list with one target per
            image (an inner list: several classes for that image; ``[[281, 285]]``: both for every
            image), or ``"topk"`` (the ``k`` most probable classes of each image).
        method: a registry name: ``lcam`` (default for L-CAM models), ``gradcam`` (default for plain
            classifiers), ``gradcampp``, ``smoothgradcampp``, ``xgradcam``, ``guidedcam``, ``scorecam``,
            ``sscam1``, ``sscam2``, ``rise``; or a dict with ``name`` and settings.
        batch_size: images per forward pass.
        device: where to run (default: the model's device; CUDA when available for built models).
        layer: the layer to explain (a dotted module name, e.g. ``"features.28"``); default: the
            architecture's usual layer, reported as ``result.layer``.
        labels: ground-truth ids by image name, or a ``name label`` list file (fills ``.labels``).
        progress: a progress bar with the method, images done and an ETA, for calls over 2 s.
        **settings: explainer settings (e.g. ``n_masks=2000`` for RISE).

    Returns:
        An :class:`~lcam.explain.result.Explanation`.

    Raises:
        InputError (a ``ValueError``): unknown method, class id out of range, no images, an
        unreadable file, ... with a one-line message.
    """
    engine = make_engine(model, method, device, layer, **settings)
    return explain_with(engine, images, targets, k, resize=resize, crop=crop, batch_size=batch_size, labels=labels,
                        progress=progress)
