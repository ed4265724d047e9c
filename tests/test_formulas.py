"""Formulas recomputed independently inside the tests.

Each test rebuilds a method's formula from its definition (the papers the module docstrings cite)
with plain torch operations and compares it with the implementation, so a changed formula fails
here even where the behaviour tests (localisation, shapes, seeds) would still pass. Where a test
could pass by accident (a term too small to matter), it also checks that the reference with that
term changed gives a different answer.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lcam.backbones.frozen import FrozenClassifier
from lcam.detection.base import Detections, Detector
from lcam.detection.drise import DRISE
from lcam.explainers import SSCAM1, SSCAM2, CrispMask, GuidanceMapCAM, LCAMExplainer
from lcam.explainers.base import make_generator
from lcam.maps import blur
from lcam.metrics.road import ROAD, road_scores
from lcam.model.heads import AttentionHead
from tests.test_explainers import random_model, reference_activations_and_gradients

SIZE = 32


def minmax(maps: Tensor) -> Tensor:
    """Per-map min-max over the last two dims (a constant map -> 0)."""
    flat = maps.flatten(-2)
    lo, hi = flat.min(-1, keepdim=True).values, flat.max(-1, keepdim=True).values
    out = torch.where(hi > lo, (flat - lo) / (hi - lo).clamp(min=1e-30), torch.zeros_like(flat))
    return out.view_as(maps)


def up(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear ``align_corners=False`` resize of ``(B, h, w)``."""
    return F.interpolate(maps.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)


@pytest.fixture(scope="module")
def images() -> Tensor:
    return torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(11))


# -- D-RISE: S_t = sum_i w_i(t) M_i / N, and its debias -------------------------------------------
class SoftDetector(Detector):
    """Two proposals per image whose objectness, class vector and box all vary smoothly with the image."""

    name = "soft"
    has_objectness = True

    def __init__(self) -> None:
        super().__init__(["a", "b", "c"], score_threshold=0.0, nms_iou=None)

    def proposals(self, images: Tensor) -> list[Detections]:
        out = []
        for img in images:
            left, right = img[:, 4:14, 4:14].mean((1, 2)), img[:, 16:28, 14:30].mean((1, 2))  # (3,) each
            boxes = torch.stack([torch.stack([torch.tensor(4.0), torch.tensor(4.0), 5 + 12 * left.mean(), torch.tensor(14.0)]),
                                 torch.stack([torch.tensor(14.0), torch.tensor(16.0), 15 + 16 * right.mean(), torch.tensor(28.0)])])
            probs = torch.stack([(5 * left).softmax(0), (5 * right).softmax(0)])
            obj = torch.stack([left.mean(), right.mean()]).clamp(0, 1)
            out.append(Detections(boxes, probs, obj))
        return out


def reference_iou(a: Tensor, b: Tensor) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def reference_drise_masks(n: int, s: int, p: float, seed: int, size: tuple[int, int]) -> Tensor:
    """RISE masks from the seed: grids ``rand < p``, shifts ``randint(0, cell)`` (dy then dx), upsample to
    ``(s + 1) * cell``, crop."""
    h, w = size
    ch, cw = math.ceil(h / s), math.ceil(w / s)
    gen = make_generator(seed, torch.device("cpu"))
    grids = torch.rand(n, s, s, generator=gen) < p
    dy = torch.randint(0, ch, (n,), generator=gen)
    dx = torch.randint(0, cw, (n,), generator=gen)
    masks = []
    for i in range(n):
        big = F.interpolate(grids[i].float()[None, None], size=((s + 1) * ch, (s + 1) * cw), mode="bilinear",
                            align_corners=False)[0, 0]
        masks.append(big[int(dy[i]):int(dy[i]) + h, int(dx[i]):int(dx[i]) + w].clamp(0, 1))
    return torch.stack(masks)


