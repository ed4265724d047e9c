"""Metric families on PerImageMetric: faithfulness correlation, max-sensitivity, Gini / entropy,
the random-class check, and the map similarities (each recomputed independently with NumPy / SciPy;
Quantus parity where Quantus defines the same quantity, skipped when Quantus is not installed)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import Tensor, nn

from lcam.explainers import GradCAM
from lcam.explainers.base import make_generator
from lcam.metrics import (
    Complexity,
    FaithfulnessCorrelation,
    MaxSensitivity,
    RandomClassCheck,
    Sparseness,
    ball_noise,
    gini_index,
    hog_similarity,
    map_entropy,
    other_classes,
    pearson,
    random_subsets,
    spearman,
    ssim_similarity,
)
from lcam.metrics.per_image import PerImageMetric
from tests.test_metrics import WeightedMeanModel

SIZE = 64  # the demo photos at 64 px: the real classifier, fast on a 2-core CPU


@pytest.fixture(scope="module")
def photos() -> Tensor:
    """Three demo photos (chelsea, coffee, rocket), ``(3, 3, 64, 64)`` in [0, 1]."""
    from lcam.data import demo_photos

    arrays = [np.asarray(img.resize((SIZE, SIZE)), dtype=np.float32) / 255.0 for _, img in demo_photos()[:3]]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module")
def gradcam(effnet) -> GradCAM:
    return GradCAM(effnet)


@pytest.fixture(scope="module")
def explained(effnet, gradcam, photos) -> tuple[Tensor, Tensor]:
    """(maps, top-1 targets) of the photos by Grad-CAM."""
    with torch.no_grad():
        targets = effnet(photos).argmax(1)
    return gradcam(photos, targets), targets


class ClassPatternExplainer:
    """A toy explainer: the map of class c is a fixed random pattern ``P[c]`` (any image)."""

    def __init__(self, num_classes: int = 5, size: int = 6) -> None:
        self.patterns = torch.rand(num_classes, size, size, generator=torch.Generator().manual_seed(3))
        self.last_forward_passes = 7.0

    def __call__(self, images: Tensor, targets: Tensor) -> Tensor:
        self.last_forward_passes = 1.0
        return self.patterns[targets.long()]


class ChannelMeanExplainer:
    """A toy explainer: the map is the channel mean of the image."""

    last_forward_passes = 7.0

    def __call__(self, images: Tensor, targets: Tensor) -> Tensor:
        self.last_forward_passes = 1.0
        return images.mean(1)


class GrayToRGB(nn.Module):
    """The classifier on one-channel images (the channel repeated three times)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x.expand(-1, 3, -1, -1))


def metric_cases(effnet, gradcam) -> dict[str, PerImageMetric]:
    return {
        "FaithCorr": FaithfulnessCorrelation(effnet, n_samples=8, subset_size=64, batch_size=5, seed=1),
        "MaxSens": MaxSensitivity(effnet, gradcam, n_samples=3, radius=0.05, batch_size=2, seed=2),
        "Gini": Sparseness(effnet),
        "Entropy": Complexity(effnet),
        "RandClassRho": RandomClassCheck(effnet, gradcam, seed=3),
    }


# -- similarity ------------------------------------------------------------------------------------
def test_pearson_and_spearman_match_scipy_with_ties():
    g = torch.Generator().manual_seed(0)
    a = (torch.rand(4, 5, 6, generator=g) * 4).floor() / 4  # many ties
    b = torch.rand(4, 5, 6, generator=g).round(decimals=1)
    rho, r = spearman(a, b), pearson(a, b)
    for i in range(4):
        x, y = a[i].flatten().double().numpy(), b[i].flatten().double().numpy()
        assert rho[i].item() == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
        assert r[i].item() == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-12)
    assert spearman(a, a).tolist() == pytest.approx([1.0] * 4)
    assert math.isnan(spearman(torch.ones(1, 3, 3), b[:1, :3, :3]).item())  # a constant map has no ranking
    with pytest.raises(ValueError, match="same shape"):
        spearman(a, b[:2])


