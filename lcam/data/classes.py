"""ImageNet class identities, in one place: synset ids (wnids), display names and their synonyms."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

#: ``<wnid> <comma-separated synonyms>`` per line, in torchvision's class order (package data)
SYNSETS_FILE = Path(__file__).with_name("imagenet_synsets.txt")


@lru_cache(maxsize=1)
def imagenet_synsets() -> tuple[list[str], list[str]]:
    """``(wnids, names)`` of the 1000 ImageNet classes in torchvision's order (names: every synonym)."""
    wnids, names = [], []
    for line in SYNSETS_FILE.read_text().splitlines():
        wnid, _, name = line.partition(" ")
        wnids.append(wnid)
        names.append(name)
    return wnids, names


@lru_cache(maxsize=1)
def wnid_to_index() -> dict[str, int]:
    """``{"n01440764": 0, ...}``: the class id of each ImageNet synset folder name."""
    return {w: i for i, w in enumerate(imagenet_synsets()[0])}


@lru_cache(maxsize=1)
def imagenet_class_names() -> list[str]:
    """The 1000 short display names in torchvision's order (``"tabby"``, ``"tiger cat"``...)."""
    import torchvision

    return list(torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


@lru_cache(maxsize=1)
def imagenet_synonyms() -> dict[str, int]:
    """Lower-cased synonym -> class id, from the synset file (``"tabby cat"`` -> 281); a synonym
    shared by two classes keeps the first."""
    out: dict[str, int] = {}
    for i, names in enumerate(imagenet_synsets()[1]):
        for syn in names.split(","):
            out.setdefault(syn.strip().lower(), i)
    return out
