"""Sweeps and cluster launch: Hydra's Optuna sweeper end to end, the W&B sweep config, the
submitit (SLURM) launcher config, the sbatch example."""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.helpers import CONF_DIR, compose_train

ROOT = Path(__file__).resolve().parents[1]
SEARCHED = {"model.loss.ce_coef", "model.loss.area_coef", "model.loss.tv_coef", "model.loss.area_power", "model.optimizer.lr"}
TINY_TRIAL = ["logger=csv", "data.repeats=1", "data.resize=72", "data.crop=64", "data.batch_size=4", "+data.max_val_samples=4",
              "trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.enable_progress_bar=false",
              "callbacks.overlay_grid=null", "callbacks.lr_monitor=null"]


def run_train(args: list[str], timeout: float = 400) -> subprocess.CompletedProcess:
    # one intra-op thread: as fast on 2 cores, and far faster when other jobs load the machine
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "1"}
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_optuna_sweep_of_ddp_trials_saves_best_and_groups_wandb_runs(tmp_path):
    """2 Optuna trials, each trained by 2 DDP processes on the CPU: every trial starts its own
    rank-1 process that runs that trial only, in run mode, in the trial's folder (lcam.runtime.launch);
    every trial is one W&B run, all in one W&B group; the best trial is printed and saved."""
    sweep = tmp_path / "optuna"
    out = run_train(["-m", "hparams_search=lcam_optuna", "hydra.sweeper.n_trials=2", *TINY_TRIAL, "data.batch_size=2",
                     "trainer=ddp_cpu", "trainer.devices=2", "logger=wandb", f"hydra.sweep.dir={sweep}",
                     f"paths.log_dir={tmp_path / 'logs'}"])
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-5000:]
    assert "Best parameters:" in log and "Best value:" in log
    assert log.count("Starting with 2 processes") == 2  # one process group per trial
    assert not (tmp_path / "logs").exists()  # no run directory of a stray child process
    assert sorted(p.name for p in sweep.iterdir()) == ["0", "1", "optimization_results.yaml"]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna" and set(results["best_params"]) == SEARCHED
    scores = []
    for trial in ("0", "1"):
        d = sweep / trial
        overrides = yaml.safe_load((d / ".hydra" / "overrides.yaml").read_text())
        sampled = dict(o.split("=", 1) for o in overrides if o.split("=")[0] in SEARCHED)
        assert set(sampled) == SEARCHED
        ckpt = torch.load(d / "checkpoints" / "last.ckpt", weights_only=True)
        assert ckpt["hyper_parameters"]["loss"]["area_coef"] == pytest.approx(float(sampled["model.loss.area_coef"]))
        assert (d / "train_ddp_process_1.log").is_file() and not list(d.rglob("optimization_results.yaml"))
        wandb_runs = list((d / "wandb").glob("offline-run-*"))
        assert len(wandb_runs) == 1
        assert f"train-{sweep.name}".encode() in next(wandb_runs[0].glob("*.wandb")).read_bytes()  # the group
        rows = list(csv.DictReader((d / "csv" / "metrics.csv").open()))
        scores.append(float([r for r in rows if r["val/score"]][-1]["val/score"]))
    assert results["best_value"] == pytest.approx(min(scores), abs=1e-4)


@pytest.mark.slow
def test_grid_multirun_of_two_values(tmp_path):
    sweep = tmp_path / "grid"
    out = run_train(["-m", "model.loss.area_coef=1,4", *TINY_TRIAL, f"hydra.sweep.dir={sweep}"])
    assert out.returncode == 0, (out.stdout + out.stderr)[-5000:]
    for job, coef in (("0", 1.0), ("1", 4.0)):
        ckpt = torch.load(sweep / job / "checkpoints" / "last.ckpt", weights_only=True)
        assert ckpt["hyper_parameters"]["loss"]["area_coef"] == coef
        assert "val/score" in (sweep / job / "csv" / "metrics.csv").read_text()


