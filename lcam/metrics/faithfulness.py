"""Faithfulness correlation (Bhatt et al., 2020), one value per image.

Bhatt, Weller and Moura, "Evaluating and aggregating feature-based model explanations", IJCAI 2020
(https://arxiv.org/abs/2005.00631). For an image ``x``, its map ``g`` and the explained class
``c``, draw ``n_samples`` random subsets ``S_k`` of ``subset_size`` pixels; replace the pixels of
``S_k`` (all three channels) by a baseline to get ``x_k``; then

    FaithCorr(x) = Pearson_k( sum_{p in S_k} g_p ,  f_c(x) - f_c(x_k) )

over the ``k = 1..n_samples`` subsets, where ``f_c`` is the **softmax probability** of ``c``
(Quantus' ``softmax=True``; the paper writes ``f``, the model output). In [-1, 1], higher is
better: pixels the map rates highly should be the ones whose removal hurts. NaN where the
correlation is undefined: a constant map gives the same attribution sum for every subset, and a
probability that no subset changes gives constant drops.
"""
from __future__ import annotations

from typing import Any, ClassVar, Sequence

import torch
from torch import Tensor

from lcam.maps import substrate_images
from lcam.metrics._settings import check_choice, check_int, class_probability
from lcam.metrics.per_image import PerImageMetric
from lcam.metrics.similarity import pearson
from lcam.runtime.batching import chunks, make_generator

#: what a removed pixel becomes: ``black`` (0 in [0, 1] pixel space), ``mean`` (the dataset mean colour)
BASELINES = ("black", "mean")


def random_subsets(num_pixels: int, n_samples: int, subset_size: int, seed: int,
                   device: torch.device | str = "cpu") -> Tensor:
    """The subsets of :class:`FaithfulnessCorrelation`: ``(n_samples, num_pixels)`` bool, each row
    ``subset_size`` pixels drawn without replacement (row-major pixel index ``i * W + j``).

    Drawn from a ``torch.Generator`` on ``device`` seeded with ``seed`` (one ``randperm`` per
    subset, in order), so every image of a given size gets the same subsets whichever batch it is in.
    """
    g = make_generator(seed, torch.device(device))
    rows = torch.stack([torch.randperm(num_pixels, generator=g, device=device)[:subset_size]
                        for _ in range(n_samples)])
    return torch.zeros(n_samples, num_pixels, dtype=torch.bool, device=device).scatter_(1, rows, True)


class FaithfulnessCorrelation(PerImageMetric):
    """Faithfulness correlation (Bhatt et al. 2020) per image; column ``FaithCorr`` in [-1, 1], higher is better.

    See the module docstring for the formula. ``update(images, maps, targets)``: images
    ``(B, 3, H, W)`` in [0, 1], maps ``(B, H, W)`` in [0, 1], targets ``(B,)``. Each image's
    original and its ``n_samples`` perturbed copies go through the classifier ``batch_size`` at a
    time, image by image, so an image's value never depends on the other images of its batch.
    These passes are the metric's, not the explainer's: nothing is added to ``#FW``.

    Example::

        metric = FaithfulnessCorrelation(model, n_samples=100, subset_size=224)
        values = metric.per_image(images, maps, targets)["FaithCorr"]   # (B,)

    Args:
        model: images ``(N, 3, H, W)`` in [0, 1] -> logits ``(N, C)``; not registered as a submodule.
        n_samples: random subsets per image (Quantus ``nr_runs``; default 100, Quantus' default).
        subset_size: pixels per subset (default 224, Quantus' default: one row of a 224 px image).
        baseline: ``"black"`` (0 in [0, 1]; Quantus' default ``"black"`` is the image's minimum,
            0 for most photos) or ``"mean"`` (the dataset mean colour, see ``mean``).
        mean: 3 values in [0, 1] for ``baseline="mean"``; ``None``: the classifier's normalisation
            mean (``model.mean``, the ImageNet mean for the ImageNet classifiers).
        batch_size: classifier inputs per forward pass.
        seed: seeds the subsets at every call.
    """

    columns: ClassVar[tuple[str, ...]] = ("FaithCorr",)
    higher_is_better = True

    def __init__(self, model: Any, n_samples: int = 100, subset_size: int = 224, baseline: str = "black",
                 mean: Sequence[float] | None = None, batch_size: int = 64, seed: int = 0) -> None:
        super().__init__()
        self.__dict__["model"] = model  # deliberately not a submodule: the metric's state is its sums
        self.n_samples = check_int("n_samples", n_samples, 2)
        self.subset_size = check_int("subset_size", subset_size, 1)
        self.baseline = check_choice("baseline", baseline, BASELINES)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.seed = check_int("seed", seed, 0)
        if mean is not None and len(tuple(mean)) != 3:
            raise ValueError(f"mean must be 3 values (r, g, b) in [0, 1], got {mean!r}")
        if self.baseline == "mean" and mean is None and getattr(model, "mean", None) is None:
            raise ValueError("baseline 'mean' needs the dataset mean: pass mean=(r, g, b) or a classifier with a "
                             "`mean` buffer, or choose baseline='black'")
        self.mean = None if mean is None else tuple(float(m) for m in mean)

    @torch.no_grad()
    def per_image(self, images: Tensor, maps: Tensor, targets: Tensor, *extra: Any) -> dict[str, Tensor]:
        """``{"FaithCorr": (B,)}`` float64 for images ``(B, 3, H, W)``, maps ``(B, H, W)``, targets ``(B,)``."""
        b, _, h, w = images.shape
        if self.subset_size > h * w:
            raise ValueError(f"subset_size {self.subset_size} exceeds the {h * w} pixels of a {h} x {w} image")
        mean = self.mean if self.mean is not None else getattr(self.model, "mean", None)
        fill = substrate_images(images, self.baseline, mean if self.baseline == "mean" else None)
        subsets = random_subsets(h * w, self.n_samples, self.subset_size, self.seed, images.device)  # (S, HW)
        attribution = subsets.double() @ maps.reshape(b, -1).double().t()  # (S, B) sums over each subset
        keep_mask = subsets.view(-1, 1, h, w)
        targets = targets.to(images.device).long()
        drops = torch.empty(b, self.n_samples, dtype=torch.float64, device=images.device)
        for i in range(b):
            # input 0 is the original, input k + 1 is subset k applied
            probs = torch.empty(self.n_samples + 1, dtype=torch.float64, device=images.device)
            for part in chunks(self.n_samples + 1, self.batch_size):
                k = torch.arange(part.start, part.stop, device=images.device) - 1
                removed = keep_mask[k.clamp(min=0)] & (k >= 0).view(-1, 1, 1, 1)
                inputs = torch.where(removed, fill[i:i + 1], images[i:i + 1])
                probs[part] = class_probability(self.model, inputs, targets[i].expand(len(k)))
            drops[i] = probs[0] - probs[1:]
        return {"FaithCorr": pearson(attribution.t(), drops)}
