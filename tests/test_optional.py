"""Start-up checks of optional dependencies (lcam.runtime.optional): a broken or shadowed package fails
within a second, before any model is loaded, naming the pip commands that repair it.

The broken environments are simulated in-process (``sys.modules`` / attributes): these test the
checks, not the features, and never install anything."""
from __future__ import annotations

import re
import sys
import time
import types
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lcam.runtime.optional import FEATURES, OPENCV_REPAIR, MissingDependency, check, require

ROOT = Path(__file__).resolve().parents[1]


def _opencv5(monkeypatch, contrib: bool = False) -> None:
    """``cv2`` as after ``pip install grad-cam``: opencv-python-headless 5.x over the contrib build
    (``cv2.ximgproc`` without ``segmentation``, no darknet reader)."""
    cv2 = types.ModuleType("cv2")
    cv2.__version__ = "5.0.0"
    cv2.__file__ = "/site-packages/cv2/__init__.py"
    cv2.ximgproc = types.ModuleType("cv2.ximgproc")
    cv2.dnn = types.ModuleType("cv2.dnn")
    monkeypatch.setitem(sys.modules, "cv2", cv2)


def test_every_feature_is_usable_in_this_environment():
    assert check() == {name: None for name in FEATURES}
    require(*FEATURES)


def test_shadowed_opencv_names_the_two_repair_commands_within_a_second(monkeypatch):
    _opencv5(monkeypatch)
    t0 = time.perf_counter()
    with pytest.raises(MissingDependency) as err:
        require("selective_search")
    assert time.perf_counter() - t0 < 1.0
    msg = str(err.value)
    assert "cv2.ximgproc.segmentation" in msg and "cv2 5.0.0" in msg and "/site-packages/cv2" in msg
    assert "pip uninstall -y opencv-python-headless opencv-python" in msg
    assert 'pip install --force-reinstall --no-deps "opencv-contrib-python-headless>=4.8,<5"' in msg
    assert msg.index("pip uninstall") < msg.index("pip install")
    assert check("opencv_darknet")["opencv_darknet"] is not None  # no cv2.dnn.readNetFromDarknet either
    assert check("onnx_to_torch")["onnx_to_torch"] is None  # the others are not affected


def test_cv2_that_does_not_import_and_missing_packages(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 raises ImportError
    assert "import cv2 failed" in check("selective_search")["selective_search"]
    monkeypatch.setitem(sys.modules, "onnx2torch", None)
    with pytest.raises(MissingDependency, match=r"cannot import onnx2torch.*pip install \"onnx2torch>=1\.5\" onnx"):
        require("onnx_to_torch")
    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(MissingDependency, match=r"scikit-learn>=1\.3.*pip install \"scikit-learn>=1\.3\""):
        require("scikit_learn")
    with pytest.raises(ValueError, match=r"Unknown optional feature 'opencv'; valid: \["):
        require("opencv")


def test_repair_pins_agree_with_requirements_txt():
    req = (ROOT / "requirements.txt").read_text()
    for feature in FEATURES.values():
        for spec in re.findall(r'"([^"]+)"', " ".join(feature.repair)):
            assert spec in req, f"{feature.name}: {spec} is not the pin of requirements.txt"
    assert len(OPENCV_REPAIR) == 2


def test_summaries_command_fails_before_any_model_is_loaded(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)  # as a user runs it
    import lcam.summaries.__main__ as cli
    import lcam.summaries.pipeline as pipeline

    def never(*args, **kwargs):
        raise AssertionError("summarise ran: the check came too late")

    monkeypatch.setattr(pipeline, "summarise", never)
    _opencv5(monkeypatch)
    cfg = OmegaConf.create({"inputs": str(tmp_path), "output_dir": str(tmp_path / "out")})
    t0 = time.perf_counter()
    assert cli.exit_status(cfg) == 2
    assert time.perf_counter() - t0 < 1.0
    err = capsys.readouterr().err
    assert err.startswith("error: visual summaries (python -m lcam.summaries) needs cv2.ximgproc.segmentation")
    assert "pip uninstall -y opencv-python-headless opencv-python" in err and "opencv-contrib-python-headless>=4.8,<5" in err


def test_face_detector_fails_before_its_weights_are_read(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)  # as a user runs it
    import lcam.detection.faces as faces
    from lcam.detection.cli import exit_status

    def never(*args, **kwargs):
        raise AssertionError("weights were read: the check came too late")

    monkeypatch.setattr(faces, "retinaface_onnx_bytes", never)
    monkeypatch.setitem(sys.modules, "onnx2torch", None)
    t0 = time.perf_counter()
    with pytest.raises(MissingDependency, match=r"the face detector \(detector=retinaface\) needs onnx and onnx2torch"):
        faces.RetinaFaceDetector()  # built from Python
    assert time.perf_counter() - t0 < 1.0
    cfg = OmegaConf.create({"detector": {"name": "retinaface"}, "inputs": "demo", "paths": {"output_dir": str(tmp_path)},
                            "progress": False})
    assert exit_status(cfg) == 2  # the command: one error line, nothing read or written
    assert 'pip install "onnx2torch>=1.5" onnx' in capsys.readouterr().err
    assert not (tmp_path / "detections.csv").exists()


def test_darknet_parity_reference_needs_the_darknet_reader(monkeypatch):
    import torch

    from lcam.detection.darknet import opencv_darknet_outputs

    _opencv5(monkeypatch)
    with pytest.raises(MissingDependency, match=r"cv2\.dnn\.readNetFromDarknet.*pip uninstall -y opencv-python-headless"):
        opencv_darknet_outputs(torch.zeros(1, 3, 32, 32))
