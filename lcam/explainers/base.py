"""The interface every explainer shares, and the small helpers they all use.

An explainer wraps a :class:`~lcam.backbones.frozen.FrozenClassifier` and maps a batch of images
to one saliency map per image::

    explainer = GradCAM(model)
    maps = explainer(images, targets=None)   # (B, 3, H, W) in [0, 1] -> (B, H, W) in [0, 1]
    explainer.last_forward_passes            # #FW of the last call, per image

Conventions shared by every method:

* ``targets``: ``None`` (the classifier's top-1 prediction per image), one class id or name for
  the whole batch, a list of ``B`` ids/names or a ``LongTensor`` ``(B,)`` (parsed by
  :mod:`lcam.explainers.targets`, the project's one target parser). Ids outside ``0..C-1`` raise
  :class:`~lcam.runtime.io.InputError` (a ``ValueError``) naming the valid range.
* One-pass methods (``shares_features = True``: the gradient CAMs, L-CAM) compute their map from
  the explained layer's activations of one pass, :meth:`Explainer.maps_from_features`; a caller
  that already ran that pass (for the logits) passes the activations instead of running it twice.
* Long methods report progress through :meth:`Explainer.reporting` (a callback of the fraction
  of the call done), per chunk of masked passes.
* Everything runs on ``images.device``; random methods draw from a ``torch.Generator`` on that
  device, seeded from the ``seed`` setting at every call (same images -> same maps).
* No hooks: methods talk to the classifier through ``features`` / ``classify`` only.
* ``last_forward_passes`` is ``#FW``, the project's one definition: the images sent through the
  classifier's feature extractor during the call, per explained image (a batch of B counts B):
  the masked or noisy copies the method builds *and* the pass on the unmodified image where the
  method runs one (Score-CAM: live channels + 1; RISE: N, +1 when it picks the top-1 class itself;
  gradient CAMs and L-CAM: 1). :class:`lcam.evaluation.ForwardCounter` counts the same by a hook,
  and the tests check that both agree for every registered method.
"""
from __future__ import annotations

import contextlib
import inspect
import warnings
from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, Iterator, Sequence

import torch
from torch import Tensor, nn

from lcam.backbones.frozen import FrozenClassifier
from lcam.explainers.targets import ClassSpace, Targets, class_ids
from lcam.maps import SUBSTRATES, substrate_images
from lcam.runtime.batching import chunks, make_generator  # noqa: F401 - used by every method (re-exported)

#: ``callback(fraction)``: the fraction in [0, 1] of the current explainer call that is done
ProgressCallback = Callable[[float], None]


def resolve_targets(targets: Targets, batch_size: int, num_classes: int, device: torch.device,
                    logits: Tensor | None = None, class_names: Sequence[str] | None = None) -> Tensor:
    """Class ids ``(B,)`` (long, on ``device``): one class per image, by :mod:`lcam.explainers.targets`.

    Args:
        targets: ``None``, an id or name, ``B`` ids/names or a tensor ``(B,)`` / scalar.
        batch_size: ``B``.
        num_classes: ``C``; ids must lie in ``0..C-1``.
        device: where the ids go.
        logits: ``(B, C)`` logits of the unmodified images; required when ``targets`` is ``None``.
        class_names: the classifier's class names (for targets given by name).

    Raises:
        InputError (a ``ValueError``): wrong number of targets, an id outside ``0..C-1``, an unknown name.
    """
    return class_ids(targets, batch_size, ClassSpace.of(num_classes, class_names), device, logits)


def check_images(images: Tensor) -> None:
    """Raise ``ValueError`` unless ``images`` is a floating ``(B, 3, H, W)`` batch."""
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(
            f"images must be a floating (B, 3, H, W) tensor in [0, 1], got {tuple(images.shape)} {images.dtype}"
        )


#: fewest masked images per forward pass on CPU when ``batch_size`` is ``None``
CPU_CHUNK = 4


