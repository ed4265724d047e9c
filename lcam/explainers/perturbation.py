"""Score-CAM and SS-CAM (types 1 and 2): channel weights from masked forward passes.

Score-CAM weighs channel ``k`` by its Channel-wise Increase of Confidence::

    C(A_k) = p_c(x (.) s(U(A_k))) - p_c(x_b),   s = per-map min-max to [0, 1],  x_b = 0
    w = softmax_k(C(A_k)),   S = ReLU(sum_k w_k A_k),   map = minmax(U(S))

with ``p_c`` the softmax probability of the target class. SS-CAM averages ``C(A_k)`` over
``n_samples`` noisy versions: noise on the activation maps (type 1) or on the input (type 2).

Work that cannot change the result is skipped:

* the baseline ``p_c(x_b)`` is the same for every channel of an image, and ``softmax`` over
  channels is shift-invariant, so subtracting it leaves ``w`` unchanged: it is never computed;
* a channel whose activation map is all zero adds ``w_k * 0`` to ``S`` whatever its score. Its
  only effect is through the softmax denominator, a positive per-image factor on ``S`` which
  commutes with ReLU and upsampling and is removed by the min-max normalisation. Such channels
  (``prune=True``) get no forward pass and are left out of the softmax.

Masked images are built chunk by chunk (``batch_size`` per forward pass; by default 32 on an
accelerator and a few per thread on CPU, see :func:`~lcam.explainers.base.chunk_size`) from ``(image, channel)``
pairs of the whole batch, in channels-last layout by default (faster convolutions on CPU, same
scores up to float rounding); only their scores are kept.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from lcam.backbones.frozen import FrozenClassifier
from lcam.explainers.base import (
    Explainer,
    Targets,
    check_non_negative,
    check_positive,
    chunk_size,
    chunks,
    make_generator,
)
from lcam.maps import upsample_then_normalize


class ScoreCAM(Explainer):
    """Score-CAM. ``#FW`` = live channels per image (``K`` without pruning), times ``n_samples``.

    Args:
        model: the frozen classifier.
        batch_size: masked images per forward pass; ``None``: 32 on an accelerator, ``4 x threads``
            on CPU (see :func:`~lcam.explainers.base.chunk_size`).
        prune: skip all-zero channels (same maps after normalisation; see the module docstring).
        channels_last: run the masked images in channels-last memory layout (same maps up to
            float rounding; faster convolutions on CPU).
    """

    name = "scorecam"
    #: noisy repetitions of every channel's score (1: plain Score-CAM)
    n_samples: int = 1
    #: seed of the noise of the smoothed variants (plain Score-CAM draws none)
    seed: int = 0

    #: masked images per forward pass on an accelerator when ``batch_size`` is ``None``
    accelerator_batch_size: int = 32

    def __init__(self, model: FrozenClassifier, batch_size: int | None = None, prune: bool = True,
                 channels_last: bool = True) -> None:
        super().__init__(model)
        if batch_size is not None:
            check_positive(batch_size=batch_size)
        self.batch_size = None if batch_size is None else int(batch_size)
        self.prune = bool(prune)
        self.channels_last = bool(channels_last)

    def explain(self, images: Tensor, targets: Targets) -> Tensor:
        acts, t = self.activations_and_targets(images, targets)
        with torch.no_grad():
            live = acts.flatten(2).ne(0).any(dim=2) | (not self.prune)  # (B, K): channels that get a pass
            scores = self.channel_scores(images, acts, t, live)
            weights = scores.masked_fill(~live, float("-inf")).softmax(dim=1).nan_to_num(0.0)
            cam = torch.einsum("bk,bkhw->bhw", weights, acts.float()).clamp(min=0)
        self.last_forward_passes = math.ceil(int(live.sum()) * self.n_samples / images.shape[0])
        return upsample_then_normalize(cam, images.shape[-2:])

    def channel_scores(self, images: Tensor, acts: Tensor, targets: Tensor, live: Tensor) -> Tensor:
        """Mean target probability of the masked images, ``(B, K)`` (0 where not ``live``).

        Args:
            images: ``(B, 3, H, W)``; acts: ``(B, K, h, w)``; targets: ``(B,)``;
            live: ``(B, K)`` bool, the channels that get a forward pass.
        """
        scores = torch.zeros(live.shape, device=images.device)
        pairs = live.nonzero()  # (M, 2): image index, channel index
        gen = make_generator(self.seed, images.device)
        size = self.masked_batch_size(images.device)
        for _ in range(self.n_samples):
            for part in chunks(pairs.shape[0], size):
                b, k = pairs[part, 0], pairs[part, 1]
                inputs = self.masked_inputs(images[b], acts[b, k], gen)
                scores[b, k] += self.masked_probabilities(inputs, targets[b]).float()
        return scores / self.n_samples

    def masked_batch_size(self, device: torch.device) -> int:
        """Masked images per forward pass on ``device`` (``batch_size`` or its device default)."""
        return chunk_size(self.batch_size, device, self.accelerator_batch_size)

    def masked_inputs(self, images: Tensor, acts: Tensor, gen: torch.Generator) -> Tensor:
        """``x (.) s(U(A_k))``: images ``(n, 3, H, W)`` and maps ``(n, h, w)`` -> ``(n, 3, H, W)``."""
        return images * self.masks(acts, images.shape[-2:]).unsqueeze(1)

    @staticmethod
    def masks(acts: Tensor, size: tuple[int, int]) -> Tensor:
        """``s(U(A_k))``: ``(n, h, w)`` maps -> ``(n, H, W)`` masks in [0, 1], each min-max normalised."""
        return upsample_then_normalize(acts, size)


class _SmoothedScoreCAM(ScoreCAM):
    """Score-CAM with channel scores averaged over ``n_samples`` noisy versions (SS-CAM)."""

    def __init__(self, model: FrozenClassifier, n_samples: int = 10, sigma: float = 2.0, batch_size: int | None = None,
                 prune: bool = True, seed: int = 0, channels_last: bool = True) -> None:
        super().__init__(model, batch_size=batch_size, prune=prune, channels_last=channels_last)
        check_positive(n_samples=n_samples)
        check_non_negative(sigma=sigma)
        self.n_samples = int(n_samples)
        self.sigma = float(sigma)
        self.seed = int(seed)


class SSCAM1(_SmoothedScoreCAM):
    """SS-CAM type 1: noise ``N(0, sigma^2)`` on the activation maps before they become masks.

    The noise is added to ``A_k`` on the feature grid, in activation units (so the effect of
    ``sigma`` depends on the backbone's activation scale), then the map is upsampled and min-max
    normalised: mask = ``s(U(A_k + sigma * eps))``. The final map uses the clean activations.
    ``#FW = n_samples *`` live channels. Paper settings: ``n_samples = 10, sigma = 2``.

    Args:
        model, batch_size, prune, channels_last: as :class:`ScoreCAM`.
        n_samples: noisy samples per channel.
        sigma: noise standard deviation, activation units.
        seed: seed of the noise.
    """

    name = "sscam1"

    def masked_inputs(self, images: Tensor, acts: Tensor, gen: torch.Generator) -> Tensor:
        noise = torch.randn(acts.shape, generator=gen, device=acts.device, dtype=acts.dtype)
        return images * self.masks(acts + self.sigma * noise, images.shape[-2:]).unsqueeze(1)


class SSCAM2(_SmoothedScoreCAM):
    """SS-CAM type 2: noise on the input image, ``(x + n) (.) s(U(A_k))``.

    ``sigma`` is in the units of the network's normalised input (as in the paper, whose networks
    see ImageNet-normalised images): on the [0, 1] image the noise of channel ``c`` has standard
    deviation ``sigma * std_c`` (the classifier's normalisation std; ``sigma = 2`` gives about
    0.45 for ImageNet). The noisy image is not clipped. ``#FW = n_samples *`` live channels.

    Args:
        model, batch_size, prune, channels_last: as :class:`ScoreCAM`.
        n_samples: noisy samples per channel.
        sigma: noise standard deviation, normalised-input units.
        seed: seed of the noise.
    """

    name = "sscam2"

    def masked_inputs(self, images: Tensor, acts: Tensor, gen: torch.Generator) -> Tensor:
        noise = torch.randn(images.shape, generator=gen, device=images.device, dtype=images.dtype)
        scale = self.sigma * self.model.std.to(device=images.device, dtype=images.dtype)
        return (images + scale * noise) * self.masks(acts, images.shape[-2:]).unsqueeze(1)
