"""Localisation and comparison metrics: hand-computed values on tiny maps and boxes."""
from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from lcam.metrics.localisation import (
    EnergyPointingGame,
    LocalisationMetrics,
    MaskOverlap,
    PointingGame,
    WinRate,
    ZoneTest,
    box_masks,
    pad_boxes,
    random_point_hit_rate,
    win_rate_table,
)

# 4x4 maps; box (1, 1, 3, 3) covers rows 1-2 and columns 1-2 (4 pixels)
BOX = [[1.0, 1.0, 3.0, 3.0]]


def indicator() -> Tensor:
    m = torch.zeros(1, 4, 4)
    m[0, 1:3, 1:3] = 1.0
    return m


def run(metric, maps: Tensor, boxes, images: Tensor | None = None, targets: Tensor | None = None) -> dict:
    b = maps.shape[0]
    images = torch.ones(b, 3, *maps.shape[-2:]) if images is None else images
    metric.update(images, maps, torch.zeros(b, dtype=torch.long) if targets is None else targets, pad_boxes(boxes))
    return {k: float(v) for k, v in metric.compute().items()}


class PixelWeightModel(nn.Module):
    """Two classes; class-0 probability = sum(w * x[:, 0]) / sum(w) for images in [0, 1]."""

    def __init__(self, weights: Tensor) -> None:
        super().__init__()
        self.register_buffer("w", weights / weights.sum())

    def forward(self, x: Tensor) -> Tensor:
        p = (x[:, 0] * self.w).sum(dim=(1, 2)).clamp(1e-7, 1 - 1e-7)
        return torch.stack([p.log(), (1 - p).log()], dim=1)


def test_box_mask_covers_pixel_centres_inside():
    mask = box_masks(pad_boxes([BOX]), (4, 4))[0]
    assert mask.sum() == 4 and mask[1:3, 1:3].all()
    # a fractional box covers the pixels whose centres lie inside: x in [0.4, 1.6] -> columns 0 and 1
    mask = box_masks(pad_boxes([[[0.4, 0.0, 1.6, 1.0]]]), (4, 4))[0]
    assert mask[0].tolist() == [True, True, False, False] and mask.sum() == 2


def test_box_indicator_map_scores_one_everywhere():
    out = run(PointingGame(), indicator(), [BOX])
    assert out["PG"] == 100.0
    assert run(EnergyPointingGame(), indicator(), [BOX])["EPG"] == pytest.approx(100.0)
    ov = run(MaskOverlap(), indicator(), [BOX])
    assert ov["IoU"] == pytest.approx(100.0) and ov["Dice"] == pytest.approx(100.0)
    ov = run(MaskOverlap(threshold=None, keep_top=0.25), indicator(), [BOX])
    assert ov["IoU"] == pytest.approx(100.0)


def test_pointing_game_tolerance_and_several_boxes():
    m = torch.zeros(1, 4, 4)
    m[0, 0, 0] = 1.0  # maximum at pixel centre (0.5, 0.5): 0.707 px from the box corner (1, 1)
    assert run(PointingGame(), m, [BOX])["PG"] == 0.0
    assert run(PointingGame(tolerance=0.7), m, [BOX])["PG"] == 0.0
    assert run(PointingGame(tolerance=0.71), m, [BOX])["PG"] == 100.0
    # a hit on any of several boxes counts
    assert run(PointingGame(), m, [[*BOX, [0.0, 0.0, 1.0, 1.0]]])["PG"] == 100.0
    # two images: one hit, one miss -> 50%
    maps = torch.cat([indicator(), m])
    assert run(PointingGame(), maps, [BOX, BOX])["PG"] == 50.0


def test_images_without_boxes_are_left_out():
    metric = PointingGame()
    maps = torch.cat([indicator(), torch.zeros(1, 4, 4)])
    out = run(metric, maps, [BOX, []])
    assert out["PG"] == 100.0 and metric.count == 1 and metric.skipped == 1


