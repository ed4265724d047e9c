"""lcam.runtime.tasks / lcam.runtime.errors: one short message for user errors, tracebacks for bugs, W&B closed on failure."""
from __future__ import annotations

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from lcam.data.unreadable import SKIPPED, Unreadable
from lcam.runtime.errors import user_error_message
from lcam.runtime.tasks import REPORT_FILE, entry_point, task_wrapper


def run_cfg(out):
    return OmegaConf.create({"paths": {"output_dir": str(out)}})


def fresh_run_dir(tmp_path):
    out = tmp_path / "run"
    (out / ".hydra").mkdir(parents=True)
    (out / ".hydra" / "config.yaml").write_text("seed: 1\n")
    (out / "train.log").write_text("")
    return out


def test_user_error_is_one_line_exit_2_and_the_empty_run_folder_goes(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    out = fresh_run_dir(tmp_path)

    def main(cfg):
        hydra.utils.instantiate({"_target_": "lcam.data.FolderDataModule", "root": str(tmp_path / "nope")})

    with pytest.raises(SystemExit) as exit_info:
        entry_point(main)(run_cfg(out))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: Dataset folder not found: {tmp_path / 'nope'}. Set it with data.root=/path/to/folder"]
    assert not out.exists()  # nothing but Hydra's own files: removed
    # a run folder with results of an earlier start is kept
    out = fresh_run_dir(tmp_path)
    (out / "checkpoints").mkdir()
    with pytest.raises(SystemExit):
        entry_point(main)(run_cfg(out))
    assert (out / "checkpoints").is_dir()


def test_bugs_and_hydra_full_error_keep_the_traceback(tmp_path, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)

    def bug(cfg):
        torch.zeros(2).view(3)  # a RuntimeError inside torch: not the user's to fix

    with pytest.raises(RuntimeError):
        entry_point(bug)(run_cfg(tmp_path))

    def torch_value_error(cfg):
        torch.nn.functional.cross_entropy(torch.zeros(2, 3), torch.zeros(3).long())  # ValueError raised by torch

    with pytest.raises(ValueError):
        entry_point(torch_value_error)(run_cfg(tmp_path))
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")

    def missing(cfg):
        raise FileNotFoundError("no such file: x. Set data.root=...")

    with pytest.raises(FileNotFoundError):
        entry_point(missing)(run_cfg(tmp_path))


def test_which_errors_are_the_users():
    from lcam.model.optim import build_optimizer

    with pytest.raises(ValueError) as err:  # raised by lcam: names the key
        build_optimizer({"_target_": "torch.optim.Nope"}, [torch.nn.Parameter(torch.ones(1))], [])
    assert user_error_message(err.value) == "model.optimizer._target_=torch.optim.Nope: no such class (e.g. model.optimizer._target_=torch.optim.AdamW)"
    with pytest.raises(Exception) as err:  # a _target_ that does not exist, found by Hydra
        hydra.utils.instantiate({"_target_": "lcam.data.NoSuchModule"})
    assert user_error_message(err.value).startswith("Error locating target 'lcam.data.NoSuchModule'")
    with pytest.raises(Exception) as err:  # a ??? value left unset
        OmegaConf.create({"data": {"root": "???"}}).data.root
    assert "data.root" in user_error_message(err.value)
    assert user_error_message(ZeroDivisionError("x")) is None and user_error_message(KeyError("k")) is None


def test_the_wrapper_lists_skipped_images_and_closes_wandb_even_on_failure(tmp_path, monkeypatch, capsys):
    import wandb


    @task_wrapper
    def failing(cfg):
        wandb.init(project="lcam-test", dir=str(tmp_path), mode="disabled")  # a real run object, no service start
        SKIPPED.record([Unreadable(0, "/data/a.jpg", "OSError: truncated")])
        raise FileNotFoundError("missing")

    with pytest.raises(FileNotFoundError):
        failing(run_cfg(tmp_path))
    assert wandb.run is None  # closed although the run failed
    assert (tmp_path / REPORT_FILE).read_text() == "/data/a.jpg\tOSError: truncated\n"
    err = capsys.readouterr().err
    assert f"1 unreadable image(s) were skipped (list: {tmp_path / REPORT_FILE})" in err and "/data/a.jpg  (OSError: truncated)" in err
    SKIPPED.clear()


def test_one_variable_shows_the_traceback_and_the_old_one_is_its_alias(monkeypatch):
    from lcam.runtime.errors import full_errors

    for name in ("HYDRA_FULL_ERROR", "LCAM_TRACEBACK"):
        monkeypatch.delenv(name, raising=False)
    assert not full_errors()
    for name in ("HYDRA_FULL_ERROR", "LCAM_TRACEBACK"):
        monkeypatch.setenv(name, "1")
        assert full_errors()
        monkeypatch.delenv(name)
