"""Checkpoints and configs written before lcam's modules moved into folders still load.

``tests/data/checkpoint_before_rooms.json`` holds the keys of a ``last.ckpt`` that ``train.py`` (the demo)
wrote with the code before the move; the test writes the file again from them (random head weights of the
recorded shapes: the real head is 5 MB) and loads it through every public path.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / "data" / "checkpoint_before_rooms.json"

#: ``_target_``s that configs and run folders written before the move still hold
OLD_TARGETS = {
    "lcam.module.LCAM": "lcam.model.module.LCAM",
    "lcam.callbacks.OverlayGrid": "lcam.model.callbacks.OverlayGrid",
    "lcam.sweep_sampler.ResumableTPESampler": "lcam.model.sweep_sampler.ResumableTPESampler",
    "lcam.loggers.MetricsCSVLogger": "lcam.runtime.loggers.MetricsCSVLogger",
    "lcam.loggers.wandb_logger": "lcam.runtime.loggers.wandb_logger",
}


@pytest.fixture(scope="module")
def old_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    keys = json.loads(DATA.read_text())
    keys.pop("_about")
    gen = torch.Generator().manual_seed(0)
    state = {name: torch.randn(shape, generator=gen) * 0.01 for name, shape in keys.pop("state_dict_shapes").items()}
    path = tmp_path_factory.mktemp("old") / "last.ckpt"
    torch.save({**keys, "state_dict": state}, path)
    return path, state


def test_old_checkpoint_loads_through_the_public_paths(old_checkpoint: tuple[Path, dict[str, torch.Tensor]]) -> None:
    import lcam
    import lcam.module

    path, state = old_checkpoint
    assert lcam.module.LCAM is lcam.LCAM  # the old path is the same class, so one load covers both
    model = lcam.module.LCAM.load_from_checkpoint(path)
    assert isinstance(model, lcam.LCAM)
    assert torch.equal(model.head.conv.weight, state["head.conv.weight"])
    assert torch.equal(model.head.conv.bias, state["head.conv.bias"])
    assert model.backbone_spec.name == "tf_efficientnet_lite0" and model.variant == "img"
    maps = model(torch.rand(2, 3, 96, 96))
    assert maps.shape == (2, 96, 96) and float(maps.min()) >= 0 and float(maps.max()) <= 1


def test_old_targets_resolve_to_the_moved_code() -> None:
    from hydra.utils import get_object

    for old, new in OLD_TARGETS.items():
        assert get_object(old) is get_object(new), old