def test_energy_pointing_game_by_hand():
    m = torch.arange(16, dtype=torch.float32).view(1, 4, 4)  # box holds 5 + 6 + 9 + 10 = 30 of 120
    assert run(EnergyPointingGame(), m, [BOX])["EPG"] == pytest.approx(25.0)
    assert run(EnergyPointingGame(), torch.zeros(1, 4, 4), [BOX])["EPG"] == 0.0


def test_iou_and_dice_by_hand():
    m = torch.zeros(1, 4, 4)
    m[0, 0:2, 0:2] = 0.8  # 4 px, 1 of them inside the box: IoU 1/7, Dice 2/8
    ov = run(MaskOverlap(threshold=0.5), m, [BOX])
    assert ov["IoU"] == pytest.approx(100 / 7, abs=1e-4) and ov["Dice"] == pytest.approx(25.0)
    assert run(MaskOverlap(threshold=0.9), m, [BOX])["IoU"] == 0.0  # nothing salient
    # keep the top 12.5% (2 px, values 15 and 14 in row 3, outside the box) -> IoU 0
    ramp = torch.arange(16, dtype=torch.float32).view(1, 4, 4)
    assert run(MaskOverlap(threshold=None, keep_top=0.125), ramp, [BOX])["IoU"] == 0.0
    # top 50% = rows 2-3 (8 px), box rows 1-2 cols 1-2: intersection 2, union 10
    assert run(MaskOverlap(threshold=None, keep_top=0.5), ramp, [BOX])["IoU"] == pytest.approx(20.0)


def test_random_point_baseline_is_the_covered_share():
    boxes = pad_boxes([BOX])
    assert float(random_point_hit_rate(boxes, (4, 4))) == pytest.approx(0.25)
    # 0.5 px tolerance adds the 8 edge neighbours (centre 0.5 px away), not the 4 diagonal ones
    assert float(random_point_hit_rate(boxes, (4, 4), tolerance=0.5)) == pytest.approx(12 / 16)
    # a tolerance per image (stored-image pixels times each photo's scale): each image gets its own
    two = torch.cat([boxes, boxes])
    assert random_point_hit_rate(two, (4, 4), torch.tensor([0.0, 0.5])).tolist() == pytest.approx([0.25, 12 / 16])


def test_zone_test_by_hand():
    weights = torch.tensor([4.0, 3.0, 2.0, 1.0]).view(4, 1).expand(4, 4)  # rows worth 16, 12, 8, 4 of 40
    model = PixelWeightModel(weights)
    m = torch.zeros(1, 4, 4)
    m[0, 0] = 1.0  # salient zone = row 0
    out = run(ZoneTest(model), m, [BOX])
    # Y = 1; only row 0 kept: p = 16/40 -> drop 60%; row 0 removed: p = 24/40 -> drop 40%
    assert out["ZoneKeep"] == pytest.approx(60.0, abs=1e-3)
    assert out["ZoneDrop"] == pytest.approx(40.0, abs=1e-3)
    assert out["ZoneKeepIC"] == 0.0 and out["ZoneDropIC"] == 0.0


def test_win_rate_by_hand():
    metric = WinRate(2)
    # method 0 lower on images 0, 1; tie on 2; higher on 3 -> 2.5 of 4 = 62.5%
    metric.update(torch.tensor([[0.1, 0.2], [0.0, 0.5], [0.3, 0.3], [0.9, 0.1]]))
    win = metric.compute()
    assert float(win[0, 1]) == pytest.approx(62.5) and float(win[1, 0]) == pytest.approx(37.5)
    assert math.isnan(float(win[0, 0]))
    # drops equal up to float rounding tie
    near = WinRate(2)
    near.update(torch.tensor([[0.3, 0.3 + 1e-7], [0.5 + 1e-7, 0.5]]))
    assert float(near.compute()[0, 1]) == pytest.approx(50.0)
    names, table = win_rate_table({"a": torch.tensor([0.1, 0.2]), "b": torch.tensor([0.2, 0.3])})
    assert names == ["a", "b"] and float(table[0, 1]) == 100.0
    with pytest.raises(ValueError, match="same images"):
        win_rate_table({"a": torch.tensor([0.1]), "b": torch.tensor([0.2, 0.3])})


