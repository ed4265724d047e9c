"""A frozen image classifier seen as two halves: ``features`` and ``classify``.

Every explainer and the L-CAM head talk to a classifier only through this wrapper:

* ``features(x)``  : images ``(B, 3, H, W)`` in [0, 1] -> feature maps ``F`` ``(B, K, h, w)``
  of the explained layer (normalisation happens inside);
* ``classify(F)``  : ``(B, K, h, w)`` -> logits ``(B, num_classes)``;
* ``forward(x)``   : ``classify(features(x))``.

The wrapper is always in eval mode (BatchNorm statistics and Dropout frozen, whatever
``.train()`` is called with) and its parameters never require gradients, but gradients
still flow *through* it to its inputs.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class BackboneSpec:
    """Identity of a backbone: enough to rebuild it (stored in checkpoints instead of weights).

    Attributes:
        name: model name (torchvision or timm), e.g. ``"vgg16"``, ``"tf_efficientnet_lite0"``.
        layer: explained layer, e.g. ``"features.29"`` (VGG-16 conv5_3 after ReLU); ``None``
            selects the model's last feature layer.
        weights: ``"imagenet"`` (pretrained, from the torchvision/timm caches), ``"none"``
            (random init, for tests and timing) or a path to a state-dict file.
        source: ``"torchvision"``, ``"timm"`` or ``"auto"`` (torchvision if it knows the name).
        mean, std: per-channel normalisation applied inside the wrapper (``None``: the
            model's own default).
        interpolation: resize interpolation the weights were trained with (data transforms).
    """

    name: str
    layer: str | None = None
    weights: str = "imagenet"
    source: str = "auto"
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    interpolation: str | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("mean", "std"):
            if d[key] is not None:
                d[key] = [float(v) for v in d[key]]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BackboneSpec":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ValueError(
                f"Unknown backbone option(s) {unknown}; valid: {sorted(cls.__dataclass_fields__)}"
            )
        return cls(**known)


class FrozenClassifier(nn.Module):
    """Frozen classifier split at the explained layer.

    Args:
        features: module mapping normalised images ``(B, 3, H, W)`` to ``(B, K, h, w)``.
        classify: module mapping ``(B, K, h, w)`` to logits ``(B, num_classes)``.
        mean, std: normalisation of [0, 1] images, 3 values each.
        spec: the backbone identity (kept for checkpoints and messages).
        class_names: optional list of ``num_classes`` names.
    """

    def __init__(
        self,
        features: nn.Module,
        classify: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        spec: BackboneSpec | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.feature_extractor = features
        self.classifier_head = classify
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.spec = spec
        self.class_names = list(class_names) if class_names is not None else None
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)
        self._feature_channels: int | None = None
        self._num_classes: int | None = None

    # -- frozen: eval mode whatever the caller asks ------------------------------------
    def train(self, mode: bool = True) -> "FrozenClassifier":  # noqa: ARG002 - frozen on purpose
        """Stay in eval mode: BatchNorm statistics and Dropout are frozen during L-CAM training."""
        return super().train(False)

    # -- the two halves ---------------------------------------------------------------
    def normalize(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W)`` in [0, 1] -> normalised input of the wrapped network."""
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def features(self, x: Tensor) -> Tensor:
        """Images ``(B, 3, H, W)`` in [0, 1] -> feature maps ``(B, K, h, w)`` of the explained layer."""
        return self.feature_extractor(self.normalize(x))

    def classify(self, feats: Tensor) -> Tensor:
        """Feature maps ``(B, K, h, w)`` -> logits ``(B, num_classes)``."""
        return self.classifier_head(feats)

    def forward(self, x: Tensor) -> Tensor:
        """Images ``(B, 3, H, W)`` in [0, 1] -> logits ``(B, num_classes)``."""
        return self.classify(self.features(x))

    # -- shapes found by a dry run ----------------------------------------------------
    def _dry_run(self) -> None:
        device = self.mean.device
        with torch.no_grad():
            f = self.features(torch.zeros(1, 3, 224, 224, device=device))
            logits = self.classify(f)
        self._feature_channels = int(f.shape[1])
        self._num_classes = int(logits.shape[1])

    @property
    def feature_channels(self) -> int:
        """K, the number of channels of the explained layer."""
        if self._feature_channels is None:
            self._dry_run()
        return int(self._feature_channels)  # type: ignore[arg-type]

    @property
    def num_classes(self) -> int:
        """Number of output classes."""
        if self._num_classes is None:
            self._dry_run()
        return int(self._num_classes)  # type: ignore[arg-type]

    def linear_readout(self) -> tuple[Tensor, Tensor] | None:
        """``(W, b)`` ``(C, K)``, ``(C,)`` when ``classify`` is global average pooling + one linear layer.

        Then ``logits = W GAP(F) + b``, and ``A_c = w_c . F + b_c`` ``(h, w)`` is the class
        activation map of class ``c`` (its spatial mean is the logit). Found as the last
        ``nn.Linear`` of ``classify`` with ``K`` inputs and verified on a dry run with random
        non-negative feature maps; ``None`` for any other classifier (VGG-16's fc layers, a
        nonlinear head).
        """
        linears = [m for m in self.classifier_head.modules() if isinstance(m, nn.Linear)]
        k, c = self.feature_channels, self.num_classes
        if not linears or (linears[-1].in_features, linears[-1].out_features) != (k, c):
            return None
        weight, bias = linears[-1].weight.detach(), linears[-1].bias
        bias = torch.zeros(c, device=weight.device) if bias is None else bias.detach()
        gen = torch.Generator().manual_seed(0)
        feats = torch.rand(2, k, 5, 3, generator=gen).to(weight.device)
        with torch.no_grad():
            logits = self.classify(feats.clone())
            expected = feats.mean(dim=(2, 3)) @ weight.t() + bias
        if not torch.allclose(logits, expected, atol=1e-4, rtol=1e-4):
            return None
        return weight.clone(), bias.clone()

    def class_name(self, index: int) -> str:
        """Human-readable name of class ``index`` (``"class <index>"`` when unknown)."""
        if self.class_names is not None and 0 <= index < len(self.class_names):
            return self.class_names[index]
        return f"class {index}"
