"""Max-sensitivity (Yeh et al., 2019), one value per image.

Yeh, Hsieh, Suggala, Inouye and Ravikumar, "On the (in)fidelity and sensitivity of explanations",
NeurIPS 2019 (https://arxiv.org/abs/1901.09392). For an image ``x``, its map ``g(x)`` for class
``c`` and ``n_samples`` perturbations ``d_k`` drawn uniformly from the L-inf ball of radius ``r``
(every value of ``d_k`` uniform in ``[-r, r]``, in [0, 1] pixel units),

    MaxSens(x) = max_k || g(x + d_k) - g(x) ||_F / || g(x) ||_F

with ``g(x + d_k)`` the explainer's map of the perturbed image for the *same* class ``c`` and
``||.||_F`` the Frobenius norm of the ``(H, W)`` map (Quantus' default ``fro_norm`` for both the
numerator and the denominator). Lower is better (a stable explanation). The paper's SENS_MAX is
the unnormalised numerator; dividing by ``||g(x)||`` (as Quantus does) makes maps of different
scales comparable. An all-zero map ``g(x)`` has no relative change: NaN for that image (left out
of the table's mean).
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from lcam.metrics._settings import check_bool, check_float, check_int, untouched
from lcam.metrics.per_image import PerImageMetric
from lcam.runtime.batching import chunks, make_generator


def ball_noise(generator: torch.Generator, count: int, shape: tuple[int, ...], radius: float,
               device: torch.device | str, dtype: torch.dtype = torch.float32) -> Tensor:
    """``count`` perturbations uniform in ``[-radius, radius]``: ``(count, *shape)``, one draw per
    perturbation (so drawing them in chunks gives the same numbers as drawing them at once)."""
    return torch.stack([(torch.rand(shape, generator=generator, device=device, dtype=dtype) * 2.0 - 1.0) * radius
                        for _ in range(count)])


class MaxSensitivity(PerImageMetric):
    """Max-sensitivity (Yeh et al. 2019) per image; column ``MaxSens`` >= 0, lower is better.

    See the module docstring for the formula. ``update(images, maps, targets)``: images
    ``(B, 3, H, W)`` in [0, 1], maps ``(B, H, W)`` (the explainer's maps of ``images`` for
    ``targets``; they are ``g(x)``), targets ``(B,)``. Each image is perturbed ``n_samples`` times
    and its copies are explained ``batch_size`` at a time, image by image, with a generator seeded
    from ``seed`` for every image: an image's value never depends on its batch. The explainer and
    the classifier are used as they are (their modes and parameters are not touched; the
    explainer's ``last_forward_passes`` is restored after the metric's calls).

    Example::

        metric = MaxSensitivity(model, GradCAM(model), n_samples=10, radius=0.02)
        values = metric.per_image(images, maps, targets)["MaxSens"]   # (B,)

    Args:
        model: the classifier (unused by the metric itself; kept for uniform construction).
        explainer: ``explainer(images, targets) -> (B, H, W)`` maps; not registered as a submodule.
        n_samples: perturbations per image (default 10, Captum's ``sensitivity_max``; Quantus: 200).
        radius: half-width of the uniform noise in [0, 1] pixel units (default 0.02, Captum's;
            Quantus' ``lower_bound=0.2`` is in the units of its input, usually normalised pixels).
        clip: clip the perturbed images to [0, 1] (default ``False``, as the paper and Quantus: the
            ball is not cut by the image range).
        batch_size: perturbed copies per explainer call.
        seed: seeds the noise, for every image at every call.
    """

    columns: ClassVar[tuple[str, ...]] = ("MaxSens",)
    needs_explainer: ClassVar[bool] = True
    higher_is_better = False

    def __init__(self, model: Any, explainer: Any, n_samples: int = 10, radius: float = 0.02, clip: bool = False,
                 batch_size: int = 16, seed: int = 0) -> None:
        super().__init__()
        self.__dict__["model"] = model
        self.__dict__["explainer"] = explainer  # not a submodule: the metric's state is its sums
        self.n_samples = check_int("n_samples", n_samples, 1)
        self.radius = check_float("radius", radius, 0.0)
        self.clip = check_bool("clip", clip)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.seed = check_int("seed", seed, 0)

    def per_image(self, images: Tensor, maps: Tensor, targets: Tensor, *extra: Any) -> dict[str, Tensor]:
        """``{"MaxSens": (B,)}`` float64 for images ``(B, 3, H, W)``, maps ``(B, H, W)``, targets ``(B,)``."""
        b = images.shape[0]
        device = images.device
        targets = targets.to(device).long()
        base = maps.detach().reshape(b, -1).double()
        base_norm = base.norm(dim=1)
        worst = torch.zeros(b, dtype=torch.float64, device=device)
        with untouched(self.explainer):
            for i in range(b):
                g = make_generator(self.seed, device)
                for part in chunks(self.n_samples, self.batch_size):
                    noisy = images[i:i + 1] + ball_noise(g, part.stop - part.start, tuple(images.shape[1:]),
                                                         self.radius, device, images.dtype)
                    if self.clip:
                        noisy = noisy.clamp(0.0, 1.0)
                    again = self.explainer(noisy, targets[i].expand(noisy.shape[0]))
                    change = (again.detach().reshape(noisy.shape[0], -1).double() - base[i]).norm(dim=1)
                    worst[i] = torch.maximum(worst[i], change.max())
        value = worst / base_norm
        return {"MaxSens": torch.where(base_norm > 0, value, torch.full_like(value, float("nan")))}