def test_optuna_search_space_composes(tmp_path):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["hparams_search=lcam_optuna", f"paths.output_dir={tmp_path}"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "minimize"
    assert set(sweeper.params) == SEARCHED
    assert cfg.optimized_metric == "val/score" and str(cfg.hydra.mode) == "RunMode.MULTIRUN"


def test_wandb_group_is_null_outside_a_multirun(tmp_path):
    import lcam.runtime.launch  # noqa: F401 - registers ${sweep_group:...} (lcam.model.training imports it)

    cfg = compose_train(["logger=wandb"], tmp_path)
    assert cfg.logger.wandb.group is None


def test_wandb_sweep_config_gives_valid_hydra_overrides(tmp_path):
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    sweep = yaml.safe_load((ROOT / "sweeps" / "lcam_wandb.yaml").read_text())
    assert (ROOT / sweep["program"]).is_file() and "${args_no_hyphens}" in sweep["command"]
    assert sweep["metric"] == {"name": compose_train([], tmp_path).optimized_metric, "goal": "minimize"}
    params = sweep["parameters"]
    assert SEARCHED <= set(params)
    # what an agent would pass: one value per parameter (the low end of every range)
    values = {k: {"value": p.get("value", p.get("min"))} for k, p in params.items()}
    args = create_sweep_command_args({"args": values})["args_no_hyphens"]
    cfg = compose_train(args, tmp_path)
    for key in SEARCHED:
        assert OmegaConf.select(cfg, key) == pytest.approx(params[key]["min"]), key
    assert cfg.task_name == "lcam_img_vgg16"


def test_submitit_slurm_launcher_config_composes():
    """`--cfg` with the launcher override, as a user would check it; no cluster needed."""
    out = run_train(["--cfg", "all", "--resolve", "-p", "hydra.launcher", "hydra/launcher=slurm", "+experiment=lcam_img",
                     "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"], timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    launcher = yaml.safe_load(out.stdout)
    assert launcher["_target_"] == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher["tasks_per_node"] == 4 and launcher["gpus_per_node"] == 4 and launcher["nodes"] == 2
    assert launcher["name"] == "train"

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        plain = compose("train", overrides=["hydra/launcher=submitit_slurm", "+experiment=lcam_img"], return_hydra_config=True)
    assert plain.hydra.launcher._target_.endswith("SlurmLauncher")
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher  # noqa: F401 - importable


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_sbatch_example_gives_each_rank_the_same_run_dir(tmp_path):
    """scripts/slurm_train.sbatch with stand-ins for srun (two tasks) and python (echo)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/bash\nshift\nfor r in 0 1; do SLURM_PROCID=$r "$@"; done\n')
    (bin_dir / "python").write_text("#!/bin/bash\nprintf '%s\\n' \"$@\"; echo ---\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_SUBMIT_DIR": str(tmp_path), "SLURM_JOB_ID": "4242",
           "SLURM_NTASKS_PER_NODE": "4", "SLURM_JOB_NUM_NODES": "2", "SLURM_CPUS_PER_TASK": "9"}
    out = subprocess.run(["bash", str(ROOT / "scripts" / "slurm_train.sbatch"), "model.loss.area_coef=3"], env=env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    rank0, rank1 = [block.split() for block in out.stdout.split("---")[:2]]
    for args in (rank0, rank1):
        assert args[0] == "train.py" and "resume=auto" in args and "hydra.run.dir=outputs/lcam_img_vgg16/slurm/4242" in args
        assert {"trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2", "data.num_workers=8"} <= set(args)
        assert args[-1] == "model.loss.area_coef=3"
    assert "hydra.output_subdir=null" not in rank0 and "hydra.output_subdir=null" in rank1
    # every override is one the config accepts
    cfg = compose_train([a for a in rank1[1:] if not a.startswith("hydra.")], tmp_path)
    assert cfg.resume == "auto" and cfg.trainer.strategy._target_.endswith("DDPStrategy")


def test_ddp_children_of_a_multirun_job_get_its_overrides_in_run_mode(monkeypatch):
    from lcam.runtime import launch

    argv = ["train.py", "-m", "-cn", "train", "--config-dir=/extra", "model.loss.area_coef=1,2"]
    monkeypatch.setattr(launch, "_ORIGINAL_ARGV", argv)
    argv = launch._child_argv(["model.loss.area_coef=2", "hydra.mode=RUN"])
    assert argv == ["train.py", "-cn", "train", "--config-dir=/extra", "model.loss.area_coef=2", "hydra.mode=RUN"]
    # outside a multirun (here: no Hydra at all) begin_job/end_job leave the command line and the DDP variables alone
    assert not launch.hydra_multirun()
    monkeypatch.setattr(sys, "argv", ["train.py", "model.loss.area_coef=2"])
    env_before = {k: os.environ.get(k) for k in launch._DDP_ENV_KEYS}
    launch.begin_job()
    assert launch._state["active"] is False and sys.argv == ["train.py", "model.loss.area_coef=2"]
    launch.end_job(None)
    assert sys.argv == ["train.py", "model.loss.area_coef=2"] and {k: os.environ.get(k) for k in launch._DDP_ENV_KEYS} == env_before
