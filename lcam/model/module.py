"""The L-CAM LightningModule: frozen backbone + trainable attention head (its identity and forward pieces here;
calibration, the training mask, the steps and losses, checkpoints and explaining in the mixins beside this file).

Variants (L-CAM: "Learning Visual Explanations for DCNN-Based Image Classifiers Using an Attention
Mechanism", Gkartzonika et al., ECCV 2022 Workshops, https://arxiv.org/abs/2209.11189):

* ``fm``:  ``F' = sigmoid(A_c) (.) F`` -> ``classify(F')``;
* ``img``: ``x' = U(sigmoid(A_c)) (.) x`` -> ``backbone(x')``.

Checkpoints hold the head and the backbone's identity (``hparams.backbone``), never the frozen
backbone's weights; loading rebuilds the backbone from its identity.
"""
from __future__ import annotations

import warnings
from typing import Any, Sequence

import pytorch_lightning as pl
import torch
from torch import Tensor
from torchmetrics import MeanMetric

from lcam.backbones import BackboneSpec, FrozenClassifier, build_backbone
from lcam.maps import normalize_then_upsample
from lcam.metrics import DEFAULT_THRESHOLDS, AverageDropIncrease
from lcam.model.calibration import HeadCalibration, _check_calibration
from lcam.model.explaining import ExplainFrontDoor
from lcam.model.heads import AttentionHead, check_targets
from lcam.model.losses import LCAMLoss
from lcam.model.masking import MASKS, TrainingMask
from lcam.model.optim import DEFAULT_OPTIMIZER, DEFAULT_SCHEDULER
from lcam.model.persistence import BACKBONE_PREFIX, HeadOnlyCheckpoints  # noqa: F401 - re-exported
from lcam.model.steps import TrainingSteps

VARIANTS = ("img", "fm")
TARGET_SOURCES = ("model", "label")

HEAD_INITS = ("auto", "random", "classifier")


