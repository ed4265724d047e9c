"""train.py end to end through Hydra: demo run, every experiment, resume, clear errors."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import hydra
import pytest
import torch
from PIL import Image

from lcam.data import demo_photos
from lcam.model.resume import RunCompleteError
from lcam.model.training import run_training
from tests.helpers import TINY, compose_train

ROOT = Path(__file__).resolve().parents[1]
#: the paper's experiments (VGG-16 / ResNet-50 on ImageNet); the *_imagenette recipes are tested apart
EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("lcam_*.yaml") if "imagenette" not in p.stem)


def test_demo_run_writes_checkpoint_csv_config_and_grid(tmp_path):
    cfg = compose_train([*TINY, "trainer.max_epochs=1", "trainer.limit_train_batches=2"], tmp_path)
    metrics = run_training(cfg)
    assert {"val/AD100", "val/IC100", "val/AD50", "val/IC15", "val/score"} <= set(metrics)
    assert 0 <= metrics["val/AD100"] <= 100 and 0 <= metrics["val/IC100"] <= 100
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    csv = (tmp_path / "csv" / "metrics.csv").read_text()
    for column in ("train/ce", "train/area", "train/tv", "train/loss", "val/AD100", "val/IC15", "lr-SGD/head.weight"):
        assert column in csv
    grid = Image.open(tmp_path / "images" / "overlays_last.png")
    assert grid.size[1] > grid.size[0]  # one row per image


def test_validate_before_fit_then_train(tmp_path, capsys):
    """The untrained-head baseline runs under inference mode; training's validation must still update the metric."""
    cfg = compose_train([*TINY, "trainer.max_epochs=1", "trainer.limit_train_batches=1", "validate_before_fit=true",
                         "callbacks.overlay_grid=null"], tmp_path)
    metrics = run_training(cfg)
    assert "untrained head: AD100=" in capsys.readouterr().out
    assert 0 <= metrics["val/AD100"] <= 100


