"""The L-CAM LightningModule: frozen backbone, checkpoints, and that learning works."""
from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lcam.backbones import FrozenClassifier
from lcam.model.module import LCAM

EFFNET = {"name": "tf_efficientnet_lite0", "source": "timm", "weights": "imagenet"}


def test_optimizer_step_leaves_backbone_bit_identical(effnet):
    torch.manual_seed(0)
    model = LCAM(backbone=effnet, variant="img")
    model.train()  # the backbone must stay in eval mode regardless
    assert not model.backbone.training and all(not m.training for m in model.backbone.modules())
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    assert any("running_mean" in k for k in before)
    opt = model.configure_optimizers()["optimizer"]
    images = torch.rand(2, 3, 96, 96)
    for variant in ("img", "fm"):
        model.variant = variant
        terms, *_ = model._step((images, torch.tensor([-1, -1])))
        opt.zero_grad()
        terms.total.backward()
        assert model.head.conv.weight.grad is not None and model.head.conv.weight.grad.abs().sum() > 0
        assert all(p.grad is None and not p.requires_grad for p in model.backbone.parameters())
        opt.step()
    after = model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_saliency_shapes_range_and_targets(effnet):
    model = LCAM(backbone=effnet)
    images = torch.rand(3, 3, 96, 128)
    maps, logits, targets = model.saliency(images)
    assert maps.shape == (3, 96, 128) and maps.min() >= 0 and maps.max() <= 1
    assert torch.equal(targets, logits.argmax(1))
    maps2, _, t2 = model.saliency(images, targets=[1, 2, 3])
    assert t2.tolist() == [1, 2, 3] and not torch.allclose(maps, maps2)


def test_checkpoint_round_trip_small_and_exact(effnet, tmp_path):
    torch.manual_seed(0)
    model = LCAM(backbone=dict(EFFNET), variant="fm")
    with torch.no_grad():
        model.head.conv.weight.normal_()
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, max_epochs=0)
    trainer.strategy.connect(model)
    path = tmp_path / "head.ckpt"
    trainer.save_checkpoint(path)
    head_bytes = sum(p.numel() * 4 for p in model.head.parameters())
    backbone_bytes = sum(p.numel() * 4 for p in model.backbone.parameters())
    size = path.stat().st_size
    assert size < head_bytes * 1.2 + 200_000, "checkpoint should hold the head, not the backbone"
    assert size < backbone_bytes
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert not any(k.startswith("backbone.") for k in raw["state_dict"])
    assert raw["lcam_backbone"]["name"] == "tf_efficientnet_lite0"
    loaded = LCAM.load_from_checkpoint(path, map_location="cpu")
    assert loaded.variant == "fm"
    images = torch.rand(2, 3, 96, 96)
    assert torch.equal(model.saliency(images)[0], loaded.saliency(images)[0])


class _PatchFeatures(nn.Module):
    """Channel 0 responds to pure red pixels (the patch); the others to textures of the noise."""

    def __init__(self, k: int = 6) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.texture = nn.Conv2d(3, k - 1, 3, padding=1)

    def forward(self, x):
        red = torch.relu(x[:, :1] - x[:, 1:2] - x[:, 2:3] - 0.2)  # ~1 on the red patch, 0 on grey noise
        red = nn.functional.avg_pool2d(red, 4)
        tex = nn.functional.avg_pool2d(torch.relu(self.texture(x)), 4)
        return torch.cat([red, tex], 1)


def _patch_images(n: int, size: int = 32, patch: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, size, size, generator=g).repeat(1, 3, 1, 1) * 0.6 + 0.2  # grey noise
    corners = torch.randint(0, size - patch, (n, 2), generator=g)
    for i, (r, c) in enumerate(corners.tolist()):
        images[i, :, r:r + patch, c:c + patch] = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    return images, corners


