"""HiResCAM, LayerCAM, EigenCAM and Ablation-CAM: the CAMs users expect beside Grad-CAM.

The first three are small overrides of :class:`~lcam.explainers.gradient.GradientCAM` (one pass,
``#FW = 1``, gradients only down to the explained layer, no hooks). Ablation-CAM is gradient-free:
it reads the activations ``A`` ``(B, K, h, w)`` of one pass and then zeroes one channel at a time
*on the activations*, in chunks of ``(image, channel)`` pairs, through ``model.classify`` only.

Maps are ``ReLU(low-resolution map)``, per-image min-max normalised, then upsampled bilinearly
(the CAM order of :func:`lcam.maps.normalize_then_upsample`; pytorch-grad-cam's order too).
"""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from lcam.backbones.frozen import FrozenClassifier
from lcam.explainers.base import Explainer, Targets, check_positive, chunks
from lcam.explainers.gradient import GradientCAM
from lcam.explainers.registry import register_explainer
from lcam.maps import normalize_then_upsample


def _per_cell(explainer: GradientCAM) -> Tensor:
    raise NotImplementedError(f"{type(explainer).__name__} weights every cell, not every channel: see low_res_map")


@register_explainer
class HiResCAM(GradientCAM):
    """HiResCAM: the element-wise product of gradient and activation, summed over channels.

    Draelos & Carin, "Use HiResCAM instead of Grad-CAM for faithful explanations of convolutional
    neural networks", 2020, https://arxiv.org/abs/2011.08891. With ``A`` ``(B, K, h, w)`` and
    ``g = dY_c / dA`` (pre-softmax score)::

        S = ReLU(sum_k g_k (.) A_k)     (B, h, w), then min-max, then bilinear upsampling

    It equals Grad-CAM when the gradient is spatially constant (global average pooling + linear:
    ResNet, EfficientNet at their last stage) and differs where it varies (VGG-16's fc layers).
    One pass (``#FW = 1``).

    Example::

        maps = HiResCAM(model)(images, targets)   # (B, 3, H, W) -> (B, H, W) in [0, 1]
    """

    name = "hirescam"

    def low_res_map(self, acts: Tensor, grads: Tensor) -> Tensor:
        return (grads * acts).sum(dim=1).clamp(min=0)

    def channel_weights(self, acts: Tensor, grads: Tensor) -> Tensor:
        return _per_cell(self)


@register_explainer
class LayerCAM(GradientCAM):
    """LayerCAM: activations weighted cell by cell by the positive part of the gradient.

    Jiang, Zhang, Hou, Cheng, Wei, "LayerCAM: Exploring hierarchical class activation maps for
    localization", IEEE Transactions on Image Processing 30, 2021 (doi:10.1109/TIP.2021.3089943).
    With ``A`` ``(B, K, h, w)`` and ``g = dY_c / dA``::

        S = ReLU(sum_k ReLU(g_k) (.) A_k)     (B, h, w), then min-max, then bilinear upsampling

    (the paper's Eq. 5-6). Its tanh rescaling for shallow layers (Eq. 7) is for fusing maps of
    several layers; one explained layer does not need it. One pass (``#FW = 1``).
    """

    name = "layercam"

    def low_res_map(self, acts: Tensor, grads: Tensor) -> Tensor:
        return (grads.clamp(min=0) * acts).sum(dim=1).clamp(min=0)

    def channel_weights(self, acts: Tensor, grads: Tensor) -> Tensor:
        return _per_cell(self)


def first_component_projection(acts: Tensor, center: bool = False) -> Tensor:
    """Projection of each image's activations on their first principal direction, sign fixed.

    Args:
        acts: ``A`` ``(B, K, h, w)``.
        center: subtract each channel's spatial mean before the SVD (pytorch-grad-cam); ``False``:
            the SVD of the raw activations (the EigenCAM paper).

    Returns:
        ``(B, h, w)``: ``M v_1`` with ``M`` the ``(h*w, K)`` matrix of (centred) activations and ``v_1``
        its first right singular vector. SVD's sign is arbitrary; it is chosen so that the projection
        has a non-negative dot product with the total activation ``T = sum_k A_k`` (uncentred; for
        non-negative activations ``v_1`` has one sign and the projection is then >= 0 everywhere), or
        with ``T - mean(T)`` (centred: a centred projection sums to 0).
    """
    b, k, h, w = acts.shape
    m = acts.float().flatten(2).transpose(1, 2)  # (B, hw, K)
    if center:
        m = m - m.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(m, full_matrices=False)
    proj = torch.einsum("bnk,bk->bn", m, vh[:, 0])  # (B, hw)
    total = acts.float().sum(dim=1).flatten(1)  # (B, hw)
    reference = total - total.mean(dim=1, keepdim=True) if center else total  # a centred projection sums to 0
    sign = torch.where((proj * reference).sum(dim=1) < 0, -1.0, 1.0)
    return (proj * sign.view(-1, 1)).view(b, h, w)