def chunk_size(batch_size: int | None, device: torch.device | str, accelerator_default: int) -> int:
    """Masked images per forward pass: ``batch_size``, or when it is ``None`` a default for ``device``.

    On an accelerator the default is ``accelerator_default`` (large batches keep it busy). On CPU it
    is ``max(4, torch.get_num_threads())``, at most ``accelerator_default``: CPU convolutions gain
    little from big batches and lose cache locality. On the 2-core benchmark machine (2 threads,
    channels-last, ms per masked image at 4 / 8 / 16 per pass): MobileNetV2 7.8 / 10.4 / 15.4,
    EfficientNet-Lite0 11 / 14 / 18, ResNet-50 51 / 53 / 58, VGG-16 171 / 166 / 167; one thread
    gives the same picture. The chunk size never changes the maps (beyond float rounding).
    """
    if batch_size is not None:
        return int(batch_size)
    if torch.device(device).type != "cpu":
        return int(accelerator_default)
    return max(1, min(int(accelerator_default), max(CPU_CHUNK, torch.get_num_threads())))


#: what a masked forward pass reports for the target class
SCORES = ("probability", "logit")


def class_scores(model: nn.Module, inputs: Tensor, targets: Tensor, score: str = "probability") -> Tensor:
    """Softmax probability or logit of ``targets`` ``(N,)`` for images ``(N, 3, H, W)`` -> ``(N,)``."""
    logits = model(inputs)
    if score == "probability":
        logits = logits.softmax(dim=1)
    elif score != "logit":
        raise ValueError(f"Unknown score {score!r}; valid: {list(SCORES)}")
    return logits.gather(1, targets.view(-1, 1)).squeeze(1)


def check_substrate(substrate: str) -> str:
    """Return ``substrate`` or raise ``ValueError`` listing the valid ones (:data:`lcam.maps.SUBSTRATES`)."""
    if substrate not in SUBSTRATES:
        raise ValueError(f"Unknown substrate {substrate!r}; valid: {list(SUBSTRATES)}")
    return substrate


def apply_masks(images: Tensor, substrate: Tensor, masks: Tensor) -> Tensor:
    """``substrate + (x - substrate) (.) M``: images and substrate ``(..., 3, H, W)``, masks ``(..., H, W)`` (broadcast).

    With the ``mean`` substrate this is ``norm^-1(norm(x) (.) M)``, the reference codes' masking.
    Masks outside [0, 1] (SS-CAM type 1 adds noise to them) extrapolate the same line.
    """
    return substrate + (images - substrate) * masks.unsqueeze(-3)


def check_positive(**values: float) -> None:
    """Raise ``ValueError`` naming the first setting that is not > 0."""
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")


def check_non_negative(**values: float) -> None:
    """Raise ``ValueError`` naming the first setting that is < 0."""
    for name, value in values.items():
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


