"""Detection API, CLI (detections.csv, overlays, bad files, targets) and the evaluation runner."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from lcam.detection.api import COLUMNS, explain_detections, parse_targets, select_targets
from lcam.detection.cli import run_detection_explain
from lcam.detection.darknet import YOLOv3Tiny
from lcam.detection.groundtruth import read_ground_truth
from lcam.detection.synthetic import BrightSquareDetector, squares_image
from lcam.explainers.targets import Box

FAST = {"name": "yolov3_tiny", "input_size": 160, "score_threshold": 0.3}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder with the cameraman (a person, 2x downscaled: 256 px), a blank image and a broken file."""
    from skimage import data

    root = tmp_path_factory.mktemp("photos")
    Image.fromarray(data.camera()).resize((256, 256)).save(root / "camera.png")
    (root / "sub").mkdir()
    Image.new("RGB", (96, 64), (128, 128, 128)).save(root / "sub" / "blank.jpg")
    (root / "broken.jpg").write_bytes(b"not a jpeg")
    return root


def _cfg(photos: Path, out: Path, **extra) -> OmegaConf:
    base = {"detector": FAST, "inputs": str(photos), "paths": {"output_dir": str(out)}, "settings": {"n_masks": 6, "s": 4},
            "progress": False, "targets": None, "max_size": 640}
    base.update(extra)
    return OmegaConf.create(base)


def test_cli_writes_csv_overlays_and_lists_bad_files(photos, tmp_path):
    summary = run_detection_explain(_cfg(photos, tmp_path))
    assert summary["explained"] == 2 and summary["failed"] == 1
    rows = list(csv.DictReader(open(tmp_path / "detections.csv")))
    assert list(rows[0]) == COLUMNS
    by_file = {Path(r["file"]).name: r for r in rows}
    assert by_file["broken.jpg"]["status"].startswith("failed: ")
    assert by_file["blank.jpg"]["status"] == "no detections"
    person = [r for r in rows if r["class_name"] == "person"][0]
    assert person["status"] == "ok" and float(person["score"]) > 0.5
    # boxes in the file's pixels (256 px): the man stands in the left half
    x1, y1, x2, y2 = (float(person[k]) for k in ("x1", "y1", "x2", "y2"))
    assert 0 <= x1 < 40 and 110 < x2 < 200 and y2 > 200 and 0 <= float(person["energy_in_box"]) <= 1
    overlay = tmp_path / f"camera_{person['detection']}_person.png"
    assert overlay.is_file() and Image.open(overlay).size == (256, 256)


def test_cli_targets_boxes_in_file_pixels_and_bad_targets(photos, tmp_path):
    cfg = _cfg(photos / "camera.png", tmp_path, targets=[[10, 20, 100, 240, "person"]], max_size=128)
    run_detection_explain(cfg)
    rows = list(csv.DictReader(open(tmp_path / "detections.csv")))
    assert len(rows) == 1 and [float(rows[0][k]) for k in ("x1", "y1", "x2", "y2")] == [10, 20, 100, 240]
    with pytest.raises(ValueError, match=r"outside the image: x in \[0, 256\], y in \[0, 256\]"):
        run_detection_explain(_cfg(photos / "camera.png", tmp_path, targets=[[10, 20, 300, 240]]))
    with pytest.raises(ValueError, match=r"valid class ids are 0\.\.79"):
        run_detection_explain(_cfg(photos / "camera.png", tmp_path, targets=80))


def test_missing_weights_fail_before_reading_images(tmp_path):
    cfg = _cfg(tmp_path / "does_not_matter", tmp_path, detector={**FAST, "weights": str(tmp_path / "nope.weights")})
    cfg.inputs = "demo"
    from lcam.detection.weights import DetectorWeightsError

    with pytest.raises(DetectorWeightsError, match="detector.weights=/path/to/yolov3-tiny.weights"):
        run_detection_explain(cfg)
    assert not (tmp_path / "detections.csv").exists()


def test_unknown_detector_and_setting_name_the_choices(photos, tmp_path):
    with pytest.raises(ValueError, match=r"Unknown detector 'yolo9'; valid: \[.*'yolov3_tiny'"):
        run_detection_explain(_cfg(photos, tmp_path, detector={"name": "yolo9"}))
    with pytest.raises(ValueError, match=r"Unknown setting\(s\) \['treshold'\] .*'score_threshold'"):
        run_detection_explain(_cfg(photos, tmp_path, detector={**FAST, "treshold": 0.2}))
    with pytest.raises(ValueError, match=r"Unknown D-RISE setting\(s\) \['masks'\]"):
        run_detection_explain(_cfg(photos, tmp_path, settings={"masks": 3}))


