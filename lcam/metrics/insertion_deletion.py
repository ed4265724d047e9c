"""Insertion / deletion AUC (RISE: "Randomized Input Sampling for Explanation of Black-box Models", https://arxiv.org/abs/1806.07421), batched.

Deletion starts from the image and replaces its pixels, most salient first, by a *substrate*;
insertion starts from the substrate and puts the image's pixels back, most salient first.
Substrates: ``mean`` (the classifier's normalisation mean, i.e. 0 in the normalised tensor, as
the RISE code deletes; the deletion default), ``zero`` (black in [0, 1] pixel space), ``blur``
(a blurred copy; the insertion default). After each of ``n_steps`` steps
the softmax probability of the target class is recorded; the score is the area under that curve
over the fraction of pixels changed, ``x`` in [0, 1], by the trapezoid rule (deletion: lower is
better; insertion: higher is better).

Step ``i`` changes ``floor(i * H * W / n_steps)`` pixels, so the curve has ``n_steps + 1`` points
from 0 to all pixels (RISE at 224 px: ``n_steps = 224``, one row of pixels per step). Saliency
ties are broken by pixel index (stable sort). All ``(image, step)`` inputs of a batch are
streamed through the classifier ``batch_size`` at a time.

Blur: the RISE code blurs with ``gkern(klen=11, nsig=5)``: an 11 x 11 kernel made by smoothing a
delta with a Gaussian of sigma 5 px (scipy's ``gaussian_filter``, tails folded back into the
window), nearly a box filter. The substrate here uses that very kernel
(:func:`lcam.maps.gaussian_kernel1d` with ``fold_tails=True``, tested against scipy). One
difference remains: RISE convolves the *normalised* tensor with zero padding, so its 5-px border
blends towards the mean colour; here the border is replicated.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from lcam.maps import RISE_BLUR_KERNEL, RISE_BLUR_SIGMA, blur, gaussian_kernel1d, substrate_images  # noqa: F401 - re-exported

MODES = ("insertion", "deletion")
SUBSTRATES = ("mean", "zero", "blur")
DEFAULT_SUBSTRATES = {"deletion": "mean", "insertion": "blur"}


def _substrate(images: Tensor, kind: str, kernel_size: int, sigma: float, mean: Tensor | None) -> Tensor:
    """:func:`lcam.maps.substrate_images`, with this metric's name ``zero`` for black."""
    if kind not in SUBSTRATES:
        raise ValueError(f"Unknown substrate {kind!r}; valid: {list(SUBSTRATES)}")
    if kind == "mean" and mean is None:
        raise ValueError("substrate 'mean' needs the classifier's normalisation mean: pass a classifier with a "
                         "`mean` buffer, mean=(r, g, b), or choose substrate='zero'")
    return substrate_images(images, "black" if kind == "zero" else kind, mean, kernel_size, sigma)


def step_counts(num_pixels: int, n_steps: int, device: torch.device | None = None) -> Tensor:
    """Pixels changed after each step: ``floor(i * num_pixels / n_steps)``, ``i = 0..n_steps``."""
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    return torch.arange(n_steps + 1, device=device) * num_pixels // n_steps


