"""Integrated Gradients, SmoothGrad and Occlusion through Captum, behind the explainer interface.

The attributions are Captum's (``captum.attr``: ``IntegratedGradients``, ``NoiseTunnel`` over
``Saliency``, ``Occlusion``); nothing of their algorithms is re-implemented here. This module only

* hands Captum the classifier on [0, 1] images (normalisation is inside the classifier) as a
  forward function that counts the images it sees (``last_forward_passes``, the project's ``#FW``:
  every image Captum sends through the classifier, plus the pass that picks the top-1 class when
  ``targets`` is ``None``; :class:`lcam.evaluation.ForwardCounter` counts the same);
* reduces the attributions ``(B, 3, H, W)`` over the colour channels to ``(B, H, W)``
  (``reduction``: ``"positive_sum"`` = ``ReLU(sum_c a_c)``, the evidence *for* the class, as Captum's
  ``visualize_image_attr(sign="positive")``, which also sums over channels first; ``"abs_sum"`` =
  ``sum_c |a_c|``, the magnitude whatever its sign), then min-max normalises each map to [0, 1];
* runs on ``images.device`` in chunks of ``batch_size`` images per forward pass, seeds SmoothGrad's
  noise (Captum draws it from the global generator; it is forked, so the caller's random state is
  unchanged), and works inside ``torch.inference_mode()`` (switched off locally, on a copy).

Install: ``pip install captum`` (0.9 needs ``torch``, ``numpy``, ``matplotlib``, ``packaging``,
``tqdm``; it leaves the project's torch as it is). Captum is imported when an explainer is built.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, ClassVar, Iterator

import torch
from torch import Tensor

from lcam.backbones.frozen import FrozenClassifier
from lcam.explainers.base import (
    SCORES,
    Explainer,
    Targets,
    check_non_negative,
    check_positive,
    check_substrate,
    chunk_size,
)
from lcam.explainers.registry import register_explainer
from lcam.maps import minmax_normalize

#: how attributions ``(B, 3, H, W)`` become maps ``(B, H, W)`` (see the module docstring)
REDUCTIONS = ("positive_sum", "abs_sum")


def reduce_channels(attributions: Tensor, reduction: str) -> Tensor:
    """``(B, 3, H, W)`` attributions -> ``(B, H, W)``: ``ReLU(sum_c a_c)`` or ``sum_c |a_c|``."""
    if reduction == "positive_sum":
        return attributions.sum(dim=1).clamp(min=0)
    if reduction == "abs_sum":
        return attributions.abs().sum(dim=1)
    raise ValueError(f"Unknown reduction {reduction!r}; valid: {list(REDUCTIONS)}")


def _captum_attr() -> Any:
    try:
        import captum.attr
    except ImportError as err:  # pragma: no cover - captum is a requirement
        raise ImportError("The Captum explainers need captum: pip install captum") from err
    return captum.attr


@contextlib.contextmanager
def seeded_global_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Seed the global generator of ``device`` (CPU or the CUDA device) inside the block, and restore
    the caller's random state afterwards (for libraries that draw from the global generator)."""
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.random.default_generator.manual_seed(int(seed))
        if cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(int(seed))
        yield


class CountingForward:
    """The classifier as Captum's ``forward_func``: images ``(N, 3, H, W)`` in [0, 1] -> ``(N, C)``
    logits (or softmax probabilities), counting the images in ``images``."""

    def __init__(self, model: FrozenClassifier, score: str = "logit") -> None:
        if score not in SCORES:
            raise ValueError(f"Unknown score {score!r}; valid: {list(SCORES)}")
        self.model, self.score, self.images = model, score, 0

    def __call__(self, inputs: Tensor) -> Tensor:
        self.images += int(inputs.shape[0])
        out = self.model(inputs)
        return out.softmax(dim=1) if self.score == "probability" else out