def test_api_one_call_with_a_detector_object_and_tensors():
    squares = [(4, 4, 14, 14), (30, 20, 44, 34)]
    det = BrightSquareDetector(squares)
    image = squares_image(48, squares)
    res = explain_detections(det, image, n_masks=20, s=4)
    assert len(res) == 1 and len(res[0]) == 2 and res[0].maps.shape == (2, 48, 48)
    assert res[0].records()[0]["class_name"] == "square0"
    only = explain_detections(det, image, targets="square1", n_masks=20, s=4)[0]
    assert len(only) == 1 and int(only.targets.labels[0]) == 1
    assert torch.allclose(only.maps[0], res[0].maps[1])  # same seed and masks: the same map
    none = explain_detections(det, torch.full((1, 3, 48, 48), 0.2), n_masks=4)[0]
    assert len(none) == 0 and none.records()[0]["status"] == "no detections"


def test_parse_targets_forms():
    det = YOLOv3Tiny(weights="none")
    assert parse_targets(0.3, det).score == 0.3 and parse_targets("person", det).class_id == 0
    spec = parse_targets({"score": 0.2, "class": 16}, det)
    assert spec.score == 0.2 and spec.class_id == 16
    assert parse_targets([1, 2, 3, 4], det).boxes == [Box(1.0, 2.0, 3.0, 4.0, None)]
    # the shared Box target of lcam.explainers.targets, its class resolved by name
    assert parse_targets(Box(1, 2, 3, 4, "dog"), det).boxes == [Box(1.0, 2.0, 3.0, 4.0, 16)]
    assert parse_targets([[1, 2, 3, 4, "dog"]], det).boxes == parse_targets([Box(1, 2, 3, 4, 16)], det).boxes
    with pytest.raises(ValueError, match="x1 < x2"):
        parse_targets([[5, 2, 3, 4]], det)
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['klass'\]"):
        parse_targets({"klass": 1}, det)
    # a box without a class borrows the best-overlapping proposal's vector
    from lcam.detection.base import Detections

    props = Detections(torch.tensor([[0.0, 0, 10, 10], [20.0, 20, 40, 40]]), torch.eye(80)[[3, 7]], torch.tensor([0.9, 0.8]))
    targets, scores = select_targets(parse_targets([[40, 40, 80, 80]], det), det, props, (50, 50), (2.0, 2.0))
    assert int(targets.labels[0]) == 7 and torch.allclose(targets.boxes[0], torch.tensor([20.0, 20, 40, 40]))
    assert scores[0] == pytest.approx(0.8)


def test_ground_truth_file(tmp_path):
    det = YOLOv3Tiny(weights="none")
    f = tmp_path / "gt.txt"
    f.write_text("# name x1 y1 x2 y2 [class]\ncamera 10 20 30 40 person\ncamera.png 0 0 8 8\nother 1 1 2 2 16\n")
    gt = read_ground_truth(f, det)
    assert len(gt) == 3

    class Item:
        name, file = "camera", "/x/camera.png"

    boxes, labels = gt.get(Item(), (2.0, 2.0))
    assert torch.equal(boxes, torch.tensor([[5.0, 10, 15, 20]])) and labels.tolist() == [0]
    f.write_text("camera 10 20 5 40\n")
    with pytest.raises(ValueError, match=r"gt.txt:1: box .* needs x1 < x2"):
        read_ground_truth(f, det)
    f.write_text("camera 1 2 3 4 unicorn\n")
    with pytest.raises(ValueError, match=r"gt.txt:1: Detector yolov3_tiny: Unknown class name 'unicorn'"):
        read_ground_truth(f, det)


