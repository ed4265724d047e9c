"""lcam.tune_cpu_allocator: raises glibc's thresholds once, and stays out of the way when asked."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

CODE = "import lcam; print(lcam.tune_cpu_allocator(), lcam.tune_cpu_allocator())"


def run(env_extra: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("LCAM_TUNE_MALLOC", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}
    out = subprocess.run([sys.executable, "-c", CODE], env={**env, **env_extra}, capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_thresholds_are_set_once_on_glibc():
    assert run({}) == "True True"


def test_opt_out_and_users_own_malloc_settings_win():
    assert run({"LCAM_TUNE_MALLOC": "0"}) == "False False"
    assert run({"MALLOC_MMAP_THRESHOLD_": "65536"}) == "False False"


def test_entry_points_apply_it():
    code = ("import sys; from lcam.runtime.cli_args import prepare_cli; from lcam.runtime.allocator import _state; "
            "prepare_cli(['x']); print(_state)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "'done'" in out