def test_ssim_and_hog_similarity_by_hand():
    from skimage.feature import hog
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(2, 32, 32, generator=g), torch.rand(2, 32, 32, generator=g)
    assert ssim_similarity(a, a).tolist() == pytest.approx([1.0, 1.0])
    assert ssim_similarity(a, b)[1].item() == pytest.approx(
        structural_similarity(a[1].double().numpy(), b[1].double().numpy(), data_range=1.0))
    ha, hb = hog(a[0].double().numpy()), hog(b[0].double().numpy())
    assert hog_similarity(a, b)[0].item() == pytest.approx(np.corrcoef(ha, hb)[0, 1], abs=1e-12)
    assert hog_similarity(a, a).tolist() == pytest.approx([1.0, 1.0])
    with pytest.raises(ValueError, match="too small"):
        hog_similarity(a[:, :8, :8], b[:, :8, :8])


# -- complexity ------------------------------------------------------------------------------------
def test_gini_and_entropy_by_explicit_formulas():
    g = torch.Generator().manual_seed(2)
    maps = torch.rand(3, 7, 5, generator=g) ** 3
    maps[1, 2:] = 0.0  # zeros count as values too
    for i in range(3):
        x = maps[i].flatten().double().numpy()
        n = x.size
        # mean absolute difference form: G = sum_ij |x_i - x_j| / (2 n^2 mean(x))
        gini = np.abs(x[:, None] - x[None, :]).sum() / (2 * n * n * x.mean())
        assert gini_index(maps)[i].item() == pytest.approx(gini, abs=1e-12)
        assert map_entropy(maps)[i].item() == pytest.approx(stats.entropy(x), abs=1e-12)
    one_hot = torch.zeros(1, 4, 4)
    one_hot[0, 1, 2] = 0.3
    flat = torch.full((1, 4, 4), 0.5)
    assert gini_index(one_hot).item() == pytest.approx(1 - 1 / 16) and map_entropy(one_hot).item() == 0.0
    assert gini_index(flat).item() == pytest.approx(0.0, abs=1e-12)
    assert map_entropy(flat).item() == pytest.approx(math.log(16))
    # an all-zero map is not scored: NaN per image, left out of compute()
    metric = Sparseness(None)
    metric.update(torch.zeros(2, 3, 4, 4), torch.cat([torch.zeros(1, 4, 4), one_hot]), torch.zeros(2, dtype=torch.long))
    assert math.isnan(metric.per_image(None, torch.zeros(1, 4, 4), None)["Gini"].item())
    assert metric.compute()["Gini"].item() == pytest.approx(1 - 1 / 16)


# -- faithfulness correlation ---------------------------------------------------------------------
def test_faithfulness_correlation_by_hand():
    g = torch.Generator().manual_seed(4)
    weights = torch.rand(8, 8, generator=g)
    model = WeightedMeanModel(weights)  # class-0 probability = sum(w x[:, 0]) / sum(w)
    images = torch.rand(2, 3, 8, 8, generator=g) * 0.5 + 0.25
    maps = torch.rand(2, 8, 8, generator=g)
    targets = torch.zeros(2, dtype=torch.long)
    metric = FaithfulnessCorrelation(model, n_samples=12, subset_size=10, batch_size=5, seed=9)
    got = metric.per_image(images, maps, targets)["FaithCorr"]
    subsets = random_subsets(64, 12, 10, seed=9).numpy()
    assert (subsets.sum(1) == 10).all()
    w = (weights / weights.sum()).double().numpy().ravel()
    for i in range(2):
        x0, a = images[i, 0].double().numpy().ravel(), maps[i].double().numpy().ravel()
        drops = np.array([(w * x0)[s].sum() for s in subsets])  # black baseline removes exactly these terms
        sums = np.array([a[s].sum() for s in subsets])
        assert got[i].item() == pytest.approx(stats.pearsonr(sums, drops).statistic, abs=1e-5)
    # the exact attribution of a linear model (w x) correlates perfectly
    exact = metric.per_image(images, (weights * images[:, 0]), targets)["FaithCorr"]
    assert exact.tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
    # a constant map gives a constant attribution sum: not scored
    assert torch.isnan(metric.per_image(images, torch.ones(2, 8, 8), targets)["FaithCorr"]).all()
    # the mean baseline replaces the removed pixels by the mean colour (here 0.25 in the red channel)
    mean_metric = FaithfulnessCorrelation(model, n_samples=12, subset_size=10, baseline="mean",
                                          mean=(0.25, 0.5, 0.5), seed=9)
    x0, a = images[0, 0].double().numpy().ravel(), maps[0].double().numpy().ravel()
    drops = np.array([(w * (x0 - 0.25))[s].sum() for s in subsets])
    sums = np.array([a[s].sum() for s in subsets])
    assert mean_metric.per_image(images[:1], maps[:1], targets[:1])["FaithCorr"].item() == pytest.approx(
        stats.pearsonr(sums, drops).statistic, abs=1e-5)


