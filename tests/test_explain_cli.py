"""``python -m lcam.explain``: outputs, streaming, bad files, one-line errors, analysis flags."""
from __future__ import annotations

import csv
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lcam.explainers.learned
from lcam.data import demo_photos
from lcam.explain import cli
from lcam.explain.cli import run_explain
from lcam.explain.inputs import InputError
from lcam.explain.result import slug
from lcam.model.checkpoint import CheckpointError
from tests.explain_helpers import compose_explain, tiny_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["resize=80", "crop=64"]


_ORIGINAL_LOAD = lcam.explainers.learned.load_learned_head
_LOADED: dict = {}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory)


@pytest.fixture(autouse=True)
def _reuse_loaded_checkpoints(monkeypatch):
    """Runs in one process load the same checkpoint once (the loading itself is tested elsewhere)."""
    def cached(path, backbone=None, backbone_weights=None, **kwargs):
        key = (str(path), repr(backbone), backbone_weights, repr(sorted(kwargs.items())))
        if key not in _LOADED:
            _LOADED[key] = _ORIGINAL_LOAD(path, backbone=backbone, backbone_weights=backbone_weights, **kwargs)
        return _LOADED[key]

    monkeypatch.setattr(lcam.explainers.learned, "load_learned_head", cached)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Good images in odd formats (one in a sub-folder) and four bad files."""
    root = tmp_path_factory.mktemp("inputs")
    photos = dict(demo_photos()[:3])
    photos["chelsea"].save(root / "chelsea.jpg", quality=90)
    photos["coffee"].convert("RGBA").save(root / "coffee.png")
    (root / "sub").mkdir()
    gray16 = (np.asarray(photos["rocket"].convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(gray16).save(root / "sub" / "rocket.png")
    Image.fromarray(np.full((3000, 4000), 128, np.uint8)).save(root / "large.jpg")  # 12 Mpx, grayscale
    data = (root / "chelsea.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (root / "text.jpg").write_text("not an image")
    (root / "notes.txt").write_text("hello")
    (root / "empty.png").write_bytes(b"")
    return root


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def _run(overrides: list[str], out: Path) -> dict:
    return run_explain(compose_explain(overrides, out))


def test_folder_run_writes_overlays_csv_and_skips_bad_files(ckpt, folder, tmp_path, caplog):
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="lcam.explain"):
        summary = _run([f"ckpt_path={ckpt}", f"inputs={folder}", "batch_size=2", *SMALL], out)
    assert summary["explained"] == 4 and summary["failed"] == 4
    warnings = [r.getMessage() for r in caplog.records if r.name == "lcam.explain"]
    assert len(warnings) == 4 and all(w.startswith("skipped ") and "\n" not in w for w in warnings)
    rows = _rows(out)
    ok = [r for r in rows if r["status"] == "ok"]
    failed = sorted(Path(r["file"]).name for r in rows if r["status"] == "failed")
    assert failed == ["empty.png", "notes.txt", "text.jpg", "truncated.jpg"]
    assert all(r["error"] for r in rows if r["status"] == "failed")
    assert sorted(r["image"] for r in ok) == ["chelsea", "coffee", "large", "sub/rocket"]
    for r in ok:
        assert (out / r["overlay"]).is_file()
        assert r["overlay"] == f"{r['image']}_{r['class_id']}_{slug(r['class_name'])}_lcam.png"
        assert r["layer"] == "bn2" and r["method"] == "lcam"
        assert 0 < float(r["probability"]) <= 1 and 0 <= float(r["map_area50"]) <= 1 and float(r["map_max"]) <= 1
        assert r["predicted_id"] == r["class_id"] and r["rank"] == "1"
    assert (out / "sub").is_dir()  # the input tree is mirrored
    assert Image.open(out / ok[0]["overlay"]).size == (64, 64)
    assert not list(out.rglob("*.tmp"))


def test_topk_and_class_lists(ckpt, tmp_path):
    out = tmp_path / "topk"
    summary = _run([f"ckpt_path={ckpt}", "inputs=demo", "targets=topk", "k=2", *SMALL], out)
    assert summary["explained"] == 9 and summary["rows"] == 18
    rows = _rows(out)
    assert [r["rank"] for r in rows[:2]] == ["1", "2"] and rows[0]["image"] == rows[1]["image"]
    assert len(list(out.glob("chelsea_*_lcam.png"))) == 2
    out2 = tmp_path / "classes"
    _run([f"ckpt_path={ckpt}", "inputs=demo", "targets=[[281,tabby,967]]", *SMALL], out2)  # these classes for every image
    rows = _rows(out2)
    assert [r["class_id"] for r in rows if r["image"] == "coffee"] == ["281", "967"]  # 281 named twice: one row
    assert len(rows) == 18 and len(list(out2.glob("coffee_*.png"))) == 2
    with pytest.raises(InputError, match=r"Got 2 targets for 9 images: a list gives one target per image"):
        _run([f"ckpt_path={ckpt}", "inputs=demo", "targets=[281,967]", *SMALL], tmp_path / "wrong")  # as in Python


def test_baselines_with_and_without_checkpoint(ckpt, tmp_path):
    out = tmp_path / "gradcam"
    summary = _run([f"ckpt_path={ckpt}", "inputs=demo", "method=gradcam", *SMALL], out)
    assert summary["method"] == "gradcam" and len(list(out.glob("*_gradcam.png"))) == 9
    out2 = tmp_path / "backbone"
    summary = _run(["backbone=efficientnet_lite0", "inputs=demo", "method=xgradcam", "targets=281", *SMALL], out2)
    assert summary["explained"] == 9 and {r["class_id"] for r in _rows(out2)} == {"281"}


@pytest.mark.parametrize("overrides, error, match", [
    (["method=gradcan"], InputError, r"Unknown method 'gradcan'; valid choices: lcam, .*\bgradcam, gradcampp\b"),
    (["targets=5000"], InputError, r"Class id 5000 out of range: valid class ids are 0\.\.999"),
    (["targets=[[1,1000]]"], InputError, r"Class id 1000 out of range"),
    (["targets=[1,2]"], InputError, r"Got 2 targets for 9 images"),
    (["k=0", "targets=topk"], InputError, r"k must be an integer in 1\.\.1000"),
    (["inputs={empty}"], InputError, r"No images to explain in"),
    (["inputs={empty}/missing.jpg"], InputError, r"Input not found"),
    (["analysis.compare=[lcam,foo]"], InputError, r"Unknown method 'foo'"),
    (["backbone=mobilenet_v2", "backbone.weights=none"], ValueError, r"tf_efficientnet_lite0.*mobilenet_v2"),
])
def test_bad_input_is_a_one_line_error(ckpt, tmp_path, overrides, error, match):
    (tmp_path / "empty").mkdir()
    args = [f"ckpt_path={ckpt}", "inputs=demo", *SMALL] + [o.format(empty=tmp_path / "empty") for o in overrides]
    with pytest.raises(error, match=match) as err:
        _run(args, tmp_path / "out")
    assert "\n" not in str(err.value)


def test_no_checkpoint_and_no_backbone(tmp_path):
    with pytest.raises(InputError, match="Give ckpt_path=.*or backbone=NAME"):
        _run(["inputs=demo"], tmp_path / "out")
    with pytest.raises(InputError, match="method 'lcam' needs ckpt_path: pass an L-CAM model or checkpoint"):
        _run(["inputs=demo", "backbone=efficientnet_lite0", "method=lcam"], tmp_path / "out")


def test_crafted_checkpoint_is_refused(ckpt, tmp_path):
    import pathlib

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (pathlib.Path.touch, (marker,))

    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    raw["evil"] = Payload()
    torch.save(raw, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match="Refusing to load checkpoint"):
        _run([f"ckpt_path={tmp_path / 'evil.ckpt'}", "inputs=demo"], tmp_path / "out")
    assert not marker.exists()


def test_analysis_flags_write_sheets(ckpt, tmp_path):
    photos = dict(demo_photos()[:3])
    src = tmp_path / "labelled"
    src.mkdir()
    for name, img in photos.items():
        img.save(src / f"{name}.jpg")
    (src / "labels.txt").write_text("# name label\nchelsea.jpg 281\ncoffee.jpg 1\n")  # coffee surely wrong
    out = tmp_path / "out"
    summary = _run([f"ckpt_path={ckpt}", f"inputs={src}", f"labels={src / 'labels.txt'}", "analysis.misclassified=true",
                    "analysis.all_labelled=true", "analysis.compare=[gradcam]", "analysis.classes=[281,285]",
                    "analysis.per_page=2", *SMALL], out)
    assert summary["explained"] == 3 and summary["failed"] == 0  # the label file is not an input
    assert sorted(p.name for p in (out / "analysis" / "classes").iterdir()) == ["chelsea.png", "coffee.png", "rocket.png"]
    assert sorted(p.name for p in (out / "analysis").glob("misclassified_p*.png")) == ["misclassified_p001.png"]
    assert sorted(p.name for p in (out / "analysis").glob("comparison_p*.png")) == ["comparison_p001.png", "comparison_p002.png"]
    labels = {r["image"]: r["label_id"] for r in _rows(out)}
    assert labels == {"chelsea": "281", "coffee": "1", "rocket": ""}


def test_interrupted_run_keeps_a_complete_csv(ckpt, tmp_path, monkeypatch):
    from lcam.explain.engine import Engine

    real = Engine.run
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(Engine, "run", interrupted)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        _run([f"ckpt_path={ckpt}", "inputs=demo", "batch_size=2", "csv_every=1", *SMALL], out)
    rows = _rows(out)
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)  # two whole batches
    assert not list(out.rglob("*.tmp")) and len(list(out.glob("*.png"))) == 4


def _cli(args: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "LCAM_TRACEBACK")}
    return subprocess.run([sys.executable, "-m", "lcam.explain", *args, "progress=false"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_exit_status_and_one_line_errors(ckpt, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)  # as a user runs it
    bad_only = tmp_path / "bad_only"
    bad_only.mkdir()
    (bad_only / "a.jpg").write_text("no")
    assert cli.exit_status(compose_explain([f"ckpt_path={ckpt}", f"inputs={bad_only}"], tmp_path / "none")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: nothing could be explained: all 1 input file(s) failed")
    assert (tmp_path / "none" / "results.csv").is_file()
    assert cli.exit_status(compose_explain([f"ckpt_path={ckpt}", "inputs=demo", "targets=1000"], tmp_path / "range")) == 2
    assert capsys.readouterr().err.strip() == "error: Class id 1000 out of range: valid class ids are 0..999"
    assert cli.exit_status(compose_explain([f"ckpt_path={ckpt}", "inputs=[]"], tmp_path / "empty")) == 2
    assert capsys.readouterr().err.strip().startswith("error: No inputs: give inputs=path")


def test_cli_subprocess(ckpt, folder, tmp_path):
    ok = _cli([f"ckpt_path={ckpt}", f"inputs={folder}", f"output_dir={tmp_path / 'ok'}", *SMALL])
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "Explained 4 image(s) with lcam at layer bn2" in ok.stdout and "4 file(s) failed" in ok.stdout
    assert len([line for line in (ok.stdout + ok.stderr).splitlines() if "skipped" in line]) == 4
    assert (tmp_path / "ok" / "results.csv").is_file() and (tmp_path / "ok" / ".hydra" / "config.yaml").is_file()

    unknown = _cli([f"ckpt_path={ckpt}", "inputs=demo", "method=nope", f"output_dir={tmp_path / 'err'}"])
    assert unknown.returncode == 2
    last = unknown.stderr.strip().splitlines()[-1]
    assert last.startswith("error: Unknown method 'nope'; valid choices: lcam, ") and "Traceback" not in unknown.stderr
    assert ", gradcam, " in last  # every registered method, in registration order
