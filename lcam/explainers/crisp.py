"""Crisp-mask optimisation ("Understanding Deep Architectures by Visual Summaries", https://arxiv.org/abs/1801.09103, Eq. 1-2), and the smooth mask it builds on.

A mask ``m`` in [0, 1] (1 keeps a pixel, 0 deletes it) is optimised per image::

    m* = argmin_m  f_c(Phi(x; m)) + l1 mean|1 - m| + l2 TV_b(m) + l3 mean(|1 - m| m)

``f_c`` is the softmax probability of the target; ``Phi(x; m)`` blurs each pixel ``u`` with a
Gaussian of sigma ``sigma0 * (1 - m(u))`` (``sigma0 = 10``), so a deleted pixel is blurred the
most; ``TV_b(m) = mean|d_x m|^b + mean|d_y m|^b``. Schedule: ``iterations = 300`` steps with
``(l1, l2, l3, b) = (0.01, 1e-4, 0, 3)``, then ``sparse_iterations = 150`` with ``l2 = 1, l3 = 2``:
the term ``|1 - m| m`` vanishes only at 0 and 1 and makes the mask nearly binary ("crisp").
``sparsity=False`` stops after the first phase: the smooth mask of Fong & Vedaldi's meaningful
perturbations, which the paper builds on. The saliency map is the deleted part, ``1 - m``.

Choices the equations leave open (see the README):

* The paper writes the blur sigma as ``sigma0 * m(u)``. Read literally with ``m = 1`` meaning
  "keep", the all-ones mask (no ``l1`` penalty at all) would blur the whole image, a trivial
  minimiser; Fong & Vedaldi's code keeps a pixel where ``m = 1``. So the sigma here is
  ``sigma0 * (1 - m(u))``.
* The penalties are means over mask cells (as in the public PyTorch re-implementation of
  Fong & Vedaldi whose ``l1 = 0.01`` the paper's first phase uses), not sums: with sums over a
  28 x 28 mask the second phase's ``l2 = 1`` would dwarf ``f_c <= 1`` and erase any mask.
* The mask lives on a grid ``mask_scale`` times coarser than the image (28 x 28 at 224 px, as
  Fong & Vedaldi) and is upsampled bilinearly; the per-pixel blur interpolates linearly between
  ``blur_levels`` images blurred with sigmas ``0, sigma0/(L-1), ..., sigma0`` (differentiable in m).
* Adam with learning rate ``lr = 0.1`` from the all-ones mask; after each step the mask is
  clipped to [0, 1]. Nothing is random, so the masks are reproducible on a device (the ``seed``
  setting exists for the interface and is unused).

Images of a batch are optimised together (their losses are independent; Adam's per-parameter
steps keep them so). :attr:`CrispMask.last_masks` holds the masks ``m`` of the last call and
:attr:`CrispMask.last_drop` the paper's metric, the relative drop of the target's probability on
``Phi(x; m)`` (:func:`blur_drop`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lcam.backbones.frozen import FrozenClassifier
from lcam.explainers.base import Explainer, Targets, check_non_negative, check_positive
from lcam.explainers.registry import register_explainer
from lcam.maps import blur


def blur_stack(images: Tensor, sigma0: float, levels: int) -> Tensor:
    """``(L, B, C, H, W)``: the images blurred with sigmas ``sigma0 * k / (L - 1)``, level 0 unblurred."""
    out = [images]
    for k in range(1, levels):
        sigma = sigma0 * k / (levels - 1)
        out.append(blur(images, 2 * math.ceil(3 * sigma) + 1, sigma))
    return torch.stack(out)


def perturb(stack: Tensor, masks: Tensor) -> Tensor:
    """``Phi(x; m)``: per pixel, the blur level ``(1 - m) (L - 1)`` interpolated linearly.

    Args:
        stack: ``(L, B, C, H, W)`` from :func:`blur_stack`.
        masks: ``(B, H, W)`` in [0, 1] (1 keeps the pixel sharp).

    Returns:
        ``(B, C, H, W)``, differentiable in ``masks``.
    """
    levels = stack.shape[0]
    s = (1 - masks) * (levels - 1)  # no clamp here: its gradient is 0 at m = 1, where the optimisation starts
    lo = s.detach().floor().clamp(0, levels - 2).long()
    frac = (s - lo).unsqueeze(1)  # (B, 1, H, W)
    idx = lo.unsqueeze(0).unsqueeze(2).expand(1, -1, stack.shape[2], -1, -1)
    low = stack.gather(0, idx).squeeze(0)
    high = stack.gather(0, idx + 1).squeeze(0)
    return low + (high - low) * frac


def total_variation(m: Tensor, beta: float) -> Tensor:
    """``(B, h, w)`` -> ``(B,)``: ``mean|d_y m|^beta + mean|d_x m|^beta``."""
    dy = (m[:, 1:, :] - m[:, :-1, :]).abs().pow(beta).flatten(1).mean(1)
    dx = (m[:, :, 1:] - m[:, :, :-1]).abs().pow(beta).flatten(1).mean(1)
    return dy + dx


@torch.no_grad()
def blur_drop(model: FrozenClassifier, images: Tensor, masks: Tensor, targets: Tensor, sigma0: float = 10.0,
              levels: int = 11) -> Tensor:
    """``(B,)`` relative drop ``max(0, p(x) - p(Phi(x; m))) / p(x)`` of the target's probability (paper's metric)."""
    return relative_drop(model(images), model(perturb(blur_stack(images, sigma0, levels), masks)), targets)


def relative_drop(logits: Tensor, perturbed_logits: Tensor, targets: Tensor) -> Tensor:
    """``(B,)`` ``max(0, p - p') / p`` of class ``targets`` ``(B,)`` from the logits ``(B, C)`` of
    the images and of their perturbed copies."""
    t = targets.view(-1, 1)
    y = logits.softmax(1).gather(1, t).squeeze(1)
    o = perturbed_logits.softmax(1).gather(1, t).squeeze(1)
    return (y - o).clamp(min=0) / y.clamp(min=1e-12)


@register_explainer
class CrispMask(Explainer):
    """Crisp-mask optimisation (``crisp``); ``sparsity=False`` gives the smooth mask.

    Args:
        model: the frozen classifier.
        iterations: first-phase steps (300).
        sparse_iterations: second-phase steps (150; ignored when ``sparsity=False``).
        l1, l2, l3, beta: first-phase weights of the deletion area, total variation and
            sparsity terms, and the TV exponent ``b`` (0.01, 1e-4, 0, 3).
        sparse_l2, sparse_l3: second-phase TV and sparsity weights (1, 2).
        sigma0: the strongest blur, in pixels (10).
        mask_scale: image pixels per mask cell (8: a 28 x 28 mask at 224 px).
        blur_levels: blurred images the per-pixel blur interpolates between.
        lr: Adam's learning rate.
        sparsity: run the second (crisp) phase.
        seed: unused (the optimisation has no random part); kept for the shared interface.
    """

    name = "crisp"

    def __init__(self, model: FrozenClassifier, iterations: int = 300, sparse_iterations: int = 150, l1: float = 0.01,
                 l2: float = 1e-4, l3: float = 0.0, beta: float = 3.0, sparse_l2: float = 1.0, sparse_l3: float = 2.0,
                 sigma0: float = 10.0, mask_scale: int = 8, blur_levels: int = 11, lr: float = 0.1,
                 sparsity: bool = True, seed: int = 0) -> None:
        super().__init__(model)
        check_non_negative(iterations=iterations, sparse_iterations=sparse_iterations, l1=l1, l2=l2, l3=l3,
                           sparse_l2=sparse_l2, sparse_l3=sparse_l3)
        check_positive(beta=beta, sigma0=sigma0, mask_scale=mask_scale, lr=lr)
        if blur_levels < 2:
            raise ValueError(f"blur_levels must be >= 2, got {blur_levels}")
        self.iterations, self.sparse_iterations = int(iterations), int(sparse_iterations)
        self.l1, self.l2, self.l3, self.beta = float(l1), float(l2), float(l3), float(beta)
        self.sparse_l2, self.sparse_l3 = float(sparse_l2), float(sparse_l3)
        self.sigma0, self.mask_scale, self.blur_levels = float(sigma0), int(mask_scale), int(blur_levels)
        self.lr, self.sparsity, self.seed = float(lr), bool(sparsity), int(seed)
        self.last_masks: Tensor | None = None  # (B, H, W) masks m of the last call
        self.last_grid: Tensor | None = None  # (B, h, w) the same on the optimised grid
        self.last_phase_grids: list[Tensor] = []  # the grid after each phase (the first = the smooth mask)
        self.last_drop: Tensor | None = None

    def schedule(self) -> list[tuple[int, float, float, float]]:
        """``[(steps, l1, l2, l3), ...]`` of the phases."""
        phases = [(self.iterations, self.l1, self.l2, self.l3)]
        if self.sparsity and self.sparse_iterations:
            phases.append((self.sparse_iterations, self.l1, self.sparse_l2, self.sparse_l3))
        return phases

    def explain(self, images: Tensor, targets: Targets) -> Tensor:
        b, _, h, w = images.shape
        with torch.no_grad():
            logits = self.model(images)  # the targets' range, and p(x) of the drop below
            targets = self.targets_for(targets, images, logits)
            stack = blur_stack(images.detach(), self.sigma0, self.blur_levels)
        grid = (max(1, math.ceil(h / self.mask_scale)), max(1, math.ceil(w / self.mask_scale)))
        with torch.inference_mode(False), torch.enable_grad():
            stack = stack.clone()  # a normal tensor (it may come from inference mode)
            m = torch.ones(b, *grid, device=images.device, dtype=images.dtype, requires_grad=True)
            opt = torch.optim.Adam([m], lr=self.lr)
            t = targets.clone().view(-1, 1)
            self.last_phase_grids = []
            for steps, l1, l2, l3 in self.schedule():
                for _ in range(steps):
                    up = F.interpolate(m.unsqueeze(1), size=(h, w), mode="bilinear", align_corners=False).squeeze(1)
                    prob = self.model(perturb(stack, up)).softmax(1).gather(1, t).squeeze(1)
                    loss = (prob + l1 * (1 - m).abs().flatten(1).mean(1) + l2 * total_variation(m, self.beta)
                            + l3 * ((1 - m).abs() * m).flatten(1).mean(1)).sum()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    with torch.no_grad():
                        m.clamp_(0.0, 1.0)
                self.last_phase_grids.append(m.detach().clone())
            masks = F.interpolate(m.detach().unsqueeze(1), size=(h, w), mode="bilinear", align_corners=False).squeeze(1)
        self.last_masks, self.last_grid = masks, m.detach()
        with torch.no_grad():  # the paper's metric, on the blur stack and the pass already made
            self.last_drop = relative_drop(logits, self.model(perturb(stack, masks)), targets)
        self.last_forward_passes = sum(s for s, *_ in self.schedule())
        return 1.0 - masks
