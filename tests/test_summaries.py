"""Visual summaries: each step against hand-computed cases, then the pipeline on real photos and weights."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lcam.runtime.io import InputError
from lcam.summaries import Settings, summarise
from lcam.summaries.clustering import Cluster, affinity_clusters, filter_clusters, global_median_ssim
from lcam.summaries.masks import CrispResult, MaskCache
from lcam.summaries.matching import lom_scores, similarity_matrix
from lcam.summaries.proposals import Part, parts_in_regions, region_share_inside, selective_search, top_proposals
from lcam.summaries.regions import find_regions


def blob_mask() -> np.ndarray:
    """A 40 x 40 crisp mask deleting two squares (10 x 10 and 6 x 6) and one 2-pixel speck."""
    m = np.ones((40, 40), dtype=np.float32)
    m[5:15, 5:15] = 0.0
    m[25:31, 20:26] = 0.1
    m[35, 35:37] = 0.0
    return m


def test_regions_are_the_connected_parts_of_the_deleted_zone():
    regions = find_regions(blob_mask(), image=3, threshold=0.5, min_area=0.005)  # 8 px at 1600 px: the speck goes
    assert [r.area for r in regions] == [100, 36]
    assert [r.box for r in regions] == [(5, 5, 15, 15), (20, 25, 26, 31)]
    assert all(r.image == 3 for r in regions) and [r.index for r in regions] == [0, 1]
    assert len(find_regions(blob_mask(), threshold=0.95)) == 1  # 1 - 0.1 = 0.9 < 0.95: the second square is not salient
    assert len(find_regions(blob_mask(), min_area=0.0)) == 3


def test_region_share_inside_matches_a_direct_count():
    region = find_regions(blob_mask())[0].mask
    boxes = np.array([[0, 0, 40, 40], [5, 5, 10, 15], [10, 10, 30, 30], [30, 30, 40, 40]])
    direct = [region[y1:y2, x1:x2].sum() / region.sum() for x1, y1, x2, y2 in boxes]
    np.testing.assert_allclose(region_share_inside(boxes, region), direct)
    np.testing.assert_allclose(direct, [1.0, 0.5, 0.25, 0.0])


def test_proposals_keep_frames_of_a_region_and_drop_near_duplicates():
    regions = find_regions(blob_mask())[:1]  # the 10 x 10 square at (5, 5)-(15, 15)
    boxes = np.array([
        [5, 5, 15, 15],    # the tight frame: kept
        [4, 4, 15, 15],    # area ratio 121/100 < 2 and overlapping: a near duplicate, dropped
        [3, 3, 18, 18],    # 225 / 100 >= 2: a larger frame, kept
        [5, 5, 12, 15],    # holds 70% of the region (< 75%): dropped
        [0, 0, 40, 40],    # the whole image: above max_area
        [5, 5, 6, 15],     # narrower than min_side
    ])
    parts = parts_in_regions(boxes, regions, min_overlap=0.75, area_ratio=2.0, min_side=4, max_area=0.5)
    assert [p.box for p in parts] == [(5, 5, 15, 15), (3, 3, 18, 18)]
    assert parts[0].overlap == 1.0 and parts[0].region == 0
    assert parts_in_regions(boxes, regions, max_parts=1, min_side=4) == parts[:1]
    assert parts_in_regions(boxes, [], min_side=4) == []


def test_selective_search_returns_boxes_inside_the_image():
    from skimage import data

    image = data.astronaut()[::4, ::4]  # 128 x 128
    boxes = selective_search(image, max_proposals=300)
    assert boxes.ndim == 2 and boxes.shape[1] == 4 and 10 < len(boxes) <= 300
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 128).all() and (boxes[:, 3] <= 128).all()
    assert ((boxes[:, 2:] - boxes[:, :2]) > 0).all()
    # the ranking (OpenCV's rand() times hierarchy level) is seeded: the same order on every call,
    # so an image's top K does not depend on what ran before it
    np.testing.assert_array_equal(selective_search(image, max_proposals=300), boxes)
    with pytest.raises(ValueError, match="fast.*quality"):
        selective_search(image, mode="slow")


def test_local_offset_matching_against_a_hand_computation():
    """Two parts per image; appearance and offsets chosen so every term is easy to compute by hand."""
    desc_a = np.array([[1.0, 0.0], [0.0, 1.0]])
    desc_b = np.array([[1.0, 0.0], [0.6, 0.8]])
    geo_a = np.array([[0.2, 0.2, 0.0], [0.4, 0.2, 0.0]])
    geo_b = np.array([[0.3, 0.2, 0.0], [0.5, 0.2, 0.0]])
    sigma = 0.1
    got = lom_scores(desc_a, geo_a, desc_b, geo_b, neighbours=1, sigma=sigma)
    # appearance: cosines clipped at 0
    app = np.array([[1.0, 0.6], [0.0, 0.8]])
    # each part's only neighbour is the other; its vote is the offset of its best appearance match:
    # part 1 -> b1: (0.1, 0, 0); part 0 -> b0: (0.1, 0, 0). Both consensus offsets are (0.1, 0, 0).
    offsets = geo_b[None] - geo_a[:, None]
    gap = ((offsets - np.array([0.1, 0.0, 0.0])) ** 2).sum(-1)
    np.testing.assert_allclose(got, app * np.exp(-gap / (2 * sigma ** 2)))
    assert got[0, 0] == pytest.approx(1.0) and got[0, 1] < 0.6 * np.exp(-0.5)  # consistent vs displaced match
    # a single part has no neighbours: appearance only
    np.testing.assert_allclose(lom_scores(desc_a[:1], geo_a[:1], desc_b, geo_b), app[:1])


def test_similarity_matrix_is_symmetric_and_zero_within_an_image():
    """Three images, each with horizontal stripes at the top left and vertical ones lower right:
    a part matches the same texture at the same place in the other images best."""
    rng = np.random.default_rng(0)
    i = np.arange(16)
    horizontal = np.tile((i % 4 < 2).astype(float)[:, None], (1, 16))
    gray = []
    for _ in range(3):
        g = 0.1 * rng.random((48, 48))
        g[:16, :16] += horizontal
        g[20:36, 20:36] += horizontal.T
        gray.append(g)
    parts = [Part(k, 0, (x, y, x + 16, y + 16), 1.0) for k in range(3) for x, y in ((0, 0), (20, 20))]
    sim = similarity_matrix(gray, parts, patch=16)
    assert sim.shape == (6, 6)
    np.testing.assert_allclose(sim, sim.T)
    assert (sim >= 0).all() and (sim <= 1 + 1e-9).all()
    assert (sim[:2, :2] == 0).all() and (sim[2:4, 2:4] == 0).all()
    assert sim[0, 2] > 0.8 and sim[1, 3] > 0.8  # same texture, same place
    assert sim[0, 3] < 0.5 * sim[0, 2] and sim[1, 2] < 0.5 * sim[1, 3]  # other texture, other place


def context_scene() -> tuple[list[np.ndarray], dict[int, np.ndarray], list[Part]]:
    """Two 96 x 96 grey images. Image 0: a part P (texture T) framed by four context proposals of
    their own textures. Image 1: the same scene moved by (8, 4) pixels, plus a second copy of T in
    the free bottom-left corner. Parts: P in image 0; both copies of T in image 1 (B1 in place, B2 not)."""
    rng = np.random.default_rng(1)
    textures = [rng.random((16, 16)) for _ in range(5)]  # T, then the four context textures
    corners = [(40, 40), (20, 40), (60, 40), (40, 20), (40, 60)]  # P, left, right, above, below
    gray = [np.zeros((96, 96)), np.zeros((96, 96))]
    context: dict[int, list] = {0: [], 1: []}
    for tex, (x, y) in zip(textures, corners):
        for image, (dx, dy) in enumerate([(0, 0), (8, 4)]):
            gray[image][y + dy:y + dy + 16, x + dx:x + dx + 16] = tex
            context[image].append((x + dx, y + dy, x + dx + 16, y + dy + 16))
    gray[1][76:92, 4:20] = textures[0]  # B2: the same texture out of place
    context[1].append((4, 76, 20, 92))
    parts = [Part(0, 0, context[0][0], 1.0), Part(1, 0, context[1][0], 1.0), Part(1, 1, context[1][5], 1.0)]
    return gray, {i: np.array(b) for i, b in context.items()}, parts


def test_matching_in_context_lets_the_geometric_vote_pick_the_part_that_appearance_cannot():
    """P's two candidates in image 1 look the same (identical pixels, so identical HOG). Matched as
    parts only, P has no neighbour to vote and both score alike; matched in context, P's neighbours
    find their copies moved by (8, 4), so the copy in place (B1) wins and the other (B2) is discounted
    (and B1's and B2's own neighbours in image 1 agree)."""
    gray, context, parts = context_scene()
    alone = similarity_matrix(gray, parts, patch=16, neighbours=5, sigma=0.1)
    # a tie (in image 1 each copy's only neighbour is the other copy, whose vote points at the same P)
    assert alone[0, 1] == pytest.approx(alone[0, 2]) and alone[0, 1] > 0.4
    seen = similarity_matrix(gray, parts, patch=16, neighbours=5, sigma=0.1, context=context)
    np.testing.assert_allclose(seen, seen.T)
    assert seen[0, 1] > 0.99  # in place: identical appearance, geometric term 1 both ways
    assert seen[0, 2] < 0.1 * seen[0, 1]  # out of place: the context votes against it
    assert seen[1, 2] == 0.0  # two parts of one image
    with pytest.raises(ValueError, match="not among"):
        similarity_matrix(gray, parts, context={0: context[0], 1: context[1][:5]})


def test_top_proposals_keep_selective_search_order_and_the_bound():
    boxes = np.array([
        [10, 10, 30, 30],    # 1st
        [0, 0, 90, 90],      # above max_area (0.5 of 100 x 100): ignored
        [50, 50, 54, 80],    # narrower than min_side: ignored
        [60, 60, 130, 90],   # clipped to (60, 60, 100, 90): 2nd
        [10, 10, 30, 30],    # a repeat: ignored
        [20, 0, 40, 40],     # 3rd
        [5, 5, 15, 15],      # 4th
    ])
    got = top_proposals(boxes, (100, 100), top_k=10, min_side=8, max_area=0.5)
    assert got.tolist() == [[10, 10, 30, 30], [60, 60, 100, 90], [20, 0, 40, 40], [5, 5, 15, 15]]
    assert top_proposals(boxes, (100, 100), top_k=2).tolist() == got[:2].tolist()
    assert top_proposals(boxes, (100, 100), top_k=0).shape == (0, 4)


def test_affinity_propagation_recovers_two_groups_across_images():
    images = np.array([0, 1, 2, 0, 1, 2])
    sim = np.full((6, 6), 0.05)
    sim[np.ix_([0, 1, 2], [0, 1, 2])] = 0.9
    sim[np.ix_([3, 4, 5], [3, 4, 5])] = 0.9
    sim[images[:, None] == images[None, :]] = 0.0
    clusters = affinity_clusters(sim, images, seed=0)
    assert sorted(sorted(c.members) for c in clusters) == [[0, 1, 2], [3, 4, 5]]
    assert all(c.images == [0, 1, 2] and c.exemplar in c.members for c in clusters)


def test_ssim_filter_drops_single_image_and_dissimilar_clusters():
    rng = np.random.default_rng(0)
    base = rng.random((32, 32))
    patches = np.stack([base, base, base * 0.98, rng.random((32, 32)), rng.random((32, 32)), rng.random((32, 32))])
    images = np.array([0, 1, 2, 0, 1, 0])
    similar = Cluster([0, 1, 2], 0, [0, 1, 2])
    noise = Cluster([3, 4], 3, [0, 1])
    lonely = Cluster([0, 5], 0, [0])
    from skimage.metrics import structural_similarity

    cross = [structural_similarity(patches[i], patches[j], data_range=1.0)
             for i in range(6) for j in range(i + 1, 6) if images[i] != images[j]]
    assert global_median_ssim(patches, images) == pytest.approx(float(np.median(cross)))
    kept = filter_clusters([noise, similar, lonely], patches, 0.5, min_images=2, ssim_ratio=0.9)
    assert kept == [similar] and similar.ssim > 0.95
    assert not noise.kept and "SSIM" in noise.reason
    assert not lonely.kept and "1 image" in lonely.reason


def test_mask_cache_round_trip_and_refuses_other_settings(tmp_path):
    cache = MaskCache(tmp_path, {"class": 3, "crisp": {"iterations": 5}})
    mask = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    cache.save("sub/a", CrispResult(mask, 3, 0.9, 0.99))
    got = MaskCache(tmp_path, {"crisp": {"iterations": 5}, "class": 3}).load("sub/a")
    np.testing.assert_allclose(got.mask, mask, atol=1e-3)
    assert (got.target, got.prob, got.drop) == (3, pytest.approx(0.9), pytest.approx(0.99))
    assert cache.load("missing") is None
    with pytest.raises(InputError, match="other settings \\(class\\).*kept"):
        MaskCache(tmp_path, {"class": 4, "crisp": {"iterations": 5}})
    assert (tmp_path / "sub__a.npz").exists()  # nothing was deleted


def test_settings_reject_unknown_keys():
    assert Settings.from_mapping({"proposals": {"max_parts": 3}}).proposals["min_overlap"] == 0.75
    with pytest.raises(InputError, match="valid"):
        Settings.from_mapping({"proposal": {}})
    with pytest.raises(InputError, match="max_part"):
        Settings.from_mapping({"proposals": {"max_part": 3}})
    with pytest.raises(InputError, match="context 'whole'.*image.*parts"):  # refused before the classifier loads
        summarise("no/such/folder", "no_such_model", settings={"matching": {"context": "whole"}})


QUICK = {"crisp": {"iterations": 4, "sparse_iterations": 2}, "min_images": 3, "proposals": {"top_k": 60}}


def test_pipeline_on_real_photos_resumes_without_recomputing_masks(tmp_path):
    """The bundled photos and the offline EfficientNet-Lite0, a few optimisation steps: every file is
    written, at most top_k proposals per image are matched in context, and a rerun loads the masks
    instead of optimising them again (also the parts-only matching, from a shared mask folder)."""
    report = summarise("demo", "efficientnet_lite0", tmp_path, target=0, settings=QUICK, device="cpu", progress=False)
    assert len(report.images) >= 3 and report.class_id == 0 and report.class_name == "tench"
    assert report.n_parts <= report.n_proposals <= 60 * len(report.images)
    masks = sorted((tmp_path / "masks").glob("*.npz"))
    assert len(masks) == len(report.images)
    stamps = [m.stat().st_mtime_ns for m in masks]
    # each mask stores its image's class-0 probability on the unmodified image, computed independently here
    import torch

    from lcam.explain.classifier import resolve_classifier
    from lcam.explain.inputs import collect_inputs
    from lcam.summaries.masks import MaskCache
    from lcam.summaries.pipeline import _load

    clf = resolve_classifier("efficientnet_lite0", "cpu").backbone
    items, images, _ = _load(collect_inputs("demo"), 224, 224, clf.spec.interpolation)
    with torch.no_grad():
        expected = clf(images).softmax(1)[:, 0]
    cache = MaskCache.__new__(MaskCache)
    cache.folder = tmp_path / "masks"
    stored = [cache.load(it.name).prob for it in items]
    np.testing.assert_allclose(stored, expected.numpy(), rtol=1e-4, atol=1e-6)
    saved = json.loads((tmp_path / "summaries.json").read_text())
    assert saved["n_summaries"] == report.n_summaries and saved["class_id"] == 0
    assert (tmp_path / "summaries.csv").read_text().startswith("summary,part,file,x1,y1,x2,y2,region,exemplar,summary_ssim")
    for k in range(report.n_summaries):
        assert (tmp_path / f"summary_{k}.png").exists()
    again = summarise("demo", "efficientnet_lite0", tmp_path, target=0, settings=QUICK, device="cpu", progress=False)
    assert [m.stat().st_mtime_ns for m in masks] == stamps
    assert again.n_summaries == report.n_summaries and again.seconds["masks"] < report.seconds["masks"]
    parts_only = summarise("demo", "efficientnet_lite0", tmp_path / "parts", target=0, device="cpu", progress=False,
                           settings={**QUICK, "matching": {"context": "parts"}}, mask_dir=tmp_path / "masks")
    assert [m.stat().st_mtime_ns for m in masks] == stamps and not (tmp_path / "parts" / "masks").exists()
    assert parts_only.n_proposals == parts_only.n_parts  # only the parts were matched
    with pytest.raises(InputError, match="other settings"):
        summarise("demo", "efficientnet_lite0", tmp_path, target=1, settings=QUICK, device="cpu", progress=False)


def test_cli_says_in_one_line_when_a_folder_cannot_be_summarised(tmp_path):
    from PIL import Image
    from skimage import data

    few = tmp_path / "few"
    few.mkdir()
    Image.fromarray(data.astronaut()).save(few / "a.png")
    Image.fromarray(data.coffee()).save(few / "b.png")
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}  # as a user runs it
    run = subprocess.run([sys.executable, "-m", "lcam.summaries", f"inputs={few}", f"output_dir={tmp_path / 'out1'}"],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 2 and run.stderr.strip().splitlines()[-1] == (
        f"error: Found 2 image(s) in {few}; the clustering needs at least 3 images of one class")
    mixed = subprocess.run([sys.executable, "-m", "lcam.summaries", "inputs=demo", f"output_dir={tmp_path / 'out2'}"],
                           capture_output=True, text=True, env=env)
    last = mixed.stderr.strip().splitlines()[-1]
    assert mixed.returncode == 2 and last.startswith("error: Images of mixed classes") and "target=" in last
