"""Checkpoints are untrusted input: weights_only loading, crafted pickles, mismatches, damage."""
from __future__ import annotations

import pathlib

import pytest
import torch

from lcam import LCAM
from lcam.model.checkpoint import CheckpointError, read_checkpoint
from tests.explain_helpers import tiny_checkpoint, tiny_model


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory) -> pathlib.Path:
    return tiny_checkpoint(tmp_path_factory)


class _CreatesFile:
    """Unpickling this calls ``Path.touch(marker)``: code execution on load."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_train_checkpoint_loads_with_weights_only(ckpt):
    """Guards the writer side: everything train.py stores is plain data."""
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert {"state_dict", "hyper_parameters", "lcam_backbone"} <= set(raw)
    assert not any(k.startswith("backbone.") for k in raw["state_dict"])  # no frozen weights in the file


def test_load_from_checkpoint_restores_head_and_backbone(ckpt):
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    model = LCAM.load_from_checkpoint(ckpt, map_location=torch.device("cpu"))
    assert isinstance(model, LCAM) and not model.training
    assert model.device.type == "cpu"
    assert torch.equal(model.head.conv.weight, raw["state_dict"]["head.conv.weight"])
    assert torch.equal(model.head.conv.bias, raw["state_dict"]["head.conv.bias"])
    assert model.backbone_spec.name == raw["lcam_backbone"]["name"]
    x = torch.rand(2, 3, 64, 64)
    maps, logits, targets = model.saliency(x)
    assert maps.shape == (2, 64, 64) and logits.shape == (2, 1000)


def test_map_location_is_honoured_on_cpu(ckpt):
    model = LCAM.load_from_checkpoint(ckpt, map_location={"cpu": "cpu"})  # str / device: see test_map_location_cuda
    assert model.device.type == "cpu"
    assert all(p.device.type == "cpu" for p in model.parameters())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_map_location_cuda(ckpt):
    model = LCAM.load_from_checkpoint(ckpt, map_location="cuda")
    assert model.device.type == "cuda" and model.backbone.mean.device.type == "cuda"
    assert model.explain(torch.rand(1, 3, 64, 64)).maps.shape == (1, 64, 64)


def test_crafted_pickle_does_not_run(ckpt, tmp_path):
    marker = tmp_path / "pwned.txt"
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    raw["hyper_parameters"]["evil"] = _CreatesFile(marker)
    evil = tmp_path / "evil.ckpt"
    torch.save(raw, evil)

    # the payload is live: an unsafe load would create the file
    torch.load(evil, map_location="cpu", weights_only=False)
    assert marker.exists()
    marker.unlink()

    with pytest.raises(CheckpointError) as err:
        LCAM.load_from_checkpoint(evil)
    assert not marker.exists()
    message = str(err.value)
    assert "Refusing to load checkpoint" in message and str(evil) in message and "weights_only=True" in message
    with pytest.raises(CheckpointError):
        read_checkpoint(evil)
    assert not marker.exists()


def test_backbone_mismatch_names_both(ckpt):
    with pytest.raises(ValueError) as err:
        LCAM.load_from_checkpoint(ckpt, backbone={"name": "mobilenet_v2", "weights": "none"})
    assert "tf_efficientnet_lite0" in str(err.value) and "mobilenet_v2" in str(err.value)


def test_class_count_mismatch_names_both(ckpt, tmp_path):
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    raw["state_dict"]["head.conv.weight"] = raw["state_dict"]["head.conv.weight"][:10].clone()
    raw["state_dict"]["head.conv.bias"] = raw["state_dict"]["head.conv.bias"][:10].clone()
    bad = tmp_path / "ten_classes.ckpt"
    torch.save(raw, bad)
    with pytest.raises(CheckpointError) as err:
        LCAM.load_from_checkpoint(bad)
    message = str(err.value)
    assert "10 classes" in message and "1000 classes" in message and "tf_efficientnet_lite0" in message


def test_truncated_checkpoint_is_a_clear_error(ckpt, tmp_path):
    data = ckpt.read_bytes()
    bad = tmp_path / "truncated.ckpt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="Cannot read checkpoint"):
        LCAM.load_from_checkpoint(bad)


def test_not_a_checkpoint(tmp_path):
    other = tmp_path / "weights.ckpt"
    torch.save({"weight": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="not an L-CAM checkpoint"):
        LCAM.load_from_checkpoint(other)
    with pytest.raises(FileNotFoundError, match="Checkpoint not found"):
        LCAM.load_from_checkpoint(tmp_path / "missing.ckpt")


def test_backbone_weights_override(ckpt, tmp_path_factory):
    model = LCAM.load_from_checkpoint(ckpt, backbone_weights="none")
    assert model.backbone_spec.weights == "none"
    pretrained = tiny_model(tmp_path_factory)
    first = next(iter(pretrained.backbone.state_dict()))
    assert not torch.equal(model.backbone.state_dict()[first], pretrained.backbone.state_dict()[first])
    assert torch.equal(model.head.conv.weight, pretrained.head.conv.weight)
    with pytest.raises(ValueError, match="hparams_file"):
        LCAM.load_from_checkpoint(ckpt, hparams_file="hparams.yaml")


def test_checkpoint_written_before_optimizer_targets_still_loads_and_trains_the_same(ckpt, tmp_path):
    """A checkpoint of the earlier layout (optimizer/scheduler without ``_target_``, no ``lcam_run``)
    loads, and its optimiser is still the paper's SGD with the bias multiplier and per-epoch decay."""
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert raw["hyper_parameters"]["optimizer"]["_target_"] == "torch.optim.SGD" and "lcam_run" in raw
    hp = raw["hyper_parameters"]
    hp["optimizer"] = {"lr": 0.01, "bias_lr_mult": 2.0, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}
    hp["scheduler"] = {"gamma": 0.75}
    del raw["lcam_run"]
    old = tmp_path / "old.ckpt"
    torch.save(raw, old)
    model = LCAM.load_from_checkpoint(old)
    conf = model.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]
    assert type(opt) is torch.optim.SGD and [g["lr"] for g in opt.param_groups] == pytest.approx([0.01, 0.02])
    assert opt.param_groups[0]["nesterov"] and sched["interval"] == "epoch" and sched["scheduler"].gamma == 0.75
