"""Metrics: insertion / deletion AUC, blur, and AD / IC (hand-computed values on tiny inputs)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from lcam.metrics import (
    AverageDropIncrease,
    InsertionDeletion,
    auc,
    blur,
    explanation_confidence,
    insertion_deletion_curves,
    keep_top_fraction,
)

# Pixel weights of the fake classifier on a 4x4 image: rows worth 4, 3, 2, 1 (total 40).
ROW_WEIGHTS = torch.tensor([4.0, 3.0, 2.0, 1.0]).view(4, 1).expand(4, 4)


class WeightedMeanModel(nn.Module):
    """Class-0 probability = sum(w * x[:, 0]) / sum(w) for images in [0, 1] (two classes)."""

    def __init__(self, weights: Tensor) -> None:
        super().__init__()
        self.register_buffer("w", weights / weights.sum())

    def forward(self, x: Tensor) -> Tensor:
        p = (x[:, 0] * self.w).sum(dim=(1, 2)).clamp(1e-7, 1 - 1e-7)
        return torch.stack([p.log(), (1 - p).log()], dim=1)  # softmax gives back (p, 1 - p)


@pytest.fixture
def toy_weighted_model() -> WeightedMeanModel:
    return WeightedMeanModel(ROW_WEIGHTS)


def ones(b: int = 1, size: int = 4) -> Tensor:
    return torch.ones(b, 3, size, size)


# -- insertion / deletion -----------------------------------------------------------------------
def test_deletion_and_insertion_curves_by_hand(toy_weighted_model):
    # map = weights: step i removes row i (4 px): remaining weight 40, 24, 12, 4, 0
    x, probs = insertion_deletion_curves(toy_weighted_model, ones(), ROW_WEIGHTS[None], torch.tensor([0]), "deletion", n_steps=4,
                                         substrate="zero")
    torch.testing.assert_close(x[0], torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    torch.testing.assert_close(probs[0], torch.tensor([1.0, 0.6, 0.3, 0.1, 0.0]), atol=1e-5, rtol=0)
    assert auc(x, probs).item() == pytest.approx(0.25 * (0.8 + 0.45 + 0.2 + 0.05), abs=1e-5)  # 0.375
    # insertion onto zeros: 0, 16, 28, 36, 40 of 40
    x, probs = insertion_deletion_curves(
        toy_weighted_model, ones(), ROW_WEIGHTS[None], torch.tensor([0]), "insertion", n_steps=4, substrate="zero"
    )
    torch.testing.assert_close(probs[0], torch.tensor([0.0, 0.4, 0.7, 0.9, 1.0]), atol=1e-5, rtol=0)
    assert auc(x, probs).item() == pytest.approx(0.625, abs=1e-5)
    # the reversed map deletes the least useful pixels first: a higher deletion AUC
    _, rev = insertion_deletion_curves(toy_weighted_model, ones(), -ROW_WEIGHTS[None], torch.tensor([0]), "deletion", n_steps=4,
                                       substrate="zero")
    torch.testing.assert_close(rev[0], torch.tensor([1.0, 0.9, 0.7, 0.4, 0.0]), atol=1e-5, rtol=0)


def test_uneven_steps_use_the_true_pixel_fractions(toy_weighted_model):
    model = WeightedMeanModel(torch.ones(4, 4))  # probability = fraction of pixels kept
    saliency = torch.rand(1, 4, 4, generator=torch.Generator().manual_seed(0))
    x, probs = insertion_deletion_curves(model, ones(), saliency, torch.tensor([0]), "deletion", n_steps=3, substrate="zero")
    torch.testing.assert_close(x[0], torch.tensor([0.0, 5 / 16, 10 / 16, 1.0]))
    torch.testing.assert_close(probs[0], 1 - x[0], atol=1e-5, rtol=0)
    assert auc(x, probs).item() == pytest.approx(0.5, abs=1e-5)


def test_insertion_onto_blur_of_a_constant_image_is_flat(toy_weighted_model):
    x, probs = insertion_deletion_curves(toy_weighted_model, ones(), ROW_WEIGHTS[None], torch.tensor([0]), "insertion", n_steps=4)
    torch.testing.assert_close(probs, torch.ones_like(probs), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="valid"):
        insertion_deletion_curves(toy_weighted_model, ones(), ROW_WEIGHTS[None], torch.tensor([0]), "delete")


def test_curves_do_not_depend_on_the_chunking():
    model = WeightedMeanModel(torch.rand(8, 8, generator=torch.Generator().manual_seed(1)))
    model.register_buffer("mean", torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1))  # the deletion default
    g = torch.Generator().manual_seed(2)
    images, maps = torch.rand(3, 3, 8, 8, generator=g), torch.rand(3, 8, 8, generator=g)
    targets = torch.tensor([0, 1, 0])
    for mode in ("insertion", "deletion"):
        _, one = insertion_deletion_curves(model, images, maps, targets, mode, n_steps=5, batch_size=1)
        _, many = insertion_deletion_curves(model, images, maps, targets, mode, n_steps=5, batch_size=7)
        singles = torch.cat([insertion_deletion_curves(model, images[i : i + 1], maps[i : i + 1], targets[i : i + 1], mode,
                                                       n_steps=5)[1] for i in range(3)])
        torch.testing.assert_close(one, many)
        torch.testing.assert_close(one, singles)


def test_insertion_deletion_metric_streams_and_merges(toy_weighted_model):
    maps = torch.stack([ROW_WEIGHTS, -ROW_WEIGHTS])
    metric = InsertionDeletion(toy_weighted_model, n_steps=4, insertion_substrate="zero", deletion_substrate="zero")
    metric.update(ones(2), maps, torch.tensor([0, 0]))
    out = metric.compute()
    # deletion AUCs 0.375 and 0.625 (reversed), insertion 0.625 and 0.375
    assert out["deletion"].item() == pytest.approx(0.5, abs=1e-5)
    assert out["insertion"].item() == pytest.approx(0.5, abs=1e-5)
    torch.testing.assert_close(metric.mean_curves()["deletion"], torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]), atol=1e-5, rtol=0)
    # two ranks, one image each: summed states give the same result
    first, second = (InsertionDeletion(toy_weighted_model, n_steps=4, insertion_substrate="zero", deletion_substrate="zero") for _ in range(2))
    first.update(ones(), maps[:1], torch.tensor([0]))
    second.update(ones(), maps[1:], torch.tensor([0]))
    assert merged(first, second) == pytest.approx({k: v.item() for k, v in out.items()}, abs=1e-6)
    assert set(metric.state_dict()) <= {"auc_sum", "curve_sum", "count"}  # the model is not part of the state
    with pytest.raises(ValueError, match="substrates"):
        InsertionDeletion(toy_weighted_model, deletion_substrate="noise")


# -- blur ----------------------------------------------------------------------------------------
def test_blur_is_a_normalised_gaussian():
    torch.testing.assert_close(blur(torch.full((1, 3, 6, 6), 0.3)), torch.full((1, 3, 6, 6), 0.3))
    delta = torch.zeros(1, 1, 21, 21)
    delta[0, 0, 10, 10] = 1.0
    out = blur(delta, kernel_size=7, sigma=1.5)[0, 0]
    d = torch.arange(-3, 4, dtype=torch.float32)
    k = torch.exp(-(d**2) / (2 * 1.5**2))
    expected = torch.zeros(21, 21)
    expected[7:14, 7:14] = torch.outer(k, k) / k.sum() ** 2
    torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError, match="odd"):
        blur(delta, kernel_size=4)


# -- AD / IC -------------------------------------------------------------------------------------
def merged(*metrics) -> dict[str, float]:
    """What DDP does: sum every state over the ranks, then compute."""
    total = type(metrics[0]).__new__(type(metrics[0]))
    total.__dict__.update(metrics[0].__dict__)
    for name in metrics[0]._defaults:
        setattr(total, name, sum(getattr(m, name) for m in metrics))
    return {k: v.item() for k, v in type(metrics[0]).compute(total).items()}


def test_average_drop_increase_by_hand():
    metric = AverageDropIncrease(thresholds=(1.0, 0.5))
    y = torch.tensor([0.8, 0.5, 0.4])
    o = torch.tensor([[0.4, 0.8], [0.6, 0.25], [0.4, 0.1]])
    metric.update(y, o)
    out = {k: v.item() for k, v in metric.compute().items()}
    assert out["AD100"] == pytest.approx(100 * (0.5 + 0 + 0) / 3, abs=1e-4)
    assert out["IC100"] == pytest.approx(100 / 3, abs=1e-4)  # only 0.5 -> 0.6 increases (0.4 -> 0.4 does not)
    assert out["AD50"] == pytest.approx(100 * (0 + 0.5 + 0.75) / 3, abs=1e-4)
    assert out["IC50"] == 0.0  # 0.8 -> 0.8 is no increase
    # DDP: two ranks with 2 and 1 samples, states summed
    a, b = AverageDropIncrease(thresholds=(1.0, 0.5)), AverageDropIncrease(thresholds=(1.0, 0.5))
    a.update(y[:2], o[:2])
    b.update(y[2:], o[2:])
    assert merged(a, b) == pytest.approx(out, abs=1e-4)


def test_all_ones_map_gives_zero_drop_and_increase():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 6))
    images = torch.rand(3, 3, 8, 8)
    targets = model(images).argmax(1)
    y, o = explanation_confidence(model, images, torch.ones(3, 8, 8), targets, thresholds=(1.0, 0.5))
    metric = AverageDropIncrease(thresholds=(1.0, 0.5))
    metric.update(y, o)
    out = metric.compute()
    assert out["AD100"].item() == pytest.approx(0.0, abs=1e-4) and out["IC100"].item() == 0.0
    assert out["AD50"].item() == pytest.approx(0.0, abs=1e-4)  # a constant map: ties are all kept


def test_thresholds_are_per_sample_not_per_batch():
    g = torch.Generator().manual_seed(0)
    maps = torch.stack([0.1 * torch.rand(4, 4, generator=g), 0.5 + 0.5 * torch.rand(4, 4, generator=g)])
    kept = keep_top_fraction(maps, 0.5)
    assert ((kept > 0).flatten(1).sum(1) == 8).all()  # half of each map
    torch.testing.assert_close(kept[kept > 0], maps[kept > 0])  # saliency values kept, not binarised
    # every value of the first map lies below every value of the second: a batch-wide threshold would keep
    # none of the first map; per sample, each keeps its own top half, exactly the values above its own median
    for i in range(2):
        order = maps[i].flatten().sort(descending=True).values
        assert ((kept[i] > 0) == (maps[i] >= order[7])).all()
    assert math.isclose(keep_top_fraction(maps, 1.0).sum().item(), maps.sum().item())


def test_insertion_blur_is_rise_gkern_11_5():
    """RISE's substrate: conv with gkern(11, 5) = scipy's gaussian_filter of an 11x11 delta, sigma 5."""
    from scipy.ndimage import gaussian_filter

    from lcam.maps import RISE_BLUR_KERNEL, RISE_BLUR_SIGMA, gaussian_kernel1d

    assert (RISE_BLUR_KERNEL, RISE_BLUR_SIGMA) == (11, 5.0)
    delta = torch.zeros(11, 11, dtype=torch.float64)
    delta[5, 5] = 1.0
    gkern = torch.from_numpy(gaussian_filter(delta.numpy(), 5))
    k = gaussian_kernel1d(11, 5.0, dtype=torch.float64, fold_tails=True)
    torch.testing.assert_close(torch.outer(k, k), gkern)
    # the insertion substrate of a delta image away from the border is that kernel
    image = torch.zeros(1, 3, 31, 31)
    image[:, :, 15, 15] = 1.0
    _, probs = insertion_deletion_curves(lambda t: t[:, :, 15, 10:21].sum(1), image, torch.rand(1, 31, 31),
                                         torch.tensor([0]), "insertion", n_steps=1)
    row = torch.tensor(gkern[5].numpy(), dtype=torch.float32) * 3  # blurred delta, row 15, cols 10..20, 3 colours
    torch.testing.assert_close(probs[0, 0], row.softmax(0)[0], atol=1e-5, rtol=1e-4)


def test_deletion_default_substrate_is_the_mean_colour(toy_weighted_model):
    """RISE deletes pixels to 0 in the normalised tensor: the classifier's mean colour in [0, 1]."""
    toy_weighted_model.register_buffer("mean", torch.tensor([0.25, 0.5, 0.75]).view(1, 3, 1, 1))
    _, probs = insertion_deletion_curves(toy_weighted_model, ones(), ROW_WEIGHTS[None], torch.tensor([0]), "deletion", n_steps=4)
    # red channel: 1 where kept, 0.25 where deleted; rows worth 16, 12, 8, 4 of 40
    torch.testing.assert_close(probs[0], torch.tensor([1.0, 0.7, 0.475, 0.325, 0.25]), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="substrate='zero'"):
        insertion_deletion_curves(WeightedMeanModel(ROW_WEIGHTS), ones(), ROW_WEIGHTS[None], torch.tensor([0]), "deletion")