@pytest.mark.parametrize("debias", [False, True])
@pytest.mark.parametrize("use_objectness", [True, False])
def test_drise_map_is_the_weighted_sum_of_masks(debias, use_objectness):
    detector = SoftDetector()
    image = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    targets = detector.proposals(image)
    n, s, p = 24, 4, 0.5
    drise = DRISE(detector, n_masks=n, s=s, p=p, batch_size=5, seed=2, normalize=False, debias=debias,
                  use_objectness=use_objectness)
    got = drise(image, targets)[0]  # (T, H, W), raw sums
    masks = reference_drise_masks(n, s, p, 2, (SIZE, SIZE))
    torch.testing.assert_close(drise.grids((SIZE, SIZE), torch.device("cpu")).render(slice(0, n), (SIZE, SIZE)), masks)
    tg = targets[0]
    weights = torch.zeros(len(tg), n)
    for i in range(n):
        (props,) = detector.proposals(image * masks[i])  # black substrate: x (.) M_i
        for t in range(len(tg)):
            sims = []
            for j in range(len(props)):
                cos = float(F.cosine_similarity(tg.probs[t], props.probs[j], dim=0))
                obj = float(props.objectness[j]) if use_objectness else 1.0
                sims.append(reference_iou(tg.boxes[t].tolist(), props.boxes[j].tolist()) * cos * obj)
            weights[t, i] = max(sims)
    if debias:
        weights = weights - weights.mean(1, keepdim=True)
    expected = torch.einsum("tn,nhw->thw", weights, masks) / n
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert (weights.std(1) > 1e-2).all()  # every target's weights vary: its sum is not a multiple of the coverage
    normalised = DRISE(detector, n_masks=n, s=s, p=p, batch_size=5, seed=2, debias=debias,
                       use_objectness=use_objectness)(image, targets)[0]
    torch.testing.assert_close(normalised, minmax(got), atol=1e-6, rtol=1e-5)  # map = minmax(S_t)
    # the debiased sums are small differences of large ones: compare them relative to their range
    span = (expected.flatten(1).max(1).values - expected.flatten(1).min(1).values).view(-1, 1, 1)
    torch.testing.assert_close((got - expected) / span, torch.zeros_like(got), atol=1e-4, rtol=0)



class NearlyConstantDetector(Detector):
    """One fixed proposal whose objectness is 0.9 plus 1e-4 times the mean of a patch: weights nearly constant."""

    name = "flat"
    has_objectness = True

    def __init__(self) -> None:
        super().__init__(["a", "b"], score_threshold=0.0, nms_iou=None)

    def proposals(self, images: Tensor) -> list[Detections]:
        return [Detections(torch.tensor([[8.0, 8.0, 24.0, 24.0]]), torch.tensor([[1.0, 0.0]]),
                           (0.9 + 1e-4 * img[:, 8:24, 8:24].mean()).view(1)) for img in images]


def test_drise_debias_keeps_its_precision_when_the_weights_are_nearly_constant():
    """The debiased sum is a small difference of large sums; in float32 it must still match float64 to ~1e-4 of
    its range (a plain ``sum w M - mean(w) sum M`` in float32 loses about 4 % here)."""
    detector = NearlyConstantDetector()
    image = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    targets = detector.proposals(image)
    n = 400
    got = DRISE(detector, n_masks=n, s=8, p=0.5, batch_size=50, seed=1, normalize=False, debias=True)(image, targets)[0]
    masks = reference_drise_masks(n, 8, 0.5, 1, (SIZE, SIZE)).double()
    weights = torch.stack([detector.proposals(image * masks[i].float())[0].objectness[0].double() for i in range(n)])
    expected = torch.einsum("n,nhw->hw", weights - weights.mean(), masks) / n
    span = expected.max() - expected.min()
    assert float(span) > 0
    assert float((got[0].double() - expected).abs().max() / span) < 1e-4

