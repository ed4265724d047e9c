"""The Python explain API: inputs, targets, results, baselines, analysis views, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import lcam
from lcam.data import demo_photos
from lcam.data.transforms import eval_transform as make_transform
from lcam.evaluation import ForwardCounter
from lcam.explain import Explanation, make_engine
from lcam.explain.analysis import class_specific_view, method_comparison, misclassification_view
from lcam.explain.inputs import InputError
from tests.explain_helpers import tiny_model

SMALL = {"resize": 80, "crop": 64}  # the demo photos at 64 px: fast, real classifier


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory)


@pytest.fixture(scope="module")
def photos():
    return dict(demo_photos()[:4])  # chelsea, coffee, rocket, astronaut


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory, photos):
    """The photos as files in several formats: JPEG, grayscale PNG, RGBA PNG, 16-bit PNG."""
    root = tmp_path_factory.mktemp("photos")
    names = list(photos)
    photos[names[0]].save(root / f"{names[0]}.jpg", quality=95)
    photos[names[1]].convert("L").save(root / f"{names[1]}.png")
    photos[names[2]].convert("RGBA").save(root / f"{names[2]}.png")
    gray16 = (np.asarray(photos[names[3]].convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(gray16).save(root / f"{names[3]}.png")
    return root


def test_top1_maps_classes_probs_match_the_classifier(model, photos):
    result = model.explain(photos, **SMALL)
    assert isinstance(result, Explanation) and result.method == "lcam"
    assert result.maps.shape == (4, 64, 64) and result.maps.dtype == torch.float32
    assert float(result.maps.min()) >= 0 and float(result.maps.max()) <= 1
    assert result.names == list(photos)
    tf = make_transform(80, 64, model.backbone_spec.interpolation)
    x = torch.stack([tf(img) for img in photos.values()])
    with torch.no_grad():
        probs = model.backbone(x).softmax(1)
    assert torch.equal(result.classes, probs.argmax(1))
    assert torch.allclose(result.probs, probs.max(1).values, atol=1e-5)
    # the same maps as the module's own one-pass saliency
    maps, _, _ = model.saliency(x)
    assert torch.allclose(result.maps, maps, atol=1e-5)
    assert result.class_names == [model.backbone.class_name(int(c)) for c in result.classes]


def test_pil_paths_folder_glob_and_tensor_agree(model, photos, photo_dir):
    files = sorted(photo_dir.iterdir())
    by_paths = model.explain([str(f) for f in files], **SMALL)
    by_folder = model.explain(photo_dir, **SMALL)
    by_glob = model.explain(str(photo_dir / "*.png"), **SMALL)
    assert by_paths.maps.shape == (4, 64, 64)
    assert torch.equal(by_paths.maps, by_folder.maps) and by_folder.names == [f.stem for f in files]
    assert by_glob.num_images == 3 and all(f.endswith(".png") for f in by_glob.files)
    # a tensor is used as is
    x = torch.stack([make_transform(80, 64, model.backbone_spec.interpolation)(p) for p in photos.values()])
    by_tensor = model.explain(x)
    by_pil = model.explain(list(photos.values()), **SMALL)
    assert torch.allclose(by_tensor.maps, by_pil.maps, atol=1e-6)
    assert by_tensor.names == ["image0", "image1", "image2", "image3"]
    single = model.explain(x[0])  # (3, H, W)
    assert single.maps.shape == (1, 64, 64)
    u8 = model.explain((x * 255).round().to(torch.uint8))
    assert u8.maps.shape == (4, 64, 64)


def test_targets_per_image_by_id_and_name(model, photos):
    result = model.explain(photos, targets=[281, "tiger cat", 967, "Egyptian cat"], **SMALL)
    assert result.classes.tolist() == [281, 282, 967, 285]
    assert result.class_names[1] == "tiger cat"
    same = model.explain(photos, targets=281, **SMALL)
    assert same.classes.tolist() == [281] * 4
    assert torch.allclose(same.maps[0], result.maps[0])
    assert not torch.allclose(result.maps[0], result.maps[1])  # a different class, a different map


def test_topk_rows_are_image_major_and_sorted(model, photos):
    result = model.explain(photos, targets="topk", k=3, **SMALL)
    assert len(result) == 12 and result.maps.shape == (12, 64, 64)
    assert result.image_index.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert result.ranks.tolist() == [0, 1, 2] * 4
    probs = result.probs.view(4, 3)
    assert bool((probs[:, :-1] >= probs[:, 1:]).all())
    top1 = model.explain(photos, **SMALL)
    assert torch.equal(result.classes.view(4, 3)[:, 0], top1.classes)
    assert [r["rank"] for r in result.records()][:3] == [1, 2, 3]


@pytest.mark.parametrize("targets, match", [
    (1000, r"Class id 1000 out of range: valid class ids are 0\.\.999"),
    ([-1, 2, 3, 4], r"Class id -1 out of range"),
    ([1, 2], r"Got 2 targets for 4 images"),
    ("tabbby", r"Unknown class name 'tabbby'; did you mean 'tabby'"),
])
def test_bad_targets_are_one_line_errors(model, photos, targets, match):
    with pytest.raises(InputError, match=match) as err:
        model.explain(photos, targets=targets, **SMALL)
    assert "\n" not in str(err.value)


def test_bad_k_method_and_inputs(model, photos, tmp_path):
    with pytest.raises(InputError, match=r"k must be an integer in 1\.\.1000"):
        model.explain(photos, targets="topk", k=0)
    with pytest.raises(InputError, match=r"Unknown method 'gradcan'; valid choices: lcam, .*\bgradcam\b"):
        model.explain(photos, method="gradcan")
    with pytest.raises(InputError, match="method 'lcam' needs ckpt_path: pass an L-CAM model or checkpoint"):
        lcam.explain(model.backbone, photos, method="lcam")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="No images to explain"):
        model.explain(tmp_path / "empty")
    with pytest.raises(InputError, match="Input not found"):
        model.explain(tmp_path / "missing.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    with pytest.raises(InputError, match="Cannot read image .*bad.jpg"):
        model.explain([bad])
    with pytest.raises(InputError, match=r"must be in \[0, 1\]"):
        model.explain(torch.rand(1, 3, 32, 32) * 4 - 2)


def test_uncropped_images_keep_their_aspect(model, photos):
    result = model.explain(photos, crop=None, resize=64)
    sizes = [img.size for img in photos.values()]  # (W, H)
    assert isinstance(result.maps, list) and len(result.maps) == 4
    for m, (w, h) in zip(result.maps, sizes):
        assert min(m.shape) == 64
        assert abs(m.shape[1] / m.shape[0] - w / h) < 0.05
    assert result.names == list(photos)  # input order kept although shapes were grouped
    assert len(result.overlays()) == 4


def test_overlays_and_atomic_save(model, photos, tmp_path, monkeypatch):
    result = model.explain(photos, targets="topk", k=2, **SMALL)
    overlays = result.overlays()
    assert len(overlays) == 8 and overlays[0].size == (64, 64) and overlays[0].mode == "RGB"
    paths = result.save(tmp_path / "out", maps=True)
    assert paths[0].name == f"chelsea_{int(result.classes[0])}_{result.class_names[0].replace(' ', '_').lower()}_lcam.png"
    assert all(p.is_file() for p in paths) and len({p.name for p in paths}) == 8
    assert len(list((tmp_path / "out").glob("*_map.png"))) == 8
    # a save that dies mid-write leaves nothing behind (temp file + rename)
    real_save = Image.Image.save

    def dying_save(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        result.save(tmp_path / "interrupted")
    monkeypatch.setattr(Image.Image, "save", real_save)
    assert list((tmp_path / "interrupted").iterdir()) == []


def test_baselines_on_any_classifier(model, photos, effnet):
    x = torch.stack([make_transform(80, 64, "bicubic")(p) for p in photos.values()])
    result = lcam.explain(effnet, x, method="gradcam")
    assert result.method == "gradcam" and result.maps.shape == (4, 64, 64)
    default = lcam.explain(effnet, x)  # a plain classifier: Grad-CAM by default
    assert default.method == "gradcam" and torch.allclose(default.maps, result.maps)
    lcam_top1 = model.explain(x)
    assert torch.equal(result.classes, lcam_top1.classes)  # same frozen classifier
    rise = lcam.explain(effnet, x[:1], method={"name": "rise", "n_masks": 16, "batch_size": 16}, targets="topk", k=2)
    assert rise.method == "rise" and rise.maps.shape == (2, 64, 64)
    tv = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 5))
    plain = lcam.explain(tv, x[:2], targets=4)  # any nn.Module classifier
    assert plain.maps.shape == (2, 64, 64) and plain.class_names == ["class 4", "class 4"]


@pytest.mark.parametrize("method", ["gradcam", "gradcampp", "xgradcam", "guidedcam"])
def test_one_pass_methods_cost_one_forward_pass_in_all(effnet, method):
    """The engine gives the explainer the activations of the pass that gave the logits: the maps
    equal the explainer's own, and the whole call runs the feature extractor once per image."""
    engine = make_engine(effnet, method)
    assert engine.explainer.shares_features
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    targets = [1, 281, 999]
    with ForwardCounter(effnet) as fw:
        result = lcam.explain(effnet, x, targets=targets, method=method)
    assert fw.images == 3 and result.classes.tolist() == targets
    assert torch.allclose(result.maps, engine.explainer(x, torch.tensor(targets)), atol=1e-5)


