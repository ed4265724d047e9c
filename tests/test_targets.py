"""The one target parser (lcam.explainers.targets): ids, names, topk, per image, boxes, errors."""
from __future__ import annotations

import pytest
import torch

from lcam.explainers.targets import Box, ClassSpace, TargetPlan, class_ids, parse_targets
from lcam.runtime.io import InputError

NAMES = ["cat", "dog", "tiger cat", "car", "bus"]
SPACE = ClassSpace.of(5, NAMES)
LOGITS = torch.tensor([[0.0, 3.0, 1.0, 2.0, -1.0],   # image 0: dog > car > tiger cat
                       [5.0, 0.5, 0.0, -0.5, 4.0]])  # image 1: cat > bus > dog


def rows(plan: TargetPlan, positions=(0, 1), labels=None) -> list:
    return plan.resolve(LOGITS, list(positions), labels)


@pytest.mark.parametrize("targets, expected", [
    (None, [[1], [0]]),                              # top-1 of each image
    (3, [[3], [3]]),                                 # one class for every image
    ("Tiger Cat", [[2], [2]]),                       # by name, case-insensitive
    ([4, "dog"], [[4], [1]]),                        # one per image
    ([2], [[2], [2]]),                               # a list of one: for every image
    ([[2, "car"], 0], [[2, 3], [0]]),                # an inner list: several classes for that image
    ([[1, 3]], [[1, 3], [1, 3]]),                    # several classes for every image
    ([[1, "dog", 3]], [[1, 3], [1, 3]]),             # a class named twice is one row
    (torch.tensor([4, 0]), [[4], [0]]),              # a (B,) tensor
    (torch.tensor(2), [[2], [2]]),                   # a scalar tensor
    (torch.tensor([[0, 1], [2, 3]]), [[0, 1], [2, 3]]),  # (B, R): R per image
])
def test_one_meaning_of_targets(targets, expected):
    assert rows(parse_targets(targets, SPACE, 2)) == expected


def test_topk_is_sorted_by_probability_and_k_is_checked():
    assert rows(parse_targets("topk", SPACE, 2, k=3)) == [[1, 3, 2], [0, 4, 1]]
    for k in (0, 6, 1.5, True):
        with pytest.raises(InputError, match=r"k must be an integer in 1\.\.5"):
            parse_targets("topk", SPACE, 2, k=k)


def test_label_then_prediction_for_the_misclassification_view():
    assert rows(TargetPlan("label_pred"), labels=torch.tensor([3, -1])) == [[3, 1], [0, 0]]


def test_positions_pick_each_images_own_targets_in_a_later_batch():
    plan = parse_targets([0, 1, 2, 3], SPACE, 4)
    assert plan.resolve(LOGITS, [2, 3]) == [[2], [3]]


@pytest.mark.parametrize("targets, match", [
    (5, r"^Class id 5 out of range: valid class ids are 0\.\.4$"),
    ([0, -1], r"^Class id -1 out of range: valid class ids are 0\.\.4$"),
    ("dgo", r"^Unknown class name 'dgo'; did you mean 'dog'\?$"),
    ("zebra", r"^Unknown class name 'zebra'; give a class id 0\.\.4$"),
    ([1, 2, 3], r"^Got 3 targets for 2 images: a list gives one target per image \(or one for all\); several classes for every image: \[\[1, 2\]\]$"),
    ([], r"^targets is an empty list"),
    ([[], 1], r"^An image's list of targets is empty"),
    ([["topk"], 1], r"^'topk' applies to every image"),
    ([[[1]], 2], r"^Targets nest at most two levels"),
    (1.5, r"^A target must be a class id, a class name, 'topk' or a list of them, got 1\.5$"),
    (Box(0, 0, 5, 5), r"^Box targets need a detector explainer"),
])
def test_bad_targets_are_one_line_errors_naming_the_fix(targets, match):
    with pytest.raises(InputError, match=match):
        parse_targets(targets, SPACE, 2)


def test_boxes_for_detector_explainers_keep_their_label_resolved():
    plan = parse_targets([Box(1, 2, 30, 40, "dog"), [Box(0, 0, 8, 8), 3]], SPACE, 2, boxes=True)
    assert plan.rows == [[Box(1, 2, 30, 40, 1)], [Box(0, 0, 8, 8), 3]] and plan.has_boxes


def test_explainer_calls_take_exactly_one_class_per_image():
    dev = torch.device("cpu")
    assert class_ids(None, 2, SPACE, dev, LOGITS).tolist() == [1, 0]
    assert class_ids(["bus", 2], 2, SPACE, dev).tolist() == [4, 2]
    assert class_ids(torch.tensor(3), 2, SPACE, dev).tolist() == [3, 3]
    with pytest.raises(InputError, match="one class per image"):
        class_ids([[1, 2], 0], 2, SPACE, dev)
    with pytest.raises(InputError, match=r"Class id 7 out of range: valid class ids are 0\.\.4"):
        class_ids(torch.tensor([0, 7]), 2, SPACE, dev)


def test_imagenet_synonyms_name_the_same_class():
    from lcam.data.classes import imagenet_class_names

    imagenet = ClassSpace.of(1000, imagenet_class_names())
    assert imagenet.index("tabby") == imagenet.index("tabby cat") == 281
    assert imagenet.index("281") == 281