def test_localisation_metrics_combine_the_columns():
    weights = torch.tensor([4.0, 3.0, 2.0, 1.0]).view(4, 1).expand(4, 4)
    metric = LocalisationMetrics(PixelWeightModel(weights))
    maps = torch.cat([indicator(), indicator()])
    out = run(metric, maps, [BOX, []])
    assert out["PG"] == 100.0 and out["EPG"] == pytest.approx(100.0) and out["IoU"] == pytest.approx(100.0)
    # zone = rows 1-2, cols 1-2 (weights 3+3+2+2 = 10 of 40): keep -> drop 75%, context -> drop 25%
    assert out["ZoneKeep"] == pytest.approx(75.0, abs=1e-3) and out["ZoneDrop"] == pytest.approx(25.0, abs=1e-3)
    assert metric.box_count == 1 and metric.count == 2
    torch.testing.assert_close(metric.image_drops(), torch.tensor([0.75, 0.75]), atol=1e-5, rtol=0)


def test_bad_settings_and_shapes_raise():
    with pytest.raises(ValueError, match="exactly one of threshold"):
        MaskOverlap(threshold=0.5, keep_top=0.2)
    with pytest.raises(ValueError, match="keep_top"):
        MaskOverlap(threshold=None, keep_top=1.5)
    with pytest.raises(ValueError, match="tolerance"):
        PointingGame(tolerance=-1)
    with pytest.raises(ValueError, match=r"boxes must be \(B=1, K, 4\)"):
        PointingGame().update(torch.ones(1, 3, 4, 4), indicator(), torch.zeros(1), torch.zeros(1, 4))


def test_states_merge_as_ddp_reduces_them():
    """Two halves merged (what DDP's sum/cat reduction does) equal one metric over the whole batch."""
    weights = torch.ones(4, 4)
    maps = torch.rand(6, 4, 4, generator=torch.Generator().manual_seed(0))
    boxes = [BOX, [], [[0.0, 0.0, 2.0, 4.0]], BOX, [[2.0, 2.0, 4.0, 4.0], [0.0, 0.0, 1.0, 1.0]], BOX]
    images, targets = torch.rand(6, 3, 4, 4, generator=torch.Generator().manual_seed(1)), torch.zeros(6, dtype=torch.long)
    whole = LocalisationMetrics(PixelWeightModel(weights))
    whole.update(images, maps, targets, pad_boxes(boxes))
    a, b = LocalisationMetrics(PixelWeightModel(weights)), LocalisationMetrics(PixelWeightModel(weights))
    a.update(images[:2], maps[:2], targets[:2], pad_boxes(boxes[:2]))
    b.update(images[2:], maps[2:], targets[2:], pad_boxes(boxes[2:]))
    a.merge_state(b)
    for key, value in whole.compute().items():
        assert float(a.compute()[key]) == pytest.approx(float(value), abs=1e-4), key


# -- boxes file and boxes that follow the image -----------------------------------------------------
def _rect_photo(size: tuple[int, int], box: tuple[int, int, int, int]):
    import numpy as np
    from PIL import Image

    a = np.zeros((size[1], size[0], 3), np.uint8)
    a[box[1]:box[3], box[0]:box[2]] = 255
    return Image.fromarray(a)


