"""The configs an installed lcam needs travel with the package (lcam/conf), found from any directory."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import tomllib

from lcam.runtime.configs import backbone_preset, backbone_presets, config_dir

ROOT = Path(__file__).resolve().parents[1]


def test_the_package_carries_the_configs():
    assert (ROOT / "lcam" / "conf").resolve() == (ROOT / "conf").resolve()  # lcam/conf is conf/
    assert config_dir().resolve() == (ROOT / "conf").resolve()
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["lcam"]
    assert "conf/*.yaml" in data and "conf/**/*.yaml" in data
    assert any(line.strip() == "-e ." for line in (ROOT / "requirements.txt").read_text().splitlines())


def test_backbone_presets_follow_their_defaults():
    assert {"vgg16", "vgg16_pool5", "resnet50", "efficientnet_lite0"} <= set(backbone_presets())
    assert backbone_preset("vgg16")["layer"] == "features.29"
    pool5 = backbone_preset("vgg16_pool5")
    assert pool5["layer"] == "features.30" and pool5["name"] == "vgg16"  # inherited from vgg16
    assert backbone_preset("no_such_preset") is None


def test_presets_work_from_another_directory(tmp_path):
    """From a temporary directory with the package on the path (as installed): no conf/ beside the cwd."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = "import lcam.runtime.configs as c; print(c.config_dir()); print(c.backbone_preset('vgg16')['layer'])"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-1500:]
    assert out.stdout.split() == [str(config_dir()), "features.29"]


def test_the_explain_command_reads_the_package_configs():
    from lcam.explain import __main__ as command

    assert Path(command.CONF_DIR) == config_dir() and (Path(command.CONF_DIR) / "explain.yaml").is_file()
