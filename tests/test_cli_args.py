"""Command lines as users type them: ``~`` in overrides, DataLoader workers, start-up noise."""
from __future__ import annotations

import logging
import os
import warnings

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import OverrideParseException

from lcam.data.workers import available_cpus, resolve_num_workers
from lcam.runtime.cli_args import expand_home
from lcam.runtime.quiet import silence_known_noise
from tests.helpers import CONF_DIR


def test_leading_tilde_of_values_is_expanded():
    got = expand_home(["data=folder", "data.root=~/photos", "+data.val_root=~/photos_val", "ckpt_path=~",
                       "data.root=~/a,~/b", "x=[~/a,~/b]", "-m", "--cfg", "job"], home="/home/u")
    assert got == ["data=folder", "data.root=/home/u/photos", "+data.val_root=/home/u/photos_val", "ckpt_path=/home/u",
                   "data.root=/home/u/a,/home/u/b", "x=[/home/u/a,/home/u/b]", "-m", "--cfg", "job"]


def test_other_tildes_are_left_alone():
    args = ["~data.val_list", "~data.val_list=x.txt", "data.root=a~/b", "data.root='~/photos'", "name=~user_x",
            'data.root="~/q"', "hydra.job.name=run~1"]
    assert expand_home(args, home="/home/u") == args


def test_expanded_overrides_compose_where_the_typed_ones_do_not(tmp_path):
    typed = ["data=folder", "data.root=~/photos", "data.val_root=~/photos_val"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        with pytest.raises(OverrideParseException):
            compose("train", overrides=typed)
        cfg = compose("train", overrides=expand_home(typed, home=str(tmp_path)))
    assert cfg.data.root == f"{tmp_path}/photos" and cfg.data.val_root == f"{tmp_path}/photos_val"


def test_num_workers_null_is_what_the_machine_has(monkeypatch):
    cpus = available_cpus()
    assert cpus >= 1
    assert resolve_num_workers(None, 8) == min(8, cpus)
    assert resolve_num_workers(None, 4) == min(4, cpus)
    assert resolve_num_workers(3, 8) == 3 and resolve_num_workers(0, 8) == 0  # explicit counts are kept
    with pytest.raises(ValueError, match="data.num_workers"):
        resolve_num_workers(-1, 4)
    if hasattr(os, "sched_getaffinity"):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
        assert resolve_num_workers(None, 8) == 2 and resolve_num_workers(None, 1) == 1


def test_data_configs_default_to_null_workers(tmp_path):
    from lcam.data import FolderDataModule

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        for name in ("imagenet", "folder"):
            assert compose("train", overrides=[f"data={name}"]).data.num_workers is None
    (tmp_path / "a.png").write_bytes(b"")
    assert FolderDataModule(root=str(tmp_path)).num_workers == min(4, available_cpus())
    assert FolderDataModule(root=str(tmp_path), num_workers=1).num_workers == 1


def test_noise_is_silenced_and_the_rest_kept(caplog):
    silence_known_noise()
    rz = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    with caplog.at_level(logging.INFO):
        rz.info("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]")
        rz.info("TPU available: False, using: 0 TPU cores")
        rz.info("GPU available: True (cuda), used: False")
        logging.getLogger("alembic.runtime.migration").info("Context impl SQLiteImpl.")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: True (cuda), used: False"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        silence_known_noise()
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning)
        warnings.warn("This DataLoader will create 8 worker processes in total.", UserWarning)
    assert [str(w.message) for w in caught] == ["This DataLoader will create 8 worker processes in total."]
