"""Random-class check: is the map specific to the explained class? One value per image.

For an image ``x`` explained for class ``c`` (map ``g_c``), pick a random *other* class
``c' != c`` and explain ``x`` for it (map ``g_c'``); the value is the Spearman rank correlation

    RandClassRho(x) = Spearman( g_c , g_c' )

over the ``H * W`` pixels (:func:`lcam.metrics.similarity.spearman`, average ranks for ties).
In [-1, 1]; lower means more class-discriminative (a method whose map hardly changes with the
class, e.g. one that highlights edges, scores near 1). This is the class-randomisation idea of
Sixt et al. / Quantus' ``RandomLogit`` (Sixt, Granz and Landgraf, "When explanations lie: why
many modified BP attributions fail", ICML 2020, https://arxiv.org/abs/1912.09818), measured with
the similarity of Adebayo et al.'s sanity checks. Quantus' ``RandomLogit`` uses SSIM by default,
so it is not the same number.

Constant maps have no ranking. Where the map of the *other* class is constant (typically all zero:
Grad-CAM's ReLU often leaves nothing for an unlikely class of a 1000-class classifier, as for 2
of the 3 demo photos of the tests) the value is 0, no rank association: the method shows nothing
of the explained class for another one, which is what a class-discriminative method should do,
and leaving these images out would keep only its worst cases in the mean. Where the map of the *explained* class is
constant there is nothing to check: NaN (left out of the table's mean).

The other class is ``c' = (c + r_c) mod C`` with ``r_c`` uniform in ``1..C-1``, one ``r_c`` per
class drawn from a generator seeded with ``seed`` (:func:`other_classes`): it is never ``c``, it is
uniform over the other classes, and it depends only on (``seed``, ``c``), so an image gets the
same other class whichever batch it is in.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from lcam.metrics._settings import check_int, check_optional_int, num_classes_of, untouched
from lcam.metrics.per_image import PerImageMetric
from lcam.metrics.similarity import spearman
from lcam.runtime.batching import chunks, make_generator


def other_classes(targets: Tensor, num_classes: int, seed: int) -> Tensor:
    """A random class other than each target: ``(B,)`` -> ``(B,)`` long, ``(t + r_t) mod C`` (module docstring)."""
    if num_classes < 2:
        raise ValueError(f"the random-class check needs at least 2 classes, got {num_classes}")
    g = make_generator(seed, torch.device("cpu"))
    offsets = torch.randint(1, num_classes, (num_classes,), generator=g).to(targets.device)
    t = targets.long()
    return (t + offsets[t]) % num_classes


class RandomClassCheck(PerImageMetric):
    """Spearman correlation of the map for the explained class and for a random other class; column
    ``RandClassRho`` in [-1, 1], lower is more class-discriminative.

    ``update(images, maps, targets)``: images ``(B, 3, H, W)`` in [0, 1], maps ``(B, H, W)`` (the
    explainer's maps for ``targets``), targets ``(B,)``. The explainer runs once more on the
    images, for the other classes, ``batch_size`` images per call. The default, one image per
    call, makes each value exactly independent of the rest of the batch; a larger ``batch_size``
    (``None``: the whole batch) is faster for one-pass methods, and a batched explainer's maps then
    differ by float rounding, which can swap a few near-tied ranks (4.5e-6 in RandClassRho on the
    test photos with Grad-CAM). The
    explainer and the classifier are used as they are (the explainer's ``last_forward_passes`` is
    restored after the call).

    Example::

        metric = RandomClassCheck(model, GradCAM(model))
        rho = metric.per_image(images, maps, targets)["RandClassRho"]   # (B,)

    Args:
        model: the classifier (its ``num_classes``, or the width of its logits).
        explainer: ``explainer(images, targets) -> (B, H, W)`` maps; not registered as a submodule.
        batch_size: images per explainer call (default 1), or ``None`` for the whole batch.
        seed: seeds the choice of the other class.
    """

    columns: ClassVar[tuple[str, ...]] = ("RandClassRho",)
    needs_explainer: ClassVar[bool] = True
    higher_is_better = False

    def __init__(self, model: Any, explainer: Any, batch_size: int | None = 1, seed: int = 0) -> None:
        super().__init__()
        self.__dict__["model"] = model
        self.__dict__["explainer"] = explainer  # not a submodule: the metric's state is its sums
        self.batch_size = check_optional_int("batch_size", batch_size, 1)
        self.seed = check_int("seed", seed, 0)

    def per_image(self, images: Tensor, maps: Tensor, targets: Tensor, *extra: Any) -> dict[str, Tensor]:
        """``{"RandClassRho": (B,)}`` float64 for images ``(B, 3, H, W)``, maps ``(B, H, W)``, targets ``(B,)``."""
        b = images.shape[0]
        others = other_classes(targets.to(images.device), num_classes_of(self.model, images), self.seed)
        other_maps = torch.empty(maps.shape, dtype=torch.float32, device=images.device)
        with untouched(self.explainer):
            for part in chunks(b, self.batch_size or max(b, 1)):
                other_maps[part] = self.explainer(images[part], others[part]).detach().float()
        rho = spearman(maps, other_maps)
        flat = other_maps.reshape(b, -1)
        other_constant = (flat == flat[:, :1]).all(dim=1)
        mine = maps.reshape(b, -1)
        mine_constant = (mine == mine[:, :1]).all(dim=1)
        rho = torch.where(other_constant, torch.zeros_like(rho), rho)
        return {"RandClassRho": torch.where(mine_constant, torch.full_like(rho, float("nan")), rho)}