# -- max-sensitivity ------------------------------------------------------------------------------
def test_max_sensitivity_by_hand_and_the_explainer_is_left_alone():
    g = torch.Generator().manual_seed(5)
    images = torch.rand(2, 3, 6, 6, generator=g)
    explainer = ChannelMeanExplainer()
    maps = explainer(images, None)
    explainer.last_forward_passes = 7.0
    metric = MaxSensitivity(None, explainer, n_samples=5, radius=0.1, batch_size=2, seed=11)
    got = metric.per_image(images, maps, torch.zeros(2, dtype=torch.long))["MaxSens"]
    assert explainer.last_forward_passes == 7.0  # the evaluator's #FW of the method is not overwritten
    noise = ball_noise(make_generator(11, torch.device("cpu")), 5, (3, 6, 6), 0.1, "cpu").double().numpy()
    assert np.abs(noise).max() <= 0.1
    for i in range(2):
        base = maps[i].double().numpy()
        changes = [np.linalg.norm((images[i].double().numpy() + d).mean(0) - base) for d in noise]
        assert got[i].item() == pytest.approx(max(changes) / np.linalg.norm(base), rel=1e-5)
    # a map that does not move has sensitivity 0; an all-zero map has none (NaN)
    still = MaxSensitivity(None, lambda x, t: maps[:1].expand(x.shape[0], -1, -1), n_samples=3)
    assert still.per_image(images[:1], maps[:1], torch.zeros(1, dtype=torch.long))["MaxSens"].item() == 0.0
    assert math.isnan(metric.per_image(images[:1], torch.zeros(1, 6, 6), torch.zeros(1, dtype=torch.long))["MaxSens"].item())


def test_max_sensitivity_leaves_the_real_model_and_explainer_unchanged(effnet, gradcam, photos, explained):
    maps, targets = explained
    modes = [m.training for m in effnet.modules()]
    flags = [p.requires_grad for p in effnet.parameters()]
    metric = MaxSensitivity(effnet, gradcam, n_samples=2, radius=0.05)
    value = metric.per_image(photos[:1], maps[:1], targets[:1])["MaxSens"]
    with torch.inference_mode():  # as in the evaluator's test_step: the gradient explainer still works
        again = metric.per_image(photos[:1].clone(), maps[:1].clone(), targets[:1].clone())["MaxSens"]
    assert torch.equal(value, again)
    assert [m.training for m in effnet.modules()] == modes
    assert [p.requires_grad for p in effnet.parameters()] == flags
    assert all(p.grad is None for p in effnet.parameters())


# -- random-class check ---------------------------------------------------------------------------
def test_other_classes_are_never_the_target_and_cover_the_others():
    targets = torch.arange(10).repeat(3)
    others = other_classes(targets, 10, seed=0)
    assert (others != targets).all() and torch.equal(others[:10], others[10:20])  # depends on (seed, class) only
    picks = torch.stack([other_classes(torch.zeros(1, dtype=torch.long), 4, seed=s) for s in range(60)])
    assert set(picks.flatten().tolist()) == {1, 2, 3}
    with pytest.raises(ValueError, match="at least 2 classes"):
        other_classes(targets, 1, seed=0)


