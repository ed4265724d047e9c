"""Score-CAM and SS-CAM (types 1 and 2): channel weights from masked forward passes.

Every channel ``k`` of the explained layer becomes a mask ``H_k = s(U(A_k))`` (upsample, then
per-map min-max to [0, 1]); the classifier scores the masked image ``x (.) H_k`` (masked-out
pixels take the ``substrate``: the dataset mean by default, as the reference codes multiply the
*normalised* input), and the map is ``S = ReLU(sum_k alpha_k A_k)``, then ``minmax(U(S))``.

Channel weights ``alpha``:

* Score-CAM, ``weighting="logit_softmax"`` (its paper's Algorithm 1, pytorch-grad-cam):
  ``alpha = softmax_k(f_c(x (.) H_k))`` with ``f_c`` the class *logit*. The paper subtracts the
  baseline score ``f_c(x_b)``; it is the same for every ``k`` and cancels in the softmax.
* Score-CAM, ``weighting="probability"`` (the Score-CAM authors' public code and the code behind
  the L-CAM paper's Table 1): ``alpha_k = p_c(x (.) H_k)``, the softmax probability, no softmax
  over channels.
* SS-CAM (its paper's Eq. 9-15): ``alpha_k`` = mean over ``n_samples`` noisy versions of the
  masked image's probability ``p_c`` (the CIC without a baseline, as the authors' code computes it;
  no softmax over channels). Type 1: noise on the mask ``H_k``; type 2: noise on the masked image.

Work that cannot change the result is skipped (``prune=True``): a channel whose activation map
is all zero adds ``alpha_k * 0`` to ``S`` whatever its weight, so its masked image never needs a
pass of its own. Its only effect is through the softmax of ``logit_softmax``, whose denominator it
enters with the score of a fully masked image (``H_k = 0``: the substrate alone). That score is
the same for every dead channel of an image, so one pass on the substrate per image (counted in
``#FW``) makes pruned weights equal to unpruned ones. With ``probability`` weights nothing is needed.

Masked images are built chunk by chunk (``batch_size`` per forward pass; by default 32 on an
accelerator and ``max(4, threads)`` on CPU, see :func:`~lcam.explainers.base.chunk_size`) from
``(image, channel)`` pairs of the whole batch, in channels-last layout by default (faster
convolutions on CPU, same scores up to float rounding); only their scores are kept.
"""
from __future__ import annotations

import torch
from torch import Tensor

from lcam.backbones.frozen import FrozenClassifier
from lcam.explainers.base import (
    Explainer,
    Targets,
    apply_masks,
    check_non_negative,
    check_positive,
    check_substrate,
    chunk_size,
    chunks,
    make_generator,
)
from lcam.maps import upsample_then_normalize

#: Score-CAM channel weightings (see the module docstring)
WEIGHTINGS = ("logit_softmax", "probability")