class CaptumExplainer(Explainer):
    """Base of the Captum explainers; subclasses define :meth:`attribute` (one Captum call).

    Args:
        model: the frozen classifier.
        reduction: ``"positive_sum"`` or ``"abs_sum"`` over colour channels (module docstring).
        score: what Captum attributes: the class ``"logit"`` or its softmax ``"probability"``.
        batch_size: images per forward pass; ``None``: 64 on an accelerator, ``max(4, threads)`` on CPU.
    """

    #: images per forward pass on an accelerator when ``batch_size`` is ``None``
    accelerator_batch_size: ClassVar[int] = 64

    def __init__(self, model: FrozenClassifier, reduction: str = "positive_sum", score: str = "logit",
                 batch_size: int | None = None) -> None:
        super().__init__(model)
        _captum_attr()
        if reduction not in REDUCTIONS:
            raise ValueError(f"Unknown reduction {reduction!r}; valid: {list(REDUCTIONS)}")
        if score not in SCORES:
            raise ValueError(f"Unknown score {score!r}; valid: {list(SCORES)}")
        if batch_size is not None:
            check_positive(batch_size=batch_size)
        self.reduction = reduction
        self.score = score
        self.batch_size = None if batch_size is None else int(batch_size)
        model.num_classes  # noqa: B018 - a first dry run (if any) at build time, not counted in a call's #FW

    def explain(self, images: Tensor, targets: Targets) -> Tensor:
        forward = CountingForward(self.model, self.score)
        with torch.inference_mode(False):
            x = images.clone()  # a normal tensor, even when ``images`` was made in inference mode
            if targets is None:
                with torch.no_grad():
                    t = self.targets_for(None, x, forward(x))
            else:
                t = self.targets_for(targets, x)
            with torch.enable_grad():
                attributions = self.attribute(forward, x, t.clone())
        self.last_forward_passes = forward.images / images.shape[0]
        self.report(1, 1)
        return minmax_normalize(reduce_channels(attributions.detach().float(), self.reduction))

    def images_per_pass(self, images: Tensor) -> int:
        """Images per forward pass on ``images.device`` (``batch_size`` or its device default)."""
        return chunk_size(self.batch_size, images.device, self.accelerator_batch_size)

    def attribute(self, forward: Callable[[Tensor], Tensor], images: Tensor, targets: Tensor) -> Tensor:
        """Captum's attributions ``(B, 3, H, W)`` of ``targets`` ``(B,)`` for ``images`` ``(B, 3, H, W)``."""
        raise NotImplementedError


@register_explainer
class IntegratedGradients(CaptumExplainer):
    """Integrated Gradients through ``captum.attr.IntegratedGradients``.

    Sundararajan, Taly, Yan, "Axiomatic attribution for deep networks", ICML 2017,
    https://arxiv.org/abs/1703.01365. For image ``x``, baseline ``x'`` and class score ``F_c``::

        IG_i(x) = (x_i - x'_i) * integral_0^1 dF_c(x' + a (x - x')) / dx_i  da      (B, 3, H, W)

    approximated by Captum with ``n_steps`` points (``method``, Captum's default Gauss-Legendre).
    The map is ``reduction`` over colour channels (default: the positive part of the channel sum),
    min-max normalised. ``#FW = n_steps`` (+1 when it picks the top-1 class itself).

    Args:
        model, reduction, score, batch_size: as :class:`CaptumExplainer` (default score: the logit).
        n_steps: points of the path integral.
        baseline: ``x'``: ``"black"`` (the paper's, 0 in [0, 1] pixel space), ``"mean"`` (the
            dataset mean colour) or ``"blur"`` (see :func:`lcam.maps.substrate_images`).
        method: Captum's approximation (``"gausslegendre"``, ``"riemann_trapezoid"``, ...).
    """

    name = "integratedgradients"

    def __init__(self, model: FrozenClassifier, n_steps: int = 50, baseline: str = "black",
                 method: str = "gausslegendre", reduction: str = "positive_sum", score: str = "logit",
                 batch_size: int | None = None) -> None:
        super().__init__(model, reduction=reduction, score=score, batch_size=batch_size)
        check_positive(n_steps=n_steps)
        self.n_steps = int(n_steps)
        self.baseline = check_substrate(baseline)
        self.substrate = self.baseline  # what :meth:`substrate_for` reads
        self.method = str(method)

    def attribute(self, forward: Callable[[Tensor], Tensor], images: Tensor, targets: Tensor) -> Tensor:
        ig = _captum_attr().IntegratedGradients(forward)
        return ig.attribute(images, baselines=self.substrate_for(images).contiguous(), target=targets,
                            n_steps=self.n_steps, method=self.method,
                            internal_batch_size=max(self.images_per_pass(images), images.shape[0]))


