"""Explainers: localisation on a synthetic classifier, closed forms, interface contracts."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import Tensor, nn

from lcam.backbones.frozen import FrozenClassifier
from lcam.evaluation import ForwardCounter
from lcam.explainers import (
    EXPLAINERS,
    RISE,
    SSCAM1,
    SSCAM2,
    GradCAMPlusPlus,
    ScoreCAM,
    SmoothGradCAMPlusPlus,
    build_explainer,
    missing_settings,
)
from lcam.model.heads import AttentionHead

SIZE = 32
# Regions of the synthetic classifier, in pixels (features are pooled by 4: cells 1:3 and 5:7).
REGIONS = {0: (slice(4, 12), slice(4, 12)), 1: (slice(20, 28), slice(20, 28))}

# Small but sound settings per method (RISE: N <= 200; SS-CAM 1: noise at the toy activation scale).
FAST = {
    "smoothgradcampp": {"n_samples": 4},
    "sscam1": {"n_samples": 4, "sigma": 0.1},
    "sscam2": {"n_samples": 4, "sigma": 0.1},
    "rise": {"n_masks": 200, "s": 4, "batch_size": 100},
    "crisp": {"iterations": 30, "sparse_iterations": 10},
    "integratedgradients": {"n_steps": 8},
    "smoothgrad": {"n_samples": 4},
    "occlusion": {"window": 8, "stride": 4},
}
#: the methods these interface tests cover: every registered one but the crisp-mask optimisation,
#: whose maps (1 - mask, not min-max normalised) need hundreds of steps and whose #FW counts its
#: steps only; its own contract is tested in tests/test_crisp.py
INTERFACE = sorted(set(EXPLAINERS) - {"crisp"})
#: the interface methods whose map depends on the target class (EigenCAM's does not, by design)
CLASS_DEPENDENT = [n for n in INTERFACE if getattr(EXPLAINERS[n], "class_discriminative", True)]
DETERMINISTIC = ["gradcam", "gradcampp", "xgradcam", "guidedcam", "scorecam", "rise"]


def diagonal_head(model: FrozenClassifier) -> AttentionHead:
    """An L-CAM head whose class c map is feature channel c (a head that learned the toy task)."""
    head = AttentionHead(model.feature_channels, model.num_classes)
    with torch.no_grad():
        head.conv.weight.zero_()
        head.conv.bias.zero_()
        for c in range(min(model.feature_channels, model.num_classes)):
            head.conv.weight[c, c] = 1.0
    return head


def make(name: str, model: FrozenClassifier, **settings) -> nn.Module:
    if name == "lcam":  # the registered L-CAM explainer with an in-memory head instead of a checkpoint
        settings = {"head": diagonal_head(model), **settings}
    return build_explainer({"name": name, **FAST.get(name, {}), **settings}, model)


class RegionHead(nn.Module):
    """Logit 0 = channel 0 (red) summed over region 0; logit 1 = channel 1 (green) over region 1; logit 2 = 0."""

    def __init__(self, scale: float = 2.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, feats: Tensor) -> Tensor:
        red = feats[:, 0, 1:3, 1:3].sum(dim=(1, 2))
        green = feats[:, 1, 5:7, 5:7].sum(dim=(1, 2))
        return self.scale * torch.stack([red, green, torch.zeros_like(red)], dim=1)


def region_model() -> FrozenClassifier:
    """Features: RGB copied to channels 0-2 (channel 3 always zero), ReLU, 4x4 average pooling."""
    conv = nn.Conv2d(3, 4, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        for c in range(3):
            conv.weight[c, c] = 1.0
    return FrozenClassifier(nn.Sequential(conv, nn.ReLU(), nn.AvgPool2d(4)), RegionHead(), mean=[0, 0, 0], std=[1, 1, 1])


def random_model(seed: int = 0, dead_bias: float = 0.0) -> FrozenClassifier:
    """A random conv net with a nonlinear classify half (5 classes); ``dead_bias`` < 0 kills channels."""
    torch.manual_seed(seed)
    conv2 = nn.Conv2d(6, 8, 3, padding=1)
    with torch.no_grad():
        conv2.bias[:4] += dead_bias
    features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), conv2, nn.ReLU())
    classify = nn.Sequential(nn.Conv2d(8, 8, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    return FrozenClassifier(features, classify, mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3])


def fc_model(seed: int = 0) -> FrozenClassifier:
    """A random conv net whose classify half is fully connected (like VGG-16's fc layers): the
    gradient of a logit varies from cell to cell."""
    torch.manual_seed(seed)
    features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4))
    classify = nn.Sequential(nn.Flatten(), nn.Linear(6 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 5))
    return FrozenClassifier(features, classify, mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3])


@pytest.fixture(scope="module")
def toy_region_model() -> FrozenClassifier:
    return region_model()


@pytest.fixture(scope="module")
def toy_region_images() -> Tensor:
    """Two images: dark noise, a red patch in region 0 (intensity 1) and a green one in region 1 (0.8)."""
    g = torch.Generator().manual_seed(1)
    images = 0.2 * torch.rand(2, 3, SIZE, SIZE, generator=g)
    images[:, 0][(slice(None), *REGIONS[0])] = 1.0
    images[:, 1][(slice(None), *REGIONS[1])] = 0.8
    return images


@pytest.fixture(scope="module")
def toy_model() -> FrozenClassifier:
    return random_model()


@pytest.fixture(scope="module")
def toy_images() -> Tensor:
    return torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))


def region_means(maps: Tensor, target: int) -> tuple[Tensor, Tensor, Tensor]:
    """Mean saliency inside the target's region, outside it, and inside the other region."""
    inside = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    inside[REGIONS[target]] = True
    other = REGIONS[1 - target]
    return maps[:, inside].mean(1), maps[:, ~inside].mean(1), maps[:, other[0], other[1]].flatten(1).mean(1)


# -- localisation -----------------------------------------------------------------------
@pytest.mark.parametrize("name", CLASS_DEPENDENT)
@pytest.mark.parametrize("target", [0, 1])
def test_maps_concentrate_on_the_region_the_class_depends_on(name, target, toy_region_model, toy_region_images):
    maps = make(name, toy_region_model)(toy_region_images, targets=target)
    inside, outside, other = region_means(maps, target)
    assert (inside > 1.5 * outside).all(), (name, inside, outside)
    assert (inside > other).all(), (name, inside, other)


# -- closed forms -----------------------------------------------------------------------
def reference_activations_and_gradients(model: FrozenClassifier, images: Tensor, targets: Tensor):
    """Activations and d logit / d activations by plain autograd on the whole model."""
    x = images.clone().requires_grad_(True)
    acts = model.features(x)
    acts.retain_grad()
    model.classify(acts).gather(1, targets.view(-1, 1)).sum().backward()
    return acts.detach(), acts.grad


def reference_map(cam: Tensor, size: int) -> Tensor:
    """Per-sample min-max normalisation, then bilinear upsampling."""
    flat = cam.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    norm = torch.where(hi > lo, (flat - lo) / (hi - lo).clamp(min=1e-30), torch.zeros_like(flat)).view_as(cam)
    return F.interpolate(norm.unsqueeze(1), size=(size, size), mode="bilinear", align_corners=False).squeeze(1)


def gradcam_weights(a: Tensor, g: Tensor) -> Tensor:
    return g.mean(dim=(2, 3))


def gradcampp_reference_weights(a: Tensor, g: Tensor) -> Tensor:
    """Grad-CAM++ paper, Eq. 19: alpha_ij = g_ij^2 / (2 g_ij^2 + (sum_ab A_ab) g_ij^3), element by element."""
    b, k, h, w = a.shape
    out = torch.zeros(b, k)
    for i in range(b):
        for c in range(k):
            total = float(a[i, c].sum())
            for y in range(h):
                for x in range(w):
                    gy = float(g[i, c, y, x])
                    denom = 2 * gy**2 + total * gy**3
                    alpha = gy**2 / denom if denom != 0 else 0.0
                    out[i, c] += alpha * max(gy, 0.0)
    return out


def xgradcam_weights(a: Tensor, g: Tensor) -> Tensor:
    return (a * g).sum(dim=(2, 3)) / a.sum(dim=(2, 3)).clamp(min=1e-12)  # all-zero channels: weight 0


@pytest.mark.parametrize(
    "name,weights", [("gradcam", gradcam_weights), ("gradcampp", gradcampp_reference_weights), ("xgradcam", xgradcam_weights)]
)
@pytest.mark.parametrize("model_fn", [random_model, fc_model])
def test_gradient_cams_equal_their_closed_forms(name, weights, model_fn, toy_images):
    model = model_fn()
    targets = torch.tensor([0, 3, 4])
    a, g = reference_activations_and_gradients(model, toy_images, targets)
    cam = F.relu((weights(a, g)[:, :, None, None] * a).sum(1))
    expected = reference_map(cam, SIZE)
    maps = build_explainer(name, model)(toy_images, targets)
    torch.testing.assert_close(maps, expected, atol=1e-5, rtol=1e-4)


def test_guidance_cam_equals_its_closed_form(toy_model, toy_images):
    targets = torch.tensor([1, 2, 0])
    a, g = reference_activations_and_gradients(toy_model, toy_images, targets)
    guidance = F.relu((g * a).sum(1, keepdim=True))
    cam = F.relu((g.mean(dim=(2, 3))[:, :, None, None] * guidance * a).sum(1))
    maps = build_explainer("guidedcam", toy_model, smooth_kernel=1)(toy_images, targets)
    torch.testing.assert_close(maps, reference_map(cam, SIZE), atol=1e-5, rtol=1e-4)
    smoothed = build_explainer("guidedcam", toy_model)(toy_images, targets)
    assert not torch.allclose(smoothed, maps, atol=1e-3)


def test_smooth_gradcampp_without_noise_is_gradcampp(toy_model, toy_images):
    plain = GradCAMPlusPlus(toy_model)(toy_images)
    smooth = SmoothGradCAMPlusPlus(toy_model, n_samples=3, noise_std=0.0)
    torch.testing.assert_close(smooth(toy_images), plain, atol=1e-5, rtol=1e-4)
    assert smooth.last_forward_passes == 4  # 3 noisy copies + the clean pass
    noisy = SmoothGradCAMPlusPlus(toy_model, n_samples=3)(toy_images)
    assert not torch.allclose(noisy, plain, atol=1e-3)


def test_gradcampp_differs_from_the_sum_of_activation_times_cubed_gradient(toy_images):
    """The old denominator ``sum_ab(A g^3)`` gives other maps when the gradient varies in space."""
    toy_model = fc_model()
    targets = torch.tensor([0, 3, 4])
    a, g = reference_activations_and_gradients(toy_model, toy_images, targets)
    assert g.flatten(2).std(2).max() > 1e-3, "the toy classifier must have a spatially varying gradient"
    denom = 2 * g**2 + (a * g**3).sum(dim=(2, 3), keepdim=True)
    wrong = (torch.where(denom != 0, g**2 / denom, torch.zeros_like(g)) * F.relu(g)).sum(dim=(2, 3))
    wrong_map = reference_map(F.relu((wrong[:, :, None, None] * a).sum(1)), SIZE)
    maps = build_explainer("gradcampp", toy_model)(toy_images, targets)
    assert (maps - wrong_map).abs().max() > 1e-2


# -- Score-CAM, SS-CAM, RISE: independent computations ---------------------------------------
def reference_substrate(images: Tensor, model: FrozenClassifier, substrate: str) -> Tensor:
    if substrate == "mean":
        return model.mean.expand_as(images)
    if substrate == "black":
        return torch.zeros_like(images)
    from scipy.ndimage import gaussian_filter  # RISE's gkern(11, 5), built as the RISE code does

    delta = torch.zeros(11, 11).numpy()
    delta[5, 5] = 1.0
    kernel = torch.from_numpy(gaussian_filter(delta, 5)).float()
    padded = F.pad(images, (5, 5, 5, 5), mode="replicate")
    return F.conv2d(padded, kernel.expand(3, 1, 11, 11), groups=3)


def reference_scorecam(model: FrozenClassifier, images: Tensor, targets: Tensor, weighting: str,
                       substrate: str = "mean") -> Tensor:
    """Score-CAM, one image and one channel at a time: Algorithm 1 (logit + softmax) or the
    authors' code (probability); masked image = substrate + (x - substrate) * H_k."""
    maps = []
    for i in range(images.shape[0]):
        x = images[i : i + 1]
        acts = model.features(x)[0]  # (K, h, w)
        sub = reference_substrate(x, model, substrate)
        scores = []
        for k in range(acts.shape[0]):
            up = F.interpolate(acts[k][None, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
            span = up.max() - up.min()
            mask = (up - up.min()) / span if span > 0 else torch.zeros_like(up)
            logits = model(sub + (x - sub) * mask)[0]
            score = logits[targets[i]] if weighting == "logit_softmax" else logits.softmax(0)[targets[i]]
            scores.append(score)
        scores = torch.stack(scores)
        alpha = scores.softmax(0) if weighting == "logit_softmax" else scores
        cam = F.relu((alpha[:, None, None] * acts).sum(0))
        up = F.interpolate(cam[None, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
        span = up.max() - up.min()
        maps.append((up - up.min()) / span if span > 0 else torch.zeros_like(up))
    return torch.stack(maps)


@pytest.mark.parametrize("substrate", ["mean", "black", "blur"])
@pytest.mark.parametrize("weighting", ["logit_softmax", "probability"])
@pytest.mark.parametrize("prune", [True, False])
def test_scorecam_equals_its_algorithm(weighting, substrate, prune):
    model = random_model(seed=3, dead_bias=-0.35)  # some all-zero channels: pruning must stay exact
    images = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    targets = torch.tensor([1, 4])
    with torch.no_grad():
        expected = reference_scorecam(model, images, targets, weighting, substrate)
    explainer = ScoreCAM(model, weighting=weighting, substrate=substrate, batch_size=3, prune=prune)
    torch.testing.assert_close(explainer(images, targets), expected, atol=1e-5, rtol=1e-4)


def test_scorecam_pruned_weights_equal_unpruned_weights_and_count_the_substrate_pass():
    model = random_model(seed=3, dead_bias=-0.35)
    images = torch.rand(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    acts, targets = ScoreCAM(model).activations_and_targets(images, None)
    live = acts.flatten(2).ne(0).any(2)
    assert (~live).any(1).all() and live.any(1).all(), "every toy image needs dead and live channels"
    for weighting in ("logit_softmax", "probability"):
        pruned = ScoreCAM(model, weighting=weighting, batch_size=5)
        full = ScoreCAM(model, weighting=weighting, batch_size=5, prune=False)
        w_pruned, passes = pruned.channel_weights(images, acts, targets)
        w_full, full_passes = full.channel_weights(images, acts, targets)
        if weighting == "logit_softmax":  # every weight, dead channels included (they share the denominator)
            torch.testing.assert_close(w_pruned, w_full, atol=1e-6, rtol=1e-5)
            assert passes == int(live.sum()) + 4  # one substrate pass per image with dead channels
        else:  # a dead channel's weight multiplies an all-zero map: only live weights matter
            torch.testing.assert_close(w_pruned[live], w_full[live], atol=1e-6, rtol=1e-5)
            assert passes == int(live.sum())
        assert full_passes == 8 * 4


def test_scorecam_maps_change_with_the_class(toy_region_model, toy_region_images):
    """Class-agnostic weights (softmax over probabilities) gave nearly the channel sum for any class."""
    for weighting in ("logit_softmax", "probability"):
        explainer = ScoreCAM(toy_region_model, weighting=weighting)
        a, b = (explainer(toy_region_images[:1], c)[0] for c in (0, 1))
        r = torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1]
        assert r < 0.0, (weighting, r)


def test_sscam_without_noise_is_probability_scorecam(toy_model, toy_images):
    """SS-CAM's weight is the mean CIC (probability), with no softmax over channels; with
    ``baseline="none"`` (the authors' code) and no noise it is probability Score-CAM."""
    plain = ScoreCAM(toy_model, weighting="probability")(toy_images)
    for cls in (SSCAM1, SSCAM2):
        torch.testing.assert_close(cls(toy_model, n_samples=2, sigma=0.0, baseline="none")(toy_images), plain,
                                   atol=1e-5, rtol=1e-4)
        noisy = cls(toy_model, n_samples=2, sigma=1.0, baseline="none")(toy_images)
        assert (noisy - plain).abs().max() > 1e-4
    assert (ScoreCAM(toy_model)(toy_images) - plain).abs().max() > 1e-3, "logit softmax must differ"


@pytest.mark.parametrize("cls", [SSCAM1, SSCAM2])
def test_sscam_paper_baseline_subtracts_the_fully_masked_score_and_counts_its_pass(cls, toy_model, toy_images):
    """``baseline="paper"``: alpha_k = mean p_c(noisy) - p_c(X_b), X_b the substrate; one more pass per image."""
    targets = torch.tensor([1, 4, 0])
    none = cls(toy_model, n_samples=2, sigma=0.5, baseline="none", batch_size=5)
    paper = cls(toy_model, n_samples=2, sigma=0.5, baseline="paper", batch_size=5)
    acts, _ = paper.activations_and_targets(toy_images, targets)
    w_none, passes_none = none.channel_weights(toy_images, acts, targets)
    w_paper, passes_paper = paper.channel_weights(toy_images, acts, targets)
    with torch.no_grad():
        base = toy_model(reference_substrate(toy_images, toy_model, "mean")).softmax(1).gather(1, targets.view(-1, 1))
    torch.testing.assert_close(w_paper, w_none - base, atol=1e-6, rtol=1e-5)
    assert passes_paper == passes_none + 3
    maps = paper(toy_images, targets)
    torch.testing.assert_close(maps, ScoreCAM.weighted_map(w_none - base, acts, (SIZE, SIZE)), atol=1e-5, rtol=1e-4)
    none(toy_images, targets)
    assert paper.last_forward_passes == pytest.approx(none.last_forward_passes + 1)


def test_sscam_baseline_settings_give_different_maps_where_the_baseline_matters():
    """Protocol: without a softmax over channels the baseline does not cancel. A classifier whose
    class-0 probability is high on the substrate (a flat image) and lower on the masked images
    gives weights of one sign with ``none`` and of mixed sign with ``paper``: the maps differ. On
    a classifier whose substrate score is ~0 the two settings agree."""
    model = gap_linear_model()
    image = 0.1 * torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    image[0, 0][REGIONS[0]] = 1.0
    image[0, 1][REGIONS[1]] = 1.0
    for cls in (SSCAM1, SSCAM2):
        settings = {"n_samples": 3, "sigma": 0.1, "substrate": "black"}
        # class 2 reads nothing: its probability is the same 1/3 - ish for the substrate and every masked image
        for target in (0, 1):
            none = cls(model, baseline="none", **settings)(image, target)
            paper = cls(model, baseline="paper", **settings)(image, target)
            # a black substrate scores 1/3 for every class (zero logits): the baseline moves every weight by 1/3
            assert (none - paper).abs().max() > 0.05, (cls.name, target)
            own, other = REGIONS[target], REGIONS[1 - target]
            # the paper's CIC removes the class-agnostic part: the other object fades
            assert paper[0][other].mean() < none[0][other].mean(), (cls.name, target)
    # a baseline of probability ~0 changes nothing
    sure = FrozenClassifier(model.feature_extractor, nn.Sequential(model.classifier_head, Shift()), mean=[0, 0, 0], std=[1, 1, 1])
    for cls in (SSCAM1, SSCAM2):
        none = cls(sure, baseline="none", n_samples=2, sigma=0.1, substrate="black")(image, 0)
        paper = cls(sure, baseline="paper", n_samples=2, sigma=0.1, substrate="black")(image, 0)
        torch.testing.assert_close(paper, none, atol=1e-4, rtol=1e-3)


class Shift(nn.Module):
    """Adds a large logit to class 2 only where the input is flat (the substrate): p_0(X_b) ~ 0."""

    def forward(self, logits: Tensor) -> Tensor:
        flat = (logits[:, :2].abs().sum(1) < 1e-6).float()
        return logits + 30.0 * torch.stack([torch.zeros_like(flat), torch.zeros_like(flat), flat], 1)


@pytest.mark.parametrize("name", ["sscam1", "sscam2", "smoothgradcampp"])
def test_noise_does_not_depend_on_the_batch(name, toy_model, toy_images):
    """An image's map alone equals its map inside a batch of 3 in another order, with another chunk size."""
    chunk = {} if name == "smoothgradcampp" else {"batch_size": 1}
    other_chunk = {} if name == "smoothgradcampp" else {"batch_size": 7}
    settings = {"n_samples": 3, **({"noise_std": 0.3} if name == "smoothgradcampp" else {"sigma": 0.5})}
    targets = torch.tensor([4, 0, 2])
    alone = make(name, toy_model, **settings, **chunk)(toy_images[1:2], targets[1:2])
    order = torch.tensor([2, 1, 0])
    batch = make(name, toy_model, **settings, **other_chunk)(toy_images[order], targets[order])
    torch.testing.assert_close(batch[1:2], alone, atol=1e-5, rtol=1e-4)
    # the noise matters: another seed gives another map
    reseeded = make(name, toy_model, **settings, **chunk, seed=1)(toy_images[1:2], targets[1:2])
    assert (reseeded - alone).abs().max() > 1e-4, name


def test_sscam_first_samples_equal_a_run_with_fewer_samples(toy_model, toy_images):
    """Noise keyed by (seed, n, k): the samples of N = 2 are the first two of N = 3."""
    for cls in (SSCAM1, SSCAM2):
        two, three = (cls(toy_model, n_samples=n, sigma=0.5, baseline="none") for n in (2, 3))
        acts, t = two.activations_and_targets(toy_images, None)
        w2, _ = two.channel_weights(toy_images, acts, t)
        w3, _ = three.channel_weights(toy_images, acts, t)
        live = acts.flatten(2).ne(0).any(2)
        one = cls(toy_model, n_samples=1, sigma=0.5, baseline="none")
        sub = one.substrate_for(toy_images)
        pairs = live.nonzero()
        third = torch.zeros_like(w3)
        inputs = one.masked_inputs(toy_images[pairs[:, 0]], sub[pairs[:, 0]], acts[pairs[:, 0], pairs[:, 1]], pairs[:, 1], 2)
        with torch.no_grad():
            third[pairs[:, 0], pairs[:, 1]] = toy_model(inputs).softmax(1).gather(1, t[pairs[:, 0]].view(-1, 1)).squeeze(1)
        torch.testing.assert_close(w3, (2 * w2 + third) / 3, atol=1e-6, rtol=1e-5)


def test_sscam_noise_goes_on_the_mask_type1_or_the_masked_image_type2(toy_model, toy_images):
    """Type 1: x (.) (H_k + n), n per pixel (H, W) in mask units; type 2: x (.) H_k + n, n in
    normalised-input units (sigma * std on the [0, 1] image); masked-out pixels are the mean."""
    acts = toy_model.features(toy_images)[:, :2].flatten(0, 1)  # (6, h, w): two channels per image
    images = toy_images.repeat_interleave(2, 0)
    mean, std = toy_model.mean, toy_model.std
    up = F.interpolate(acts.unsqueeze(1), size=(SIZE, SIZE), mode="bilinear", align_corners=False)[:, 0]
    lo, hi = up.flatten(1).min(1).values.view(-1, 1, 1), up.flatten(1).max(1).values.view(-1, 1, 1)
    masks = (up - lo) / (hi - lo)
    normalised = (images - mean) / std
    gen = torch.Generator().manual_seed(9)

    one = SSCAM1(toy_model, sigma=0.3)
    noise = torch.randn(masks.shape, generator=gen)
    got = one.perturb(images, mean.expand_as(images), masks, noise)
    expected = (normalised * (masks + 0.3 * noise).unsqueeze(1)) * std + mean
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert one.noise_shape(images) == (SIZE, SIZE)

    two = SSCAM2(toy_model, sigma=0.3)
    noise = torch.randn(images.shape, generator=gen)
    got = two.perturb(images, mean.expand_as(images), masks, noise)
    expected = (normalised * masks.unsqueeze(1) + 0.3 * noise) * std + mean
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert two.noise_shape(images) == (3, SIZE, SIZE)


@pytest.mark.parametrize("substrate", ["mean", "black"])
def test_rise_equals_its_formula(substrate, toy_model, toy_images):
    rise = RISE(toy_model, n_masks=30, s=4, substrate=substrate, batch_size=7)
    masks = rise.masks((SIZE, SIZE), toy_images.device)
    targets = torch.tensor([2, 0, 1])
    sub = reference_substrate(toy_images, toy_model, substrate)
    expected = []
    with torch.no_grad():
        for i in range(3):
            x, s = toy_images[i : i + 1], sub[i : i + 1]
            probs = torch.stack([toy_model(s + (x - s) * m)[0].softmax(0)[targets[i]] for m in masks])
            sal = (probs[:, None, None] * masks).sum(0) / (30 * 0.5)
            expected.append((sal - sal.min()) / (sal.max() - sal.min()))
    torch.testing.assert_close(rise(toy_images, targets), torch.stack(expected), atol=1e-5, rtol=1e-4)


def test_substrate_setting_is_validated(toy_model):
    for name in ("scorecam", "sscam1", "sscam2", "rise"):
        with pytest.raises(ValueError, match="valid: \\['mean', 'black', 'blur'\\]"):
            build_explainer({"name": name, "substrate": "grey"}, toy_model)
    with pytest.raises(ValueError, match="logit_softmax"):
        ScoreCAM(toy_model, weighting="softmax")


# -- interface contracts ------------------------------------------------------------------
@pytest.mark.parametrize("name", INTERFACE)
def test_shape_range_topk_default_and_no_hooks(name, toy_model, toy_images):
    explainer = make(name, toy_model)
    maps = explainer(toy_images)
    assert maps.shape == (3, SIZE, SIZE) and maps.dtype == torch.float32
    assert torch.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    top1 = toy_model(toy_images).argmax(1)
    torch.testing.assert_close(explainer(toy_images, top1), maps)
    for module in toy_model.modules():
        for hooks in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            assert not getattr(module, hooks), (name, module, hooks)
    assert all(p.grad is None and not p.requires_grad for p in toy_model.parameters())


@pytest.mark.parametrize("name", INTERFACE)
def test_classify_half_starting_with_an_inplace_op(name, toy_images):
    """E.g. VGG-16 explained at ``features.28``: classify starts with ``ReLU(inplace=True)``."""
    def model(inplace: bool) -> FrozenClassifier:
        torch.manual_seed(4)
        classify = nn.Sequential(nn.ReLU(inplace=inplace), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5))
        return FrozenClassifier(nn.Conv2d(3, 6, 3, padding=1), classify, [0.5] * 3, [0.25] * 3)

    with_inplace = make(name, model(True))(toy_images[:2])
    torch.testing.assert_close(with_inplace, make(name, model(False))(toy_images[:2]))


@pytest.mark.parametrize("name", INTERFACE)
def test_non_square_images(name, toy_model):
    images = torch.rand(2, 3, 20, 28, generator=torch.Generator().manual_seed(3))
    maps = make(name, toy_model, **({"n_masks": 20} if name == "rise" else {}))(images)
    assert maps.shape == (2, 20, 28) and torch.isfinite(maps).all() and (maps.flatten(1).max(1).values > 0.5).all()


@pytest.mark.parametrize("name", INTERFACE)
def test_all_zero_activations_give_zero_maps_not_nan(name, toy_images):
    dead = nn.Conv2d(3, 4, 3, padding=1)
    with torch.no_grad():
        dead.weight.zero_()
        dead.bias.fill_(-1.0)
    model = FrozenClassifier(
        nn.Sequential(dead, nn.ReLU()), nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)), [0, 0, 0], [1, 1, 1]
    )
    maps = make(name, model)(toy_images)
    assert torch.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    if name != "rise":  # RISE's map of a constant classifier is the (non-constant) sum of its masks
        assert (maps == 0).all()


@pytest.mark.parametrize("name", CLASS_DEPENDENT)
def test_per_sample_targets_and_inference_mode(name, toy_region_model, toy_region_images):
    explainer = make(name, toy_region_model)
    image = toy_region_images[:1].expand(2, -1, -1, -1)
    maps = explainer(image, [0, 1])
    assert (maps[0] - maps[1]).abs().max() > 0.1
    with torch.inference_mode():
        inf_maps = explainer(image, torch.tensor([0, 1]))
    torch.testing.assert_close(inf_maps, maps, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_batch_results_equal_single_image_results(name, toy_model, toy_images):
    explainer = make(name, toy_model, batch_size=4) if name == "scorecam" else make(name, toy_model)
    targets = torch.tensor([4, 0, 2])
    batch = explainer(toy_images, targets)
    singles = torch.cat([explainer(toy_images[i : i + 1], targets[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batch, singles, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", INTERFACE)
def test_out_of_range_targets_name_the_valid_range(name, toy_model, toy_images):
    explainer = make(name, toy_model)
    with pytest.raises(ValueError, match=r"0\.\.4"):
        explainer(toy_images, 5)
    with pytest.raises(ValueError, match=r"0\.\.4"):
        explainer(toy_images, torch.tensor([0, -1, 2]))
    with pytest.raises(ValueError, match="3 images"):
        explainer(toy_images, [0, 1])


def test_random_methods_are_seeded(toy_model, toy_region_model, toy_region_images):
    image = toy_region_images[:1]
    # the region model's gradients do not depend on the input: Smooth Grad-CAM++ needs the random one
    models = {"smoothgradcampp": toy_model, "sscam1": toy_region_model, "sscam2": toy_region_model}
    for name, model in models.items():
        a = make(name, model, seed=3, n_samples=2)(image)
        torch.testing.assert_close(make(name, model, seed=3, n_samples=2)(image), a)
        assert (make(name, model, seed=4, n_samples=2)(image) - a).abs().max() > 1e-5, name


# -- RISE and Score-CAM specifics ------------------------------------------------------------
def test_rise_masks_are_drawn_once_and_reused(toy_model, toy_images):
    rise = RISE(toy_model, n_masks=50, s=4, seed=7)
    masks = rise.masks((SIZE, SIZE), toy_images.device)
    assert masks.shape == (50, SIZE, SIZE) and masks.min() >= 0 and masks.max() <= 1
    assert 0.3 < masks.mean() < 0.7
    first = rise(toy_images)
    second = rise(toy_images)
    assert rise.masks((SIZE, SIZE), toy_images.device) is masks and len(rise._masks) == 1
    torch.testing.assert_close(first, second)
    torch.testing.assert_close(RISE(toy_model, n_masks=50, s=4, seed=7).masks((SIZE, SIZE), toy_images.device), masks)
    assert not torch.equal(RISE(toy_model, n_masks=50, s=4, seed=8).masks((SIZE, SIZE), toy_images.device), masks)
    assert rise.last_forward_passes == 51  # 50 masks + the pass that picked the top-1 class
    rise(toy_images, 0)
    assert rise.last_forward_passes == 50


def test_rise_masks_are_smooth_shifted_grids():
    rise = RISE(random_model(), n_masks=20, s=4, seed=0)
    masks = rise.masks((SIZE, SIZE), torch.device("cpu"))
    # bilinear upsampling of a 4x4 grid to 5 cells of 8 px: neighbouring pixels differ by <= 1/8
    assert (masks[:, 1:] - masks[:, :-1]).abs().max() <= 1 / 8 + 1e-6
    assert (masks[:, :, 1:] - masks[:, :, :-1]).abs().max() <= 1 / 8 + 1e-6
    assert len({tuple(m.flatten().tolist()) for m in masks}) == 20


def test_scorecam_pruning_does_not_change_maps():
    model = random_model(seed=3, dead_bias=-0.35)
    images = torch.rand(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    acts = model.features(images)
    live = acts.flatten(2).ne(0).any(2)
    assert not live.all() and live.any(1).all(), "the toy model must have some dead channels per image"
    with_dead = int((~live).any(1).sum())
    for weighting, extra in (("logit_softmax", with_dead), ("probability", 0)):
        pruned = ScoreCAM(model, weighting=weighting, batch_size=5, prune=True)
        full = ScoreCAM(model, weighting=weighting, batch_size=5, prune=False)
        torch.testing.assert_close(pruned(images), full(images), atol=1e-5, rtol=1e-4)
        assert full.last_forward_passes == 8 + 1  # every channel + the pass that read the activations
        assert pruned.last_forward_passes == pytest.approx((int(live.sum()) + extra) / 4 + 1)
    assert pruned.last_forward_passes < 8 + 1


class ViewHead(nn.Module):
    """A classifier half that flattens with ``.view`` (fails on channels-last feature maps)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8 * 16 * 16, 5)

    def forward(self, feats: Tensor) -> Tensor:
        return self.fc(feats.view(feats.shape[0], -1))


@pytest.mark.parametrize("name", ["scorecam", "sscam2", "rise"])
def test_channels_last_masked_passes_give_the_same_maps(name, toy_model, toy_images):
    fast = make(name, toy_model, channels_last=True)
    plain = make(name, toy_model, channels_last=False)
    torch.testing.assert_close(fast(toy_images), plain(toy_images), atol=1e-5, rtol=1e-4)
    assert fast.last_forward_passes == plain.last_forward_passes


@pytest.mark.parametrize("name", ["scorecam", "rise"])
def test_default_chunk_depends_on_the_device_and_never_changes_maps(name, toy_model, toy_images):
    auto = make(name, toy_model, batch_size=None)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert auto.masked_batch_size(torch.device("cpu")) == 4
    finally:
        torch.set_num_threads(threads)
    assert auto.masked_batch_size(torch.device("cuda")) == auto.accelerator_batch_size
    assert make(name, toy_model, batch_size=3).masked_batch_size(torch.device("cpu")) == 3
    torch.testing.assert_close(auto(toy_images), make(name, toy_model, batch_size=7)(toy_images), atol=1e-5, rtol=1e-4)


def test_channels_last_falls_back_for_a_classifier_that_views_its_features(toy_model, toy_images):
    model = FrozenClassifier(toy_model.feature_extractor, ViewHead(), mean=[0.5] * 3, std=[0.2] * 3)
    explainer = ScoreCAM(model, batch_size=4)
    with pytest.warns(UserWarning, match="channels-last"):
        maps = explainer(toy_images)
    assert explainer.channels_last is False
    torch.testing.assert_close(maps, ScoreCAM(model, batch_size=4, channels_last=False)(toy_images))


# -- registry ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", INTERFACE)
@pytest.mark.parametrize("targets", [None, 1])
def test_last_forward_passes_is_the_hook_count(name, targets, toy_model, toy_images):
    """One definition of #FW: what the explainer reports equals the images a hook sees."""
    explainer = make(name, toy_model)
    with ForwardCounter(toy_model) as fw:
        explainer(toy_images, targets)
    assert explainer.last_forward_passes == pytest.approx(fw.per_image(toy_images.shape[0])), name


@pytest.mark.parametrize("name", ["gradcam", "gradcampp", "xgradcam", "guidedcam", "lcam"])
def test_one_pass_methods_share_the_features_of_the_logits_pass(name, toy_model, toy_images):
    explainer = make(name, toy_model)
    assert explainer.shares_features
    targets = torch.tensor([1, 4, 0])
    with torch.no_grad():
        feats = toy_model.features(toy_images)
    with ForwardCounter(toy_model) as fw:
        shared = explainer.maps_from_features(toy_images, feats, targets)
    assert fw.images == 0  # no pass of its own
    torch.testing.assert_close(shared, explainer(toy_images, targets), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["smoothgradcampp", "scorecam", "sscam1", "sscam2", "rise"])
def test_multi_pass_methods_report_progress_up_to_one(name, toy_model, toy_images):
    settings = {"n_masks": 40} if name == "rise" else {}
    explainer = make(name, toy_model, **settings, **({"batch_size": 4} if name != "smoothgradcampp" else {}))
    assert not explainer.shares_features
    seen: list[float] = []
    with explainer.reporting(seen.append):
        explainer(toy_images)
    assert len(seen) >= 2 and seen == sorted(seen) and seen[-1] == pytest.approx(1.0)
    explainer(toy_images)  # outside the block: no callback
    assert explainer._progress is None


def test_targets_by_name_and_box_refused(toy_model, toy_images):
    named = FrozenClassifier(toy_model.feature_extractor, toy_model.classifier_head, mean=[0.5, 0.4, 0.3],
                             std=[0.2, 0.25, 0.3], class_names=["cat", "dog", "car", "bus", "cup"])
    explainer = make("gradcam", named)
    torch.testing.assert_close(explainer(toy_images, "Dog"), explainer(toy_images, 1))
    torch.testing.assert_close(explainer(toy_images, ["cat", 1, "cup"]), explainer(toy_images, torch.tensor([0, 1, 4])))
    with pytest.raises(ValueError, match="Unknown class name 'dgo'; did you mean 'dog'"):
        explainer(toy_images, "dgo")
    from lcam.explainers import Box

    with pytest.raises(ValueError, match="Box targets need a detector"):
        explainer(toy_images, Box(0, 0, 4, 4))


def test_registry_builds_from_names_dicts_and_dictconfigs(toy_model):
    assert sorted(EXPLAINERS) == sorted(
        ["lcam", "gradcam", "gradcampp", "smoothgradcampp", "xgradcam", "guidedcam", "scorecam", "sscam1", "sscam2", "rise", "crisp",
         "hirescam", "layercam", "eigencam", "ablationcam", "integratedgradients", "smoothgrad", "occlusion"]
    )
    assert missing_settings({"name": "lcam"}) == ["ckpt_path"] and missing_settings("rise") == []
    with pytest.raises(ValueError, match="needs a checkpoint"):
        build_explainer("lcam", toy_model)
    with pytest.raises(ValueError, match="'gradcam' needs a classifier"):
        build_explainer("gradcam", None)
    assert isinstance(build_explainer("GradCAM", toy_model), EXPLAINERS["gradcam"])
    rise = build_explainer(OmegaConf.create({"name": "rise", "n_masks": 10, "s": 3}), toy_model, seed=5)
    assert (rise.n_masks, rise.s, rise.seed) == (10, 3, 5)
    assert "n_masks=10" in repr(rise)
    with pytest.raises(ValueError, match="valid choices.*gradcam"):
        build_explainer("gradcamm", toy_model)
    with pytest.raises(ValueError, match="n_masks"):
        build_explainer({"name": "rise", "n_mask": 10}, toy_model)
    with pytest.raises(ValueError, match="p must be"):
        build_explainer({"name": "rise", "p": 1.5}, toy_model)


# -- two objects of two classes in one image ------------------------------------------------------
CLASS_DISCRIMINATIVE = ["gradcam", "gradcampp", "smoothgradcampp", "xgradcam", "guidedcam", "scorecam",
                        "scorecam_probability", "sscam1", "sscam2", "rise", "lcam"]


def gap_linear_model() -> FrozenClassifier:
    """Features: RGB copied to channels 0-2 (channel 3 zero), ReLU, 4x4 average pooling; classify:
    global average pooling + linear, class 0 = red, class 1 = green, class 2 = nothing."""
    conv = nn.Conv2d(3, 4, 1)
    linear = nn.Linear(4, 3)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        for c in range(3):
            conv.weight[c, c] = 1.0
        linear.weight.zero_()
        linear.bias.zero_()
        linear.weight[0, 0] = linear.weight[1, 1] = 40.0
    return FrozenClassifier(nn.Sequential(conv, nn.ReLU(), nn.AvgPool2d(4)),
                            nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), linear), mean=[0, 0, 0], std=[1, 1, 1])


def class_explainer(name: str, model: FrozenClassifier) -> nn.Module:
    if name == "lcam":  # a head that starts as the classifier's class activation maps (model.init=classifier)
        head = AttentionHead(model.feature_channels, model.num_classes)
        head.init_from_linear(*model.linear_readout())
        return build_explainer({"name": "lcam", "head": head}, model)
    if name == "scorecam_probability":
        return ScoreCAM(model, weighting="probability")
    if name == "rise":  # cells of 4 px resolve the 8-px objects
        return make(name, model, n_masks=600, s=8)
    return make(name, model)


@pytest.mark.parametrize("name", CLASS_DISCRIMINATIVE)
def test_each_class_map_peaks_on_its_own_object(name):
    """A red object (class 0) and a green one (class 1) of equal strength in one image: each
    class's map peaks on its own object and is much weaker on the other one."""
    model = gap_linear_model()
    image = 0.1 * torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    image[0, 0][REGIONS[0]] = 1.0
    image[0, 1][REGIONS[1]] = 1.0
    explainer = class_explainer(name, model)
    for target in (0, 1):
        sal = explainer(image, target)[0]
        peak = divmod(int(sal.argmax()), SIZE)
        own, other = REGIONS[target], REGIONS[1 - target]
        assert own[0].start <= peak[0] < own[0].stop and own[1].start <= peak[1] < own[1].stop, (name, target, peak)
        assert sal[own].mean() > 3 * sal[other].mean(), (name, target, sal[own].mean(), sal[other].mean())


def test_sscam_says_once_when_the_paper_baseline_leaves_maps_empty():
    """Class 2 of the toy classifier reads nothing: every masked image scores below the black substrate's 1/3, every
    CIC is negative and the ReLU leaves nothing; the user is told why and what to change, once per explainer."""
    import warnings

    model = gap_linear_model()
    image = 0.1 * torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    image[0, 0][REGIONS[0]] = 1.0
    image[0, 1][REGIONS[1]] = 1.0
    for cls in (SSCAM1, SSCAM2):
        paper = cls(model, baseline="paper", n_samples=3, sigma=0.1, substrate="black")
        with pytest.warns(UserWarning, match=r"1 of 1 maps are empty.*sigma=0.5 or lower.*baseline='none'"):
            assert float(paper(image, 2).max()) == 0.0
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            paper(image, 2)  # said once
            cls(model, baseline="none", n_samples=3, sigma=0.1, substrate="black")(image, 2)  # not empty: silent
            cls(model, baseline="paper", n_samples=3, sigma=0.1, substrate="black")(image, 0)  # not empty: silent
