"""The run folder of an evaluation: what it evaluates (``evaluation.json``), resume and the merge of shards.

``evaluation.json`` holds the run's *identity* (everything that decides its numbers: classifier,
data, method settings, thresholds, metrics, seed; see :func:`lcam.evaluation.run.run_identity`),
the shard, the dataset's size and a fingerprint of its file names, and the methods whose every
image has a record (``complete``).

* A new run writes it. A run folder that already has one is continued only with ``resume=auto``
  (the folder is ``paths.output_dir``, e.g. ``hydra.run.dir=outputs/evaluate/slurm/$SLURM_JOB_ID``)
  or ``resume=/path/to/run``; the identity must be the same, else the run is refused with the
  first differing key. Methods marked complete are not run again; the others run only the images
  without a record.
* :func:`merge_folders` checks that the folders share one identity (their methods aside), that
  every method's shards are ``0/N .. N-1/N`` of one dataset, each complete, with no image twice,
  then copies their records into the merged folder: shards of one job, or runs of different
  methods on the same images.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig

from lcam.evaluation.records import RECORDS_DIR, done_indices, method_dir
from lcam.evaluation.sampling import Shard, parse_shard
from lcam.runtime.errors import UserError
from lcam.runtime.io import atomic_write

MANIFEST = "evaluation.json"


def names_fingerprint(names: Sequence[str]) -> str:
    """SHA-1 of the dataset's image names in order (same list -> same fingerprint)."""
    return hashlib.sha1("\n".join(names).encode("utf-8")).hexdigest()


def first_difference(old: Any, new: Any, prefix: str = "") -> str | None:
    """The first dotted key where two nested configs differ, with both values; None if equal."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            sub = f"{prefix}.{key}" if prefix else str(key)
            if key not in old:
                return f"{sub} (not set in the run, now {new[key]!r})"
            if key not in new:
                return f"{sub} (was {old[key]!r}, now not set)"
            found = first_difference(old[key], new[key], sub)
            if found:
                return found
        return None
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new)):
            found = first_difference(a, b, f"{prefix}[{i}]")
            if found:
                return found
        return None
    return None if old == new else f"{prefix} (was {old!r}, now {new!r})"


def read_manifest(folder: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(folder) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def write_manifest(folder: str | os.PathLike, manifest: dict[str, Any]) -> None:
    with atomic_write(Path(folder) / MANIFEST, "w", durable=True) as f:
        json.dump(manifest, f, indent=1, sort_keys=True)


def _rank_zero() -> bool:
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0) == 0


@dataclass
class RunFolder:
    """An evaluation's run folder as this process sees it at start-up."""

    path: Path
    shard: Shard
    n_images: int
    attempt: str
    is_rank_zero: bool
    complete: set[str] = field(default_factory=set)

    def is_complete(self, method: str) -> bool:
        """Whether ``method`` was complete when this job started (the same answer on every process)."""
        return method in self.complete

    def check_complete(self, method: str) -> None:
        """After a method ran on every process: check its records cover the shard, then mark it complete."""
        missing = set(self.shard.indices(self.n_images)) - done_indices(self.path, method)
        if missing:
            raise RuntimeError(f"{method}: {len(missing)} image(s) of the shard have no record after the run "
                               f"(e.g. index {min(missing)}); rerun with resume=auto")
        manifest = read_manifest(self.path) or {}
        manifest["complete"] = sorted(set(manifest.get("complete", [])) | {method})
        write_manifest(self.path, manifest)


def _resume_folder(cfg: DictConfig) -> tuple[Path, str | None]:
    resume = cfg.get("resume")
    if resume in (None, False, "", "null"):
        return Path(cfg.paths.output_dir), None
    if str(resume) == "auto":
        return Path(cfg.paths.output_dir), "auto"
    path = Path(os.path.expanduser(str(resume)))
    if not (path / MANIFEST).is_file():
        raise UserError(f"resume={resume}: no evaluation to resume there ({path / MANIFEST} is missing). Give the run "
                        "folder of an earlier evaluate.py run, or resume=auto to continue paths.output_dir")
    return path, "path"


def open_run_folder(cfg: DictConfig, identity: dict[str, Any], shard: Shard, names: Sequence[str]) -> RunFolder:
    """The run folder of this job: a new one (its manifest written) or a resumed one (checked).

    Only global rank 0 writes or checks; the other processes of a DDP job (started after rank 0
    wrote the manifest) read which methods are complete.

    Raises:
        UserError: the folder holds an earlier evaluation and ``resume`` is not set, or the
            resumed run's identity, shard or images differ (the message names the first key).
    """
    path, mode = _resume_folder(cfg)
    attempt = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    rank_zero = _rank_zero()
    manifest = {"identity": identity, "shard": str(shard), "n_images": len(names), "names_sha1": names_fingerprint(names),
                "complete": []}
    old = read_manifest(path)
    if rank_zero:
        if old is None:
            path.mkdir(parents=True, exist_ok=True)
            if any((path / RECORDS_DIR).glob("*/part-*.jsonl")):
                raise UserError(f"{path} holds evaluation records but no {MANIFEST}; give another hydra.run.dir")
            write_manifest(path, manifest)
            old = manifest
        elif mode is None:
            raise UserError(f"{path} holds an earlier evaluation ({MANIFEST}); continue it with resume=auto, or give "
                            "another hydra.run.dir for a new one (its records are kept either way)")
        else:
            check_same_run(old, manifest, f"resume: {path}")
            print(f"Resuming the evaluation in {path} (complete: {', '.join(old.get('complete', [])) or 'no method yet'})",
                  flush=True)
    return RunFolder(path, shard, len(names), attempt, rank_zero, set((old or {}).get("complete", [])))


