"""Optuna sweeps with persistent storage (``hydra.sweeper.storage=sqlite:///...``): a sweep of two
trials, then the same command again, resumes the study: four trials in the database.

The real ``conf/train.yaml`` + ``hparams_search=lcam_optuna`` config and Hydra's Optuna sweeper
run in this process; the trial's job is a tiny stand-in for ``train.py`` that returns a closed
form of the sampled loss weights (``train.py`` itself under the sweeper: tests/test_sweeps.py).
"""
from __future__ import annotations

import sys

import hydra
import optuna
import pytest
import yaml
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from tests.helpers import CONF_DIR

SEEN: list[dict[str, float]] = []


def objective(values: dict[str, float]) -> float:
    """A closed form of the sampled values (minimum at area_coef 2, lr 0.01)."""
    return (values["model.loss.area_coef"] - 2.0) ** 2 + (values["model.optimizer.lr"] - 0.01) ** 2


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def tiny_trainer(cfg: DictConfig) -> float:
    values = {"model.loss.area_coef": float(cfg.model.loss.area_coef), "model.optimizer.lr": float(cfg.model.optimizer.lr)}
    SEEN.append(values)
    return objective(values)


def sweep(tmp_path, name: str, db: str, monkeypatch) -> dict:
    """``train.py -m hparams_search=lcam_optuna hydra.sweeper.n_trials=2 hydra.sweeper.storage=...`` in-process."""
    monkeypatch.setattr(sys, "argv", ["train.py", "-m", "hparams_search=lcam_optuna", "hydra.sweeper.n_trials=2",
                                      f"hydra.sweeper.storage={db}", f"hydra.sweep.dir={tmp_path / name}",
                                      "hydra/job_logging=none", "hydra/hydra_logging=none"])
    GlobalHydra.instance().clear()
    try:
        tiny_trainer()
    finally:
        GlobalHydra.instance().clear()
    return yaml.safe_load((tmp_path / name / "optimization_results.yaml").read_text())


def test_sqlite_study_is_created_then_resumed(tmp_path, monkeypatch):
    db = f"sqlite:///{tmp_path / 'lcam_optuna.db'}"
    SEEN.clear()
    first = sweep(tmp_path, "first", db, monkeypatch)
    second = sweep(tmp_path, "second", db, monkeypatch)

    study = optuna.load_study(study_name="lcam_loss_weights", storage=db)
    trials = study.get_trials(deepcopy=False)
    assert [t.number for t in trials] == [0, 1, 2, 3]  # 2 + 2: the second sweep continued the study
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert len(SEEN) == 4
    for trial, seen in zip(trials, SEEN):  # each job got its trial's values, and its value was stored
        assert trial.params["model.loss.area_coef"] == pytest.approx(seen["model.loss.area_coef"])
        assert trial.params["model.optimizer.lr"] == pytest.approx(seen["model.optimizer.lr"])
        assert trial.value == pytest.approx(objective(trial.params))
    # the resumed sweep proposes new points (a seeded sampler restarted at its seed would repeat trials 0 and 1)
    firsts = {tuple(sorted(t.params.items())) for t in trials[:2]}
    assert not firsts & {tuple(sorted(t.params.items())) for t in trials[2:]}
    assert first["best_value"] == pytest.approx(min(t.value for t in trials[:2]))
    assert second["best_value"] == pytest.approx(min(t.value for t in trials))  # best over both sweeps
    # both sweeps' job folders exist, numbered from 0 in each
    assert sorted(p.name for p in (tmp_path / "second").iterdir() if p.is_dir()) == ["0", "1"]


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_resumable_sampler_is_tpe_with_its_seed_on_a_fresh_study():
    from optuna.samplers import TPESampler

    from lcam.model.sweep_sampler import ResumableTPESampler

    def points(sampler, n=4, skip=0):
        study = optuna.create_study(sampler=sampler)
        for _ in range(skip):  # trials of an earlier sweep, stored before this sampler starts
            study.add_trial(optuna.trial.create_trial(params={"x": 0.5}, distributions={"x": optuna.distributions.UniformDistribution(0, 1)}, value=0.0))
        out = []
        for _ in range(n):
            trial = study.ask()
            out.append(trial.suggest_float("x", 0.0, 1.0))
            study.tell(trial, out[-1])
        return out

    assert points(ResumableTPESampler(seed=7, n_startup_trials=2)) == points(TPESampler(seed=7, n_startup_trials=2))
    resumed = points(ResumableTPESampler(seed=7, n_startup_trials=8), n=2, skip=2)
    assert resumed == points(ResumableTPESampler(seed=7, n_startup_trials=8), n=2, skip=2)  # reproducible
    assert not set(resumed) & set(points(TPESampler(seed=7, n_startup_trials=8), n=2))
