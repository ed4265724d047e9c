"""lcam.model.optim: the head's optimiser and schedule from ``_target_`` entries (model.optimizer / model.scheduler)."""
from __future__ import annotations

import logging

import pytest
import torch

from lcam.model.optim import build_optimizer, build_scheduler
from tests.helpers import compose_train

#: the keys a checkpoint written before ``_target_`` existed holds (hyper_parameters["optimizer"/"scheduler"])
OLD_OPTIMIZER = {"lr": 0.01, "bias_lr_mult": 2.0, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}
OLD_SCHEDULER = {"gamma": 0.75}


def head_params() -> tuple[torch.nn.Parameter, torch.nn.Parameter]:
    return torch.nn.Parameter(torch.ones(4, 3)), torch.nn.Parameter(torch.ones(4))


def test_old_checkpoint_settings_give_the_papers_sgd_and_per_epoch_decay():
    w, b = head_params()
    opt = build_optimizer(OLD_OPTIMIZER, [w], [b])
    assert type(opt) is torch.optim.SGD
    assert [(g["name"], g["lr"]) for g in opt.param_groups] == [("head.weight", 0.01), ("head.bias", 0.02)]
    assert all(g["momentum"] == 0.9 and g["nesterov"] and g["weight_decay"] == 5e-4 for g in opt.param_groups)
    entry = build_scheduler(OLD_SCHEDULER, opt)
    assert entry["interval"] == "epoch" and type(entry["scheduler"]) is torch.optim.lr_scheduler.ExponentialLR
    entry["scheduler"].step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.0075, 0.015])


def test_swapping_the_optimizer_class_keeps_the_bias_multiplier_and_drops_sgd_only_defaults(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    cfg = compose_train(["model.optimizer._target_=torch.optim.AdamW", "model.optimizer.lr=0.001"], tmp_path)
    w, b = head_params()
    opt = build_optimizer(cfg.model.optimizer, [w], [b])
    assert type(opt) is torch.optim.AdamW
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.001, 0.002])
    assert all(g["weight_decay"] == 5e-4 and "momentum" not in g for g in opt.param_groups)
    assert "model.optimizer: AdamW takes no momentum, nesterov" in caplog.text
    # a cosine schedule: the exponential decay's gamma is not passed on, T_max is
    cfg = compose_train(["model.scheduler._target_=torch.optim.lr_scheduler.CosineAnnealingLR", "+model.scheduler.T_max=2"], tmp_path)
    entry = build_scheduler(cfg.model.scheduler, opt)
    assert type(entry["scheduler"]) is torch.optim.lr_scheduler.CosineAnnealingLR and entry["scheduler"].T_max == 2
    entry["scheduler"].step()
    entry["scheduler"].step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0)  # end of the cosine: eta_min


def test_constant_rate_and_step_interval():
    w, b = head_params()
    opt = build_optimizer({"lr": 0.1}, [w], [b])
    assert build_scheduler({"_target_": None}, opt) is None
    entry = build_scheduler({"interval": "step", "gamma": 0.5}, opt)
    assert entry["interval"] == "step" and entry["scheduler"].gamma == 0.5


@pytest.mark.parametrize("settings, message", [
    ({"_target_": "torch.optim.AdamWW"}, "model.optimizer._target_=torch.optim.AdamWW: no such class"),
    ({"momentun": 0.8}, "model.optimizer.momentun is not an argument of SGD"),
    ({"lr": "fast"}, "model.optimizer.lr and model.optimizer.bias_lr_mult must be numbers"),
])
def test_bad_optimizer_settings_name_the_key(settings, message):
    w, b = head_params()
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        build_optimizer(settings, [w], [b])
    with pytest.raises(ValueError, match=r"model\.scheduler\.interval must be one of"):
        build_scheduler({"interval": "batch"}, build_optimizer({}, [w], [b]))


def test_demo_and_paper_schedules_live_in_their_own_configs(tmp_path):
    demo = compose_train([], tmp_path)
    paper = compose_train(["+experiment=lcam_img", "data.root=/data"], tmp_path)
    assert (demo.trainer.max_epochs, demo.model.optimizer.lr, demo.model.scheduler.gamma) == (8, 0.05, 0.9)
    assert (paper.trainer.max_epochs, paper.model.optimizer.lr, paper.model.scheduler.gamma) == (7, 0.01, 0.75)
    for cfg in (demo, paper):
        assert cfg.model.optimizer._target_ == "torch.optim.SGD" and cfg.model.optimizer.bias_lr_mult == 2.0
        assert cfg.model.scheduler._target_ == "torch.optim.lr_scheduler.ExponentialLR"