def test_backbone_by_name_uses_the_presets():
    from lcam.explain.classifier import backbone_config

    assert backbone_config("vgg16")["layer"] == "features.29"  # conv5_3 after ReLU, not the default
    assert backbone_config("vgg16_pool5")["layer"] == "features.30"
    assert backbone_config("convnext_tiny") == {"name": "convnext_tiny"}
    result = lcam.explain({"name": "mobilenet_v2", "weights": "none"}, torch.rand(1, 3, 64, 64), method="xgradcam", device="cpu")
    assert result.maps.shape == (1, 64, 64) and result.layer == "features"


def test_targets_mean_the_same_in_python_and_the_cli(model, photos):
    """A list is one target per image; an inner list several classes for that image."""
    nested = model.explain(photos, targets=[[281, "tabby cat", 285], 967, "espresso", 0], **SMALL)
    assert nested.classes.tolist() == [281, 285, 967, 967, 0]  # "tabby cat" (a synonym of 281) is not repeated
    assert nested.image_index.tolist() == [0, 0, 1, 2, 3] and nested.ranks.tolist() == [0, 1, 0, 0, 0]
    every = model.explain(photos, targets=[[281, 285]], **SMALL)
    assert every.classes.tolist() == [281, 285] * 4
    with pytest.raises(InputError, match=r"Got 2 targets for 4 images: .*\[\[281, 285\]\]"):
        model.explain(photos, targets=[281, 285], **SMALL)
    assert torch.equal(every.maps[0], nested.maps[0])


