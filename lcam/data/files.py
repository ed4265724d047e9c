"""Files a user points at: image listing, ``name label`` list files, and the device to run on."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch

from lcam.runtime.io import InputError, is_image_file

UNLABELLED = -1


def expand(path: str | os.PathLike) -> Path:
    """``~`` and ``$VARS`` expanded: what a user types is what is opened."""
    return Path(os.path.expandvars(os.path.expanduser(str(path))))


def inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` lies in ``folder`` (after resolving links)."""
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def list_images(root: str | os.PathLike, images_only: bool = True, exclude: Sequence[Path] = ()) -> list[Path]:
    """Files under ``root`` (recursive, sorted), skipping hidden files and folders.

    Args:
        images_only: keep only image suffixes (:data:`lcam.runtime.io.IMAGE_EXTENSIONS`); ``False`` keeps
            every file, so a caller can report the ones that turn out unreadable.
        exclude: folders whose files are left out (e.g. an output folder inside the input folder).
    """
    base = Path(root)
    out = []
    for p in sorted(base.rglob("*")):
        if any(part.startswith(".") for part in p.relative_to(base).parts) or not p.is_file():
            continue
        if (images_only and not is_image_file(p)) or any(inside(p, e) for e in exclude):
            continue
        out.append(p)
    return out


def read_list_file(path: str | os.PathLike) -> list[tuple[str, int]]:
    """A list file of ``name label`` lines (the ILSVRC / L-CAM format) -> ``[(name, label), ...]``.

    Blank lines and ``#`` comments are skipped; a line with a name only gets label -1.

    Raises:
        FileNotFoundError: no such file. InputError: a malformed line (``file:line`` and the line).
    """
    p = expand(path)
    if not p.is_file():
        raise FileNotFoundError(f"List file not found: {p} (expected lines 'name label')")
    rows = []
    for n, line in enumerate(p.read_text().splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) > 2 or (len(parts) == 2 and not parts[1].lstrip("-").isdigit()):
            raise InputError(f"{p}:{n}: expected 'name label' (label an integer class id), got '{line.strip()}'")
        rows.append((parts[0], int(parts[1]) if len(parts) == 2 else UNLABELLED))
    return rows


def resolve_device(name: str | torch.device | None = None) -> torch.device:
    """``None`` / ``"auto"`` -> CUDA when available, else CPU; otherwise the named device, checked."""
    if name is None or (isinstance(name, str) and name in ("", "auto")):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device={name} but no CUDA device is available; use device=cpu or device=auto")
    return dev