def test_trained_head_map_peaks_on_the_discriminative_patch():
    features = _PatchFeatures()
    # class 1's score is the amount of red patch; class 0 is a constant
    linear = nn.Linear(6, 2)
    with torch.no_grad():
        linear.weight.zero_()
        linear.weight[1, 0] = 60.0
        linear.bias.copy_(torch.tensor([1.0, -1.0]))
    classify = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), linear)
    backbone = FrozenClassifier(features, classify, mean=[0, 0, 0], std=[1, 1, 1])
    images, _ = _patch_images(64)
    assert (backbone(images).argmax(1) == 1).all()
    torch.manual_seed(0)
    model = LCAM(backbone=backbone, variant="img", optimizer={"lr": 0.5}, scheduler={"gamma": 1.0},
                 init="random")  # learning from scratch, not from the classifier's CAM
    before_maps, _, _ = model.saliency(images[:8])
    loader = DataLoader(TensorDataset(images, torch.full((64,), -1)), batch_size=16, shuffle=True)
    trainer = pl.Trainer(max_epochs=15, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    trainer.fit(model, train_dataloaders=loader)
    test_images, corners = _patch_images(16, seed=123)
    maps, _, targets = model.saliency(test_images)
    assert (targets == 1).all()
    hits = 0
    for m, (r, c) in zip(maps, corners.tolist()):
        peak = int(m.argmax())
        pr, pc = divmod(peak, m.shape[1])
        hits += (r - 4 <= pr < r + 12) and (c - 4 <= pc < c + 12)
        inside = m[r:r + 8, c:c + 8].mean()
        assert inside > m.mean() + 0.2, "the map must concentrate on the patch"
    assert hits >= 15
    assert model.head.conv.weight[1, 0, 0, 0] > model.head.conv.weight[1, 1:, 0, 0].abs().max()


def test_classifier_init_gives_every_class_its_cam_on_the_real_classifier(effnet):
    """model.init=classifier on EfficientNet-Lite0 (GAP + linear): a class the head never trained on
    has its class activation map, i.e. Grad-CAM before the ReLU, up to min-max."""
    from lcam.maps import normalize_then_upsample

    model = LCAM(backbone=effnet, init="classifier")
    readout = model.backbone.linear_readout()
    assert readout is not None and readout[0].shape == (1000, 1280)
    images = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([812, 3])  # not trained on anything
    maps, _, _ = model.saliency(images, targets)
    # independent: Grad-CAM weights (GAP of d logit / d A), no ReLU, min-max, upsample
    acts = model.backbone.features(images).detach().requires_grad_(True)
    model.backbone.classify(acts).gather(1, targets.view(-1, 1)).sum().backward()
    cam = (acts.grad.mean(dim=(2, 3))[:, :, None, None] * acts).sum(1) + readout[1][targets].view(-1, 1, 1)
    torch.testing.assert_close(maps, normalize_then_upsample(cam.detach(), (96, 96)), atol=1e-4, rtol=1e-3)
    # a random head's map for the same class is something else
    torch.testing.assert_close(LCAM(backbone=effnet)(images, targets), maps)  # init=auto picks it here
    assert (LCAM(backbone=effnet, init="random")(images, targets) - maps).abs().max() > 0.2


def test_classifier_init_is_refused_for_a_classifier_without_a_linear_readout():
    features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    classify = nn.Sequential(nn.Flatten(), nn.Linear(4 * 8 * 8, 3))  # fully connected, not GAP + linear
    backbone = FrozenClassifier(features, classify, [0.5] * 3, [0.25] * 3)
    backbone._feature_channels, backbone._num_classes = 4, 3  # the dry run uses 224 px inputs
    assert backbone.linear_readout() is None
    LCAM(backbone=backbone)  # init=auto falls back to random
    try:
        LCAM(backbone=backbone, init="classifier")
    except ValueError as err:
        assert "model.init=random" in str(err)
    else:
        raise AssertionError("init=classifier must be refused")
