"""evaluate.py: methods on the same images, #FW counted by a hook, the table and figure written."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from lcam.evaluation import ExplainerEvaluator, ForwardCounter
from lcam.evaluation.report import to_markdown
from lcam.evaluation.run import latest_checkpoint, run_evaluation
from lcam.explainers import build_explainer
from lcam.model.module import LCAM
from lcam.model.training import run_training
from tests.helpers import TINY, compose_train

EVAL_TINY = ["logger=csv", "data.resize=110", "data.crop=96", "data.batch_size=5", "figure_images=3",
             "trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def demo_ckpt(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo_train")
    run_training(compose_train([*TINY, "trainer.max_epochs=1", "trainer.limit_train_batches=1"], out))
    return out / "checkpoints" / "last.ckpt"


def test_forward_counter_counts_images_and_removes_its_hook(effnet):
    with ForwardCounter(effnet) as fw:
        effnet(torch.rand(3, 3, 64, 64))
        effnet.features(torch.rand(2, 3, 64, 64))
    assert fw.images == 5 and fw.per_image(5) == 1.0
    assert not effnet.feature_extractor._forward_hooks


def test_evaluate_single_method_and_lcam_with_table_and_figure(demo_ckpt, tmp_path, capsys):
    methods = ["methods=demo", "methods.scorecam=null", "methods.sscam1=null", "methods.sscam2=null",
               "methods.smoothgradcampp=null", "methods.guidedcam=null", "methods.xgradcam=null", "methods.gradcampp=null",
               "methods.rise.n_masks=40", f"methods.lcam_img.ckpt_path={demo_ckpt}"]
    rows = run_evaluation(compose_train([*EVAL_TINY, *methods], tmp_path, config_name="evaluate"))
    by = {r["method"]: r for r in rows}
    assert list(by) == ["L-CAM-Img", "Grad-CAM", "RISE"]
    assert by["L-CAM-Img"]["#FW"] == 1 and by["Grad-CAM"]["#FW"] == 1
    assert by["RISE"]["#FW"] == 40  # the masks; the top-1 class comes from the evaluator's own pass
    assert all(r["images"] == 9 and 0 <= r["AD100"] <= 100 and 0 <= r["IC15"] <= 100 for r in rows)
    table = (tmp_path / "results.md").read_text()
    assert "| L-CAM-Img |" in table and "AD100" in table and "#FW" in table and "s/img" in table
    with open(tmp_path / "results.csv") as f:
        assert [r["method"] for r in csv.DictReader(f)] == list(by)
    assert (tmp_path / "methods.png").stat().st_size > 10_000
    err = capsys.readouterr().err
    for label in by:  # one progress bar per method, with its name, ending at 9/9 images
        assert f"{label}: 100%" in err and "9.0/9 img" in err


def test_explainer_override_runs_one_method(tmp_path):
    rows = run_evaluation(compose_train([*EVAL_TINY, "explainer=xgradcam", "data.batch_size=9"], tmp_path, config_name="evaluate"))
    assert [r["method"] for r in rows] == ["xgradcam"]


def test_lcam_is_a_registered_explainer_matching_the_module(demo_ckpt, effnet):
    module = LCAM.load_from_checkpoint(demo_ckpt, map_location="cpu")
    explainer = build_explainer({"name": "lcam", "ckpt_path": str(demo_ckpt)}, effnet)
    images = torch.rand(2, 3, 96, 96)
    assert torch.equal(explainer(images), module.saliency(images)[0])
    assert torch.equal(explainer(images, [3, 4]), module.saliency(images, [3, 4])[0])
    assert explainer.model is effnet and explainer.last_forward_passes == 1 and explainer.layer == "bn2"
    own = build_explainer({"name": "lcam", "ckpt_path": str(demo_ckpt)}, None)  # brings the checkpoint's classifier
    assert own.model.spec.name == "tf_efficientnet_lite0" and torch.equal(own(images), explainer(images))
    from lcam.backbones import build_backbone

    other = build_backbone({"name": "resnet18", "source": "timm", "weights": "none"})
    with pytest.raises(ValueError, match="trained on"):
        build_explainer({"name": "lcam", "ckpt_path": str(demo_ckpt)}, other)
    with pytest.raises(FileNotFoundError, match="Checkpoint not found"):
        build_explainer({"name": "lcam", "ckpt_path": "/nope.ckpt"}, effnet)


def _fake_run(root: Path, name: str, data: str, backbone: str, mtime: float) -> Path:
    ckpt = root / name / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")
    (root / name / ".hydra").mkdir()
    (root / name / ".hydra" / "config.yaml").write_text(f"data:\n  _target_: {data}\nbackbone:\n  name: {backbone}\n")
    import os

    os.utime(ckpt, (mtime, mtime))
    return ckpt


def test_demo_evaluation_takes_only_a_checkpoint_of_the_demo_config(tmp_path):
    demo = _fake_run(tmp_path, "a", "lcam.data.DemoDataModule", "tf_efficientnet_lite0", 1000)
    _fake_run(tmp_path, "b", "lcam.data.FolderDataModule", "mobilenet_v2", 2000)  # newer, another config
    _fake_run(tmp_path, "c", "lcam.data.DemoDataModule", "mobilenet_v2", 3000)  # newest, another backbone
    assert latest_checkpoint(str(tmp_path), "tf_efficientnet_lite0") == str(demo)
    assert latest_checkpoint(str(tmp_path), "resnet50") is None
    assert latest_checkpoint(str(tmp_path / "missing")) is None


def test_a_method_without_its_checkpoint_is_skipped_loudly(tmp_path, capsys):
    from lcam.evaluation.run import method_configs

    cfg = compose_train(["logger=csv", "methods.lcam_img.ckpt_path=null"], tmp_path, config_name="evaluate")
    assert "L-CAM-Img" not in method_configs(cfg)
    assert "Skipping L-CAM-Img: methods.lcam_img.ckpt_path is not set and none was found" in capsys.readouterr().out
    one = compose_train(["logger=csv", "explainer=lcam"], tmp_path, config_name="evaluate")
    with pytest.raises(ValueError, match=r"explainer=lcam needs explainer.ckpt_path=..."):
        method_configs(one)


def test_evaluator_all_ones_map_gives_zero_drop(effnet, tmp_path):
    class Ones(torch.nn.Module):
        def forward(self, images, targets=None):
            return torch.ones(images.shape[0], *images.shape[-2:])

    import pytorch_lightning as pl

    from lcam.data.unreadable import SkippingDataLoader
    from lcam.evaluation.records import read_records
    from lcam.evaluation.sampling import EvaluationSamples, collate_samples
    from lcam.evaluation.statistics import table_rows

    ev = ExplainerEvaluator(effnet, {"ones": Ones(), "gradcam": build_explainer("gradcam", effnet)}, run_dir=str(tmp_path),
                            n_images=4, thresholds=[1.0, 0.5], progress=False)
    data = EvaluationSamples(torch.utils.data.TensorDataset(torch.rand(4, 3, 64, 64), torch.zeros(4, dtype=torch.long)))
    loader = SkippingDataLoader(data, batch_size=2, sampler=ev.sampler, collate_fn=collate_samples)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    for _ in ev.methods_in_turn():
        trainer.test(ev, loader, verbose=False)
    ones = {r["method"]: r for r in table_rows(read_records(tmp_path), ev.method_names)}["ones"]
    assert ones["AD100"] == pytest.approx(0.0, abs=1e-4) and ones["IC100"] == 0.0 and ones["#FW"] == 0
    assert ones["images"] == 4


def test_markdown_table_layout():
    md = to_markdown([{"method": "Grad-CAM", "AD100": 32.123, "IC100": 22.1, "#FW": 1.0, "s/img": 0.01234, "images": 2}])
    assert md.splitlines()[0] == "| method | AD100 | IC100 | #FW | s/img | images |"
    assert "| Grad-CAM | 32.12 | 22.10 | 1 | 0.0123 | 2 |" in md


@pytest.mark.parametrize("experiment, rise_masks", [("table1_vgg16", 4000), ("table1_resnet50", 8000)])
def test_table1_experiments_compose_with_paper_settings(experiment, rise_masks, tmp_path):
    from lcam.evaluation.run import build_explainers, method_configs

    cfg = compose_train([f"+experiment={experiment}", f"data.root={tmp_path}", "backbone.weights=none", "logger=csv"],
                        tmp_path, config_name="evaluate")
    assert cfg.methods.rise.n_masks == rise_masks and cfg.data.max_val_samples == 2000
    labels = list(method_configs(cfg))  # L-CAM entries without checkpoints are skipped
    assert labels == ["Grad-CAM", "Grad-CAM++", "Score-CAM", "RISE"]
    model, explainers = build_explainers(cfg)
    assert model.spec.name == experiment.split("_")[1] and list(explainers) == labels
    # the code behind the paper's Table 1 weighs Score-CAM's channels by the class probability
    assert explainers["Score-CAM"].weighting == "probability" and explainers["Score-CAM"].substrate == "mean"


def test_progress_bar_counts_the_time_of_the_metrics(effnet, tmp_path):
    """A slow metric (here: 0.3 s per batch, as the sanity metric's many explanations) gets its share of each batch
    on the bar, learnt from the batch before, so the bar moves with the time spent and its ETA is right."""
    import time

    import pytorch_lightning as pl

    from lcam.data.unreadable import SkippingDataLoader
    from lcam.evaluation.evaluator import MetricSpec
    from lcam.evaluation.sampling import EvaluationSamples, collate_samples

    seen: list[float] = []  # where the bar stands (in batches) when the metric starts
    bars = []

    class Slow:
        columns = ("slow",)

        def per_image(self, images, maps, targets):
            seen.append(ev._bar.n / images.shape[0])
            bars.append(ev._bar)
            time.sleep(0.3)
            return {"slow": torch.zeros(images.shape[0])}

    ev = ExplainerEvaluator(effnet, {"gradcam": build_explainer("gradcam", effnet)}, run_dir=str(tmp_path), n_images=6,
                            metrics=[MetricSpec("slow", lambda model, explainer: Slow())], progress=True)
    data = EvaluationSamples(torch.utils.data.TensorDataset(torch.rand(6, 3, 64, 64), torch.zeros(6, dtype=torch.long)))
    loader = SkippingDataLoader(data, batch_size=2, sampler=ev.sampler, collate_fn=collate_samples)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    for _ in ev.methods_in_turn():
        trainer.test(ev, loader, verbose=False)
    assert seen[0] == pytest.approx(0.5)  # first batch: half the batch before the metrics, by default
    assert seen[1] - 1 < 0.3 and seen[2] - 2 < 0.3  # then the explanation's measured share (a few ms of 0.3 s)
    assert bars[0].n == 6  # and every image counted at the end