def test_random_class_check_by_hand():
    explainer = ClassPatternExplainer(num_classes=5)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 36, 5))  # only its number of classes is read
    targets = torch.tensor([0, 3, 4, 3])
    images = torch.rand(4, 3, 6, 6, generator=torch.Generator().manual_seed(6))
    metric = RandomClassCheck(model, explainer, batch_size=3, seed=8)
    got = metric.per_image(images, explainer(images, targets), targets)["RandClassRho"]
    others = other_classes(targets, 5, seed=8)
    for i in range(4):
        a = explainer.patterns[targets[i]].flatten().numpy()
        b = explainer.patterns[others[i]].flatten().numpy()
        assert got[i].item() == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
    assert explainer.last_forward_passes == 1.0  # restored to what it was before the metric's call
    # an empty map for the other class: no rank association (0); an empty explained map: not scored (NaN)
    explainer.patterns[others[0]] = 0.0
    assert metric.per_image(images[:1], explainer(images[:1], targets[:1]), targets[:1])["RandClassRho"].item() == 0.0
    assert math.isnan(metric.per_image(images[:1], torch.zeros(1, 6, 6), targets[:1])["RandClassRho"].item())


# -- shared behaviour ------------------------------------------------------------------------------
def test_compute_is_the_mean_of_per_image_and_values_do_not_depend_on_the_batch(effnet, gradcam, photos, explained):
    maps, targets = explained
    order = torch.tensor([2, 0, 1])
    for column, metric in metric_cases(effnet, gradcam).items():
        assert metric.columns == (column,)
        batch = metric.per_image(photos[order], maps[order], targets[order])[column]
        alone = torch.cat([metric.per_image(photos[i:i + 1], maps[i:i + 1], targets[i:i + 1])[column] for i in order])
        assert batch.shape == (3,) and not torch.isnan(batch).any(), column
        assert torch.equal(batch, alone), f"{column} depends on the batch"  # exactly, not up to rounding
        metric.update(photos[:2], maps[:2], targets[:2])
        metric.update(photos[2:], maps[2:], targets[2:])
        assert metric.compute()[column].item() == pytest.approx(batch.mean().item(), abs=1e-6), column


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the generators then live on the GPU)")
def test_metrics_run_on_the_gpu_and_stay_batch_independent(effnet, photos, explained):
    import copy

    model = copy.deepcopy(effnet).cuda()
    maps, targets = (t.cuda() for t in explained)
    images, order = photos.cuda(), torch.tensor([2, 0, 1])
    for column, metric in metric_cases(model, GradCAM(model)).items():
        batch = metric.per_image(images[order], maps[order], targets[order])[column]
        alone = torch.cat([metric.per_image(images[i:i + 1], maps[i:i + 1], targets[i:i + 1])[column] for i in order])
        assert batch.device.type == "cuda", column
        torch.testing.assert_close(batch, alone, rtol=0, atol=1e-5, msg=column)  # GPU kernels may pick other algorithms


@pytest.mark.parametrize("cls, settings, name", [
    (FaithfulnessCorrelation, {"n_samples": 1}, "n_samples"),
    (FaithfulnessCorrelation, {"subset_size": 0}, "subset_size"),
    (FaithfulnessCorrelation, {"baseline": "white"}, "baseline"),
    (FaithfulnessCorrelation, {"batch_size": 2.5}, "batch_size"),
    (FaithfulnessCorrelation, {"seed": -1}, "seed"),
    (FaithfulnessCorrelation, {"mean": (0.5, 0.5)}, "mean"),
    (MaxSensitivity, {"radius": 0}, "radius"),
    (MaxSensitivity, {"n_samples": 0}, "n_samples"),
    (MaxSensitivity, {"clip": "yes"}, "clip"),
    (RandomClassCheck, {"batch_size": 0}, "batch_size"),
    (RandomClassCheck, {"seed": True}, "seed"),
])
def test_bad_settings_name_the_setting(cls, settings, name):
    args = (nn.Identity(), ChannelMeanExplainer()) if cls.needs_explainer else (nn.Identity(),)
    with pytest.raises(ValueError, match=name):
        cls(*args, **settings)
    with pytest.raises(TypeError):
        cls(*args, no_such_setting=1)  # nothing else is accepted (and silently ignored)


def test_mean_baseline_needs_a_mean_and_subsets_must_fit():
    with pytest.raises(ValueError, match="mean"):
        FaithfulnessCorrelation(nn.Identity(), baseline="mean")
    metric = FaithfulnessCorrelation(nn.Identity(), subset_size=17)
    with pytest.raises(ValueError, match="subset_size"):
        metric.per_image(torch.rand(1, 3, 4, 4), torch.rand(1, 4, 4), torch.zeros(1, dtype=torch.long))