def test_read_boxes_warns_once_per_bad_line(tmp_path):
    from lcam.data.boxes import BoxWarning, read_boxes

    f = tmp_path / "boxes.txt"
    f.write_text("# name x1 y1 x2 y2\n\na.jpg 1 2 30 40\na.jpg 5 5 9 9\nb.jpg 1 2 3\nc.jpg 1 2 x 4\nd.jpg 10 2 3 4\ne.jpg 0 0 5 5\n")
    with pytest.warns(BoxWarning) as record:
        boxes = read_boxes(f)
    messages = [str(w.message) for w in record]
    assert len(messages) == 3
    assert "boxes.txt:5: cannot parse" in messages[0] and "expected 5 fields" in messages[0]
    assert "boxes.txt:6:" in messages[1] and "boxes.txt:7:" in messages[2] and "x2 > x1" in messages[2]
    assert boxes.boxes["a.jpg"] == [(1, 2, 30, 40), (5, 5, 9, 9)] and boxes.lines["a.jpg"] == [3, 4]
    assert boxes.bad == {"b.jpg", "c.jpg", "d.jpg"} and len(boxes) == 3
    with pytest.raises(FileNotFoundError, match="boxes=/path/to/boxes.txt"):
        read_boxes(tmp_path / "missing.txt")


def test_boxes_follow_resize_and_centre_crop_like_the_pixels(tmp_path):
    from lcam.data.boxes import follow_transform
    from lcam.data.transforms import eval_transform

    tf = eval_transform(resize=64, crop=48)
    for size, box in [((100, 75), (50, 25, 65, 35)), ((60, 90), (5, 40, 30, 80)), ((80, 80), (0, 20, 80, 30))]:
        x = tf(_rect_photo(size, box))[0]
        ys, xs = torch.nonzero(x > 0.5, as_tuple=True)
        moved, out_size = follow_transform(torch.tensor([box], dtype=torch.float32), size, tf)
        assert out_size == (48, 48)
        seen = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
        torch.testing.assert_close(moved[0], seen, atol=1.0, rtol=0)  # the bright pixels, to a pixel
    # a box the crop removes entirely is dropped; a box across the edge is clipped
    moved, _ = follow_transform(torch.tensor([[0.0, 0.0, 5.0, 5.0], [0.0, 20.0, 40.0, 30.0]]), (100, 50), tf)
    assert moved.shape == (1, 4) and float(moved[0, 0]) == 0.0
    from torchvision import transforms as T

    with pytest.raises(ValueError, match="cannot follow the transform RandomHorizontalFlip"):
        follow_transform(torch.zeros(1, 4), (10, 10), T.Compose([T.RandomHorizontalFlip(), T.ToTensor()]))


def test_boxed_dataset_statuses_and_batches(tmp_path):
    from torch.utils.data import DataLoader

    from lcam.data.boxes import BAD_BOXES, NO_BOXES, OK, BoxedDataset, BoxWarning
    from lcam.data.datasets import ImageListDataset
    from lcam.data.transforms import eval_transform

    photos = [_rect_photo((40, 40), (10, 10, 20, 20)) for _ in range(3)]
    ds = ImageListDataset(photos, [1, 2, 3], eval_transform(resize=40, crop=40), names=["a.jpg", "b.jpg", "c.jpg"])
    f = tmp_path / "boxes.txt"
    f.write_text("a.jpg 10 10 20 20\na.jpg 0 0 5 5\nc.jpg 10 10 50 20\n")
    with pytest.warns(BoxWarning, match=r"boxes.txt:3: box 10 10 50 20 lies outside the 40x40 image c.jpg"):
        boxed = BoxedDataset(ds, f)
    assert boxed.status == [OK, NO_BOXES, BAD_BOXES] and boxed.counts() == {OK: 1, NO_BOXES: 1, BAD_BOXES: 1}
    images, labels, boxes = next(iter(DataLoader(boxed, batch_size=3)))
    assert images.shape == (3, 3, 40, 40) and labels.tolist() == [1, 2, 3] and boxes.shape == (3, 2, 4)
    torch.testing.assert_close(boxes[0], torch.tensor([[10.0, 10, 20, 20], [0, 0, 5, 5]]))
    assert torch.isnan(boxes[1:]).all()
    # the boxes feed the metrics directly: the rectangle's indicator map hits, image 1 and 2 are skipped
    maps = images[:, 0]
    metric = PointingGame()
    metric.update(images, maps, labels, boxes)
    assert float(metric.compute()["PG"]) == 100.0 and metric.skipped == 2