class LCAM(HeadCalibration, TrainingMask, TrainingSteps, HeadOnlyCheckpoints, ExplainFrontDoor, pl.LightningModule):
    """L-CAM-Fm / L-CAM-Img.

    Args:
        backbone: backbone identity (:class:`~lcam.backbones.BackboneSpec` fields as a dict).
        variant: ``"img"`` or ``"fm"``.
        loss: :class:`~lcam.model.losses.LCAMLoss` arguments (coefficients).
        optimizer: SGD settings; ``lr`` is the weights' rate, biases get ``lr * bias_lr_mult``
            (the reference code's 1e-4 x 100 / x 200 = 0.01 / 0.02).
        scheduler: ``gamma`` of the per-epoch exponential decay (0.75 VGG-16, 0.95 ResNet-50).
        targets: ``"model"`` (the classifier's own top-1, the paper's model-truth labels) or
            ``"label"`` (dataset labels where known, the prediction where a label is -1).
        thresholds: fractions kept for validation AD/IC.
        channels_last: run the backbone in channels-last memory format.
        compile_backbone: ``torch.compile`` the frozen backbone's halves.
        init: the head's starting weights: ``"random"`` (PyTorch's default for a 1x1 convolution,
            the paper's recipes), ``"classifier"`` (a classifier ending in global average pooling
            + linear: each class map starts as its class activation map ``w_c . F + b_c``, so
            classes the head never trains on still get a sensible map) or ``"auto"`` (classifier
            where the classifier allows it, random elsewhere).
        calibrate: ``None`` (off, the paper) or ``{"mean": m, "std": s}``: on the first training
            batch of a fresh run, rescale the whole head (``A <- a A + b`` for every class, ``a > 0``)
            so that the batch's own class maps have mean ``m`` and standard deviation ``s``. The
            maps' min-max normalised saliency does not change; what changes is where the training
            mask ``sigmoid(A_c)`` sits. A classifier's CAM start lives on the logit scale (values
            up to ~50 on EfficientNet-Lite0), where the sigmoid is saturated at 1 and the loss
            has almost no gradient; calibrated, the mask starts in the sigmoid's working range.
            Statistics are averaged over processes under DDP; a resumed run is not recalibrated.
        mask: the training mask made from ``A_c``: ``"sigmoid"`` (the paper: ``sigmoid(A_c)``) or
            ``"minmax"`` (``minmax(A_c)``, the very map the explanation and its AD/IC evaluation
            use, so the loss sees the explanation image the evaluation sees). Inference is the
            same for both: ``U(minmax(A_c))``.
    """

    def __init__(self, backbone: dict[str, Any] | FrozenClassifier, variant: str = "img", loss: dict[str, float] | None = None,
                 optimizer: dict[str, Any] | None = None, scheduler: dict[str, Any] | None = None,
                 targets: str = "model", thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                 channels_last: bool = False, compile_backbone: bool = False, init: str = "auto",
                 calibrate: dict[str, float] | None = None, mask: str = "sigmoid") -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"model.variant must be one of {VARIANTS}, got '{variant}'")
        if targets not in TARGET_SOURCES:
            raise ValueError(f"model.targets must be one of {TARGET_SOURCES}, got '{targets}'")
        if isinstance(backbone, FrozenClassifier):  # a custom classifier given as a module
            self.save_hyperparameters(ignore=["backbone"])
            self.backbone = backbone
        else:
            self.save_hyperparameters()
            self.backbone = build_backbone(dict(backbone))
        if self.backbone.spec is not None:
            # the resolved identity (layer, source, normalisation): a checkpoint rebuilds exactly this
            self.hparams["backbone"] = self.backbone.spec.to_dict()
        self.head = AttentionHead(self.backbone.feature_channels, self.backbone.num_classes)
        self.init_head(init)
        if mask not in MASKS:
            raise ValueError(f"model.mask must be one of {list(MASKS)}, got {mask!r}")
        self.mask_kind = mask
        self.calibration = _check_calibration(calibrate)
        self.calibrated = False
        self.loss_fn = LCAMLoss(**(loss or {}))
        self.variant, self.target_source = variant, targets
        self.optimizer_cfg = {**DEFAULT_OPTIMIZER, **(optimizer or {})}
        self.scheduler_cfg = {**DEFAULT_SCHEDULER, **(scheduler or {})}
        self.thresholds = tuple(float(t) for t in thresholds)
        self.val_confidence = AverageDropIncrease(self.thresholds)
        # validation loss terms as torchmetrics means (float sums and weights, synced under DDP)
        self.val_terms = torch.nn.ModuleDict({k: MeanMetric() for k in ("ce", "area", "tv", "loss")})
        self._warned_labels = False
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        if compile_backbone:
            self.backbone.feature_extractor = torch.compile(self.backbone.feature_extractor)
            self.backbone.classifier_head = torch.compile(self.backbone.classifier_head)

    def init_head(self, init: str) -> None:
        """Initialise the head (see ``init`` in the class docstring)."""
        if init not in HEAD_INITS:
            raise ValueError(f"model.init must be one of {list(HEAD_INITS)}, got {init!r}")
        if init == "random":
            return
        readout = self.backbone.linear_readout()
        if readout is None and init == "auto":
            return
        if readout is None:
            raise ValueError(
                f"model.init=classifier needs a classifier that ends in global average pooling + one linear layer "
                f"after the explained layer; {self.backbone.spec.name if self.backbone.spec else 'this classifier'} "
                "does not (e.g. VGG-16's fc layers). Use model.init=random."
            )
        self.head.init_from_linear(*readout)

    # -- identity ----------------------------------------------------------------------------
    @property
    def backbone_spec(self) -> BackboneSpec | None:
        return self.backbone.spec

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    # -- the forward pieces ------------------------------------------------------------------
    def frozen_forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Features ``(B, K, h, w)`` and logits ``(B, C)`` of the unmasked images, without autograd."""
        with torch.no_grad():
            feats = self.backbone.features(images)
            logits = self.backbone.classify(feats)
        return feats, logits

    def resolve_targets(self, logits: Tensor, labels: Tensor | None = None) -> Tensor:
        """Targets ``(B,)``: the prediction, or the dataset label where ``targets="label"`` and known."""
        pred = logits.argmax(dim=1)
        if self.target_source == "model" or labels is None:
            return pred
        labels = labels.to(pred.device).long()
        if bool((labels < 0).any()) and not self._warned_labels:
            warnings.warn("model.targets=label but some images have no label; their prediction is used", stacklevel=2)
            self._warned_labels = True
        return torch.where(labels >= 0, labels, pred)

    def attention(self, feats: Tensor, targets: Tensor) -> Tensor:
        """Pre-sigmoid class maps ``A_c`` ``(B, h, w)`` for per-sample targets ``(B,)``."""
        return self.head.class_maps(feats, targets)

    def saliency(self, images: Tensor, targets: Tensor | Sequence[int] | int | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """One forward pass: maps, logits and targets.

        Args:
            images: ``(B, 3, H, W)`` in [0, 1].
            targets: ``None`` (top-1), an int, a list or ``(B,)`` class ids.

        Returns:
            ``maps`` ``(B, H, W)`` in [0, 1] (``U(minmax(A_c))``), ``logits`` ``(B, C)`` of the same
            pass, ``targets`` ``(B,)``.
        """
        feats, logits = self.frozen_forward(images)
        if targets is None:
            t = logits.argmax(dim=1)
        else:
            t = torch.as_tensor(targets, device=images.device).long().view(-1).expand(images.shape[0]).contiguous()
        check_targets(t, self.num_classes)
        with torch.no_grad():
            maps = normalize_then_upsample(self.attention(feats, t), images.shape[-2:])
        return maps, logits, t

    def forward(self, images: Tensor, targets: Tensor | None = None) -> Tensor:
        """Saliency maps ``(B, H, W)`` in [0, 1] for ``images`` ``(B, 3, H, W)``."""
        return self.saliency(images, targets)[0]



def load_lcam_checkpoint(path: Any, **kwargs: Any) -> LCAM:
    """``LCAM.load_from_checkpoint(path, **kwargs)`` (``lcam.load_checkpoint``)."""
    return LCAM.load_from_checkpoint(path, **kwargs)


