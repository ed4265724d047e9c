"""Gradient CAMs: Grad-CAM, Grad-CAM++, Smooth Grad-CAM++, XGrad-CAM, guidance-map CAM.

All of them combine the explained layer's activations ``A`` ``(B, K, h, w)`` with the gradient
``g = dY_c / dA`` of the target's *pre-softmax* score ``Y_c``. The gradient is taken only down
to the explained layer, through the ``features`` / ``classify`` split::

    A = model.features(x)            # no autograd
    A.requires_grad_()
    g = d sum_b Y_{b, c_b}(classify(A)) / dA

This costs about one forward pass, needs no hooks, leaves no ``.grad`` on the frozen weights and
works when those weights have ``requires_grad=False``. It also runs inside Lightning's test loop
(``torch.inference_mode()``), which is switched off locally.

Each method overrides only :meth:`GradientCAM.channel_weights` (the guidance-map CAM also
reweights the activations). Maps are ``ReLU(sum_k w_k A_k)``, min-max normalised, then upsampled.
"""
from __future__ import annotations

from abc import abstractmethod

import torch
from torch import Tensor

from lcam.backbones.frozen import FrozenClassifier
from lcam.explainers.base import Explainer, Targets, check_non_negative, check_positive
from lcam.explainers.perturbation import keyed_normal
from lcam.explainers.registry import register_explainer
from lcam.maps import blur, normalize_then_upsample


def gradcampp_weights(acts: Tensor, g1: Tensor, g2: Tensor, g3: Tensor) -> Tensor:
    """Grad-CAM++ channel weights from the first three gradient orders.

    The paper's Eq. 19, with the exponential trick (``S = exp(Y_c)``): the second and third
    derivatives of ``S`` are ``exp(Y_c) g^2`` and ``exp(Y_c) g^3``; ``exp(Y_c)`` cancels in
    ``alpha`` and only rescales the weights (removed by normalisation)::

        alpha_ij = g_ij^2 / (2 g_ij^2 + (sum_ab A_ab) g_ij^3)     (0 where the denominator is 0)
        w_k      = sum_ij alpha_ij * ReLU(g_ij)

    The denominator multiplies the *sum of the activations* by the gradient at ``(i, j)``; it is
    not ``sum_ab A_ab g_ab^3`` (the two agree only for a spatially constant gradient, i.e. global
    average pooling + linear, not on VGG-16). pytorch-grad-cam and torchcam compute Eq. 19 too.

    Args:
        acts: ``A`` ``(B, K, h, w)``.
        g1, g2, g3: ``g``, ``g^2``, ``g^3`` ``(B, K, h, w)`` (or their noise averages).

    Returns:
        ``(B, K)`` weights.
    """
    denom = 2.0 * g2 + acts.sum(dim=(2, 3), keepdim=True) * g3
    alpha = g2 / torch.where(denom != 0, denom, torch.ones_like(denom))
    return (alpha * g1.clamp(min=0)).sum(dim=(2, 3))


def weighted_sum(acts: Tensor, weights: Tensor) -> Tensor:
    """``ReLU(sum_k w_k A_k)``: ``(B, K, h, w)`` activations, ``(B, K)`` weights -> ``(B, h, w)``."""
    return torch.einsum("bk,bkhw->bhw", weights, acts).clamp(min=0)