# -- evaluate.py boxes=FILE ---------------------------------------------------------------------------
def test_evaluate_with_boxes_adds_the_columns_and_a_win_rate_table(tmp_path):  # noqa: PLR0915
    import csv

    from lcam.data.boxes import BoxWarning
    from lcam.data.demo import demo_photos
    from lcam.evaluation.run import run_evaluation
    from tests.helpers import compose_train

    lines = ["# name x1 y1 x2 y2"]
    for name, img in demo_photos():
        if name != "clock":  # an image without boxes
            w, h = img.size
            lines.append(f"{name} {0.2 * w:.1f} {0.1 * h:.1f} {0.8 * w:.1f} {0.9 * h:.1f}")
    lines.append("coffee 1 2 3")  # does not parse: coffee is left out of the box columns
    boxes = tmp_path / "boxes.txt"
    boxes.write_text("\n".join(lines) + "\n")
    drop = [f"methods.{k}=null" for k in ("lcam_img", "gradcampp", "smoothgradcampp", "guidedcam", "scorecam", "sscam1",
                                           "sscam2", "rise")]
    overrides = ["logger=csv", "data.resize=72", "data.crop=64", "data.batch_size=5", "+data.max_val_samples=5", "figure_images=0",
                 "methods=demo", *drop, f"boxes={boxes}", "localisation.tolerance=100"]
    with pytest.warns(BoxWarning, match="boxes.txt:.*cannot parse 'coffee 1 2 3'"):
        rows = run_evaluation(compose_train(overrides, tmp_path / "run", config_name="evaluate"))
    assert [r["method"] for r in rows] == ["Grad-CAM", "XGrad-CAM"]
    for row in rows:
        for col in ("PG", "EPG", "IoU", "Dice", "ZoneKeep", "ZoneDrop"):
            assert 0.0 <= row[col] <= 100.0, (col, row[col])
        assert row["PG"] >= 50.0  # central boxes covering 48% of the crop; 100 stored px (the photos are 300-512 px) ~ 10-17 crop px
    with open(tmp_path / "run" / "results.csv") as f:
        header = next(csv.reader(f))
    assert {"PG", "EPG", "IoU", "Dice", "ZoneKeep", "ZoneDrop"} <= set(header)
    win = (tmp_path / "run" / "results.md").read_text()
    assert "### Win%" in win and "| Grad-CAM | – |" in win and "| XGrad-CAM |" in win
    with open(tmp_path / "run" / "win_rate.csv") as f:
        table = list(csv.reader(f))
    assert table[0] == ["method", "Grad-CAM", "XGrad-CAM"]
    assert float(table[1][2]) + float(table[2][1]) == pytest.approx(100.0)


def test_evaluation_samples_carry_boxes_and_scales_and_keep_unreadable_images(tmp_path):
    from lcam.data.boxes import UNREADABLE, BoxedDataset
    from lcam.data.datasets import ImageListDataset
    from lcam.data.transforms import eval_transform
    from lcam.data.unreadable import SkippingDataLoader
    from lcam.evaluation.sampling import EvaluationSamples, collate_samples

    files = []
    for name in ("a.png", "b.png"):
        _rect_photo((80, 80), (20, 20, 40, 40)).save(tmp_path / name)
        files.append(tmp_path / name)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    files.append(tmp_path / "broken.png")
    ds = ImageListDataset(files, [0, 1, 2], eval_transform(resize=40, crop=40), names=[f.name for f in files],
                          skip_unreadable=True)
    (tmp_path / "boxes.txt").write_text("a.png 20 20 40 40\nbroken.png 1 1 5 5\n")
    boxed = BoxedDataset(ds, str(tmp_path / "boxes.txt"))
    assert boxed.status[2] == UNREADABLE
    assert boxed.scales[0].item() == pytest.approx(0.5) and math.isnan(boxed.scales[1].item())  # b.png has no boxes
    loader = SkippingDataLoader(EvaluationSamples(ds, boxed), batch_size=3, collate_fn=collate_samples, max_bad_fraction=0.5)
    batch = next(iter(loader))
    assert batch["images"].shape[0] == 2 and batch["labels"].tolist() == [0, 1] and batch["indices"].tolist() == [0, 1]
    assert batch["boxes"].shape == (2, 1, 4) and batch["boxes"][0, 0].tolist() == [10.0, 10.0, 20.0, 20.0]
    assert [i for i, _, _ in batch["unreadable"]] == [2]


