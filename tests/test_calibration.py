"""Head calibration (``model.calibrate``): rescaling the head moves the training mask into the
sigmoid's working range without changing any class's min-max saliency map; a fresh run calibrates
once, on its first batch, and a resumed run never again."""
from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from lcam.maps import normalize_then_upsample
from lcam.model.heads import AttentionHead
from lcam.model.module import LCAM


def test_rescale_keeps_every_class_map_and_moves_the_sigmoid():
    torch.manual_seed(0)
    head = AttentionHead(8, 5)
    feats = torch.randn(3, 8, 4, 4)
    before = head(feats).detach()
    head.rescale_(0.25, -3.0)
    after = head(feats).detach()
    torch.testing.assert_close(after, 0.25 * before - 3.0, atol=1e-5, rtol=1e-5)  # computed by hand
    for c in range(5):  # min-max maps of every class unchanged
        torch.testing.assert_close(normalize_then_upsample(after[:, c], (16, 16)),
                                   normalize_then_upsample(before[:, c], (16, 16)), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(torch.sigmoid(after), torch.sigmoid(before))
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="scale must be > 0"):
            head.rescale_(bad, 0.0)


def test_calibration_gives_the_batch_maps_the_asked_mean_and_std(effnet):
    model = LCAM(backbone=effnet, init="classifier", calibrate={"mean": 1.0, "std": 2.0})
    images = torch.rand(4, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    maps_before, _, targets = model.saliency(images)
    other = torch.tensor([812, 3, 0, 999])  # classes the calibration batch does not predict
    other_before = model(images, other)
    with torch.no_grad():  # independent statistics of the CAM start before calibration
        feats = model.backbone.features(images)
        w, b = model.backbone.linear_readout()
        cam = torch.einsum("bk,bkhw->bhw", w[targets], feats) + b[targets].view(-1, 1, 1)
    scale, shift = model.calibrate_head(images)
    assert scale == pytest.approx(2.0 / cam.std(unbiased=False).item(), rel=1e-4)
    assert shift == pytest.approx(1.0 - scale * cam.mean().item(), rel=1e-4, abs=1e-4)
    with torch.no_grad():
        a = model.attention(model.backbone.features(images), targets)
    assert a.mean().item() == pytest.approx(1.0, abs=1e-3)
    assert a.std(unbiased=False).item() == pytest.approx(2.0, rel=1e-3)
    assert model.calibrated
    torch.testing.assert_close(model.saliency(images)[0], maps_before, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(model(images, other), other_before, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("bad", [{"std": 0}, {"std": -1}, {"mean": 0}, {"mean": 0, "std": 1, "scale": 2}, "2"])
def test_bad_calibration_settings_are_refused_with_the_key(effnet, bad):
    with pytest.raises(ValueError, match="model.calibrate must be null or"):
        LCAM(backbone=effnet, calibrate=bad)


def test_fit_calibrates_once_and_a_resumed_run_never_again(effnet, tmp_path):
    images = torch.rand(8, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    loader = DataLoader(TensorDataset(images, torch.full((8,), -1)), batch_size=4)

    def trainer(epochs: int) -> pl.Trainer:
        return pl.Trainer(max_epochs=epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
                          accelerator="cpu", default_root_dir=tmp_path, enable_checkpointing=False)

    torch.manual_seed(0)
    model = LCAM(backbone=effnet, init="classifier", calibrate={"mean": 0.0, "std": 2.0}, optimizer={"lr": 0.0})
    feats = model.backbone.features(images[:4]).detach()
    cam = model.attention(feats, model.backbone.classify(feats).argmax(1)).detach()
    t = trainer(1)
    t.fit(model, train_dataloaders=loader)
    assert model.calibrated
    # lr 0: the head is exactly the first batch's calibration of the CAM start
    scale = 2.0 / cam.std(unbiased=False).item()
    a = model.attention(feats, model.backbone.classify(feats).argmax(1)).detach()
    torch.testing.assert_close(a, scale * cam - scale * cam.mean(), atol=1e-3, rtol=1e-4)
    path = tmp_path / "last.ckpt"
    t.save_checkpoint(path)
    assert torch.load(path, map_location="cpu", weights_only=True)["lcam_head_calibrated"] is True
    resumed = LCAM(backbone=effnet, init="classifier", calibrate={"mean": 0.0, "std": 2.0}, optimizer={"lr": 0.0})
    trainer(2).fit(resumed, train_dataloaders=loader, ckpt_path=path)
    torch.testing.assert_close(resumed.head.conv.weight, model.head.conv.weight)  # not rescaled again
    torch.testing.assert_close(resumed.head.conv.bias, model.head.conv.bias)