class GradientCAM(Explainer):
    """Base of the gradient CAMs; subclasses define :meth:`channel_weights`.

    One pass: the map comes from the activations of the pass that gives the logits
    (:meth:`maps_from_features`), so a caller that already has them pays only ``classify``.
    """

    shares_features = True

    def explain(self, images: Tensor, targets: Targets) -> Tensor:
        acts, grads, _ = self.activations_and_gradients(images, targets)
        self.last_forward_passes = 1
        return normalize_then_upsample(self.low_res_map(acts, grads), images.shape[-2:])

    def maps_from_features(self, images: Tensor, feats: Tensor, targets: Tensor) -> Tensor:
        """``U(minmax(low_res_map(A, dY_c/dA)))`` from ``A`` = ``feats`` ``(B, K, h, w)`` -> ``(B, H, W)``."""
        with torch.inference_mode(False), torch.enable_grad():
            acts = feats.detach().clone().requires_grad_(True)
            score = self.model.classify(acts.clone()).gather(1, targets.view(-1, 1).clone()).sum()
            (grads,) = torch.autograd.grad(score, acts)
        self.last_forward_passes = 1
        return normalize_then_upsample(self.low_res_map(acts.detach(), grads), images.shape[-2:]).float().clamp_(0.0, 1.0)

    def activations_and_gradients(self, images: Tensor, targets: Targets) -> tuple[Tensor, Tensor, Tensor]:
        """One pass: activations, gradients of the target scores, and the targets.

        Args:
            images: ``(B, 3, H, W)`` in [0, 1] (may be an inference-mode tensor).
            targets: any accepted form; ``None`` picks the top-1 class of this very pass.

        Returns:
            ``A`` ``(B, K, h, w)``, ``g = dY_c/dA`` ``(B, K, h, w)``, targets ``(B,)``.
        """
        with torch.inference_mode(False), torch.enable_grad():
            x = images.clone()  # a normal tensor, even when ``images`` was made in inference mode
            with torch.no_grad():
                acts = self.model.features(x)
            acts = acts.detach().requires_grad_(True)
            logits = self.model.classify(acts.clone())  # classify may start with an in-place op
            t = self.targets_for(targets, images, logits).clone()  # gather saves it for backward
            score = logits.gather(1, t.view(-1, 1)).sum()
            (grads,) = torch.autograd.grad(score, acts)
        return acts.detach(), grads, t

    def low_res_map(self, acts: Tensor, grads: Tensor) -> Tensor:
        """``ReLU(sum_k w_k A_k)`` ``(B, h, w)``, before normalisation and upsampling."""
        return weighted_sum(acts, self.channel_weights(acts, grads))

    @abstractmethod
    def channel_weights(self, acts: Tensor, grads: Tensor) -> Tensor:
        """``(B, K)`` channel weights from ``A`` and ``g``, both ``(B, K, h, w)``."""


@register_explainer
class GradCAM(GradientCAM):
    """Grad-CAM: ``w_k = GAP(dY_c / dA_k)``. One pass (``#FW = 1``)."""

    name = "gradcam"

    def channel_weights(self, acts: Tensor, grads: Tensor) -> Tensor:
        return grads.mean(dim=(2, 3))


@register_explainer
class GradCAMPlusPlus(GradientCAM):
    """Grad-CAM++ (see :func:`gradcampp_weights`). One pass (``#FW = 1``)."""

    name = "gradcampp"

    def channel_weights(self, acts: Tensor, grads: Tensor) -> Tensor:
        return gradcampp_weights(acts, grads, grads.pow(2), grads.pow(3))


