"""Score-CAM and SS-CAM (types 1 and 2): channel weights from masked forward passes.

Papers: Score-CAM, Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional
Neural Networks", CVPR-W 2020, https://arxiv.org/abs/1910.01279; SS-CAM, Wang et al., "SS-CAM:
Smoothed Score-CAM for Sharper Visual Feature Localization", 2020, https://arxiv.org/abs/2006.14255.

Every channel ``k`` of the explained layer (activations ``A`` ``(B, K, h, w)``) becomes a mask
``H_k = s(U(A_k))`` ``(H, W)`` (bilinear upsampling with ``align_corners=False``, then per-map
min-max to [0, 1]); the classifier scores the masked image ``x (.) H_k`` (masked-out pixels take
the ``substrate``: the dataset mean by default, as the reference codes multiply the *normalised*
input), and the map is ``S = ReLU(sum_k alpha_k A_k)`` ``(B, h, w)``, then ``minmax(U(S))``
``(B, H, W)`` (:meth:`ScoreCAM.weighted_map`).

Channel weights ``alpha`` ``(B, K)``:

* Score-CAM, ``weighting="logit_softmax"`` (its paper's Algorithm 1, pytorch-grad-cam):
  ``alpha = softmax_k(f_c(x (.) H_k))`` with ``f_c`` the class *logit*. The paper subtracts the
  baseline score ``f_c(x_b)``; it is the same for every ``k`` and cancels in the softmax.
* Score-CAM, ``weighting="probability"`` (the Score-CAM authors' public code and the code behind
  the L-CAM paper's Table 1): ``alpha_k = p_c(x (.) H_k)``, the softmax probability, no softmax
  over channels.
* SS-CAM (its paper's Eq. 9-15): ``alpha_k`` = the mean CIC over ``n_samples`` noisy versions of
  the masked image, ``(1/N) sum_n p_c(noisy_n(x, H_k)) - p_c(X_b)`` (no softmax over channels).
  Type 1: noise on the mask ``H_k``; type 2: noise on the masked image. ``baseline="paper"``
  subtracts the baseline score (Eq. 10/13's CIC, ``X_b`` = the fully masked image, see
  :class:`SSCAM1`); ``baseline="none"`` is the authors' public code, which leaves it out. Without a
  softmax over channels the two differ by ``p_c(X_b) * sum_k A_k`` inside the ReLU, so they give
  different maps.

Noise (SS-CAM) is a function of ``(seed, sample n, channel k)`` only: sample ``n`` of channel
``k`` is drawn from a generator seeded with :func:`keyed_seed` ``(seed, n, k)``, the same for
every image. An image's map therefore never depends on the other images of the batch, on its
position in it, on the chunk size or on which channels other images prune, and the first ``N``
samples of a run with more samples are those of a run with ``N``.

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

import warnings
from typing import Sequence

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
)
from lcam.explainers.registry import register_explainer
from lcam.maps import upsample_then_normalize

#: Score-CAM channel weightings (see the module docstring)
WEIGHTINGS = ("logit_softmax", "probability")
#: SS-CAM baselines: ``paper`` subtracts ``p_c(X_b)`` (Eq. 10/13), ``none`` (the authors' code) does not
BASELINES = ("paper", "none")

_M64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    """One SplitMix64 output for the 64-bit state ``x`` (Steele, Lea & Flood 2014)."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def keyed_seed(seed: int, *keys: int) -> int:
    """A 64-bit generator seed that depends on ``seed`` and ``keys`` only.

    ``x = splitmix64(seed mod 2^64)``, then ``x = splitmix64(x XOR (key mod 2^64))`` for each key
    in order. SS-CAM seeds sample ``n`` of channel ``k`` with ``keyed_seed(seed, n, k)``, Smooth
    Grad-CAM++ sample ``n`` with ``keyed_seed(seed, n)``.
    """
    x = _splitmix64(int(seed) & _M64)
    for key in keys:
        x = _splitmix64(x ^ (int(key) & _M64))
    return x


