"""Train an L-CAM head.

    python train.py                                   # offline demo on this machine's CPU
    python train.py +experiment=lcam_img data.root=/path/to/imagenet
    python train.py ckpt_path=outputs/.../checkpoints/last.ckpt   # resume
"""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from lcam.model.training import run_training
from lcam.runtime.cli_args import prepare_cli
from lcam.runtime.tasks import entry_point


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@entry_point  # user errors: one short message; W&B closed even on failure (lcam.runtime.tasks)
def main(cfg: DictConfig) -> float | None:
    metrics = run_training(cfg)
    # the value Hydra's Optuna sweeper minimises
    return metrics.get(cfg.get("optimized_metric")) if cfg.get("optimized_metric") else None


if __name__ == "__main__":
    prepare_cli()  # data.root=~/photos as typed; start-up noise off
    main()