def test_evaluation_runner_writes_table_and_figures(photos, tmp_path):
    from lcam.detection.evaluate import run_detection_evaluation
    from tests.helpers import compose_train

    gt = tmp_path / "gt.txt"
    gt.write_text("camera 0 20 150 256 person\n")
    cfg = compose_train(["+experiment=drise_demo", "logger=csv", "detector.input_size=160", "drise.n_masks=6", "drise.s=4",
                         "detection_metrics.n_steps=3", "folder_metrics.n_steps=3", f"detection_data.inputs={photos}",
                         f"detection_data.ground_truth={gt}"], tmp_path, config_name="evaluate")
    rows = run_detection_evaluation(cfg)
    assert rows[-1]["image"] == "mean"
    person = [r for r in rows if r.get("class") == "person"][0]
    assert 0 <= person["deletion_image_ap"] <= 1 and 0 <= person["insertion_similarity"] <= 1
    for name in ("results.md", "results.csv", "detections.png", "curves.png", "folder_map.md", "folder_map.csv", "folder_map.png"):
        assert (tmp_path / name).is_file()
    assert "| camera | 0 | person |" in (tmp_path / "results.md").read_text()
    assert "per-image diagnostic" in (tmp_path / "results.md").read_text()
    # the paper's protocol over the folder (camera + blank; the broken file is skipped): one curve per explainer
    folder = (tmp_path / "folder_map.md").read_text()
    assert "mAP over the folder of 2 images" in folder and "against 1 ground-truth boxes" in folder
    points = list(csv.DictReader(open(tmp_path / "folder_map.csv")))
    assert {p["explainer"] for p in points} == {"drise", "box", "random"} and len(points) == 3 * 2 * 4
    curve = {(p["explainer"], p["mode"], float(p["fraction"])): float(p["map"]) for p in points}
    assert curve[("drise", "deletion", 0.0)] == curve[("random", "deletion", 0.0)] == 1.0  # the person is found
    assert curve[("drise", "deletion", 1.0)] == curve[("drise", "insertion", 0.0)]  # both the fully blurred folder
    # no ground truth: the output says the curve is against the detector's own detections
    out = tmp_path / "own"
    cfg = compose_train(["+experiment=drise_demo", "logger=csv", "detector.input_size=160", "drise.n_masks=6", "drise.s=4",
                         "detection_metrics.n_steps=1", "folder_metrics.n_steps=2", "folder_metrics.reference=[]",
                         f"detection_data.inputs={photos / 'camera.png'}"], out, config_name="evaluate")
    run_detection_evaluation(cfg)
    assert "against the detector's own detections on the unperturbed images (no ground truth)" in (out / "folder_map.md").read_text()


def test_match_detections_and_average_map():
    from lcam.detection.analysis import AverageMap, crop_to_box, match_detections

    boxes = torch.tensor([[0.0, 0, 10, 10], [1.0, 1, 10, 10], [50.0, 50, 60, 60]])
    labels, scores = torch.tensor([1, 1, 2]), torch.tensor([0.6, 0.9, 0.8])
    gt = torch.tensor([[0.0, 0, 10, 10], [50.0, 50, 60, 60], [80.0, 80, 90, 90]])
    det_ok, gt_ok = match_detections(boxes, labels, scores, gt, torch.tensor([1, -1, 3]))
    # box 1 (best score, IoU 0.81) takes GT 0, box 0 is then a duplicate; box 2 matches the any-class GT
    assert det_ok.tolist() == [False, True, True] and gt_ok.tolist() == [True, True, False]
    sal = torch.zeros(20, 20)
    sal[5:15, 5:15] = torch.arange(10.0).view(1, 10).expand(10, 10)  # a ramp to the right inside the box
    crop = crop_to_box(sal, (5, 5, 15, 15), (10, 10))
    assert torch.allclose(crop, torch.arange(10.0).view(1, 10).expand(10, 10) / 9)
    avg = AverageMap((10, 10))
    avg.add(torch.stack([sal, sal.flip(1)]), torch.tensor([[5.0, 5, 15, 15], [5.0, 5, 15, 15]]))
    assert avg.count == 2 and torch.allclose(avg.value(), torch.full((10, 10), 0.5))


def test_cli_ground_truth_analysis(photos, tmp_path):
    gt = tmp_path / "gt.txt"
    gt.write_text("camera 180 10 250 60 car\n")  # no car there: the person is a false positive, the car box missed
    summary = run_detection_explain(_cfg(photos / "camera.png", tmp_path / "out", ground_truth=str(gt)))
    assert summary["explained"] == 1
    rows = list(csv.DictReader(open(tmp_path / "out" / "detections.csv")))
    assert [r["status"] for r in rows] == ["false positive", "missed"]
    assert rows[1]["class_name"] == "car" and [float(rows[1][k]) for k in ("x1", "y1", "x2", "y2")] == [180, 10, 250, 60]
    for name in ("average_map.png", "average_map.npy", "false_positives.png", "missed.png"):
        assert (tmp_path / "out" / "analysis" / name).is_file()
    assert (tmp_path / "out" / "camera_missed0_car.png").is_file()
