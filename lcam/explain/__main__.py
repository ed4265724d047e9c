"""``python -m lcam.explain ckpt_path=... inputs=... output_dir=...`` (config: ``conf/explain.yaml``).

Exit status: 0 when at least one image was explained, 1 when none could be, 2 on bad input
(unknown method, class id out of range, no inputs, unreadable checkpoint...), with a one-line
``error: ...`` message. Set ``LCAM_TRACEBACK=1`` to see the traceback instead.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from lcam.backbones import BackboneWeightsError, SplitError
from lcam.checkpoint import CheckpointError
from lcam.explain.cli import run_explain
from lcam.explain.inputs import InputError

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")
USER_ERRORS = (InputError, CheckpointError, FileNotFoundError, BackboneWeightsError, SplitError, ValueError)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="explain")
def main(cfg: DictConfig) -> None:
    try:
        summary = run_explain(cfg)
    except USER_ERRORS as err:
        if os.environ.get("LCAM_TRACEBACK") == "1":
            raise
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr, flush=True)
        sys.exit(2)
    if summary["explained"] == 0:
        print(f"error: nothing could be explained: all {summary['failed']} input file(s) failed (see {summary['csv']})",
              file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
