"""Evaluate explainers: AD/IC at 100/50/15%, #FW and seconds per image, in the paper's layout.

    python evaluate.py                                   # every method on the demo photos (offline)
    python evaluate.py explainer=gradcam backbone=vgg16 data=imagenet data.root=... data.val_list=...
    python evaluate.py explainer=lcam explainer.ckpt_path=outputs/.../last.ckpt
    python evaluate.py +experiment=table1_vgg16 data.root=... data.val_list=...
"""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from lcam.evaluation.run import run_evaluation
from lcam.runtime.cli_args import prepare_cli
from lcam.runtime.tasks import entry_point


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
@entry_point  # user errors: one short message; W&B closed even on failure (lcam.runtime.tasks)
def main(cfg: DictConfig) -> None:
    if cfg.get("detector"):  # a detector config (+experiment=drise_demo): D-RISE evaluation
        from lcam.detection.evaluate import run_detection_evaluation

        run_detection_evaluation(cfg)
        return
    run_evaluation(cfg)


if __name__ == "__main__":
    prepare_cli()  # data.root=~/photos as typed; start-up noise off
    main()