@torch.no_grad()
def insertion_deletion_curves(
    model: Callable[[Tensor], Tensor],
    images: Tensor,
    maps: Tensor,
    targets: Tensor,
    mode: str = "deletion",
    n_steps: int = 224,
    substrate: str | None = None,
    batch_size: int = 64,
    blur_kernel: int = RISE_BLUR_KERNEL,
    blur_sigma: float = RISE_BLUR_SIGMA,
    mean: Tensor | Sequence[float] | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-image probability curves of insertion or deletion.

    Args:
        model: images ``(N, 3, H, W)`` in [0, 1] -> logits ``(N, C)``.
        images: ``(B, 3, H, W)`` in [0, 1].
        maps: ``(B, H, W)`` saliency (any range; only the order matters).
        targets: ``(B,)`` class ids.
        mode: ``"deletion"`` or ``"insertion"``.
        n_steps: number of steps (curves have ``n_steps + 1`` points).
        substrate: ``"mean"``, ``"zero"`` or ``"blur"``; ``None``: mean for deletion, blur for
            insertion (RISE).
        batch_size: classifier inputs per forward pass (several steps of several images).
        blur_kernel, blur_sigma: the blurred substrate (``gkern(blur_kernel, blur_sigma)``, sigma in pixels).
        mean: the ``mean`` substrate's colour, 3 values in [0, 1]; ``None``: ``model.mean``.

    Returns:
        ``(x, probs)``: ``x`` ``(B, n_steps + 1)`` fraction of pixels changed in [0, 1], and
        ``probs`` ``(B, n_steps + 1)`` target probabilities.
    """
    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}; valid: {list(MODES)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    b, _, h, w = images.shape
    kind = substrate or DEFAULT_SUBSTRATES[mode]
    if mean is None:
        mean = getattr(model, "mean", None)
    other = _substrate(images, kind, blur_kernel, blur_sigma, mean)
    start, finish = (images, other) if mode == "deletion" else (other, images)
    # rank[b, p] = position of pixel p in descending saliency order
    order = maps.reshape(b, -1).argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(h * w, device=maps.device).expand(b, -1))
    counts = step_counts(h * w, n_steps, images.device)
    n_points = n_steps + 1
    probs = torch.empty(b * n_points, device=images.device)
    targets = targets.to(images.device).long()
    for lo in range(0, b * n_points, batch_size):
        idx = torch.arange(lo, min(lo + batch_size, b * n_points), device=images.device)
        img, step = idx // n_points, idx % n_points
        changed = (rank[img] < counts[step].unsqueeze(1)).view(-1, 1, h, w)
        inputs = torch.where(changed, finish[img], start[img])
        probs[idx] = model(inputs).softmax(dim=1).gather(1, targets[img].view(-1, 1)).squeeze(1).float()
    x = (counts.double() / (h * w)).float().expand(b, -1)
    return x, probs.view(b, n_points)


def auc(x: Tensor, y: Tensor) -> Tensor:
    """Trapezoid area under ``y`` over ``x``, row by row: ``(B, P)``, ``(B, P)`` -> ``(B,)``."""
    return torch.trapezoid(y, x, dim=-1)


class InsertionDeletion(Metric):
    """Streaming mean insertion and deletion AUC; a torchmetrics ``Metric`` (syncs under DDP).

    ``update(images, maps, targets)`` runs the curves of the batch through ``model`` (see
    :func:`insertion_deletion_curves`); ``compute()`` returns ``{"insertion": ..., "deletion": ...}``
    (mean AUC in [0, 1]) for the chosen ``modes``; :meth:`mean_curves` gives the mean curves.

    Args:
        model: images ``(N, 3, H, W)`` in [0, 1] -> logits ``(N, C)``. Not registered as a
            submodule: the metric's state (and ``state_dict``) holds only its sums, and the model
            stays where its owner puts it.
        modes: any of ``"insertion"``, ``"deletion"``.
        n_steps: steps per curve.
        batch_size: classifier inputs per forward pass.
        deletion_substrate: ``"mean"`` (RISE: 0 in the normalised tensor), ``"zero"`` or ``"blur"``.
        insertion_substrate: ``"blur"`` (RISE), ``"mean"`` or ``"zero"``.
        blur_kernel, blur_sigma: the blurred substrate (defaults: RISE's ``gkern(11, 5)``).
    """

    full_state_update = False
    higher_is_better = None

    def __init__(
        self,
        model: Callable[[Tensor], Tensor],
        modes: Sequence[str] = MODES,
        n_steps: int = 224,
        batch_size: int = 64,
        deletion_substrate: str = "mean",
        insertion_substrate: str = "blur",
        blur_kernel: int = RISE_BLUR_KERNEL,
        blur_sigma: float = RISE_BLUR_SIGMA,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        bad = [m for m in modes if m not in MODES] + [
            s for s in (deletion_substrate, insertion_substrate) if s not in SUBSTRATES
        ]
        if bad or not modes:
            raise ValueError(f"Invalid mode/substrate {bad or modes}; modes: {list(MODES)}, substrates: {list(SUBSTRATES)}")
        self.__dict__["model"] = model  # deliberately not a submodule (see Args)
        self.modes = tuple(modes)
        self.curve_kwargs = dict(n_steps=int(n_steps), batch_size=int(batch_size),
                                 blur_kernel=int(blur_kernel), blur_sigma=float(blur_sigma))
        self.substrates = {"deletion": deletion_substrate, "insertion": insertion_substrate}
        n = len(self.modes)
        self.add_state("auc_sum", default=torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("curve_sum", default=torch.zeros(n, int(n_steps) + 1, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    @property
    def columns(self) -> tuple[str, ...]:
        """The record / table columns: the modes (``insertion``, ``deletion``)."""
        return self.modes

    def curves(self, images: Tensor, maps: Tensor, targets: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
        """Mode -> ``(x, probs)`` ``(B, n_steps + 1)`` each (see :func:`insertion_deletion_curves`)."""
        return {mode: insertion_deletion_curves(self.model, images, maps, targets, mode=mode,
                                                substrate=self.substrates[mode], **self.curve_kwargs)
                for mode in self.modes}

    def per_image(self, images: Tensor, maps: Tensor, targets: Tensor) -> dict[str, Tensor]:
        """Each image's AUC per mode, ``{mode: (B,)}`` in [0, 1] (the per-image records of ``evaluate.py``)."""
        return {mode: auc(x, probs).double() for mode, (x, probs) in self.curves(images, maps, targets).items()}

    def update(self, images: Tensor, maps: Tensor, targets: Tensor) -> None:  # type: ignore[override]
        """Add a batch: images ``(B, 3, H, W)`` in [0, 1], maps ``(B, H, W)``, targets ``(B,)``."""
        for i, (x, probs) in enumerate(self.curves(images, maps, targets).values()):
            self.auc_sum[i] += auc(x, probs).double().sum()
            self.curve_sum[i] += probs.double().sum(0)
        self.count += images.shape[0]

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        n = self.count.clamp(min=1)
        return {mode: (self.auc_sum[i] / n).float() for i, mode in enumerate(self.modes)}

    def mean_curves(self) -> dict[str, Tensor]:
        """Mean probability curve per mode, ``(n_steps + 1,)`` over ``x = i / n_steps`` (for plots)."""
        n = self.count.clamp(min=1)
        return {mode: (self.curve_sum[i] / n).float() for i, mode in enumerate(self.modes)}