def check_same_run(old: dict[str, Any], new: dict[str, Any], what: str, shard_may_differ: bool = False) -> None:
    """Raise :class:`UserError` naming the first difference of identity, shard or images."""
    diff = first_difference(old["identity"], new["identity"])
    if diff:
        raise UserError(f"{what} was made with another config: {diff}. Use the same settings, or a new run folder")
    if not shard_may_differ and old["shard"] != new["shard"]:
        raise UserError(f"{what} evaluated data.shard={old['shard']}, now data.shard={new['shard']}")
    if old["n_images"] != new["n_images"] or old["names_sha1"] != new["names_sha1"]:
        raise UserError(f"{what} evaluated another image set ({old['n_images']} images, now {new['n_images']}; "
                        "or other file names)")


def merge_folders(folders: Sequence[str], out: Path) -> dict[str, Any]:
    """Check the runs in ``folders`` and copy their records into ``out``; returns the methods
    (display name -> settings).

    The runs must share everything but their shard and their methods: the shards of one dataset
    (``data.shard=0/N .. N-1/N``) and/or runs of different methods on the same images (the
    leaderboard runs each method on its own). For every method, the folders that hold it must
    cover the dataset exactly once (their shards are ``0/N .. N-1/N`` of one ``N``), each
    complete, with the same method settings.

    Raises:
        UserError: a folder is not an evaluation run, the runs differ in config or images, a
            method's shards do not cover ``0/N .. N-1/N`` exactly once, a shard is incomplete.
    """
    if not folders:
        raise UserError("merge=[DIR1,DIR2,...] needs the run folders of the shards")
    manifests = []
    for folder in folders:
        m = read_manifest(folder)
        if m is None:
            raise UserError(f"merge: {folder} is not an evaluation run folder ({MANIFEST} missing)")
        manifests.append(m)
    def without_methods(m: dict[str, Any]) -> dict[str, Any]:
        return {**m, "identity": {k: v for k, v in m["identity"].items() if k != "methods"}}

    first = manifests[0]
    for folder, m in zip(folders[1:], manifests[1:]):
        check_same_run(without_methods(first), without_methods(m), f"merge: {folder} (against {folders[0]})",
                       shard_may_differ=True)
    methods: dict[str, Any] = {}
    holders: dict[str, list[tuple[str, Shard, dict[str, Any]]]] = {}
    for folder, m in zip(folders, manifests):
        for method, settings in m["identity"]["methods"].items():
            if method in methods:
                diff = first_difference(methods[method], settings, f"methods.{method}")
                if diff:
                    raise UserError(f"merge: {folder} was made with another config: {diff}. Use the same settings")
            methods.setdefault(method, settings)
            holders.setdefault(method, []).append((folder, parse_shard(m["shard"]), m))
    for method, held in holders.items():
        shards = [s for _, s, _ in held]
        counts = {s.count for s in shards}
        if len(counts) != 1:
            raise UserError(f"merge: the shards of {method} split the data differently: {[str(s) for s in shards]}")
        n = counts.pop()
        seen = sorted(s.index for s in shards)
        if seen != list(range(n)):
            dup = sorted({i for i in seen if seen.count(i) > 1})
            gone = sorted(set(range(n)) - set(seen))
            raise UserError(f"merge: the shards of {method} must be 0/{n} .. {n - 1}/{n}, each once; "
                            + (f"twice: {dup} " if dup else "") + (f"missing: {gone}" if gone else ""))
        for folder, shard, m in held:
            missing = set(shard.indices(m["n_images"])) - done_indices(folder, method)
            if missing:
                raise UserError(f"merge: {folder} (shard {shard}) lacks {len(missing)} record(s) of {method}; "
                                "finish it with resume=auto first")
    out.mkdir(parents=True, exist_ok=True)
    for method, held in holders.items():
        target = method_dir(out, method)
        target.mkdir(parents=True, exist_ok=True)
        for folder, _, _ in held:
            for part in method_dir(folder, method).glob("*"):
                kind, rest = part.name.split("-", 1)  # part-<attempt>-r<rank>.jsonl, figure-...
                shutil.copy2(part, target / f"{kind}-{Path(folder).name}-{rest}")
    merged = {**first, "identity": {**first["identity"], "methods": methods}, "shard": "0/1",
              "merged_from": [str(Path(f).resolve()) for f in folders], "complete": list(methods)}
    write_manifest(out, merged)
    return methods