# -- Quantus parity (Quantus is not a dependency: pip install quantus --no-deps) -------------------
@pytest.fixture(scope="module")
def quantus():
    return pytest.importorskip("quantus")


def test_gini_and_entropy_equal_quantus(quantus, explained, photos):
    maps, targets = explained
    maps = torch.cat([maps, torch.rand(2, SIZE, SIZE, generator=torch.Generator().manual_seed(7))])
    x = torch.cat([photos, photos[:2]]).numpy()
    y = torch.cat([targets, targets[:2]]).numpy()
    a = maps[:, None].double().numpy()
    q_gini = quantus.Sparseness(disable_warnings=True)(model=None, x_batch=x, y_batch=y, a_batch=a.copy())
    q_entropy = quantus.Complexity(disable_warnings=True)(model=None, x_batch=x, y_batch=y, a_batch=a.copy())
    # Quantus adds 1e-7 to the max-normalised map before its Gini, and 1e-12 inside the log
    np.testing.assert_allclose(gini_index(maps).numpy(), q_gini, rtol=0, atol=2e-6)
    np.testing.assert_allclose(map_entropy(maps).numpy(), q_entropy, rtol=0, atol=1e-8)


def test_faithfulness_correlation_equals_quantus_on_the_same_subsets(quantus, effnet, photos, explained, monkeypatch):
    """Quantus draws its subsets with ``np.random.choice``; given ours, it gives our values. Gray
    photos: Quantus draws (channel, pixel) elements, a one-channel input makes them pixels."""
    maps, targets = explained
    gray = photos.mean(1, keepdim=True)
    n_samples, subset_size = 12, 200
    metric = FaithfulnessCorrelation(effnet, n_samples=n_samples, subset_size=subset_size, seed=4)
    ours = metric.per_image(gray.expand(-1, 3, -1, -1), maps, targets)["FaithCorr"]
    subsets = random_subsets(SIZE * SIZE, n_samples, subset_size, seed=4)
    calls = iter([np.flatnonzero(s.numpy()) for s in subsets for _ in range(len(gray))])
    monkeypatch.setattr(np.random, "choice", lambda *args, **kwargs: next(calls))
    to_rgb = GrayToRGB(effnet).eval()
    theirs = quantus.FaithfulnessCorrelation(nr_runs=n_samples, subset_size=subset_size, perturb_baseline=0.0,
                                             disable_warnings=True, return_aggregate=False)(
        model=to_rgb, x_batch=gray.numpy(), y_batch=targets.numpy(), a_batch=maps[:, None].numpy(),
        softmax=True, channel_first=True, device="cpu")
    np.testing.assert_allclose(ours.numpy(), np.asarray(theirs), rtol=0, atol=1e-4)


def test_max_sensitivity_equals_quantus_on_the_same_noise(quantus, effnet, gradcam, photos, explained, monkeypatch):
    maps, targets = explained
    n_samples, radius = 3, 0.05
    ours = MaxSensitivity(effnet, gradcam, n_samples=n_samples, radius=radius, seed=5).per_image(
        photos, maps, targets)["MaxSens"]
    noise = ball_noise(make_generator(5, torch.device("cpu")), n_samples, tuple(photos.shape[1:]), radius, "cpu")
    steps = iter([np.broadcast_to(d.reshape(1, -1).double().numpy(), (len(photos), d.numel())) for d in noise])
    monkeypatch.setattr(np.random, "uniform", lambda *args, **kwargs: next(steps))

    def explain(model, inputs, targets, **kwargs):
        x = torch.as_tensor(inputs, dtype=torch.float32)
        return gradcam(x, torch.as_tensor(targets)).detach()[:, None].numpy()

    theirs = quantus.MaxSensitivity(nr_samples=n_samples, lower_bound=radius, disable_warnings=True)(
        model=effnet, x_batch=photos.numpy(), y_batch=targets.numpy(), a_batch=maps[:, None].numpy(),
        explain_func=explain, channel_first=True, device="cpu")
    np.testing.assert_allclose(ours.numpy(), np.asarray(theirs), rtol=1e-4, atol=1e-5)