# -- crisp masks: the objective term by term --------------------------------------------------------
def reference_crisp(model: FrozenClassifier, images: Tensor, targets: Tensor, phases, beta: float, sigma0: float,
                    levels: int, scale: int, lr: float) -> Tensor:
    """The crisp-mask optimisation from its equations; returns the final mask grid ``(B, h, w)``.

    ``Phi(x; m)``: per pixel, blur level ``s = (1 - m)(L - 1)`` interpolated linearly between the images
    blurred with sigma ``sigma0 * l / (L - 1)`` (kernel ``2 ceil(3 sigma) + 1``); objective per image
    ``p_c(Phi) + l1 mean|1 - m| + l2 (mean|d_y m|^b + mean|d_x m|^b) + l3 mean(|1 - m| m)``.
    """
    b, _, h, w = images.shape
    stack = [images] + [blur(images, 2 * math.ceil(3 * sigma0 * l / (levels - 1)) + 1, sigma0 * l / (levels - 1))
                        for l in range(1, levels)]
    m = torch.ones(b, math.ceil(h / scale), math.ceil(w / scale), requires_grad=True)
    opt = torch.optim.Adam([m], lr=lr)
    for steps, l1, l2, l3 in phases:
        for _ in range(steps):
            mask = F.interpolate(m[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]
            level = (1 - mask) * (levels - 1)
            lo = level.detach().floor().clamp(0, levels - 2)
            frac = (level - lo)[:, None]
            # the two blur levels around s, chosen level by level: [lo == l] picks image l (low) and l + 1 (high)
            pick = [(lo == l).to(images.dtype)[:, None] for l in range(levels - 1)]
            low = sum(pk * stack[l] for l, pk in enumerate(pick))
            high = sum(pk * stack[l + 1] for l, pk in enumerate(pick))
            phi = low + (high - low) * frac
            prob = model(phi).softmax(1)[torch.arange(b), targets]
            area = (1 - m).abs().flatten(1).mean(1)
            tv = ((m[:, 1:] - m[:, :-1]).abs() ** beta).flatten(1).mean(1) + ((m[:, :, 1:] - m[:, :, :-1]).abs() ** beta).flatten(1).mean(1)
            sparse = ((1 - m).abs() * m).flatten(1).mean(1)
            loss = (prob + l1 * area + l2 * tv + l3 * sparse).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                m.clamp_(0, 1)
    return m.detach()


def edge_model() -> FrozenClassifier:
    """Class 0's logit grows with the image's edge energy (a Laplacian per colour, both signs): blurring
    a region lowers it, so the crisp mask has something to delete; classes 1 and 2 have logit 0."""
    conv = nn.Conv2d(3, 6, 3, padding=1, bias=False)
    lap = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]])
    with torch.no_grad():
        conv.weight.zero_()
        for c in range(3):
            conv.weight[c, c] = lap
            conv.weight[3 + c, c] = -lap
    linear = nn.Linear(6 * 4, 3)
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.zero_()
        linear.weight[0] = 0.02  # logit ~1: the probability is not saturated
    return FrozenClassifier(nn.Sequential(conv, nn.ReLU()), nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), linear),
                            [0.5] * 3, [0.25] * 3)


