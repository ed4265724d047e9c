"""ROAD, RemOve And Debias (Rong et al., 2022), the faithfulness metric of T-TAME and pytorch-grad-cam.

For each removal fraction ``p`` in 10%, 20%, ..., 90% the ``p`` most relevant pixels of the map
(MoRF) or the ``p`` least relevant (LeRF) are removed and filled by *noisy linear imputation*:
every removed pixel becomes the weighted mean of its 8 neighbours (weight 1/6 for the 4 direct
neighbours, 1/12 for the diagonal ones, renormalised over the neighbours inside the image), where
removed neighbours are unknowns too, so the fill is the solution of one sparse linear system
(:func:`noisy_linear_impute`; all images, fractions and both orders of a batch in one
block-diagonal ``scipy.sparse`` system), plus Gaussian noise. The classifier then reads the target's
confidence. Scores are, as pytorch-grad-cam reports them, the change of confidence from the
original image, averaged over the fractions:

* ``ROAD-MoRF`` (lower is better: removing the relevant pixels should hurt),
* ``ROAD-LeRF`` (higher is better),
* ``ROAD`` = ``(LeRF - MoRF) / 2`` (pytorch-grad-cam's ``ROADCombined``, higher is better),

and :meth:`ROAD.curves` gives the mean confidence change at every fraction for both orders.

Differences from pytorch-grad-cam (see the README): it removes pixels by thresholding at
``np.percentile(map, q)`` (``map < threshold`` kept), so ties and interpolation can move a pixel or
so; here exactly ``round(p * H * W)`` pixels go, ties broken by pixel index. It imputes the
normalised tensor and adds noise of std 0.01 there; here the image in [0, 1] is imputed (linear
imputation commutes with the per-channel normalisation) and the noise is ``noise * std`` per
channel, the same noise in normalised units. Its noise comes from the global RNG; here from a
seeded generator.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import spsolve
from torch import Tensor
from torchmetrics import Metric

#: ROAD's neighbour weights: ((row offset, column offset), weight)
NEIGHBOURS: tuple[tuple[tuple[int, int], float], ...] = (
    ((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12),
    ((0, -1), 1 / 6), ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6),
)
#: removal fractions in percent (pytorch-grad-cam's ``percentiles``)
ROAD_PERCENTILES: tuple[int, ...] = (10, 20, 30, 40, 50, 60, 70, 80, 90)
ORDERS = ("morf", "lerf")


def removal_masks(maps: Tensor, percentiles: Sequence[float] = ROAD_PERCENTILES, order: str = "morf") -> Tensor:
    """Pixels to remove: ``(B, H, W)`` maps -> ``(B, P, H, W)`` bool.

    ``order="morf"`` removes the ``round(p/100 * H * W)`` highest-valued pixels, ``"lerf"`` the
    lowest-valued; ties go by pixel index (row-major), so the counts are exact.
    """
    if order not in ORDERS:
        raise ValueError(f"Unknown order {order!r}; valid: {list(ORDERS)}")
    bad = [p for p in percentiles if not 0 < p < 100]
    if bad:
        raise ValueError(f"percentiles must lie strictly between 0 and 100 (percent of pixels removed), got {bad}")
    b, h, w = maps.shape
    flat = maps.reshape(b, -1).float()
    order_idx = flat.argsort(dim=1, descending=(order == "morf"), stable=True)
    rank = torch.empty_like(order_idx).scatter_(1, order_idx, torch.arange(h * w, device=maps.device).expand(b, -1))
    counts = torch.tensor([round(p / 100.0 * h * w) for p in percentiles], device=maps.device)
    return (rank[:, None, :] < counts[None, :, None]).view(b, len(percentiles), h, w)


def linear_imputation_system(removed: np.ndarray, images: np.ndarray,
                             neighbours: Sequence[tuple[tuple[int, int], float]] = NEIGHBOURS):
    """The sparse system ``A x = b`` of ROAD's linear imputation for a stack of images.

    Unknown ``u`` (a removed pixel, row-major over images) satisfies
    ``sum_n w_n x_n - (sum_n w_n) x_u = - sum_k w_k v_k`` over its neighbours inside the image:
    removed ones (``n``, unknowns) and kept ones (``k``, known values ``v``).

    Args:
        removed: ``(N, H, W)`` bool.
        images: ``(N, C, H, W)`` float.

    Returns:
        ``(A (U, U) scipy CSC, b (U, C), (n, i, j))`` with the unknowns' coordinates.
    """
    n_img, h, w = removed.shape
    n_idx, i_idx, j_idx = np.nonzero(removed)
    u = n_idx.size
    var_id = np.full(removed.shape, -1, dtype=np.int64)
    var_id[n_idx, i_idx, j_idx] = np.arange(u)
    rows, cols, vals = [], [], []
    diag = np.zeros(u)
    rhs = np.zeros((u, images.shape[1]))
    for (di, dj), weight in neighbours:
        ii, jj = i_idx + di, j_idx + dj
        inside = np.nonzero((ii >= 0) & (ii < h) & (jj >= 0) & (jj < w))[0]
        diag[inside] += weight
        nb_n, nb_i, nb_j = n_idx[inside], ii[inside], jj[inside]
        is_unknown = removed[nb_n, nb_i, nb_j]
        r = inside[is_unknown]
        rows.append(r)
        cols.append(var_id[nb_n[is_unknown], nb_i[is_unknown], nb_j[is_unknown]])
        vals.append(np.full(r.size, weight))
        k = ~is_unknown
        rhs[inside[k]] -= weight * images[nb_n[k], :, nb_i[k], nb_j[k]]
    rows.append(np.arange(u))
    cols.append(np.arange(u))
    vals.append(-diag)
    a = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(u, u)).tocsc()
    return a, rhs, (n_idx, i_idx, j_idx)


def noisy_linear_impute(images: Tensor, removed: Tensor, noise: float | Tensor = 0.0,
                        generator: torch.Generator | None = None) -> Tensor:
    """Fill the removed pixels by ROAD's noisy linear imputation, all images in one sparse solve.

    Args:
        images: ``(N, C, H, W)``.
        removed: ``(N, H, W)`` bool; every image must keep at least one pixel.
        noise: std of the Gaussian noise added to the filled pixels, a number or ``(C,)`` per channel.
        generator: a CPU generator for the noise.

    Returns:
        ``(N, C, H, W)`` on the images' device and dtype; kept pixels unchanged.
    """
    if removed.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(f"removed must be (N, H, W) = {(images.shape[0], *images.shape[2:])}, got {tuple(removed.shape)}")
    if bool(removed.flatten(1).all(dim=1).any()):
        raise ValueError("an image has every pixel removed: linear imputation needs at least one kept pixel")
    out = images.detach().clone()
    rem = removed.detach().cpu().numpy().astype(bool)
    if not rem.any():
        return out
    a, rhs, (n_idx, i_idx, j_idx) = linear_imputation_system(rem, images.detach().cpu().double().numpy())
    x = spsolve(a, rhs)
    x = torch.as_tensor(np.asarray(x).reshape(len(n_idx), -1), dtype=torch.float64)  # (U, C)
    std = torch.as_tensor(noise, dtype=torch.float64).reshape(-1)
    if bool((std != 0).any()):
        x = x + std * torch.randn(x.shape, generator=generator, dtype=torch.float64)
    n_t, i_t, j_t = (torch.as_tensor(v, device=images.device) for v in (n_idx, i_idx, j_idx))
    out[n_t, :, i_t, j_t] = x.to(device=images.device, dtype=images.dtype)
    return out


@torch.no_grad()
def road_scores(model: Callable[[Tensor], Tensor], images: Tensor, maps: Tensor, targets: Tensor,
                percentiles: Sequence[float] = ROAD_PERCENTILES, noise: float = 0.01, score: str = "probability",
                batch_size: int = 64, generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """Confidence change after imputation, ``{"morf": (B, P), "lerf": (B, P)}`` (perturbed minus original).

    Args:
        model: images ``(N, 3, H, W)`` in [0, 1] -> logits ``(N, C)``; its ``std`` (normalisation)
            scales ``noise`` when present.
        images: ``(B, 3, H, W)`` in [0, 1]; maps ``(B, H, W)``; targets ``(B,)``.
        percentiles: removal fractions in percent.
        noise: imputation noise std in the classifier's normalised units (ROAD: 0.01).
        score: ``"probability"`` (softmax, pytorch-grad-cam's ``ClassifierOutputSoftmaxTarget``) or ``"logit"``.
        batch_size: perturbed images per forward pass.
    """
    if score not in ("probability", "logit"):
        raise ValueError(f"Unknown score {score!r}; valid: ['probability', 'logit']")
    b, p = images.shape[0], len(percentiles)
    std = getattr(model, "std", None)
    scale = std.reshape(-1).detach().double().cpu() if isinstance(std, Tensor) else torch.ones(images.shape[1], dtype=torch.float64)
    removed = torch.cat([removal_masks(maps, percentiles, o) for o in ORDERS], dim=1)  # (B, 2P, H, W)
    reps = images.unsqueeze(1).expand(-1, 2 * p, -1, -1, -1).reshape(b * 2 * p, *images.shape[1:])
    filled = noisy_linear_impute(reps, removed.reshape(b * 2 * p, *maps.shape[1:]), noise * scale, generator)
    t = targets.to(images.device).long()

    def read(x: Tensor, tt: Tensor) -> Tensor:
        out = model(x)
        out = out.softmax(dim=1) if score == "probability" else out
        return out.gather(1, tt.view(-1, 1)).squeeze(1).double()

    base = read(images, t)
    tt = t.repeat_interleave(2 * p)
    after = torch.cat([read(filled[s:s + batch_size], tt[s:s + batch_size]) for s in range(0, filled.shape[0], batch_size)])
    diff = after.view(b, 2, p) - base.view(b, 1, 1)
    return {"morf": diff[:, 0].float(), "lerf": diff[:, 1].float()}


class ROAD(Metric):
    """Streaming ROAD (MoRF, LeRF, combined); a torchmetrics ``Metric`` (syncs under DDP).

    ``update(images, maps, targets)`` as :class:`~lcam.metrics.InsertionDeletion`; ``compute()``
    returns ``{"ROAD-MoRF", "ROAD-LeRF", "ROAD"}`` (mean confidence change, probability units);
    :meth:`curves` the mean change at every percentile.

    Args:
        model: images ``(N, 3, H, W)`` in [0, 1] -> logits ``(N, C)`` (not a submodule).
        percentiles, noise, score, batch_size: see :func:`road_scores`.
        seed: seeds the imputation noise (a CPU generator, advanced batch after batch).
    """

    full_state_update = False
    higher_is_better = None

    def __init__(self, model: Callable[[Tensor], Tensor], percentiles: Sequence[float] = ROAD_PERCENTILES,
                 noise: float = 0.01, score: str = "probability", batch_size: int = 64, seed: int = 0, **kwargs) -> None:
        removal_masks(torch.zeros(1, 2, 2), percentiles)  # validates the percentiles
        if score not in ("probability", "logit"):
            raise ValueError(f"Unknown score {score!r}; valid: ['probability', 'logit']")
        super().__init__(**kwargs)
        self.__dict__["model"] = model
        self.percentiles = tuple(float(p) for p in percentiles)
        self.noise, self.score, self.batch_size = float(noise), score, int(batch_size)
        self.generator = torch.Generator().manual_seed(int(seed))
        n = len(self.percentiles)
        self.add_state("morf_sum", default=torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("lerf_sum", default=torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, images: Tensor, maps: Tensor, targets: Tensor) -> None:  # type: ignore[override]
        s = road_scores(self.model, images, maps, targets, self.percentiles, self.noise, self.score,
                        self.batch_size, self.generator)
        self.morf_sum += s["morf"].double().sum(0).to(self.morf_sum.device)
        self.lerf_sum += s["lerf"].double().sum(0).to(self.lerf_sum.device)
        self.count += images.shape[0]

    def curves(self) -> dict[str, Tensor]:
        """Mean confidence change per percentile, ``{"morf": (P,), "lerf": (P,)}``."""
        n = self.count.clamp(min=1)
        return {"morf": (self.morf_sum / n).float(), "lerf": (self.lerf_sum / n).float()}

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        c = self.curves()
        morf, lerf = c["morf"].mean(), c["lerf"].mean()
        return {"ROAD-MoRF": morf, "ROAD-LeRF": lerf, "ROAD": (lerf - morf) / 2}