@register_explainer
class EigenCAM(Explainer):
    """EigenCAM: the first principal component of the activations. **Not class-discriminative.**

    Muhammad & Yeasin, "Eigen-CAM: Class activation map using principal components", IJCNN 2020,
    https://arxiv.org/abs/2008.00299. With ``M`` the ``(h*w, K)`` matrix of the explained layer's
    activations ``A`` ``(B, K, h, w)`` of one image and ``M = U S V^T``::

        S = ReLU(M v_1)  reshaped to (h, w), then min-max, then bilinear upsampling

    The map **ignores the target**: every class of an image gets the same map (the dominant
    pattern of the layer, usually the most salient object). ``targets`` are still checked (ids out of
    range raise) so that it is a drop-in explainer, and ``class_discriminative`` is ``False``.

    ``center=False`` (default) follows the paper: the SVD of the raw activations. pytorch-grad-cam
    subtracts each channel's spatial mean first (``center=True``), which makes the map the direction
    of largest *variation* instead of largest energy. SVD's sign is arbitrary; it is fixed so that the
    map is positive where the layer is active (see :func:`first_component_projection`);
    pytorch-grad-cam leaves it to LAPACK, so its map can come out inverted. No gradients; one pass
    (``#FW = 1``: the features, plus ``classify`` on them for the top-1 class and the target check).

    Args:
        model: the frozen classifier.
        center: subtract each channel's spatial mean before the SVD (pytorch-grad-cam's variant).
    """

    name = "eigencam"
    shares_features = True
    #: the map does not depend on the target class
    class_discriminative: ClassVar[bool] = False

    def __init__(self, model: FrozenClassifier, center: bool = False) -> None:
        super().__init__(model)
        self.center = bool(center)

    def explain(self, images: Tensor, targets: Targets) -> Tensor:
        acts, _ = self.activations_and_targets(images, targets)  # targets: checked, then unused
        self.last_forward_passes = 1
        return self.maps(acts, images.shape[-2:])

    def maps_from_features(self, images: Tensor, feats: Tensor, targets: Tensor) -> Tensor:
        self.last_forward_passes = 1
        return self.maps(feats.detach(), images.shape[-2:]).float().clamp_(0.0, 1.0)

    def maps(self, acts: Tensor, size: tuple[int, int]) -> Tensor:
        """``(B, K, h, w)`` activations -> ``(B, *size)`` maps in [0, 1]."""
        cam = first_component_projection(acts, self.center).clamp(min=0)
        return normalize_then_upsample(cam, size)


@register_explainer
class AblationCAM(Explainer):
    """Ablation-CAM: the drop of the class score when a channel of the explained layer is zeroed.

    Desai & Ramaswamy, "Ablation-CAM: Visual explanations for deep convolutional network via
    gradient-free localization", WACV 2020. With ``A`` ``(B, K, h, w)``, ``y_c`` the class *logit*
    and ``y_c^k`` the logit with channel ``k`` set to 0::

        w_k = (y_c - y_c^k) / y_c        S = ReLU(sum_k w_k A_k), then min-max, then upsampling

    The division by ``y_c`` follows the paper (and pytorch-grad-cam); it is a per-image constant that
    min-max normalisation removes when ``y_c > 0``, but it inverts the map of a class whose logit is
    negative (a class the classifier rejects); explain such classes with another method.

    The ablations run on the activations of one pass, ``(image, channel)`` pairs stacked
    ``batch_size`` at a time through ``model.classify`` only: no hooks and no forward pass through
    the feature extractor per ablation. An all-zero channel is not ablated (zeroing it changes
    nothing: ``w_k = 0``).

    ``#FW`` (images through the feature extractor, the project's definition) is ``1``; the
    ``classify`` passes (one per live channel, plus one for the logits) are reported separately in
    ``last_classify_passes`` (per image). For EfficientNet-Lite0 at its last stage ``classify`` is
    the 1x1 conv head, pooling and the linear layer, a small part of a full pass.

    Args:
        model: the frozen classifier.
        batch_size: ablated activation maps per ``classify`` call.
    """

    name = "ablationcam"

    def __init__(self, model: FrozenClassifier, batch_size: int = 64) -> None:
        super().__init__(model)
        check_positive(batch_size=batch_size)
        self.batch_size = int(batch_size)
        self.last_classify_passes: float = 0

    @torch.no_grad()
    def explain(self, images: Tensor, targets: Targets) -> Tensor:
        acts = self.model.features(images)
        logits = self.model.classify(acts.clone())  # an in-place first op must not change ``acts``
        t = self.targets_for(targets, images, logits)
        score = logits.gather(1, t.view(-1, 1)).squeeze(1).float()
        weights, passes = self.channel_weights(acts, t, score)
        cam = torch.einsum("bk,bkhw->bhw", weights, acts.float()).clamp(min=0)
        self.last_forward_passes = 1
        self.last_classify_passes = passes / images.shape[0] + 1
        return normalize_then_upsample(cam, images.shape[-2:])

    def channel_weights(self, acts: Tensor, targets: Tensor, score: Tensor) -> tuple[Tensor, int]:
        """``w`` ``(B, K)`` and the number of ablated maps sent through ``classify`` (whole batch).

        Args:
            acts: ``(B, K, h, w)``; targets: ``(B,)``; score: ``y_c`` ``(B,)`` of the unablated activations.
        """
        ablated = torch.zeros(acts.shape[:2], device=acts.device)  # y_c^k; stays 0 where not ablated
        live = acts.flatten(2).ne(0).any(dim=2)  # (B, K)
        pairs = live.nonzero()  # (M, 2): image, channel
        for n, part in enumerate(chunks(pairs.shape[0], self.batch_size)):
            b, k = pairs[part, 0], pairs[part, 1]
            batch = acts[b].clone()
            batch[torch.arange(b.numel(), device=acts.device), k] = 0
            ablated[b, k] = self.model.classify(batch).gather(1, targets[b].view(-1, 1)).squeeze(1).float()
            self.report(part.stop, pairs.shape[0])
        safe = torch.where(score != 0, score, torch.ones_like(score)).view(-1, 1)
        weights = torch.where(live, (score.view(-1, 1) - ablated) / safe, torch.zeros_like(ablated))
        return weights, int(pairs.shape[0])