class ScoreCAM(Explainer):
    """Score-CAM. ``#FW`` = 1 (the activations) + live channels per image (``K`` without pruning), plus one
    substrate pass per image with dead channels under ``logit_softmax`` (a batch average).

    Args:
        model: the frozen classifier.
        weighting: ``"logit_softmax"`` (paper's Algorithm 1, default) or ``"probability"`` (the
            authors' public code, the L-CAM paper's Table 1).
        substrate: what masked-out pixels become: ``"mean"`` (the reference codes), ``"black"``
            or ``"blur"`` (see :func:`lcam.maps.substrate_images`).
        batch_size: masked images per forward pass; ``None``: 32 on an accelerator, ``max(4, threads)``
            on CPU (see :func:`~lcam.explainers.base.chunk_size`).
        prune: skip all-zero channels (same weights and maps; see the module docstring).
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

    def __init__(self, model: FrozenClassifier, weighting: str = "logit_softmax", substrate: str = "mean",
                 batch_size: int | None = None, prune: bool = True, channels_last: bool = True) -> None:
        super().__init__(model)
        if weighting not in WEIGHTINGS:
            raise ValueError(f"Unknown weighting {weighting!r}; valid: {list(WEIGHTINGS)}")
        if batch_size is not None:
            check_positive(batch_size=batch_size)
        self.weighting = weighting
        self.substrate = check_substrate(substrate)
        self.batch_size = None if batch_size is None else int(batch_size)
        self.prune = bool(prune)
        self.channels_last = bool(channels_last)

    @property
    def score(self) -> str:
        """What a masked pass reports: the class ``"logit"`` or its softmax ``"probability"``."""
        return "logit" if self.weighting == "logit_softmax" else "probability"

    def explain(self, images: Tensor, targets: Targets) -> Tensor:
        acts, t = self.activations_and_targets(images, targets)
        with torch.no_grad():
            weights, passes = self.channel_weights(images, acts, t)
            cam = torch.einsum("bk,bkhw->bhw", weights, acts.float()).clamp(min=0)
        self.last_forward_passes = passes / images.shape[0] + 1  # + the pass that read the activations
        return upsample_then_normalize(cam, images.shape[-2:])

    def channel_weights(self, images: Tensor, acts: Tensor, targets: Tensor) -> tuple[Tensor, int]:
        """``alpha`` ``(B, K)`` and the number of masked forward passes it took (whole batch).

        Args:
            images: ``(B, 3, H, W)`` in [0, 1]; acts: ``(B, K, h, w)``; targets: ``(B,)``.
        """
        live = acts.flatten(2).ne(0).any(dim=2) | (not self.prune)  # (B, K): channels that get a pass
        substrate = self.substrate_for(images)
        scores = self.channel_scores(images, substrate, acts, targets, live)
        passes = int(live.sum()) * self.n_samples
        if self.weighting == "probability":
            return scores, passes
        dead = ~live
        rows = dead.any(dim=1).nonzero().flatten()  # images with pruned channels
        # a dead channel's mask is all zero: its masked image is the substrate alone, one pass per image
        for part in chunks(rows.numel(), self.masked_batch_size(images.device)):
            r = rows[part]
            base = self.masked_scores(substrate[r], targets[r], self.score).float()
            scores[r] = torch.where(dead[r], base.view(-1, 1), scores[r])
        passes += int(rows.numel())
        return scores.softmax(dim=1), passes

    def channel_scores(self, images: Tensor, substrate: Tensor, acts: Tensor, targets: Tensor, live: Tensor) -> Tensor:
        """Mean score (logit or probability) of the masked images, ``(B, K)`` (0 where not ``live``).

        Args:
            images, substrate: ``(B, 3, H, W)``; acts: ``(B, K, h, w)``; targets: ``(B,)``;
            live: ``(B, K)`` bool, the channels that get a forward pass.
        """
        scores = torch.zeros(live.shape, device=images.device)
        pairs = live.nonzero()  # (M, 2): image index, channel index
        gen = make_generator(self.seed, images.device)
        size = self.masked_batch_size(images.device)
        total = self.n_samples * pairs.shape[0]
        for sample in range(self.n_samples):
            for part in chunks(pairs.shape[0], size):
                b, k = pairs[part, 0], pairs[part, 1]
                inputs = self.masked_inputs(images[b], substrate[b], acts[b, k], gen)
                scores[b, k] += self.masked_scores(inputs, targets[b], self.score).float()
                self.report(sample * pairs.shape[0] + part.stop, total)
        return scores / self.n_samples

    def masked_batch_size(self, device: torch.device) -> int:
        """Masked images per forward pass on ``device`` (``batch_size`` or its device default)."""
        return chunk_size(self.batch_size, device, self.accelerator_batch_size)

    def masked_inputs(self, images: Tensor, substrate: Tensor, acts: Tensor, gen: torch.Generator) -> Tensor:
        """``x (.) H_k``: images and substrate ``(n, 3, H, W)``, maps ``(n, h, w)`` -> ``(n, 3, H, W)``."""
        return apply_masks(images, substrate, self.masks(acts, images.shape[-2:]))

    @staticmethod
    def masks(acts: Tensor, size: tuple[int, int]) -> Tensor:
        """``H_k = s(U(A_k))``: ``(n, h, w)`` maps -> ``(n, H, W)`` masks in [0, 1], each min-max normalised."""
        return upsample_then_normalize(acts, size)


class _SmoothedScoreCAM(ScoreCAM):
    """SS-CAM: the weight of channel ``k`` is its masked probability averaged over ``n_samples``
    noisy versions (no softmax over channels); subclasses say where the noise goes."""

    def __init__(self, model: FrozenClassifier, n_samples: int = 10, sigma: float = 2.0, substrate: str = "mean",
                 batch_size: int | None = None, prune: bool = True, seed: int = 0, channels_last: bool = True) -> None:
        super().__init__(model, weighting="probability", substrate=substrate, batch_size=batch_size, prune=prune,
                         channels_last=channels_last)
        check_positive(n_samples=n_samples)
        check_non_negative(sigma=sigma)
        self.n_samples = int(n_samples)
        self.sigma = float(sigma)
        self.seed = int(seed)


class SSCAM1(_SmoothedScoreCAM):
    """SS-CAM type 1 (Eq. 11): noise ``N(0, sigma^2)`` added per pixel to the mask, ``x (.) (H_k + n)``.

    ``sigma`` is in *mask units*: ``H_k`` is the upsampled, min-max normalised activation map in
    [0, 1], and the noisy mask is not clipped. The noise is drawn per pixel (``H x W``) and shared by
    the three colour channels. ``#FW = 1 + n_samples *`` live channels. Paper settings:
    ``n_samples = 10, sigma = 2``.

    Args:
        model, substrate, batch_size, prune, channels_last: as :class:`ScoreCAM`.
        n_samples: noisy samples per channel.
        sigma: noise standard deviation, mask units (the mask spans [0, 1]).
        seed: seed of the noise.
    """

    name = "sscam1"

    def masked_inputs(self, images: Tensor, substrate: Tensor, acts: Tensor, gen: torch.Generator) -> Tensor:
        masks = self.masks(acts, images.shape[-2:])
        noise = torch.randn(masks.shape, generator=gen, device=masks.device, dtype=masks.dtype)
        return apply_masks(images, substrate, masks + self.sigma * noise)


class SSCAM2(_SmoothedScoreCAM):
    """SS-CAM type 2 (Eq. 14): noise added after masking, ``(x (.) H_k) + n``.

    ``sigma`` is in the units of the network's *normalised* input (the paper's networks see
    ImageNet-normalised tensors, and the noise is added to that tensor): on the [0, 1] image the
    noise of colour channel ``c`` has standard deviation ``sigma * std_c`` (the classifier's
    normalisation std; ``sigma = 2`` gives about 0.45 for ImageNet). The noisy image is not
    clipped. ``#FW = 1 + n_samples *`` live channels.

    Args:
        model, substrate, batch_size, prune, channels_last: as :class:`ScoreCAM`.
        n_samples: noisy samples per channel.
        sigma: noise standard deviation, normalised-input units.
        seed: seed of the noise.
    """

    name = "sscam2"

    def masked_inputs(self, images: Tensor, substrate: Tensor, acts: Tensor, gen: torch.Generator) -> Tensor:
        noise = torch.randn(images.shape, generator=gen, device=images.device, dtype=images.dtype)
        scale = self.sigma * self.model.std.to(device=images.device, dtype=images.dtype)
        return apply_masks(images, substrate, self.masks(acts, images.shape[-2:])) + scale * noise
