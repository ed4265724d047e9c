"""The offline demo photos: real photos shipped inside the scikit-image and scikit-learn wheels."""
from __future__ import annotations

import warnings

import numpy as np
from PIL import Image

from lcam.runtime.io import to_rgb

#: name -> loader; every file is inside the installed wheels (no download).
_SKIMAGE = ("chelsea", "coffee", "rocket", "astronaut", "stereo_motorcycle", "camera", "clock")
_SKLEARN = ("china.jpg", "flower.jpg")


def demo_photos() -> list[tuple[str, Image.Image]]:
    """``[(name, RGB PIL image), ...]`` of the bundled photos (9 real photos)."""
    from skimage import data as skdata
    from sklearn.datasets import load_sample_image

    photos: list[tuple[str, Image.Image]] = []
    for name in _SKIMAGE:
        arr = getattr(skdata, name)()
        arr = arr[0] if isinstance(arr, tuple) else arr
        photos.append((name.replace("stereo_", ""), to_rgb(Image.fromarray(np.asarray(arr)))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for fname in _SKLEARN:
            photos.append((fname.rsplit(".", 1)[0], Image.fromarray(load_sample_image(fname))))
    return photos