def keyed_normal(shape: Sequence[int], seed: int, keys: Sequence[Sequence[int]], device: torch.device | str,
                 dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard normal noise ``(len(keys), *shape)``: row ``i`` is ``torch.randn(shape)`` from a
    generator on ``device`` seeded with ``keyed_seed(seed, *keys[i])`` (drawn in float32, then cast
    to ``dtype``). A row depends on its key only, never on the other rows."""
    device = torch.device(device)
    gen = torch.Generator(device=device)
    out = torch.empty((len(keys), *shape), device=device)
    for row, key in zip(out, keys):  # each row in place: the same numbers as torch.randn(shape, generator=gen)
        row.normal_(generator=gen.manual_seed(keyed_seed(seed, *key)))
    return out.to(dtype)


@register_explainer
class ScoreCAM(Explainer):
    """Score-CAM (Wang et al., CVPR-W 2020, https://arxiv.org/abs/1910.01279).

    ``#FW`` = 1 (the activations) + live channels per image (``K`` without pruning), plus one
    substrate pass per image with dead channels under ``logit_softmax`` (a batch average).

    Example::

        maps = ScoreCAM(model)(images)      # (B, 3, H, W) in [0, 1] -> (B, H, W) in [0, 1]

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
        self.last_forward_passes = passes / images.shape[0] + 1  # + the pass that read the activations
        return self.weighted_map(weights, acts, images.shape[-2:])

    @staticmethod
    def weighted_map(weights: Tensor, acts: Tensor, size: tuple[int, int]) -> Tensor:
        """``minmax(U(ReLU(sum_k alpha_k A_k)))``: weights ``(B, K)``, activations ``(B, K, h, w)`` -> ``(B, *size)``."""
        cam = torch.einsum("bk,bkhw->bhw", weights.float(), acts.float()).clamp(min=0)
        return upsample_then_normalize(cam, size)

    def channel_weights(self, images: Tensor, acts: Tensor, targets: Tensor) -> tuple[Tensor, int]:
        """``alpha`` ``(B, K)`` and the number of masked forward passes it took (whole batch).

        Args:
            images: ``(B, 3, H, W)`` in [0, 1]; acts: ``(B, K, h, w)``; targets: ``(B,)``.
        """
        live = acts.flatten(2).ne(0).any(dim=2) | (not self.prune)  # (B, K): channels that get a pass
        substrate = self.substrate_for(images)
        scores = self.channel_scores(images, substrate, acts, targets, live)
        weights, extra = self.weights_from_scores(scores, live, substrate, targets)
        return weights, int(live.sum()) * self.n_samples + extra

    def weights_from_scores(self, scores: Tensor, live: Tensor, substrate: Tensor, targets: Tensor) -> tuple[Tensor, int]:
        """``alpha`` ``(B, K)`` from the mean masked scores ``(B, K)`` (0 where not ``live``), and the
        passes this step adds (substrate passes of the images with dead channels under ``logit_softmax``)."""
        if self.weighting == "probability":
            return scores, 0
        dead = ~live
        rows = dead.any(dim=1).nonzero().flatten()  # images with pruned channels
        # a dead channel's mask is all zero: its masked image is the substrate alone, one pass per image
        base = self.substrate_scores(substrate, targets, rows)
        scores = scores.clone()
        scores[rows] = torch.where(dead[rows], base.view(-1, 1), scores[rows])
        return scores.softmax(dim=1), int(rows.numel())

    def substrate_scores(self, substrate: Tensor, targets: Tensor, rows: Tensor | None = None) -> Tensor:
        """Score of the fully masked image (``H = 0``: the substrate alone) of the images ``rows``
        (all when ``None``): substrate ``(B, 3, H, W)``, targets ``(B,)`` -> ``(len(rows),)``, one pass each."""
        rows = torch.arange(substrate.shape[0], device=substrate.device) if rows is None else rows
        out = torch.zeros(rows.numel(), device=substrate.device)
        for part in chunks(rows.numel(), self.masked_batch_size(substrate.device)):
            r = rows[part]
            out[part] = self.masked_scores(substrate[r], targets[r], self.score).float()
        return out

    def channel_scores(self, images: Tensor, substrate: Tensor, acts: Tensor, targets: Tensor, live: Tensor) -> Tensor:
        """Mean score (logit or probability) of the masked images, ``(B, K)`` (0 where not ``live``).

        Args:
            images, substrate: ``(B, 3, H, W)``; acts: ``(B, K, h, w)``; targets: ``(B,)``;
            live: ``(B, K)`` bool, the channels that get a forward pass.
        """
        scores = torch.zeros(live.shape, device=images.device)
        pairs = live.nonzero()  # (M, 2): image index, channel index
        size = self.masked_batch_size(images.device)
        total = self.n_samples * pairs.shape[0]
        for sample in range(self.n_samples):
            for part in chunks(pairs.shape[0], size):
                b, k = pairs[part, 0], pairs[part, 1]
                inputs = self.masked_inputs(images[b], substrate[b], acts[b, k], k, sample)
                scores[b, k] += self.masked_scores(inputs, targets[b], self.score).float()
                self.report(sample * pairs.shape[0] + part.stop, total)
        return scores / self.n_samples

    def masked_batch_size(self, device: torch.device) -> int:
        """Masked images per forward pass on ``device`` (``batch_size`` or its device default)."""
        return chunk_size(self.batch_size, device, self.accelerator_batch_size)

    def masked_inputs(self, images: Tensor, substrate: Tensor, acts: Tensor, channels: Tensor | None = None,
                      sample: int = 0) -> Tensor:
        """``x (.) H_k``: images and substrate ``(n, 3, H, W)``, maps ``(n, h, w)`` -> ``(n, 3, H, W)``.

        ``channels`` ``(n,)`` (the ``k`` of each map) and ``sample`` key the noise of the smoothed
        variants; plain Score-CAM ignores them.
        """
        return apply_masks(images, substrate, self.masks(acts, images.shape[-2:]))

    @staticmethod
    def masks(acts: Tensor, size: tuple[int, int]) -> Tensor:
        """``H_k = s(U(A_k))``: ``(n, h, w)`` maps -> ``(n, H, W)`` masks in [0, 1], each min-max normalised."""
        return upsample_then_normalize(acts, size)


class _SmoothedScoreCAM(ScoreCAM):
    """SS-CAM: the weight of channel ``k`` is its mean CIC over ``n_samples`` noisy versions of the
    masked image (no softmax over channels); subclasses say where the noise goes (:meth:`perturb`)
    and its shape (:meth:`noise_shape`)."""

    def __init__(self, model: FrozenClassifier, n_samples: int = 10, sigma: float = 2.0, substrate: str = "mean",
                 batch_size: int | None = None, prune: bool = True, seed: int = 0, channels_last: bool = True,
                 baseline: str = "paper") -> None:
        super().__init__(model, weighting="probability", substrate=substrate, batch_size=batch_size, prune=prune,
                         channels_last=channels_last)
        check_positive(n_samples=n_samples)
        check_non_negative(sigma=sigma)
        if baseline not in BASELINES:
            raise ValueError(f"Unknown baseline {baseline!r}; valid: {list(BASELINES)}")
        self.n_samples = int(n_samples)
        self.sigma = float(sigma)
        self.seed = int(seed)
        self.baseline = baseline
        self._warned_empty = False

    def explain(self, images: Tensor, targets: Targets) -> Tensor:
        maps = super().explain(images, targets)
        empty = int((~maps.flatten(1).gt(0).any(1)).sum())
        if empty and self.baseline == "paper" and not self._warned_empty:
            self._warned_empty = True  # once per explainer: an evaluation would repeat it for every batch
            warnings.warn(
                f"{self.name}: {empty} of {maps.shape[0]} maps are empty: every noisy masked image scored below the "
                f"fully masked image p_c(X_b) (baseline='paper'), so no channel has a positive weight. sigma={self.sigma:g}: "
                "a large sigma such as the paper's 2 swamps the masks, and sigma=0.5 or lower gives class-discriminative "
                "maps; baseline='none' is the authors' code, which keeps a class-agnostic term", stacklevel=2)
        return maps

    def weights_from_scores(self, scores: Tensor, live: Tensor, substrate: Tensor, targets: Tensor) -> tuple[Tensor, int]:
        """``alpha_k = mean_n p_c(noisy) - p_c(X_b)`` (``baseline="paper"``, one substrate pass per
        image) or ``mean_n p_c(noisy)`` (``"none"``). A dead channel's weight multiplies an all-zero map."""
        if self.baseline == "none":
            return scores, 0
        return scores - self.substrate_scores(substrate, targets).view(-1, 1), int(substrate.shape[0])

    def masked_inputs(self, images: Tensor, substrate: Tensor, acts: Tensor, channels: Tensor | None = None,
                      sample: int = 0) -> Tensor:
        """Noisy masked images ``(n, 3, H, W)`` for maps ``acts`` ``(n, h, w)`` of ``channels`` ``(n,)``,
        noise sample ``sample`` (see :meth:`noise`)."""
        masks = self.masks(acts, images.shape[-2:])
        if self.sigma == 0:
            return apply_masks(images, substrate, masks)
        if channels is None:
            raise ValueError("SS-CAM's noise is keyed by channel: pass the channel index of every map")
        return self.perturb(images, substrate, masks, self.noise(channels, sample, images))

    def noise(self, channels: Tensor, sample: int, images: Tensor) -> Tensor:
        """Standard normal noise ``(n, *noise_shape)``: row ``i`` from ``keyed_seed(seed, sample, channels[i])``.

        Rows of the same channel are the same draw (it is drawn once per distinct channel).
        """
        unique, inverse = channels.unique(return_inverse=True)
        keys = [(int(sample), k) for k in unique.tolist()]
        return keyed_normal(self.noise_shape(images), self.seed, keys, images.device, images.dtype)[inverse]

    def noise_shape(self, images: Tensor) -> tuple[int, ...]:
        """Shape of one noise draw for images ``(n, 3, H, W)``."""
        raise NotImplementedError

    def perturb(self, images: Tensor, substrate: Tensor, masks: Tensor, noise: Tensor) -> Tensor:
        """The noisy masked images ``(n, 3, H, W)`` from images and substrate ``(n, 3, H, W)``, masks
        ``(n, H, W)`` in [0, 1] and standard normal ``noise`` ``(n, *noise_shape)``."""
        raise NotImplementedError


@register_explainer
class SSCAM1(_SmoothedScoreCAM):
    """SS-CAM type 1 (Wang et al. 2020, https://arxiv.org/abs/2006.14255, Eq. 9-11): noise
    ``N(0, sigma^2)`` added per pixel to the mask, ``x (.) (H_k + n)``.

    ``sigma`` is in *mask units*: ``H_k`` is the upsampled, min-max normalised activation map in
    [0, 1], and the noisy mask is not clipped. The noise is drawn per pixel (``H x W``) and shared by
    the three colour channels; draw ``n`` of channel ``k`` comes from ``keyed_seed(seed, n, k)``
    (the same for every image). Paper settings: ``n_samples = 10, sigma = 2`` (35 for figures).

    The CIC (Eq. 10) is ``p_c(x (.) (H_k + n)) - p_c(X_b)``. ``baseline="paper"`` subtracts
    ``p_c(X_b)`` with ``X_b`` the fully masked image ``x (.) 0``, i.e. the substrate: with the
    default ``mean`` substrate that is 0 in the network's normalised input (the paper's "``X_b`` is
    set to 0", as the authors' code masks the normalised tensor), with ``black`` the black image.
    ``baseline="none"`` leaves it out, as the authors' public code does. The term does not cancel
    (there is no softmax over channels): it subtracts ``p_c(X_b) sum_k A_k`` inside the ReLU.

    ``#FW = 1 + n_samples *`` live channels ``+ 1`` (the baseline pass; not with ``"none"``).

    Args:
        model, substrate, batch_size, prune, channels_last: as :class:`ScoreCAM`.
        n_samples: noisy samples per channel.
        sigma: noise standard deviation, mask units (the mask spans [0, 1]).
        seed: seed of the noise.
        baseline: ``"paper"`` (subtract ``p_c(X_b)``) or ``"none"`` (the authors' code).
    """

    name = "sscam1"

    def noise_shape(self, images: Tensor) -> tuple[int, ...]:
        return tuple(images.shape[-2:])

    def perturb(self, images: Tensor, substrate: Tensor, masks: Tensor, noise: Tensor) -> Tensor:
        return apply_masks(images, substrate, masks + self.sigma * noise)


@register_explainer
class SSCAM2(_SmoothedScoreCAM):
    """SS-CAM type 2 (Wang et al. 2020, https://arxiv.org/abs/2006.14255, Eq. 12-14): noise added
    after masking, ``(x (.) H_k) + n``.

    ``sigma`` is in the units of the network's *normalised* input (the paper's networks see
    ImageNet-normalised tensors, and the noise is added to that tensor): on the [0, 1] image the
    noise of colour channel ``c`` has standard deviation ``sigma * std_c`` (the classifier's
    normalisation std; ``sigma = 2`` gives about 0.45 for ImageNet). The noisy image is not
    clipped. Draw ``n`` of channel ``k`` (``3 x H x W``) comes from ``keyed_seed(seed, n, k)``.
    The baseline as :class:`SSCAM1` (Eq. 13). ``#FW = 1 + n_samples *`` live channels ``+ 1``
    (the baseline pass; not with ``"none"``).

    Args:
        model, substrate, batch_size, prune, channels_last: as :class:`ScoreCAM`.
        n_samples: noisy samples per channel.
        sigma: noise standard deviation, normalised-input units.
        seed: seed of the noise.
        baseline: ``"paper"`` (subtract ``p_c(X_b)``) or ``"none"`` (the authors' code).
    """

    name = "sscam2"

    def noise_shape(self, images: Tensor) -> tuple[int, ...]:
        return tuple(images.shape[-3:])

    def perturb(self, images: Tensor, substrate: Tensor, masks: Tensor, noise: Tensor) -> Tensor:
        scale = self.sigma * self.model.std.to(device=images.device, dtype=images.dtype).view(-1, 1, 1)
        return apply_masks(images, substrate, masks) + scale * noise
