"""The L-CAM LightningModule: frozen backbone + trainable attention head.

Variants (REFERENCE section 1):

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
from lcam.distributed import RealSampleCounter, real_samples, val_sampler
from lcam.heads import AttentionHead, check_targets
from lcam.losses import LCAMLoss, LossTerms
from lcam.maps import minmax_normalize, normalize_then_upsample, upsample
from lcam.metrics import DEFAULT_THRESHOLDS, AverageDropIncrease, explanation_confidence
from lcam.optim import DEFAULT_OPTIMIZER, DEFAULT_SCHEDULER, build_optimizer, build_scheduler

VARIANTS = ("img", "fm")
TARGET_SOURCES = ("model", "label")
BACKBONE_PREFIX = "backbone."

HEAD_INITS = ("auto", "random", "classifier")
MASKS = ("sigmoid", "minmax")


class LCAM(pl.LightningModule):
    """L-CAM-Fm / L-CAM-Img.

    Args:
        backbone: backbone identity (:class:`~lcam.backbones.BackboneSpec` fields as a dict).
        variant: ``"img"`` or ``"fm"``.
        loss: :class:`~lcam.losses.LCAMLoss` arguments (coefficients).
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

    def training_mask(self, a: Tensor) -> Tensor:
        """The mask the loss sees, from pre-sigmoid maps ``(B, h, w)`` or ``(B, B', h, w)``:
        ``sigmoid(A)`` or per-map ``minmax(A)`` (``model.mask``), same shape, in [0, 1]."""
        if self.mask_kind == "sigmoid":
            return torch.sigmoid(a)
        return minmax_normalize(a.reshape(-1, *a.shape[-2:])).view_as(a)

    def masked_logits(self, images: Tensor, feats: Tensor, mask: Tensor) -> Tensor:
        """Logits ``(B, C)`` of the masked input: ``F (.) mask`` (fm) or ``x (.) U(mask)`` (img); ``mask`` ``(B, h, w)``."""
        if self.variant == "fm":
            return self.backbone.classify(feats * mask.unsqueeze(1))
        return self.backbone(images * upsample(mask, images.shape[-2:]).unsqueeze(1))

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

    # -- training ----------------------------------------------------------------------------
    def _step(self, batch: tuple[Tensor, Tensor]) -> tuple[LossTerms, Tensor, Tensor, Tensor]:
        images, labels = batch
        feats, logits0 = self.frozen_forward(images)
        targets = self.resolve_targets(logits0, labels)
        a = self.attention(feats, targets)
        mask = self.training_mask(a)
        regularized = mask if self.loss_fn.regularize == "own" else self.training_mask(self.head.block_maps(feats, targets))
        terms = self.loss_fn(self.masked_logits(images, feats, mask), targets, regularized)
        return terms, a, logits0, targets

    @torch.no_grad()
    def calibrate_head(self, images: Tensor) -> tuple[float, float]:
        """Rescale the head so that the class maps of ``images`` ``(B, 3, H, W)`` (for their
        top-1 classes) have the configured mean and std (see ``calibrate``); returns ``(scale, shift)``."""
        feats, logits = self.frozen_forward(images)
        a = self.attention(feats, logits.argmax(dim=1)).float()
        stats = torch.stack([a.mean(), a.pow(2).mean()])
        if self._trainer is not None and self.trainer.world_size > 1:
            stats = self.trainer.strategy.reduce(stats, reduce_op="mean")
        mean, std = float(stats[0]), float((stats[1] - stats[0] ** 2).clamp_min(1e-12).sqrt())
        scale = float(self.calibration["std"]) / std
        shift = float(self.calibration["mean"]) - scale * mean
        self.head.rescale_(scale, shift)
        self.calibrated = True
        return scale, shift

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        if self.calibration is not None and not self.calibrated:
            scale, shift = self.calibrate_head(batch[0])
            self.log_dict({"calibration/scale": scale, "calibration/shift": shift}, rank_zero_only=True)
        terms, _, _, _ = self._step(batch)
        bs = batch[0].shape[0]
        self.log_dict({"train/ce": terms.ce.detach(), "train/area": terms.area.detach(), "train/tv": terms.tv.detach()}, batch_size=bs)
        self.log("train/loss", terms.total.detach(), prog_bar=True, batch_size=bs)
        return terms.total

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        # under DDP the sampler pads the set with repeats at the end of the shards: drop them, so
        # every validation sample counts exactly once (lcam.distributed)
        counter = getattr(self, "_val_counter", None)
        keep = counter.take(batch[0].shape[0]) if counter is not None else batch[0].shape[0]
        if keep == 0:
            return
        batch = (batch[0][:keep], batch[1][:keep])
        images = batch[0]
        with torch.no_grad():
            terms, a, logits0, targets = self._step(batch)
            maps = normalize_then_upsample(a, images.shape[-2:])
            y, o = explanation_confidence(self.backbone, images, maps, targets, self.thresholds)
        self.val_confidence.update(y, o)
        for key, value in (("ce", terms.ce), ("area", terms.area), ("tv", terms.tv), ("loss", terms.total)):
            self.val_terms[key].update(value.detach().float(), weight=images.shape[0])

    def on_validation_epoch_start(self) -> None:
        # reset here, in the mode the updates run in: a reset inside trainer.validate()'s
        # inference mode would leave inference tensors that fit's validation cannot update
        self.val_confidence.reset()
        for metric in self.val_terms.values():
            metric.reset()
        self._val_counter = RealSampleCounter(real_samples(val_sampler(getattr(self, "_trainer", None))))

    def on_validation_epoch_end(self) -> None:
        values = self.val_confidence.compute()  # synced across processes by torchmetrics
        terms = {key: metric.compute() for key, metric in self.val_terms.items()}  # batch-size weighted means
        # (already equal on every rank; sync_dist=True only spares Lightning's "use sync_dist" warning)
        self.log_dict({f"val/{k}": v for k, v in terms.items() if k != "loss"}, sync_dist=True)
        self.log("val/loss", terms["loss"], prog_bar=True, sync_dist=True)
        self.log_dict({f"val/{k}": v for k, v in values.items()}, prog_bar=False)
        if "AD100" in values and "IC100" in values:
            # one number to minimise (checkpoints, sweeps): drop minus increase at 100%, in points
            self.log("val/score", values["AD100"] - values["IC100"], prog_bar=True)

    def configure_optimizers(self) -> dict[str, Any]:
        """``model.optimizer`` / ``model.scheduler`` by ``_target_`` (default: the paper's SGD, biases at
        ``lr * bias_lr_mult``, per-epoch exponential decay); see :mod:`lcam.optim`."""
        opt = build_optimizer(self.optimizer_cfg, [self.head.conv.weight], [self.head.conv.bias])
        sched = build_scheduler(self.scheduler_cfg, opt)
        return {"optimizer": opt, "lr_scheduler": sched} if sched else {"optimizer": opt}

    # -- checkpoints without the frozen backbone -----------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k.startswith(BACKBONE_PREFIX)]:
            del state[key]
        if self.backbone_spec is not None:
            checkpoint["lcam_backbone"] = self.backbone_spec.to_dict()
        checkpoint["lcam_head_calibrated"] = self.calibrated

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("lcam_backbone")
        if saved is not None and self.backbone_spec is not None:
            mine = self.backbone_spec.to_dict()
            keys = ("name", "layer", "source")
            if any(saved.get(k) != mine.get(k) for k in keys):
                raise ValueError(
                    "Checkpoint backbone does not match this model: checkpoint has "
                    f"{ {k: saved.get(k) for k in keys} }, model has { {k: mine.get(k) for k in keys} }. "
                    "Use the same backbone config (e.g. the same +experiment=...) as the run that wrote it."
                )
        # a head saved after its calibration (or by a run without one) is never rescaled again
        self.calibrated = bool(checkpoint.get("lcam_head_calibrated", True))
        state = checkpoint.setdefault("state_dict", {})
        for key, value in self.backbone.state_dict().items():
            state.setdefault(BACKBONE_PREFIX + key, value)

    # -- loading and explaining (safe loading: lcam.checkpoint; explaining: lcam.explain) -------
    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, map_location: Any = None, hparams_file: Any = None,  # type: ignore[override]
                             strict: bool = True, **kwargs: Any) -> "LCAM":
        """Load a checkpoint written by ``train.py`` without executing code from it
        (``torch.load(weights_only=True)``); see :func:`lcam.checkpoint.load_module`.

        ``map_location=None`` puts the model on the CPU; ``kwargs`` replace hyperparameters
        (``backbone_weights=...`` chooses the frozen backbone's weights).
        """
        from lcam.checkpoint import load_module

        return load_module(checkpoint_path, cls, map_location=map_location, hparams_file=hparams_file, strict=strict, **kwargs)

    def as_explainer(self) -> Any:
        """This model as a registered ``lcam`` explainer (:class:`lcam.explainers.LCAMExplainer`)
        sharing its backbone and head: what :func:`lcam.explain` uses for an L-CAM model."""
        from lcam.explainers.learned import LCAMExplainer

        return LCAMExplainer(self.backbone, head=self.head, variant=self.variant)

    def explain(self, images: Any, targets: Any = None, k: int = 3, method: Any = None, **kwargs: Any) -> Any:
        """Saliency maps for PIL images, files, folders or a ``(B, 3, H, W)`` tensor in [0, 1]
        (``targets``: ``None``, a class, one per image or ``"topk"``); returns an
        :class:`lcam.explain.Explanation`. ``method=None``: this model's own explainer (L-CAM);
        any registered method otherwise. See :func:`lcam.explain.api.explain`. The model itself is
        left as it was (mode, parameters' flags, hooks)."""
        from lcam.explain.api import explain

        return explain(self, images, targets=targets, k=k, method=method, **kwargs)


def load_lcam_checkpoint(path: Any, **kwargs: Any) -> LCAM:
    """``LCAM.load_from_checkpoint(path, **kwargs)`` (``lcam.load_checkpoint``)."""
    return LCAM.load_from_checkpoint(path, **kwargs)


def _check_calibration(calibrate: Any) -> dict[str, float] | None:
    """``None`` or ``{"mean": float, "std": float > 0}``; anything else is a one-line error."""
    if calibrate is None:
        return None
    try:
        cfg = {"mean": float(calibrate.get("mean", 0.0)), "std": float(calibrate["std"])}
        extra = set(calibrate) - {"mean", "std"}
    except (AttributeError, KeyError, TypeError, ValueError):
        cfg, extra = None, set()
    if cfg is None or extra or not cfg["std"] > 0:
        raise ValueError(f"model.calibrate must be null or {{mean: <float>, std: <float > 0>}}, got {calibrate!r}")
    return cfg
