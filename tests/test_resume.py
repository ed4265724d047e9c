"""lcam.model.resume: a resumed run keeps its history (metrics CSV, W&B run id); a finished run is not resumed."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lcam.model.resume import ResumeState, RunCompleteError, check_not_finished, keep_metrics_history

ROOT = Path(__file__).resolve().parents[1]


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_history_keeps_the_rows_logged_before_the_checkpoint(tmp_path):
    src = tmp_path / "old" / "metrics.csv"
    src.parent.mkdir()
    src.write_text("epoch,step,train/loss,val/AD100\n0,0,2.5,\n0,1,2.4,\n0,1,,30.0\n1,2,2.3,\n")
    target = tmp_path / "new" / "metrics.csv"
    assert keep_metrics_history(src, target, before_step=2) == 3  # epoch 1's row came after the checkpoint
    assert [r["step"] for r in rows(target)] == ["0", "1", "1"] and rows(target)[2]["val/AD100"] == "30.0"
    assert target.read_text().splitlines()[0] == "epoch,step,train/loss,val/AD100"
    assert keep_metrics_history(tmp_path / "missing.csv", target, 2) == 0 and target.is_file()


def test_a_finished_run_is_not_resumed_and_says_how_to_continue():
    state = ResumeState(epochs_done=8, step=72, metrics_csv=None, wandb_id=None)
    with pytest.raises(RunCompleteError, match=r"8 of trainer.max_epochs=8 epochs done\). To train further, raise "
                                               r"trainer.max_epochs, e.g. trainer.max_epochs=12"):
        check_not_finished(state, 8, "last.ckpt")
    check_not_finished(state, 9, "last.ckpt")  # one more epoch to go: fine
    check_not_finished(state, -1, "last.ckpt")  # max_epochs=-1: no limit


@pytest.mark.slow
def test_kill_9_after_the_first_checkpoint_then_resume_auto_keeps_csv_and_wandb_run(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    common = ["train.py", "data.repeats=1", "data.resize=72", "data.crop=64", "data.batch_size=4", "trainer.max_epochs=2",
              "trainer.limit_train_batches=2", "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false",
              "callbacks.overlay_grid=null", "resume=auto", f"hydra.run.dir={run_dir}"]
    # output to files, not pipes: W&B's service process outlives a killed run and would hold a pipe open
    with (tmp_path / "killed.log").open("w") as log:
        killed = subprocess.run([sys.executable, *common, "+callbacks.crash._target_=tests.helpers.KillAtEpochStart"],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=300)
    assert killed.returncode == -9, (tmp_path / "killed.log").read_text()[-3000:]
    before = rows(run_dir / "csv" / "metrics.csv")
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and {r["epoch"] for r in before if r["epoch"]} == {"0"}

    with (tmp_path / "resumed.log").open("w") as log:
        resumed = subprocess.run([sys.executable, *common], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=300)
    output = (tmp_path / "resumed.log").read_text()
    assert resumed.returncode == 0, output[-3000:]
    assert "resume=auto: resuming from" in output
    after = rows(run_dir / "csv" / "metrics.csv")
    assert [{k: r[k] for k in before[0]} for r in after[: len(before)]] == before  # epoch 0, as logged before the kill
    lr_steps = [r["step"] for r in after if r["lr-SGD/head.weight"]]
    val_epochs = [r["epoch"] for r in after if r["val/AD100"]]
    train_steps = [r["step"] for r in after if r["train/loss"]]
    assert lr_steps == ["0", "2"] and val_epochs == ["0", "1"] and train_steps == ["0", "1", "2", "3"]
    runs = sorted(p.name for p in (run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and len({name.rsplit("-", 1)[1] for name in runs}) == 1  # one W&B run id, continued
