"""Model parameter randomisation sanity checks (Adebayo et al. 2018): the metric, the copies, the report.

The behaviour checked: a map that ignores the model (Sobel edges of the image) keeps similarity 1 at
every step and fails the check, Grad-CAM's similarity falls and it passes; the caller's classifier
and explainer are untouched; the random weights are seeded (same step, same weights); an image's
values do not depend on its batch; the re-bound explainer equals one built from its settings; L-CAM
gets a random-head step; ``evaluate.py +experiment=sanity`` writes the table, curves and figure.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from lcam.evaluation.sanity import sanity_report, step_statistics, verdicts
from lcam.explainers import build_explainer
from lcam.explainers.base import Explainer
from lcam.metrics.parameter_randomisation import (
    ModelRandomisation,
    RandomisedCopy,
    randomisation_steps,
    randomisation_units,
    rebind,
)

SIZE = 128


class SobelEdges(Explainer):
    """A map that ignores the model: the Sobel gradient magnitude of the gray image, min-max normalised."""

    name = "sobel"

    def explain(self, images: Tensor, targets=None) -> Tensor:
        gray = images.mean(dim=1, keepdim=True)
        kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=images.device).view(1, 1, 3, 3)
        gx, gy = F.conv2d(gray, kx, padding=1), F.conv2d(gray, kx.transpose(2, 3), padding=1)
        mag = (gx.square() + gy.square()).sqrt().squeeze(1)
        flat = mag.flatten(1)
        lo, hi = flat.min(1).values.view(-1, 1, 1), flat.max(1).values.view(-1, 1, 1)
        self.last_forward_passes = 0
        return (mag - lo) / (hi - lo).clamp_min(1e-12)


@pytest.fixture(scope="module")
def photos() -> Tensor:
    import torchvision.transforms.functional as TF
    from PIL import Image

    from lcam.data.demo import demo_photos

    return torch.stack([TF.to_tensor(TF.center_crop(TF.resize(p, SIZE, interpolation=Image.BICUBIC), SIZE))
                        for _, p in demo_photos()])


def _snapshot(model: torch.nn.Module) -> tuple[dict, dict, dict]:
    return ({k: v.detach().clone() for k, v in model.state_dict().items()},
            {n: m.training for n, m in model.named_modules()},
            {k: p.requires_grad for k, p in model.named_parameters()})


def test_units_top_down_and_steps(effnet) -> None:
    units = randomisation_units(effnet)
    assert units[0].label == "classify" and units[1].label == "features.3"        # head, then the head conv (+ bn2)
    assert units[1].modules == ("feature_extractor.3", "feature_extractor.4")     # BatchNorm joins its conv
    assert units[-1].modules == ("feature_extractor.0", "feature_extractor.1")    # stem conv + bn1 at the bottom
    steps = randomisation_steps(units[:3], ["cascade", "independent", "head"], head=False)
    assert [s.label for s in steps] == ["cascade:classify", "cascade:features.3", "cascade:features.2.6",
                                        "independent:classify", "independent:features.3", "independent:features.2.6"]
    assert [len(s.units) for s in steps] == [1, 2, 3, 1, 1, 1]


def test_edges_fail_and_gradcam_passes(effnet, photos) -> None:
    targets = effnet(photos).argmax(1)
    records = []
    for label, explainer in (("Grad-CAM", build_explainer("gradcam", effnet)), ("Edges", SobelEdges(effnet))):
        maps = explainer(photos, targets)
        metric = ModelRandomisation(effnet, explainer, kinds=["cascade"], max_steps=3)
        values = metric.per_image(photos, maps, targets)
        assert set(values) == set(metric.columns)
        if label == "Edges":   # the model-blind map stays identical at every step, for every measure
            for v in values.values():
                assert torch.allclose(v, torch.ones_like(v), atol=1e-9), v
        records += [{"index": i, "method": label, "status": "ok", **{k: float(v[i]) for k, v in values.items()}}
                    for i in range(photos.shape[0])]
    stats = step_statistics(records, ["Grad-CAM", "Edges"], n_boot=500)
    verdict = {v["method"]: v for v in verdicts(stats, ["Grad-CAM", "Edges"], threshold=0.5, pass_step=2)}
    assert verdict["Grad-CAM"]["passes"] and not verdict["Edges"]["passes"]
    assert verdict["Edges"]["first"] is None and verdict["Grad-CAM"]["first"] <= 2
    gradcam = [s["mean"] for s in stats if s["method"] == "Grad-CAM" and s["measure"] == "spearman"]
    assert gradcam[-1] < 0.3, gradcam


def test_caller_model_and_explainer_untouched(effnet, photos) -> None:
    images = photos[:3]
    explainer = build_explainer({"name": "rise", "n_masks": 8, "batch_size": 8}, effnet)
    targets = effnet(images).argmax(1)
    maps = explainer(images, targets)
    fw = explainer.last_forward_passes
    attrs, masks_before = dict(vars(explainer)), dict(explainer._masks)
    before = _snapshot(effnet)
    metric = ModelRandomisation(effnet, explainer, max_steps=2)
    metric.per_image(images, maps, targets)
    state, _, grads = _snapshot(effnet)
    assert all(torch.equal(state[k], before[0][k]) for k in state)
    assert grads == before[2]
    assert {n: m.training for n, m in effnet.named_modules()} == before[1]
    assert explainer.model is effnet and explainer.last_forward_passes == fw
    assert dict(explainer._masks) == masks_before and set(vars(explainer)) == set(attrs)
    assert all(vars(explainer)[k] is v for k, v in attrs.items())


def test_seeded_same_step_same_weights(effnet) -> None:
    units = randomisation_units(effnet)[:3]
    a = RandomisedCopy(effnet, torch.device("cpu"), "default", 0.01, seed=3)
    b = RandomisedCopy(effnet, torch.device("cpu"), "default", 0.01, seed=3)
    c = RandomisedCopy(effnet, torch.device("cpu"), "default", 0.01, seed=4)
    b.apply(units[1:2])          # another step first: the state it leaves behind must not matter
    wa, wb, wc = (dict(x.apply(units[:2]).named_parameters()) for x in (a, b, c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    changed = [k for k in wa if not torch.equal(wa[k], dict(effnet.named_parameters())[k])]
    assert changed and all(k.startswith(("classifier_head.2", "feature_extractor.3", "feature_extractor.4")) for k in changed)
    assert not torch.equal(wa["classifier_head.2.weight"], wc["classifier_head.2.weight"])
    a.apply([])  # back to the trained values
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), effnet.parameters()))


def test_values_independent_of_the_batch(effnet, photos) -> None:
    images = photos[:4]
    explainer = build_explainer("gradcam", effnet)
    targets = effnet(images).argmax(1)
    maps = explainer(images, targets)
    metric = ModelRandomisation(effnet, explainer, max_steps=2)
    whole = metric.per_image(images, maps, targets)
    for i in (0, 3):
        alone = metric.per_image(images[i:i + 1], maps[i:i + 1], targets[i:i + 1])
        for k, v in alone.items():
            a, b = float(v[0]), float(whole[k][i])
            assert (math.isnan(a) and math.isnan(b)) or abs(a - b) < 1e-4, (k, a, b)


def test_rebind_equals_building_from_settings(effnet, photos) -> None:
    images = photos[:2]
    settings = {"name": "rise", "n_masks": 16, "batch_size": 8, "seed": 5}
    work = RandomisedCopy(effnet, torch.device("cpu"), "default", 0.01, seed=0)
    model = work.apply(randomisation_units(effnet)[:1])
    original = build_explainer(settings, effnet)
    original(images, 0)  # fills its mask cache, which the re-bound copy reuses
    bound = rebind(original, model=model)
    built = build_explainer(settings, model)
    assert torch.allclose(bound(images, 0), built(images, 0), atol=1e-6)
    assert original.model is effnet
    with pytest.raises(ValueError, match="no submodule"):
        rebind(original, head=model)


def test_lcam_gets_a_random_head_step(effnet, photos) -> None:
    from lcam.explainers import LCAMExplainer
    from lcam.model.heads import AttentionHead

    images = photos[:3]
    head = AttentionHead(effnet.feature_channels, effnet.num_classes)
    head.init_from_linear(*effnet.linear_readout())
    head_before = {k: v.clone() for k, v in head.state_dict().items()}
    explainer = LCAMExplainer(effnet, head=head)
    targets = effnet(images).argmax(1)
    maps = explainer(images, targets)
    metric = ModelRandomisation(effnet, explainer, max_steps=2, measures=["spearman"])
    assert metric.columns[-1] == "Rand/head/spearman"
    v = metric.per_image(images, maps, targets)
    # the map comes from the head on the features: the classifier's own head plays no part
    assert torch.allclose(v["Rand/cascade:classify/spearman"], torch.ones(3, dtype=torch.float64))
    assert (v["Rand/head/spearman"] < 0.5).all() and (v["Rand/cascade:features.3/spearman"] < 0.9).all()
    assert all(torch.equal(head.state_dict()[k], head_before[k]) for k in head_before) and explainer.head is head


def test_bad_settings_name_the_key(effnet) -> None:
    explainer = build_explainer("gradcam", effnet)
    with pytest.raises(ValueError, match="kind"):
        ModelRandomisation(effnet, explainer, kinds=["cascading"])
    with pytest.raises(ValueError, match="init"):
        ModelRandomisation(effnet, explainer, init="uniform")
    with pytest.raises(ValueError, match="max_steps"):
        ModelRandomisation(effnet, explainer, max_steps=0)


def test_evaluate_sanity_experiment(tmp_path) -> None:
    from lcam.evaluation.run import run_evaluation
    from tests.helpers import compose_train

    drop = [f"methods.{k}=null" for k in ("lcam_img", "xgradcam", "layercam", "rise")]
    cfg = compose_train(["+experiment=sanity", "logger=csv", "data.resize=72", "data.crop=64", "progress=false",
                         *drop, "metrics.sanity.max_steps=2", "metrics.sanity.kinds=[cascade]", "bootstrap=300",
                         f"+metrics.sanity.figure_dir={tmp_path}/sanity"], tmp_path, config_name="evaluate")
    run_evaluation(cfg)
    text = (tmp_path / "results.md").read_text()
    assert "Sanity checks: model parameter randomisation" in text and "| Grad-CAM | cascade:" in text
    assert (tmp_path / "sanity_curves.png").is_file() and (tmp_path / "sanity.png").is_file()
    rows = (tmp_path / "sanity.csv").read_text().splitlines()
    assert rows[0] == "method,kind,step,measure,images,mean,low,high" and len(rows) == 1 + 2 * 3
    assert sanity_report(tmp_path, [], {"Grad-CAM": {"name": "gradcam"}}) == ""
    assert np.isfinite([float(r.split(",")[5]) for r in rows[1:]]).all()