def test_pointing_tolerance_is_measured_in_stored_image_pixels():
    from lcam.metrics import LocalisationMetrics

    maps = torch.zeros(2, 32, 32)
    maps[:, 5, 25] = 1.0  # the maximum, 5 px right of the box edge at x = 20 (pixel centre 25.5 -> distance 5.5)
    boxes = torch.tensor([[[0.0, 0.0, 20.0, 32.0]], [[0.0, 0.0, 20.0, 32.0]]])
    metric = LocalisationMetrics(lambda x: torch.zeros(x.shape[0], 3), tolerance=15)
    images, targets = torch.rand(2, 3, 32, 32), torch.zeros(2, dtype=torch.long)
    # 15 stored px: 7.5 map px at scale 0.5 (hit), 3 map px at scale 0.2 (miss); without scales 15 map px
    pg = metric.per_image(images, maps, targets, boxes, torch.tensor([0.5, 0.2]))["PG"]
    assert pg.tolist() == [100.0, 0.0]
    assert metric.per_image(images, maps, targets, boxes)["PG"].tolist() == [100.0, 100.0]


def test_localisation_is_cued_by_the_label_unless_told_top1(tmp_path):
    """Labels that are not the prediction: ``localisation.target=label`` explains them (and the maps
    and box columns change), ``top1`` explains the prediction; AD/IC explain the prediction in both."""
    from lcam.data.demo import demo_photos
    from lcam.evaluation.records import read_records
    from lcam.evaluation.run import run_evaluation
    from tests.helpers import compose_train

    folder = tmp_path / "photos"
    folder.mkdir()
    boxes, labels = [], []
    for i, (name, img) in enumerate(demo_photos()[:4]):
        img.save(folder / f"{name}.png")
        w, h = img.size
        boxes.append(f"{name}.png {0.1 * w:.1f} {0.1 * h:.1f} {0.4 * w:.1f} {0.5 * h:.1f}")
        labels.append(f"{name}.png {[1, 300, 600, 900][i]}")  # classes the photos do not show
    (tmp_path / "boxes.txt").write_text("\n".join(boxes) + "\n")
    (tmp_path / "labels.txt").write_text("\n".join(labels) + "\n")
    common = ["logger=csv", "data=folder", f"data.root={folder}", f"data.val_root={folder}",
              f"data.val_list={tmp_path / 'labels.txt'}", "data.resize=72", "data.crop=64", "data.batch_size=4",
              "data.num_workers=0", "explainer=gradcam", "progress=false", "figure_images=0", f"boxes={tmp_path / 'boxes.txt'}"]
    out = {}
    for cue in ("label", "top1"):
        run_evaluation(compose_train([*common, f"localisation.target={cue}"], tmp_path / cue, config_name="evaluate"))
        out[cue] = {r["index"]: r for r in read_records(tmp_path / cue)}
    for i in range(4):
        lab, top = out["label"][i], out["top1"][i]
        assert lab["loc_target"] == lab["label"] == [1, 300, 600, 900][i] and top["loc_target"] == top["target"]
        assert lab["target"] == top["target"] != lab["label"]  # AD/IC: the prediction in both runs
        assert lab["AD100"] == top["AD100"]
    assert any(out["label"][i]["EPG"] != pytest.approx(out["top1"][i]["EPG"]) for i in range(4))
