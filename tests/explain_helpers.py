"""Shared by the explain / checkpoint / notebook tests: one tiny demo checkpoint per session."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

from hydra import compose, initialize_config_dir

from tests.helpers import CONF_DIR, TINY, compose_train

_CACHE: dict[str, object] = {}


def tiny_checkpoint(tmp_path_factory) -> Path:
    """``last.ckpt`` of a 1-epoch demo run at 96 px (made once per test session, ~10 s)."""
    if "ckpt" not in _CACHE:
        from lcam.model.training import run_training

        out = tmp_path_factory.mktemp("explain_ckpt")
        cfg = compose_train([*TINY, "trainer.max_epochs=1", "trainer.limit_train_batches=1", "~callbacks.overlay_grid",
                             "~callbacks.lr_monitor"], out)
        with contextlib.redirect_stdout(io.StringIO()):
            run_training(cfg)
        _CACHE["ckpt"] = out / "checkpoints" / "last.ckpt"
    return _CACHE["ckpt"]  # type: ignore[return-value]


def tiny_model(tmp_path_factory):
    """The L-CAM model of :func:`tiny_checkpoint` (loaded once per session)."""
    if "model" not in _CACHE:
        from lcam import LCAM

        _CACHE["model"] = LCAM.load_from_checkpoint(tiny_checkpoint(tmp_path_factory))
    return _CACHE["model"]


def compose_explain(overrides: list[str], output_dir: Path):
    """Compose ``conf/explain.yaml`` writing into ``output_dir`` (no progress bar)."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("explain", overrides=[*overrides, f"paths.output_dir={output_dir}", f"output_dir={output_dir}",
                                             "progress=false", "num_workers=0"])