def test_crisp_mask_objective_term_by_term():
    model = edge_model()
    images = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(4))
    targets = torch.tensor([0, 0])
    settings = dict(iterations=4, sparse_iterations=3, l1=0.3, l2=0.2, l3=0.1, beta=3.0, sparse_l2=0.5, sparse_l3=2.0,
                    sigma0=2.0, mask_scale=4, blur_levels=3, lr=0.1)
    crisp = CrispMask(model, **settings)
    maps = crisp(images, targets)
    shared = dict(beta=3.0, sigma0=2.0, levels=3, scale=4, lr=0.1)
    phases = [(4, 0.3, 0.2, 0.1), (3, 0.3, 0.5, 2.0)]
    expected = reference_crisp(model, images, targets, phases, **shared)
    torch.testing.assert_close(crisp.last_grid, expected, atol=1e-5, rtol=1e-4)
    masks = F.interpolate(expected[:, None], size=(12, 12), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(maps, 1 - masks, atol=1e-5, rtol=1e-4)  # the saliency is the deleted part
    assert not torch.allclose(expected, torch.ones_like(expected))
    # the test's power: each term, changed, moves the optimum
    for changed in ([(4, 0.6, 0.2, 0.1), (3, 0.6, 0.5, 2.0)],   # area weight
                    [(4, 0.3, 0.2, 0.1), (3, 0.3, 2.0, 2.0)],   # total variation weight
                    [(4, 0.3, 0.2, 0.1), (3, 0.3, 0.5, 6.0)]):  # sparsity weight
        other = reference_crisp(model, images, targets, changed, **shared)
        assert (other - expected).abs().max() > 1e-3, changed
    other_beta = reference_crisp(model, images, targets, phases, **{**shared, "beta": 2.0})
    assert (other_beta - expected).abs().max() > 1e-3


# -- L-CAM inference: U(minmax(A_c)) --------------------------------------------------------------
def test_lcam_map_is_the_upsampled_normalised_pre_sigmoid_class_map(images):
    model = random_model()
    head = AttentionHead(model.feature_channels, model.num_classes)
    with torch.no_grad():
        head.conv.weight.normal_(generator=torch.Generator().manual_seed(5))
        head.conv.bias.normal_(generator=torch.Generator().manual_seed(6))
    targets = torch.tensor([3, 1])
    with torch.no_grad():
        feats = model.features(images)  # (B, K, h, w)
        w, b = head.conv.weight[:, :, 0, 0], head.conv.bias  # (C, K), (C,)
        a_c = torch.einsum("bk,bkhw->bhw", w[targets], feats) + b[targets].view(-1, 1, 1)
    expected = up(minmax(a_c), (SIZE, SIZE))
    got = LCAMExplainer(model, head=head)(images, targets)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    # normalise first, then upsample (not Score-CAM's order), on the pre-sigmoid map
    assert a_c.shape[-1] < SIZE and (got - minmax(up(a_c, (SIZE, SIZE)))).abs().max() > 1e-4
    assert (got - up(minmax(torch.sigmoid(a_c)), (SIZE, SIZE))).abs().max() > 1e-4


# -- ROAD: (LeRF - MoRF) / 2, averaged over the removal fractions -------------------------------------
def test_road_aggregation_over_thresholds():
    model = random_model()
    g = torch.Generator().manual_seed(8)
    batches = [(torch.rand(2, 3, 12, 12, generator=g), torch.rand(2, 12, 12, generator=g), torch.tensor([0, 3])),
               (torch.rand(1, 3, 12, 12, generator=g), torch.rand(1, 12, 12, generator=g), torch.tensor([4]))]
    percentiles = (20, 50, 80)
    metric = ROAD(model, percentiles=percentiles, noise=0.05, seed=3)
    gen = torch.Generator().manual_seed(3)  # the metric's generator, advanced batch after batch
    morf, lerf = [], []
    for x, m, t in batches:
        metric.update(x, m, t)
        s = road_scores(model, x, m, t, percentiles, 0.05, generator=gen)
        morf.append(s["morf"])
        lerf.append(s["lerf"])
    morf, lerf = torch.cat(morf).double(), torch.cat(lerf).double()  # (images, fractions)
    out = metric.compute()
    torch.testing.assert_close(out["ROAD-MoRF"].double(), morf.mean(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out["ROAD-LeRF"].double(), lerf.mean(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out["ROAD"].double(), (lerf.mean() - morf.mean()) / 2, atol=1e-6, rtol=1e-5)
    curves = metric.curves()
    torch.testing.assert_close(curves["morf"].double(), morf.mean(0), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(curves["lerf"].double(), lerf.mean(0), atol=1e-6, rtol=1e-5)
    assert abs(float(lerf.mean() - morf.mean())) > 1e-4  # the two orders differ: the sign of the combination matters


# -- guidance-map CAM: blur the low-resolution map (replicate padding), then normalise, then upsample --
@pytest.mark.parametrize("kernel,sigma", [(3, 1.0), (5, 0.7)])
def test_guidance_cam_smoothing_before_normalisation_and_upsampling(kernel, sigma, images):
    model = random_model()
    targets = torch.tensor([2, 0])
    a, g = reference_activations_and_gradients(model, images, targets)
    guidance = F.relu((g * a).sum(1, keepdim=True))
    cam = F.relu((g.mean(dim=(2, 3))[:, :, None, None] * guidance * a).sum(1))  # (B, h, w)
    x = torch.arange(kernel, dtype=torch.float64) - (kernel - 1) / 2
    taps = torch.exp(-0.5 * (x / sigma) ** 2)
    k2 = (taps[:, None] * taps[None, :]) / taps.sum() ** 2  # the 2-D Gaussian, sampled and normalised
    padded = F.pad(cam[:, None].double(), (kernel // 2,) * 4, mode="replicate")
    smoothed = F.conv2d(padded, k2[None, None])[:, 0].float()
    expected = up(minmax(smoothed), (SIZE, SIZE))
    got = GuidanceMapCAM(model, smooth_kernel=kernel, smooth_sigma=sigma)(images, targets)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    zero_padded = F.conv2d(F.pad(cam[:, None].double(), (kernel // 2,) * 4), k2[None, None])[:, 0].float()
    assert (got - up(minmax(zero_padded), (SIZE, SIZE))).abs().max() > 1e-3  # the padding matters on this map


# -- SS-CAM: weights with noise, the seeded noise rebuilt here ------------------------------------------
M64 = (1 << 64) - 1


def splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def noise_of(seed: int, sample: int, channel: int, shape: tuple[int, ...]) -> Tensor:
    """The documented key: ``splitmix64(splitmix64(splitmix64(seed) ^ n) ^ k)`` seeds ``torch.randn(shape)``."""
    key = splitmix64(splitmix64(splitmix64(seed) ^ sample) ^ channel)
    return torch.randn(shape, generator=torch.Generator().manual_seed(key))


@pytest.mark.parametrize("cls", [SSCAM1, SSCAM2])
@pytest.mark.parametrize("baseline", ["paper", "none"])
def test_sscam_weights_with_noise(cls, baseline, images):
    model = random_model(seed=3, dead_bias=-0.35)  # some all-zero channels: they get no pass and no noise
    targets = torch.tensor([1, 4])
    n_samples, sigma, seed = 3, 0.7, 5
    explainer = cls(model, n_samples=n_samples, sigma=sigma, seed=seed, baseline=baseline, batch_size=4)
    mean, std = model.mean, model.std  # (1, 3, 1, 1)
    with torch.no_grad():
        acts = model.features(images)
        weights = torch.zeros(acts.shape[:2])
        for i in range(images.shape[0]):
            x = images[i : i + 1]
            base = model(mean.expand_as(x)).softmax(1)[0, targets[i]] if baseline == "paper" else 0.0  # p_c(X_b)
            for k in range(acts.shape[1]):
                if not acts[i, k].ne(0).any():
                    weights[i, k] = -base  # times an all-zero map
                    continue
                h_k = minmax(up(acts[i, k][None], (SIZE, SIZE)))[0]
                probs = []
                for n in range(n_samples):
                    if cls is SSCAM1:
                        z = noise_of(seed, n, k, (SIZE, SIZE))
                        noisy = mean + (x - mean) * (h_k + sigma * z)
                    else:
                        z = noise_of(seed, n, k, (3, SIZE, SIZE))
                        noisy = mean + (x - mean) * h_k + sigma * std[0] * z
                    probs.append(model(noisy).softmax(1)[0, targets[i]])
                weights[i, k] = torch.stack(probs).mean() - base
        expected = minmax(up(F.relu(torch.einsum("bk,bkhw->bhw", weights, acts)), (SIZE, SIZE)))
    got_weights, _ = explainer.channel_weights(images, acts, targets)
    live = acts.flatten(2).ne(0).any(2)
    assert not live.all()
    torch.testing.assert_close(got_weights[live], weights[live], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(explainer(images, targets), expected, atol=1e-5, rtol=1e-4)
