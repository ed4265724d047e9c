"""HiResCAM, LayerCAM, EigenCAM, Ablation-CAM and the Captum explainers: closed forms
recomputed here, class tests, Captum called directly, and parity with pytorch-grad-cam (skipped
when it is not installed)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks import peer_parity
from lcam.backbones.frozen import FrozenClassifier
from lcam.evaluation import ForwardCounter
from lcam.explainers import EXPLAINERS, AblationCAM, EigenCAM, build_explainer
from tests.test_explainers import (
    REGIONS,
    SIZE,
    fc_model,
    gap_linear_model,
    random_model,
    reference_activations_and_gradients,
    reference_map,
)

captum_attr = pytest.importorskip("captum.attr")


@pytest.fixture(scope="module")
def images() -> Tensor:
    return torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))


def gap_model(seed: int = 0) -> FrozenClassifier:
    """A random conv net whose classify half is global average pooling + linear (spatially constant gradient)."""
    torch.manual_seed(seed)
    features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4))
    classify = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5))
    return FrozenClassifier(features, classify, mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3])


# -- closed forms -------------------------------------------------------------------------------
@pytest.mark.parametrize("model_fn", [random_model, fc_model])
def test_hirescam_and_layercam_equal_their_closed_forms(model_fn, images):
    model = model_fn()
    targets = torch.tensor([0, 3, 4])
    a, g = reference_activations_and_gradients(model, images, targets)
    expected = {"hirescam": F.relu((g * a).sum(1)), "layercam": F.relu((F.relu(g) * a).sum(1))}
    for name, cam in expected.items():
        maps = build_explainer(name, model)(images, targets)
        torch.testing.assert_close(maps, reference_map(cam, SIZE), atol=1e-5, rtol=1e-4)


def test_hirescam_is_gradcam_only_where_the_gradient_is_constant(images):
    targets = torch.tensor([1, 2, 0])
    same = gap_model()
    torch.testing.assert_close(build_explainer("hirescam", same)(images, targets),
                               build_explainer("gradcam", same)(images, targets), atol=1e-5, rtol=1e-4)
    varying = fc_model()
    diff = build_explainer("hirescam", varying)(images, targets) - build_explainer("gradcam", varying)(images, targets)
    assert diff.abs().max() > 1e-2


def reference_eigencam(acts: Tensor, center: bool) -> Tensor:
    """numpy SVD of each image's (h*w, K) activations, projection on the first right singular
    vector, sign: non-negative dot product with the (centred, if centring) total activation."""
    out = []
    for a in acts.double().numpy():
        k, h, w = a.shape
        m = a.reshape(k, -1).T
        total = m.sum(axis=1)
        if center:
            m = m - m.mean(axis=0)
            total = total - total.mean()
        _, _, vt = np.linalg.svd(m, full_matrices=False)
        proj = m @ vt[0]
        if proj @ total < 0:
            proj = -proj
        out.append(np.maximum(proj, 0).reshape(h, w))
    return torch.from_numpy(np.stack(out)).float()


@pytest.mark.parametrize("center", [False, True])
def test_eigencam_equals_the_first_principal_component(center, images):
    model = random_model()
    with torch.no_grad():
        acts = model.features(images)
    maps = build_explainer({"name": "eigencam", "center": center}, model)(images, torch.tensor([0, 1, 2]))
    torch.testing.assert_close(maps, reference_map(reference_eigencam(acts, center), SIZE), atol=1e-4, rtol=1e-3)
    if not center:  # non-negative activations: the uncentred projection is >= 0 everywhere (no ReLU needed)
        assert (reference_eigencam(acts, False) > 0).float().mean() > 0.9


def test_eigencam_ignores_the_target():
    """Not class-discriminative, by design: every class gets the same map."""
    model = gap_linear_model()
    image = two_objects()
    explainer = build_explainer("eigencam", model)
    assert EXPLAINERS["eigencam"].class_discriminative is False
    torch.testing.assert_close(explainer(image, 0), explainer(image, 1))
    torch.testing.assert_close(explainer(image, 0), explainer(image))
    with pytest.raises(ValueError, match=r"0\.\.2"):  # targets are still checked
        explainer(image, 3)


def reference_ablationcam(model: FrozenClassifier, images: Tensor, targets: Tensor) -> Tensor:
    """One image and one channel at a time: w_k = (y_c - y_c^k) / y_c with channel k of A set to 0."""
    cams = []
    with torch.no_grad():
        for i in range(images.shape[0]):
            acts = model.features(images[i : i + 1])
            y = model.classify(acts.clone())[0, targets[i]]
            weights = []
            for k in range(acts.shape[1]):
                ablated = acts.clone()
                ablated[:, k] = 0
                weights.append((y - model.classify(ablated)[0, targets[i]]) / y)
            cams.append(F.relu((torch.stack(weights)[:, None, None] * acts[0]).sum(0)))
    return torch.stack(cams)


@pytest.mark.parametrize("batch_size", [1, 5, 64])
def test_ablationcam_equals_its_closed_form_and_counts_classify_passes(batch_size):
    model = random_model(seed=3, dead_bias=-0.35)  # some all-zero channels: they are not ablated
    images = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    targets = torch.tensor([1, 4])
    expected = reference_map(reference_ablationcam(model, images, targets), SIZE)
    explainer = AblationCAM(model, batch_size=batch_size)
    seen = []
    handle = model.classifier_head.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    try:
        with ForwardCounter(model) as fw:
            maps = explainer(images, targets)
    finally:
        handle.remove()
    torch.testing.assert_close(maps, expected, atol=1e-5, rtol=1e-4)
    live = int(model.features(images).flatten(2).ne(0).any(2).sum())
    assert live < 2 * 8, "the toy model must have dead channels"
    assert fw.images == 2 and explainer.last_forward_passes == 1  # one pass through the feature extractor
    assert sum(seen) == live + 2 and max(seen) <= max(batch_size, 2)  # classify: the ablations + the logits
    assert explainer.last_classify_passes == pytest.approx((live + 2) / 2)


def test_ablationcam_weights_are_the_relative_score_drop():
    """GAP + linear: zeroing channel k drops the logit by W_ck * mean(A_k), so w_k = W_ck mean(A_k) / y_c."""
    model = gap_model()
    images = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(6))
    explainer = AblationCAM(model)
    with torch.no_grad():
        acts = model.features(images)
        logits = model.classify(acts)
    targets = logits.argmax(1)
    weights, _ = explainer.channel_weights(acts, targets, logits.gather(1, targets.view(-1, 1)).squeeze(1))
    linear = model.classifier_head[-1].weight
    expected = linear[targets] * acts.mean(dim=(2, 3)) / logits.gather(1, targets.view(-1, 1))
    torch.testing.assert_close(weights, expected, atol=1e-5, rtol=1e-4)


# -- class tests --------------------------------------------------------------------------------
def two_objects() -> Tensor:
    image = 0.1 * torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    image[0, 0][REGIONS[0]] = 1.0
    image[0, 1][REGIONS[1]] = 1.0
    return image


#: own object / other object mean saliency. SmoothGrad's gradient of this readout (linear in the
#: colour channel after a ReLU) is the same wherever the channel is on: only the noise's gating tells
#: the objects apart (a bright pixel stays on under noise, a dark one half the time), so the whole
#: object sits at the maximum and some background pixels reach it too
RATIO = {"smoothgrad": 1.5}
TIED_PEAK = {"smoothgrad"}
SMALL = {"integratedgradients": {"n_steps": 16}, "smoothgrad": {"n_samples": 16}, "occlusion": {"window": 8, "stride": 4}}


@pytest.mark.parametrize("name", ["hirescam", "layercam", "ablationcam", "integratedgradients", "smoothgrad", "occlusion"])
def test_each_class_map_peaks_on_its_own_object(name):
    """A red object (class 0) and a green one (class 1) of equal strength in one image."""
    model = gap_linear_model()
    image = two_objects()
    explainer = build_explainer({"name": name, **SMALL.get(name, {})}, model)
    maps = [explainer(image, target)[0] for target in (0, 1)]
    for target, sal in enumerate(maps):
        peak = divmod(int(sal.argmax()), SIZE)
        own, other = REGIONS[target], REGIONS[1 - target]
        if name in TIED_PEAK:
            assert sal[own].min() == sal.max(), (name, target)
        else:
            assert own[0].start <= peak[0] < own[0].stop and own[1].start <= peak[1] < own[1].stop, (name, target, peak)
        assert sal[own].mean() > RATIO.get(name, 3) * sal[other].mean(), (name, target, sal[own].mean(), sal[other].mean())
    assert (maps[0] - maps[1]).abs().max() > 0.5


# -- Captum: the same as calling Captum directly ---------------------------------------------------
def reduce_and_normalise(attr: Tensor, positive: bool) -> Tensor:
    sal = attr.sum(1).clamp(min=0) if positive else attr.abs().sum(1)
    flat = sal.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return torch.where(hi > lo, (flat - lo) / (hi - lo).clamp(min=1e-30), torch.zeros_like(flat)).view_as(sal)


def test_integrated_gradients_is_captum(images):
    model = random_model()
    targets = torch.tensor([0, 3, 4])
    explainer = build_explainer({"name": "integratedgradients", "n_steps": 12, "batch_size": 5}, model)
    maps = explainer(images, targets)
    attr = captum_attr.IntegratedGradients(model).attribute(images, baselines=torch.zeros_like(images), target=targets,
                                                            n_steps=12)
    torch.testing.assert_close(maps, reduce_and_normalise(attr, True), atol=1e-5, rtol=1e-4)
    assert explainer.last_forward_passes == 12
    explainer(images)
    assert explainer.last_forward_passes == 13  # + the pass that picked the top-1 class
    mean_baseline = build_explainer({"name": "integratedgradients", "n_steps": 12, "baseline": "mean",
                                     "reduction": "abs_sum"}, model)(images, targets)
    attr = captum_attr.IntegratedGradients(model).attribute(images, baselines=model.mean.expand_as(images).contiguous(),
                                                            target=targets, n_steps=12)
    torch.testing.assert_close(mean_baseline, reduce_and_normalise(attr, False), atol=1e-5, rtol=1e-4)


def test_smoothgrad_is_captum_seeded_and_leaves_the_global_rng_alone(images):
    model = random_model()
    targets = torch.tensor([2, 0, 1])
    explainer = build_explainer({"name": "smoothgrad", "n_samples": 6, "noise_std": 0.2, "seed": 3, "batch_size": 18},
                                model)
    state = torch.random.get_rng_state()
    maps = explainer(images, targets)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(3)
    tunnel = captum_attr.NoiseTunnel(captum_attr.Saliency(model))
    attr = tunnel.attribute(images, nt_type="smoothgrad", nt_samples=6, stdevs=0.2, target=targets, abs=False)
    torch.random.set_rng_state(state)
    torch.testing.assert_close(maps, reduce_and_normalise(attr, False), atol=1e-5, rtol=1e-4)
    assert explainer.last_forward_passes == 6
    torch.testing.assert_close(explainer(images, targets), maps)  # seeded: same images, same maps
    other = build_explainer({"name": "smoothgrad", "n_samples": 6, "noise_std": 0.2, "seed": 4}, model)(images, targets)
    assert (other - maps).abs().max() > 1e-3


def test_occlusion_is_captum(images):
    model = random_model()
    targets = torch.tensor([4, 1, 0])
    explainer = build_explainer({"name": "occlusion", "window": 8, "stride": 4, "batch_size": 7}, model)
    maps = explainer(images, targets)

    def probabilities(x: Tensor) -> Tensor:
        return model(x).softmax(1)

    attr = captum_attr.Occlusion(probabilities).attribute(images, sliding_window_shapes=(3, 8, 8), strides=(3, 4, 4),
                                                          baselines=model.mean.expand_as(images).contiguous(),
                                                          target=targets)
    torch.testing.assert_close(maps, reduce_and_normalise(attr, True), atol=1e-5, rtol=1e-4)
    assert explainer.last_forward_passes == 1 + 7 * 7  # the unmodified image + ceil((32 - 8) / 4) + 1 = 7 per side


def test_captum_explainers_change_nothing_the_caller_passed_in(images):
    model = random_model()
    x = images[:1].clone().requires_grad_(True)
    flags = [p.requires_grad for p in model.parameters()]
    for name, settings in SMALL.items():
        build_explainer({"name": name, **settings}, model)(x, 1)
        assert x.requires_grad and x.grad is None and torch.equal(x.detach(), images[:1]), name
        assert [p.requires_grad for p in model.parameters()] == flags and not model.training
        assert all(p.grad is None for p in model.parameters())


def test_unknown_reduction_and_score_list_the_valid_ones():
    model = random_model()
    with pytest.raises(ValueError, match="positive_sum"):
        build_explainer({"name": "integratedgradients", "reduction": "max"}, model)
    with pytest.raises(ValueError, match="logit"):
        build_explainer({"name": "occlusion", "score": "prob"}, model)
    with pytest.raises(ValueError, match="stride must be <= window"):
        build_explainer({"name": "occlusion", "window": 4, "stride": 8}, model)


# -- parity with pytorch-grad-cam on a real photo (not a CI requirement) ------------------------------
@pytest.fixture(scope="module")
def astronaut(effnet) -> Tensor:
    return peer_parity.astronaut(effnet)


@pytest.mark.parametrize("name,min_r", [("hirescam", 0.999), ("layercam", 0.999), ("eigencam_centred", 0.99),
                                        ("ablationcam", 0.999)])
def test_parity_with_pytorch_grad_cam(name, min_r, effnet, astronaut):
    pgc = pytest.importorskip("pytorch_grad_cam")
    pytest.importorskip("ttach")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    peer_cls = {"hirescam": pgc.HiResCAM, "layercam": pgc.LayerCAM, "eigencam_centred": pgc.EigenCAM,
                "ablationcam": pgc.AblationCAM}[name]
    ours = build_explainer({"name": "eigencam", "center": True} if name == "eigencam_centred" else name, effnet)
    peer_model = peer_parity.NormalisedInput(effnet).eval()
    with peer_cls(model=peer_model, target_layers=[peer_model.features]) as peer:
        if name == "ablationcam":
            peer.batch_size = 64
        a = ours(astronaut, 560)[0].numpy()
        b = peer(input_tensor=effnet.normalize(astronaut), targets=[ClassifierOutputTarget(560)])[0]
    r = float(np.corrcoef(a.ravel(), b.ravel())[0, 1])  # EigenCAM: pytorch-grad-cam's sign is LAPACK's (here ours)
    assert r > min_r, (name, r)