@register_explainer
class SmoothGrad(CaptumExplainer):
    """SmoothGrad through ``captum.attr.NoiseTunnel(Saliency)`` (``nt_type="smoothgrad"``).

    Smilkov, Thorat, Kim, Viegas, Wattenberg, "SmoothGrad: removing noise by adding noise", 2017,
    https://arxiv.org/abs/1706.03825. The mean over ``n_samples`` noisy copies of the gradient of
    the class score::

        M_c(x) = 1/n sum_i dS_c(x + N(0, sigma^2)) / dx         (B, 3, H, W)

    with the signed gradient (Saliency with ``abs=False``, the paper's formula; the sign is
    handled by ``reduction``, default ``"abs_sum"``: ``sum_c |M_c|``), then min-max. ``sigma =
    noise_std`` on the [0, 1] image, i.e. ``noise_std`` of the range of the pixel space (Captum takes
    one ``stdevs`` per input tensor, not per image; the paper's 10-20 % of the input range).
    ``#FW = n_samples`` (+1 when it picks the top-1 class itself). Seeded: the same images give the
    same maps.

    Args:
        model, reduction, score, batch_size: as :class:`CaptumExplainer` (default score: the logit).
        n_samples: noisy copies per image.
        noise_std: standard deviation of the noise, [0, 1] pixel units.
        seed: seed of the noise.
    """

    name = "smoothgrad"

    def __init__(self, model: FrozenClassifier, n_samples: int = 50, noise_std: float = 0.15, seed: int = 0,
                 reduction: str = "abs_sum", score: str = "logit", batch_size: int | None = None) -> None:
        super().__init__(model, reduction=reduction, score=score, batch_size=batch_size)
        check_positive(n_samples=n_samples)
        check_non_negative(noise_std=noise_std)
        self.n_samples = int(n_samples)
        self.noise_std = float(noise_std)
        self.seed = int(seed)

    def attribute(self, forward: Callable[[Tensor], Tensor], images: Tensor, targets: Tensor) -> Tensor:
        attr = _captum_attr()
        tunnel = attr.NoiseTunnel(attr.Saliency(forward))
        per_pass = max(1, self.images_per_pass(images) // images.shape[0])
        with seeded_global_rng(self.seed, images.device):
            return tunnel.attribute(images, nt_type="smoothgrad", nt_samples=self.n_samples,
                                    nt_samples_batch_size=min(per_pass, self.n_samples), stdevs=self.noise_std,
                                    target=targets, abs=False)


@register_explainer
class Occlusion(CaptumExplainer):
    """Occlusion through ``captum.attr.Occlusion``.

    Zeiler & Fergus, "Visualizing and understanding convolutional networks", ECCV 2014,
    https://arxiv.org/abs/1311.2901. A ``window`` x ``window`` square (all colour channels) slides
    over the image by ``stride`` pixels and is replaced by the ``baseline``; each pixel gets the
    mean drop of the class score over the windows that cover it::

        a(x)_ij = mean_{windows W containing ij} S_c(x) - S_c(x with W occluded)       (B, 3, H, W)

    The same value on all three channels; the map is ``reduction`` of it (default: the positive
    part, the evidence for the class), min-max. A window larger than the image is clipped to it.
    ``#FW`` = 1 (Captum's pass on the unmodified image) + the window positions,
    ``prod_d (ceil((size_d - window) / stride) + 1)`` (169 at 224 px with the defaults), +1 when
    it picks the top-1 class itself.

    Args:
        model, reduction, batch_size: as :class:`CaptumExplainer`.
        window: side of the occluding square, pixels.
        stride: step of the window, pixels (at most ``window``: Captum's rule).
        baseline: what occluded pixels become: ``"mean"`` (the grey of the paper: the dataset mean
            colour), ``"black"`` or ``"blur"``.
        score: ``"probability"`` (the paper plots the probability of the class) or ``"logit"``.
    """

    name = "occlusion"

    def __init__(self, model: FrozenClassifier, window: int = 32, stride: int = 16, baseline: str = "mean",
                 score: str = "probability", reduction: str = "positive_sum", batch_size: int | None = None) -> None:
        super().__init__(model, reduction=reduction, score=score, batch_size=batch_size)
        check_positive(window=window, stride=stride)
        if stride > window:
            raise ValueError(f"stride must be <= window (Captum's rule), got stride={stride}, window={window}")
        self.window = int(window)
        self.stride = int(stride)
        self.baseline = check_substrate(baseline)
        self.substrate = self.baseline

    def attribute(self, forward: Callable[[Tensor], Tensor], images: Tensor, targets: Tensor) -> Tensor:
        h, w = images.shape[-2:]
        shape = (images.shape[1], min(self.window, h), min(self.window, w))
        strides = (images.shape[1], min(self.stride, shape[1]), min(self.stride, shape[2]))
        per_pass = max(1, self.images_per_pass(images) // images.shape[0])
        with torch.no_grad():
            return _captum_attr().Occlusion(forward).attribute(
                images, sliding_window_shapes=shape, strides=strides, baselines=self.substrate_for(images).contiguous(),
                target=targets, perturbations_per_eval=per_pass)
