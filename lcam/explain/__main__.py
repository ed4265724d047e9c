"""``python -m lcam.explain ckpt_path=... inputs=... output_dir=...`` (config: ``conf/explain.yaml``).

Exit status: 0 when at least one image was explained, 1 when none could be, 2 on bad input
(unknown method, class id out of range, no inputs, unreadable checkpoint...), with a one-line
``error: ...`` message. Set ``HYDRA_FULL_ERROR=1`` (or its old alias ``LCAM_TRACEBACK=1``) to see the traceback instead.
"""
from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from lcam.explain.cli import exit_status
from lcam.runtime.cli_args import prepare_cli
from lcam.runtime.configs import config_dir

CONF_DIR = str(config_dir())  # the checkout's conf/, or the copy installed inside the package


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="explain")
def main(cfg: DictConfig) -> None:
    if cfg.get("detector"):  # detector=NAME: D-RISE maps of its detections
        from lcam.detection.cli import exit_status as detection_exit_status

        status = detection_exit_status(cfg)
    else:
        status = exit_status(cfg)
    if status:
        sys.exit(status)


if __name__ == "__main__":
    prepare_cli()  # data.root=~/photos as typed; start-up noise off
    main()