def test_class_specific_view(model, photos):
    sheet = class_specific_view(model, photos["chelsea"], classes=[281, "tiger cat", "espresso"], **SMALL)
    assert isinstance(sheet, Image.Image)
    two = class_specific_view(model, photos["chelsea"], classes=[281, 282], **SMALL)
    assert sheet.size[0] > two.size[0] and sheet.size[1] == two.size[1]  # one column per class
    with pytest.raises(InputError, match="out of range"):
        class_specific_view(model, photos["chelsea"], classes=[281, 5000])


def test_misclassification_view_pages(model, photos):
    pred = model.explain(photos, **SMALL)
    wrong = {n: (int(c) + 1) % 1000 for n, c in zip(pred.names, pred.classes)}
    pages = misclassification_view(model, photos, labels=wrong, per_page=3, **SMALL)
    assert len(pages) == 2  # 4 wrong images, 3 per page
    assert pages[0].size[1] > pages[1].size[1]  # 3 rows vs 1 row
    right = {n: int(c) for n, c in zip(pred.names, pred.classes)}
    assert misclassification_view(model, photos, labels=right, **SMALL) == []
    assert len(misclassification_view(model, photos, labels=right, only_errors=False, **SMALL)) == 1


def test_method_comparison_grid(model, photos):
    pair = {k: photos[k] for k in ("chelsea", "coffee")}
    two = method_comparison(model, pair, methods=["lcam", "gradcam"], **SMALL)
    three = method_comparison(model, pair, methods=["lcam", "gradcam", "xgradcam"], **SMALL)
    assert three.size[1] > two.size[1] and three.size[0] == two.size[0]  # one row per method
    with pytest.raises(InputError, match="Unknown method"):
        method_comparison(model, photos, methods=["lcam", "nope"])
