"""The one image reader (converts instead of rejecting; a bad file is skipped, named in one line and listed in
:data:`SKIPPED` for the end-of-run report), atomic file writes, and the error type for bad user input."""
from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
from PIL import Image

from lcam.runtime.errors import UserError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class InputError(UserError, ValueError):
    """Bad user input (no images, bad class id, unknown method...); the message is one line naming the fix."""


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL image (grayscale, palette, RGBA, 16-bit, CMYK) -> 8-bit RGB.

    Transparent pixels are composited onto white; 16/32-bit integer images are scaled to 8 bits
    by their actual range instead of being clipped.
    """
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(arr.astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB") if img.mode != "RGB" else img


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file fully (so truncated files fail here) and convert it to RGB.

    Raises:
        OSError / PIL.UnidentifiedImageError: unreadable, truncated or non-image file.
    """
    Image.MAX_IMAGE_PIXELS = None  # very large images are resized later, not rejected
    with Image.open(path) as img:
        img.load()
        return to_rgb(img)


def describe_error(err: BaseException) -> str:
    """``"<Type>: <message on one line>"``."""
    message = " ".join(str(err).split())
    return f"{type(err).__name__}: {message}" if message else type(err).__name__


def try_read(source: Image.Image | str | os.PathLike) -> tuple[Image.Image | None, str]:
    """``(RGB image, "")`` or ``(None, one-line error)``: an in-memory PIL image or a file to read."""
    if isinstance(source, Image.Image):
        return source, ""
    try:
        return load_image(source), ""
    except Exception as err:  # noqa: BLE001 - any reading error is reported, not raised
        return None, describe_error(err)


class SkippedImages:
    """The unreadable files this process met (each once, in order), and the warnings about them."""

    def __init__(self) -> None:
        self.files: dict[str, str] = {}

    def record(self, bad: Sequence[Any]) -> None:
        for item in bad:
            if item.file not in self.files:
                self.files[item.file] = item.error
                log.warning("skipped unreadable image %s (%s)", item.file, item.error)

    def clear(self) -> None:
        self.files.clear()

    def __len__(self) -> int:
        return len(self.files)


#: the unreadable files met by this process since the run started (cleared by lcam.runtime.tasks at a run's start)
SKIPPED = SkippedImages()


def is_image_file(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", durable: bool = False) -> Iterator[IO]:
    """Write ``path`` through a temporary file in the same folder, renamed into place on success.

    An interrupted write never leaves a truncated file at ``path``. ``durable=True`` also fsyncs
    before the rename (survives a power loss; an fsync per file, so off for bulk overlays).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_image_atomic(img: Image.Image, path: str | os.PathLike, **kwargs) -> None:
    """``img.save(path)`` via :func:`atomic_write` (format taken from the suffix)."""
    fmt = Image.registered_extensions().get(Path(path).suffix.lower(), "PNG")
    with atomic_write(path) as f:
        img.save(f, format=fmt, **kwargs)


def write_csv_atomic(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Write ``rows`` as a CSV with the header ``columns`` (missing keys empty, extra keys ignored),
    atomically: a reader never sees a half-written table."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), restval="", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_write(path, "w") as f:
        f.write(buf.getvalue())
