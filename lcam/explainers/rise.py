"""RISE: Randomized Input Sampling for Explanation (Petsiuk et al.).

``N`` random binary grids ``s x s`` (each cell kept with probability ``p``) are bilinearly
upsampled to ``(s + 1) * cell`` pixels (``cell = ceil(H / s)``), shifted by a random offset in
``[0, cell)`` along each axis and cropped to ``H x W``. The saliency of class ``c`` is::

    S = sum_i p_c(x (.) M_i) M_i / (N p),   map = minmax(S)

with ``p_c`` the softmax probability. Masked-out pixels take the ``substrate``: the dataset mean
by default (the RISE code multiplies the *normalised* image by the mask), or black, or a blur.
The masks are drawn once per explainer from ``seed`` (per image size and device), kept on the device and reused for every image; images and masks are
streamed through the classifier ``batch_size`` masked images at a time (channels-last layout by
default: faster convolutions on CPU, same scores up to float rounding).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lcam.backbones.frozen import FrozenClassifier
from lcam.explainers.base import (
    Explainer,
    Targets,
    apply_masks,
    check_positive,
    check_substrate,
    chunk_size,
    chunks,
    make_generator,
)
from lcam.explainers.registry import register_explainer
from lcam.maps import upsample_then_normalize


@register_explainer
class RISE(Explainer):
    """RISE. ``#FW = n_masks`` (+ 1 with ``targets=None``: the pass that picks the top-1 class).

    Args:
        model: the frozen classifier.
        n_masks: ``N``, random masks (paper: 4000 for VGG-16, 8000 for ResNet-50).
        s: grid side.
        p: probability of keeping a grid cell, in (0, 1).
        substrate: what masked-out pixels become: ``"mean"`` (the RISE code), ``"black"`` or
            ``"blur"`` (see :func:`lcam.maps.substrate_images`).
        batch_size: masked images per forward pass (several masks of several images); ``None``: 64
            on an accelerator, ``max(4, threads)`` on CPU (see :func:`~lcam.explainers.base.chunk_size`).
        seed: seed of the masks.
        channels_last: run the masked images in channels-last memory layout (same maps up to
            float rounding; faster convolutions on CPU).
    """

    name = "rise"
    #: masked images per forward pass on an accelerator when ``batch_size`` is ``None``
    accelerator_batch_size: int = 64

    def __init__(self, model: FrozenClassifier, n_masks: int = 4000, s: int = 7, p: float = 0.5,
                 substrate: str = "mean", batch_size: int | None = None, seed: int = 0,
                 channels_last: bool = True) -> None:
        super().__init__(model)
        check_positive(n_masks=n_masks, s=s)
        if batch_size is not None:
            check_positive(batch_size=batch_size)
        if not 0.0 < p < 1.0:
            raise ValueError(f"p must be in (0, 1), got {p}")
        self.n_masks, self.s, self.p = int(n_masks), int(s), float(p)
        self.substrate = check_substrate(substrate)
        self.batch_size = None if batch_size is None else int(batch_size)
        self.seed = int(seed)
        self.channels_last = bool(channels_last)
        self._masks: dict[tuple[int, int, str], Tensor] = {}

    def masks(self, size: tuple[int, int], device: torch.device) -> Tensor:
        """The ``(N, H, W)`` float32 masks in [0, 1] for images of ``size`` on ``device`` (cached)."""
        key = (int(size[0]), int(size[1]), str(torch.device(device)))
        if key not in self._masks:
            with torch.inference_mode(False), torch.no_grad():  # usable outside inference mode later
                self._masks[key] = self._generate(key[:2], torch.device(device))
        return self._masks[key]

    def _generate(self, size: tuple[int, int], device: torch.device) -> Tensor:
        h, w = size
        n, s = self.n_masks, self.s
        cell_h, cell_w = math.ceil(h / s), math.ceil(w / s)
        gen = make_generator(self.seed, device)
        grids = (torch.rand(n, 1, s, s, generator=gen, device=device) < self.p).float()
        dy = torch.randint(0, cell_h, (n,), generator=gen, device=device)
        dx = torch.randint(0, cell_w, (n,), generator=gen, device=device)
        rows = dy.view(-1, 1) + torch.arange(h, device=device)  # (N, H)
        cols = dx.view(-1, 1) + torch.arange(w, device=device)  # (N, W)
        out = torch.empty(n, h, w, device=device)
        for part in chunks(n, self.masked_batch_size(device)):  # bounded peak memory for the upsampled grids
            up = F.interpolate(grids[part], size=((s + 1) * cell_h, (s + 1) * cell_w), mode="bilinear",
                               align_corners=False).squeeze(1)
            idx = torch.arange(up.shape[0], device=device).view(-1, 1, 1)
            out[part] = up[idx, rows[part].unsqueeze(2), cols[part].unsqueeze(1)]
        return out.clamp_(0.0, 1.0)  # bilinear rounding may overshoot 1 by an ulp

    def explain(self, images: Tensor, targets: Targets) -> Tensor:
        b, _, h, w = images.shape
        masks = self.masks((h, w), images.device)
        with torch.no_grad():
            logits = self.model(images) if targets is None else None
            t = self.targets_for(targets, images, logits)
            size = self.masked_batch_size(images.device)
            substrate = self.substrate_for(images)
            groups = []
            for part in chunks(b, size):
                groups.append(self.weighted_mask_sum(images[part], substrate[part], t[part], masks, size, done=part.start, total=b))
        self.last_forward_passes = self.n_masks + (1 if targets is None else 0)
        return upsample_then_normalize(torch.cat(groups) / (self.n_masks * self.p), (h, w))

    def masked_batch_size(self, device: torch.device) -> int:
        """Masked images per forward pass on ``device`` (``batch_size`` or its device default)."""
        return chunk_size(self.batch_size, device, self.accelerator_batch_size)

    def weighted_mask_sum(self, images: Tensor, substrate: Tensor, targets: Tensor, masks: Tensor, size: int,
                          done: int = 0, total: int | None = None) -> Tensor:
        """``sum_i p_c(x (.) M_i) M_i``: images and substrate ``(b, 3, H, W)`` (``b <= size``),
        targets ``(b,)``, masks ``(N, H, W)`` -> ``(b, H, W)``; ``size // b`` masks per forward pass.
        ``done`` / ``total``: images of the whole call before this group, and in all (progress)."""
        b = images.shape[0]
        n = masks.shape[0]
        total = b if total is None else total
        sal = torch.zeros(b, *masks.shape[1:], device=images.device)
        for part in chunks(n, max(1, size // b)):
            m = masks[part].to(images.dtype)  # (n, H, W)
            # (b, n, 3, H, W) by broadcasting, as apply_masks: substrate + (x - substrate) (.) M
            inputs = apply_masks(images.unsqueeze(1), substrate.unsqueeze(1), m.unsqueeze(0)).flatten(0, 1)
            probs = self.masked_scores(inputs, targets.repeat_interleave(m.shape[0]))
            sal += torch.einsum("bn,nhw->bhw", probs.float().view(b, -1), m)
            self.report(done * n + b * part.stop, total * n)
        return sal
