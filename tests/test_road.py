"""ROAD: removal masks, linear imputation solved by hand on tiny images, and the metric's behaviour."""
from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from lcam.metrics.road import ROAD, noisy_linear_impute, removal_masks, road_scores


def test_centre_and_corner_pixels_become_weighted_means_of_their_neighbours():
    v = torch.arange(9, dtype=torch.float64).view(1, 1, 3, 3) ** 2  # 0 1 4 / 9 16 25 / 36 49 64
    removed = torch.zeros(1, 3, 3, dtype=torch.bool)
    removed[0, 1, 1] = True
    out = noisy_linear_impute(v, removed)
    direct = (1 + 9 + 25 + 49) / 6  # 4 direct neighbours, weight 1/6 each
    diagonal = (0 + 4 + 36 + 64) / 12  # 4 diagonal ones, weight 1/12 each (weights sum to 1)
    assert float(out[0, 0, 1, 1]) == pytest.approx(direct + diagonal)
    removed = torch.zeros(1, 3, 3, dtype=torch.bool)
    removed[0, 0, 0] = True  # 3 neighbours inside: (0,1) and (1,0) at 1/6, (1,1) at 1/12 -> renormalised by 5/12
    out = noisy_linear_impute(v, removed)
    assert float(out[0, 0, 0, 0]) == pytest.approx((1 / 6 + 9 / 6 + 16 / 12) / (5 / 12))
    assert torch.equal(out[~removed.unsqueeze(1).expand_as(out)], v[~removed.unsqueeze(1).expand_as(v)])


def test_two_adjacent_removed_pixels_solve_a_coupled_system():
    # 2 x 3 image, (0,0) = a and (0,1) = b removed; each is the weighted mean of its neighbours:
    #   a * 5/12 = b/6 + v10/6 + v11/12
    #   b * 2/3  = a/6 + v02/6 + v10/12 + v11/6 + v12/12
    v = torch.tensor([[[[0.0, 0.0, 3.0], [6.0, 12.0, 24.0]]]], dtype=torch.float64)
    v02, v10, v11, v12 = 3.0, 6.0, 12.0, 24.0
    removed = torch.tensor([[[True, True, False], [False, False, False]]])
    # a = (b/6 + c1) / (5/12) with c1 = v10/6 + v11/12; substitute into the second equation (Cramer's rule):
    c1 = v10 / 6 + v11 / 12
    c2 = v02 / 6 + v10 / 12 + v11 / 6 + v12 / 12
    det = (5 / 12) * (2 / 3) - (1 / 6) * (1 / 6)
    a = (c1 * (2 / 3) + (1 / 6) * c2) / det
    b = ((5 / 12) * c2 + (1 / 6) * c1) / det
    out = noisy_linear_impute(v, removed)
    assert float(out[0, 0, 0, 0]) == pytest.approx(a) and float(out[0, 0, 0, 1]) == pytest.approx(b)


def test_batched_system_equals_one_image_at_a_time_and_keeps_constants():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 2, 6, 7, generator=g, dtype=torch.float64)
    removed = torch.rand(3, 6, 7, generator=g) < 0.6
    together = noisy_linear_impute(images, removed)
    for i in range(3):
        torch.testing.assert_close(together[i:i + 1], noisy_linear_impute(images[i:i + 1], removed[i:i + 1]))
    const = torch.full((1, 3, 5, 5), 0.3, dtype=torch.float64)
    torch.testing.assert_close(noisy_linear_impute(const, torch.rand(1, 5, 5, generator=g) < 0.8), const)
    with pytest.raises(ValueError, match="at least one kept pixel"):
        noisy_linear_impute(const, torch.ones(1, 5, 5, dtype=torch.bool))


def test_noise_is_seeded_and_only_on_removed_pixels():
    images = torch.zeros(1, 3, 8, 8)
    removed = torch.zeros(1, 8, 8, dtype=torch.bool)
    removed[0, 2:6, 2:6] = True
    a = noisy_linear_impute(images, removed, noise=torch.tensor([0.1, 0.2, 0.3]), generator=torch.Generator().manual_seed(3))
    b = noisy_linear_impute(images, removed, noise=torch.tensor([0.1, 0.2, 0.3]), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and (a[:, :, ~removed[0]] == 0).all() and (a[:, :, removed[0]] != 0).all()
    assert float(a[0, 2, removed[0]].std()) > float(a[0, 0, removed[0]].std())  # per-channel std


def test_removal_masks_remove_exact_counts_in_saliency_order():
    maps = torch.arange(10, dtype=torch.float32).view(1, 2, 5)
    morf = removal_masks(maps, [10, 50], "morf")
    lerf = removal_masks(maps, [10, 50], "lerf")
    assert morf.shape == (1, 2, 2, 5) and morf[0, 0].sum() == 1 and bool(morf[0, 0, 1, 4])
    assert morf[0, 1].view(-1).tolist() == [False] * 5 + [True] * 5
    assert lerf[0, 1].view(-1).tolist() == [True] * 5 + [False] * 5
    with pytest.raises(ValueError, match="strictly between 0 and 100"):
        removal_masks(maps, [0, 50])


class BlockModel(nn.Module):
    """Two classes; class-0 probability = mean of channel 0 over the top-left 2x2 block."""

    std = torch.ones(1, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        p = x[:, 0, :2, :2].mean(dim=(1, 2)).clamp(1e-6, 1 - 1e-6)
        return torch.stack([p.log(), (1 - p).log()], dim=1)


def test_road_rewards_the_map_that_points_at_what_the_model_reads():
    images = torch.zeros(1, 3, 8, 8)
    images[:, 0, :2, :2] = 1.0  # the model's evidence: p = 1 on the original
    good = torch.zeros(1, 8, 8)
    good[0, :2, :2] = 1.0
    targets = torch.zeros(1, dtype=torch.long)
    metric = ROAD(BlockModel(), noise=0.0)
    metric.update(images, good, targets)
    good_scores = {k: float(v) for k, v in metric.compute().items()}
    metric.reset()
    metric.update(images, 1 - good, targets)
    bad_scores = {k: float(v) for k, v in metric.compute().items()}
    # MoRF with the good map removes the block at once (at 10% = 6 px of 64): p falls to ~0
    assert metric.curves()["morf"].shape == (9,)
    assert good_scores["ROAD-MoRF"] < -0.9 and bad_scores["ROAD-MoRF"] > -0.1
    assert good_scores["ROAD-LeRF"] > bad_scores["ROAD-LeRF"]
    assert good_scores["ROAD"] > 0 > bad_scores["ROAD"]
    s = road_scores(BlockModel(), images, good, targets, percentiles=[50], noise=0.0)
    assert s["morf"].shape == (1, 1) and float(s["lerf"][0, 0]) == pytest.approx(0.0, abs=1e-6)