@register_explainer
class SmoothGradCAMPlusPlus(GradCAMPlusPlus):
    """Smooth Grad-CAM++: Grad-CAM++ with gradients averaged over noisy copies of the input.

    Omeiza et al., "Smooth Grad-CAM++: An Enhanced Inference Level Visualization Technique for Deep
    Convolutional Neural Network Models", 2019, https://arxiv.org/abs/1908.01224. As in the paper,
    the gradients of order 1, 2 and 3 (``g``, ``g^2``, ``g^3``, each ``(B, K, h, w)``) are averaged
    over ``n_samples`` copies ``x + sigma * z_n``, with ``sigma = noise_std * (max(x) - min(x))``
    per image (SmoothGrad's relative noise level); ``alpha``, the weights and the map use the
    activations of the clean image, whose top-1 class is the default target.

    The noise ``z_n`` ``(3, H, W)`` is a function of ``(seed, n)`` only: it is drawn from a
    generator seeded with :func:`~lcam.explainers.perturbation.keyed_seed` ``(seed, n)``, the same
    draw for every image, so an image's map never depends on the rest of its batch or its position.

    Args:
        model: the frozen classifier.
        n_samples: noisy copies per image (``#FW = n_samples + 1``: the clean pass for the activations).
        noise_std: noise standard deviation relative to each image's value range.
        seed: seed of the noise (same images -> same maps).
    """

    name = "smoothgradcampp"
    shares_features = False  # gradients of noisy copies: passes of its own

    def __init__(self, model: FrozenClassifier, n_samples: int = 10, noise_std: float = 0.15, seed: int = 0) -> None:
        super().__init__(model)
        check_positive(n_samples=n_samples)
        check_non_negative(noise_std=noise_std)
        self.n_samples = int(n_samples)
        self.noise_std = float(noise_std)
        self.seed = int(seed)

    def explain(self, images: Tensor, targets: Targets) -> Tensor:
        acts, t = self.activations_and_targets(images, targets)
        flat = images.reshape(images.shape[0], -1)
        sigma = self.noise_std * (flat.max(dim=1).values - flat.min(dim=1).values).view(-1, 1, 1, 1)
        moments = [torch.zeros_like(acts) for _ in range(3)]
        for i in range(self.n_samples):
            noise = keyed_normal(images.shape[1:], self.seed, [(i,)], images.device, images.dtype)  # (1, 3, H, W)
            _, g, _ = self.activations_and_gradients(images + sigma * noise, t)
            for order, m in enumerate(moments, start=1):
                m += g.pow(order) / self.n_samples
            self.report(i + 1, self.n_samples)
        self.last_forward_passes = self.n_samples + 1
        cam = weighted_sum(acts, gradcampp_weights(acts, *moments))
        return normalize_then_upsample(cam, images.shape[-2:])


@register_explainer
class XGradCAM(GradientCAM):
    """XGrad-CAM: ``w_k = sum_ij (A_k,ij / sum A_k) g_k,ij``. One pass (``#FW = 1``)."""

    name = "xgradcam"

    def channel_weights(self, acts: Tensor, grads: Tensor) -> Tensor:
        total = acts.sum(dim=(2, 3))
        safe = torch.where(total != 0, total, torch.ones_like(total))
        return (acts * grads).sum(dim=(2, 3)) / safe


@register_explainer
class GuidanceMapCAM(GradCAM):
    """Guidance-map CAM ("Rethinking gradient weight's influence over saliency map estimation").

    Registered as ``guidedcam``. With the global guidance map ``G = ReLU(sum_k g_k (.) A_k)``
    ``(h, w)`` and Grad-CAM's weights ``w_k = GAP(g_k)``::

        S = ReLU(sum_k w_k (G (.) A_k))

    then a Gaussian blur of the low-resolution map (replicate padding), min-max normalisation,
    and only then upsampling. One pass (``#FW = 1``).

    Args:
        model: the frozen classifier.
        smooth_kernel: odd side of the blur kernel on the feature grid; 1 disables smoothing.
        smooth_sigma: standard deviation of the blur, in feature-map cells.
    """

    name = "guidedcam"

    def __init__(self, model: FrozenClassifier, smooth_kernel: int = 3, smooth_sigma: float = 1.0) -> None:
        super().__init__(model)
        if smooth_kernel < 1 or smooth_kernel % 2 == 0:
            raise ValueError(f"smooth_kernel must be a positive odd int, got {smooth_kernel}")
        check_positive(smooth_sigma=smooth_sigma)
        self.smooth_kernel = int(smooth_kernel)
        self.smooth_sigma = float(smooth_sigma)

    def low_res_map(self, acts: Tensor, grads: Tensor) -> Tensor:
        guidance = (grads * acts).sum(dim=1, keepdim=True).clamp(min=0)  # G (B, 1, h, w)
        cam = weighted_sum(guidance * acts, self.channel_weights(acts, grads))
        if self.smooth_kernel == 1:
            return cam
        return blur(cam.unsqueeze(1), self.smooth_kernel, self.smooth_sigma).squeeze(1)