def test_wandb_offline_run_logs_and_says_how_to_sync(tmp_path):
    """The default logger (W&B, offline without credentials) through a real subprocess."""
    env = {"WANDB_MODE": "", "WANDB_API_KEY": "", "HOME": str(tmp_path), "PATH": "/usr/bin:/bin",
           "TORCH_HOME": str(Path(torch.hub.get_dir()).parent), "LCAM_CACHE": str(Path.home() / ".cache" / "lcam")}
    overrides = [o for o in TINY if not o.startswith("logger=")]
    out = subprocess.run([sys.executable, "train.py", *overrides, "trainer.max_epochs=1", "trainer.limit_train_batches=1",
                          f"hydra.run.dir={tmp_path / 'run'}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "wandb sync" in out.stdout + out.stderr
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    assert (tmp_path / "run" / "csv" / "metrics.csv").is_file()
    assert "overlay grid:" in out.stdout and "metrics CSV:" in out.stdout


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory):
    """A tiny ILSVRC-style folder (train/<wnid>/, flat val/ + list file) made from real photos."""
    root = tmp_path_factory.mktemp("imagenet")
    photos = demo_photos()
    for i, (name, img) in enumerate(photos[:4]):
        wnid = ["n02123045", "n07920052", "n03773504", "n03127747"][i]
        (root / "train" / wnid).mkdir(parents=True)
        img.resize((80, 64)).save(root / "train" / wnid / f"{name}.JPEG")
    (root / "val").mkdir()
    lines = []
    for i, (name, img) in enumerate(photos[4:8]):
        img.resize((64, 80)).save(root / "val" / f"ILSVRC2012_val_{i:08d}.JPEG")
        lines.append(f"ILSVRC2012_val_{i:08d}.JPEG {i * 10}")
    (root / "val_list.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_instantiates(experiment, imagenet_root, tmp_path):
    cfg = compose_train([f"+experiment={experiment}", f"data.root={imagenet_root}",
                         f"data.val_list={imagenet_root / 'val_list.txt'}", "backbone.weights=none", "logger=csv"], tmp_path)
    assert cfg.model.backbone.name in ("vgg16", "resnet50")
    if experiment.endswith("_ce"):
        # CE-only ablation: cross-entropy weight 1, as the reference code trains it
        assert cfg.model.loss.area_coef == 0 and cfg.model.loss.tv_coef == 0 and cfg.model.loss.ce_coef == 1.0
    else:
        assert cfg.model.loss.area_coef == 2.0 and cfg.model.loss.tv_coef == 0.01 and cfg.model.loss.ce_coef == 1.5
    assert cfg.model.variant == ("fm" if "_fm" in experiment else "img")
    assert cfg.model.init == "random"  # the paper's recipe, also on ResNet-50 (GAP + linear)
    dm = hydra.utils.instantiate(cfg.data, _convert_="all")
    dm.setup("fit")
    assert len(dm.train_set) == 4 and len(dm.val_set) == 4 and dm.val_set.labels == [0, 10, 20, 30]
    model = hydra.utils.instantiate(cfg.model, _convert_="all")
    expected_hw = {"lcam_img_pool5": 7, "lcam_img_resnet50": 7, "lcam_fm_resnet50": 7}.get(experiment, 14)
    feats = model.backbone.features(torch.rand(1, 3, 224, 224))
    assert feats.shape[-1] == expected_hw
    assert model.head.conv.in_channels == feats.shape[1] and model.head.num_classes == 1000
    sched = model.configure_optimizers()["lr_scheduler"]["scheduler"]
    assert sched.gamma == (0.95 if "resnet50" in experiment else 0.75)
    assert cfg.trainer.max_epochs == (25 if "resnet50" in experiment else 7)
    assert cfg.model.optimizer.lr == 0.01 and cfg.data.batch_size == 64


def _run_script(args: list[str], run_dir: Path, script: str = "train.py", timeout: float = 120) -> subprocess.CompletedProcess:
    """The script as a user runs it: no HYDRA_FULL_ERROR (the tests' default), so user errors are short."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run([sys.executable, script, *args, "logger=csv", f"hydra.run.dir={run_dir}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _one_error_line(out: subprocess.CompletedProcess) -> str:
    """The run failed with exit status 2 and one ``error: ...`` line, no traceback."""
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr and "HYDRA_FULL_ERROR" not in out.stderr, out.stderr[-3000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, out.stderr[-3000:]
    return errors[0]


def test_missing_dataset_stops_quickly_naming_path_and_key(tmp_path):
    out = _run_script(["+experiment=lcam_img", "data.root=/nonexistent/imagenet"], tmp_path / "run")
    line = _one_error_line(out)
    assert "/nonexistent/imagenet" in line and "data.root=" in line
    assert not (tmp_path / "run").exists()  # no empty run folder left behind


@pytest.mark.parametrize("script", ["train.py", "evaluate.py"])
def test_missing_weights_file_names_the_file_and_how_to_provide_it(imagenet_root, tmp_path, script):
    args = ["+experiment=lcam_img"] if script == "train.py" else ["backbone=vgg16", "explainer=gradcam", "data=imagenet"]
    out = _run_script([*args, f"data.root={imagenet_root}", f"data.val_list={imagenet_root / 'val_list.txt'}",
                       "backbone.weights=/missing/vgg16-397923af.pth"], tmp_path / "run", script)
    line = _one_error_line(out)
    assert "vgg16-397923af.pth" in line and "backbone.weights=" in line


def test_missing_hub_weights_offline_message(monkeypatch, tmp_path):
    import urllib.request

    from lcam.backbones import BackboneWeightsError, build_backbone

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(BackboneWeightsError) as err:
        build_backbone({"name": "resnet50", "weights": "imagenet"})
    msg = str(err.value)
    assert "resnet50-" in msg and "backbone.weights=/path/to/" in msg and str(tmp_path) in msg


def test_resume_equals_straight_training(tmp_path):
    common = [*TINY, "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "callbacks.overlay_grid=null",
              "callbacks.lr_monitor=null"]
    straight = compose_train([*common, "trainer.max_epochs=2"], tmp_path / "straight")
    run_training(straight)
    first = compose_train([*common, "trainer.max_epochs=1"], tmp_path / "first")
    run_training(first)
    resumed = compose_train([*common, "trainer.max_epochs=2", f"ckpt_path={tmp_path / 'first' / 'checkpoints' / 'last.ckpt'}"],
                            tmp_path / "resumed")
    run_training(resumed)
    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 4 and a["epoch"] == b["epoch"]
    for key in ("head.conv.weight", "head.conv.bias"):
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    sa, sb = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    assert all(torch.equal(sa[k]["momentum_buffer"], sb[k]["momentum_buffer"]) for k in sa)
    # the resumed run's metrics CSV continues the first run's: epoch 0 rows, then epoch 1 rows, as in the straight run
    def epochs(run: str) -> list[str]:
        return [line.split(",")[1] for line in (tmp_path / run / "csv" / "metrics.csv").read_text().splitlines()[1:]]
    assert epochs("resumed") == epochs("straight") and "0" in epochs("resumed") and "1" in epochs("resumed")
    # the end of a finished run cannot be resumed: the message says to raise trainer.max_epochs
    again = compose_train([*common, "trainer.max_epochs=2", f"ckpt_path={tmp_path / 'resumed' / 'checkpoints' / 'last.ckpt'}"],
                          tmp_path / "again")
    with pytest.raises(RunCompleteError, match=r"2 of trainer.max_epochs=2 epochs done\). To train further, raise trainer.max_epochs"):
        run_training(again)


def test_resume_from_missing_checkpoint_is_a_clear_error(tmp_path):
    cfg = compose_train([*TINY, "ckpt_path=/nope/last.ckpt"], tmp_path)
    with pytest.raises(FileNotFoundError, match="ckpt_path="):
        run_training(cfg)


@pytest.mark.parametrize("variant", ["img", "fm"])
def test_imagenette_recipes_train_on_the_shared_photos_with_a_classifier_initialised_head(variant, tmp_path):
    cfg = compose_train([f"+experiment=lcam_{variant}_imagenette", "logger=csv"], tmp_path)
    assert cfg.model.variant == variant and cfg.model.init == "classifier" and cfg.model.mask == "minmax"
    # the paper's optimiser and decay (model: lcam, trainer: default), two epochs
    assert cfg.model.optimizer.lr == 0.01 and cfg.model.scheduler.gamma == 0.75 and cfg.trainer.max_epochs == 2
    assert cfg.model.backbone.name == "tf_efficientnet_lite0"
    assert str(cfg.data.root).endswith("shared/data/imagenette-subset/train") and cfg.data.val_root is None
