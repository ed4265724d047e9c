"""What a "model" is to the explain layer: plain torchvision models at their papers' layers, and a
caller's model that is never changed by explaining (modes, requires_grad, hooks), even on errors."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import lcam
from lcam.explain import explain_with
from lcam.explain.classifier import plain_layer
from lcam.explain.engine import make_engine
from lcam.explain.state import borrowed
from lcam.explainers.gradient import GradCAM


def _cheap(name: str) -> nn.Module:
    """A torchvision model with random weights (``weights=None``, no download), built without its
    slow initialisation: on the meta device, then filled with small seeded values."""
    with torch.device("meta"):
        model = torchvision.models.get_model(name, weights=None)
    model.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.is_floating_point():
                t.copy_((torch.rand(t.shape, generator=gen) - 0.5) * 0.1 if t.numel() < 2_000_000 else torch.full(t.shape, 1e-4))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.zero_()
                m.running_var.fill_(1.0)
    return model


# the layer each architecture is explained at, and the feature map it gives at 64 px
PLAIN = {
    "vgg16": ("features.29", (512, 4, 4)),          # conv5_3 after its in-place ReLU, before pool5
    "resnet50": ("layer4", (2048, 2, 2)),
    "densenet121": ("features", (1024, 2, 2)),      # norm5, with the ReLU DenseNet applies in forward()
    "mobilenet_v2": ("features", (1280, 2, 2)),
    "efficientnet_b0": ("features", (1280, 2, 2)),
    "convnext_tiny": ("features", (768, 2, 2)),
}


@pytest.mark.parametrize("name", sorted(PLAIN))
def test_plain_torchvision_models_are_explained_at_their_usual_layer(name):
    model = _cheap(name).eval()
    layer, shape = PLAIN[name]
    assert plain_layer(model) == layer or name == "densenet121"
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    engine = make_engine(model, "gradcam")
    result = explain_with(engine, x, targets=[3, 7], progress=False)
    assert result.layer == layer and result.maps.shape == (2, 64, 64)
    backbone = engine.backbone
    with torch.no_grad():
        assert tuple(backbone.features(x).shape[1:]) == shape
        normalised = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        torch.testing.assert_close(backbone(x), model(normalised), atol=1e-4, rtol=1e-4)  # the split keeps the logits


def test_any_layer_can_be_named():
    model = _cheap("vgg16").eval()
    result = lcam.explain(model, torch.rand(1, 3, 64, 64), method="gradcam", layer="features.28", progress=False)
    assert result.layer == "features.28"
    with pytest.raises(ValueError, match="No layer 'nope'"):
        lcam.explain(model, torch.rand(1, 3, 64, 64), layer="nope", progress=False)


def _trainable_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    model.train()
    model[6].weight.requires_grad_(False)  # one frozen parameter among trainable ones
    return model


def _state(model: nn.Module) -> tuple:
    return ([m.training for m in model.modules()], [p.requires_grad for p in model.parameters()],
            [len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()],
            [None if p.grad is None else p.grad.clone() for p in model.parameters()],
            {k: v.clone() for k, v in model.state_dict().items()})


def _same(a: tuple, b: tuple) -> bool:
    return a[:3] == b[:3] and all((x is None) == (y is None) for x, y in zip(a[3], b[3])) \
        and all(torch.equal(a[4][k], b[4][k]) for k in a[4])


@pytest.mark.parametrize("method", ["gradcam", "smoothgradcampp", "scorecam", "rise"])
def test_explaining_leaves_a_training_model_as_it_was(method):
    model = _trainable_model()
    before = _state(model)
    settings = {"n_masks": 8} if method == "rise" else {"n_samples": 2} if method == "smoothgradcampp" else {}
    result = lcam.explain(model, torch.rand(2, 3, 32, 32), method=method, progress=False, **settings)
    assert result.maps.shape == (2, 32, 32)
    assert _same(_state(model), before)  # train mode, flags, hooks, BatchNorm statistics: untouched
    # the model still trains: a step changes the trainable weights and leaves the frozen one
    out = model(torch.rand(4, 3, 32, 32)).sum()
    out.backward()
    assert model[0].weight.grad is not None and model[6].weight.grad is None


def test_an_exception_mid_call_still_restores_the_model(monkeypatch):
    model = _trainable_model()
    before = _state(model)
    engine = make_engine(model, "gradcam")
    assert _same(_state(model), before)  # building the engine changed nothing either

    def boom(self, *args, **kwargs):
        assert not model.training and not any(p.requires_grad for p in model.parameters())  # frozen inside
        model[0].register_forward_hook(lambda *a: None)  # a hook left behind by the failing call
        raise RuntimeError("mid-call failure")

    monkeypatch.setattr(GradCAM, "maps_from_features", boom)
    with pytest.raises(RuntimeError, match="mid-call failure"):
        explain_with(engine, torch.rand(2, 3, 32, 32), progress=False)
    assert _same(_state(model), before)


def test_an_lcam_model_in_training_is_left_as_it_was(tmp_path_factory):
    from tests.explain_helpers import tiny_model

    model = tiny_model(tmp_path_factory)
    model.train()
    model.head.requires_grad_(True)
    try:
        before = _state(model)
        result = model.explain(torch.rand(1, 3, 64, 64), progress=False)
        assert result.method == "lcam" and result.layer == model.backbone_spec.layer
        assert _same(_state(model), before)
    finally:
        model.eval()


def test_borrowed_restores_removed_hooks_and_modes():
    model = _trainable_model()
    handle = model[0].register_forward_hook(lambda *a: None)
    with borrowed(model):
        handle.remove()
        model.train()
    assert len(model[0]._forward_hooks) == 1 and model.training and model[0].weight.requires_grad