class Explainer(nn.Module, ABC):
    """Base class: ``explainer(images, targets=None) -> (B, H, W)`` saliency in [0, 1].

    An ``nn.Module`` so that it follows the classifier across devices (``.to()``) inside a
    LightningModule; it has no parameters of its own and never trains.

    Args:
        model: the frozen classifier to explain.

    Attributes:
        last_forward_passes: ``#FW`` per image of the last call (see the module docstring).
    """

    #: registry name, set by each concrete class
    name: str = ""
    #: whether :meth:`maps_from_features` gives this method's maps from one pass's activations
    shares_features: ClassVar[bool] = False
    #: settings a config must give (``build_explainer`` / ``evaluate.py`` say which is missing)
    required_settings: ClassVar[tuple[str, ...]] = ()
    #: what else provides the required settings, for messages (e.g. "an L-CAM model or checkpoint")
    requirement_hint: ClassVar[str] = ""
    #: the setting that names a checkpoint file the method is built from (``None``: it has none)
    checkpoint_setting: ClassVar[str | None] = None

    def __init__(self, model: FrozenClassifier) -> None:
        super().__init__()
        self.model = model
        self.last_forward_passes: float = 0
        self._progress: ProgressCallback | None = None

    def forward(self, images: Tensor, targets: Targets = None) -> Tensor:  # type: ignore[override]
        """Saliency maps for a batch.

        Args:
            images: ``(B, 3, H, W)`` in [0, 1], on the classifier's device.
            targets: see :func:`resolve_targets`.

        Returns:
            ``(B, H, W)`` float32 maps in [0, 1] (an all-zero map where nothing is salient).
        """
        check_images(images)
        maps = self.explain(images, targets)
        return maps.float().clamp(0.0, 1.0)

    @abstractmethod
    def explain(self, images: Tensor, targets: Targets) -> Tensor:
        """Method body: ``(B, 3, H, W)`` images -> ``(B, H, W)`` maps; sets ``last_forward_passes``."""

    def maps_from_features(self, images: Tensor, feats: Tensor, targets: Tensor) -> Tensor:
        """Maps ``(B, H, W)`` in [0, 1] from the activations ``feats`` ``(B, K, h, w)`` of one pass
        on ``images`` ``(B, 3, H, W)``, for class ids ``targets`` ``(B,)``; only where
        :attr:`shares_features` is true (one-pass methods)."""
        raise NotImplementedError(f"{type(self).__name__} runs passes of its own (shares_features is False)")

    @property
    def layer(self) -> str | None:
        """The explained layer of the classifier (``None`` for a classifier without an identity)."""
        spec = getattr(self.model, "spec", None)
        return spec.layer if spec is not None else None

    @contextlib.contextmanager
    def reporting(self, callback: ProgressCallback | None) -> Iterator[None]:
        """Call ``callback(fraction done)`` during the calls made inside the block (per chunk of
        masked passes for the perturbation methods; nothing for the one-pass methods)."""
        previous, self._progress = self._progress, callback
        try:
            yield
        finally:
            self._progress = previous

    def report(self, done: float, total: float) -> None:
        """Tell the progress callback that ``done`` of ``total`` units of this call are finished."""
        if self._progress is not None and total > 0:
            self._progress(min(1.0, float(done) / float(total)))

    def targets_for(self, targets: Targets, images: Tensor, logits: Tensor | None = None) -> Tensor:
        """``(B,)`` class ids for ``images``; ``C`` comes from ``logits`` when given, else the model."""
        num_classes = int(logits.shape[1]) if logits is not None else self.model.num_classes
        names = getattr(self.model, "class_names", None)
        return resolve_targets(targets, images.shape[0], num_classes, images.device, logits, names)

    @torch.no_grad()
    def activations_and_targets(self, images: Tensor, targets: Targets) -> tuple[Tensor, Tensor]:
        """One pass on the unmodified images: activations ``(B, K, h, w)`` and targets ``(B,)``."""
        acts = self.model.features(images)
        logits = self.model.classify(acts.clone())  # an in-place first op must not change ``acts``
        return acts, self.targets_for(targets, images, logits)

    def masked_scores(self, inputs: Tensor, targets: Tensor, score: str = "probability") -> Tensor:
        """Softmax probability (or logit) of ``targets`` ``(N,)`` for the method's own inputs ``(N, 3, H, W)`` -> ``(N,)``.

        Perturbation methods build their inputs (masked or noisy copies), so they also choose the
        memory layout the classifier runs them in: channels-last where the method has
        ``channels_last = True``. Channels-last convolutions are faster on CPU (oneDNN; measured in
        ``benchmarks/``) and give the same probabilities up to float rounding. A
        classifier that cannot take them (a ``.view()`` on its feature maps) falls back to the
        default layout with a warning.
        """
        if getattr(self, "channels_last", False):
            try:
                return class_scores(self.model, inputs.contiguous(memory_format=torch.channels_last), targets, score)
            except RuntimeError as err:
                if "view" not in str(err):
                    raise
                self.channels_last = False
                warnings.warn(f"{type(self).__name__}: the classifier cannot run channels-last inputs ({err}); "
                              "using the default memory layout (set channels_last=false to silence this)", stacklevel=2)
        return class_scores(self.model, inputs, targets, score)

    def substrate_for(self, images: Tensor) -> Tensor:
        """The masked-out pixels of ``images`` ``(B, 3, H, W)`` for this method's ``substrate`` setting."""
        return substrate_images(images, self.substrate, self.model.mean)

    def settings(self) -> dict[str, Any]:
        """The constructor settings of this instance (for logs and ``repr``)."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p not in ("self", "model")]
        return {n: getattr(self, n) for n in names if hasattr(self, n) and not isinstance(getattr(self, n), nn.Module)}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.settings().items())

    def __repr__(self) -> str:  # the wrapped classifier would drown the settings
        return f"{type(self).__name__}({self.extra_repr()})"
