"""Checkpoint directories: written atomically, sealed by a manifest of sha256 digests.

A checkpoint is filled in a hidden temp directory beside its final path; when every
file is written, `manifest.json` (the sha256 and size of each file) is added and the
directory is renamed into place. A process killed mid-save leaves only the hidden
temp directory, which is never registered and is removed by `remove_partial`. Loading
verifies the manifest first and refuses a missing or altered file by name.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

MANIFEST = "manifest.json"
PARTIAL_PREFIX = ".partial-"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be trusted; the message names the directory and file."""


@dataclass
class Manifest:
    files: dict[str, str]  # relative path -> sha256
    sizes: dict[str, int]  # relative path -> bytes
    created: float = field(default_factory=time.time)

    @property
    def checksum(self) -> str:
        """One digest of the whole checkpoint: the sha256 of its sorted file digests."""
        joined = "\n".join(f"{name} {digest}" for name, digest in sorted(self.files.items()))
        return hashlib.sha256(joined.encode()).hexdigest()


def file_sha256(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def _manifest_of(directory: Path) -> Manifest:
    files, sizes = {}, {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        name = path.relative_to(directory).as_posix()
        if name == MANIFEST:
            continue
        files[name] = file_sha256(path)
        sizes[name] = path.stat().st_size
    return Manifest(files, sizes)


def _fsync_tree(directory: Path) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())


def write_checkpoint(target: Path, fill: Callable[[Path], None]) -> Manifest:
    """Create checkpoint directory `target`: `fill(tmp)` writes the files into a temp
    directory beside it, then the manifest is added and the directory renamed into place.
    An existing `target` is an error (a version is written once)."""
    target = Path(target)
    if target.exists():
        raise CheckpointError(f"{target}: a checkpoint already exists there")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{target.name}-", dir=target.parent))
    try:
        fill(tmp)
        manifest = _manifest_of(tmp)
        (tmp / MANIFEST).write_text(json.dumps(asdict(manifest), indent=1, sort_keys=True) + "\n")
        _fsync_tree(tmp)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def read_manifest(directory: Path) -> Manifest:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"{directory}: no {MANIFEST}; not a complete checkpoint")
    try:
        raw = json.loads(path.read_text())
        return Manifest(dict(raw["files"]), dict(raw["sizes"]), float(raw["created"]))
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: unreadable manifest ({err})") from err


def verify_checkpoint(directory: Path) -> Manifest:
    """The checkpoint's manifest, after checking that every listed file exists with its
    recorded size and sha256; raises CheckpointError naming the first bad file."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: checkpoint directory does not exist")
    manifest = read_manifest(directory)
    for name, digest in manifest.files.items():
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"{directory}: file {name} listed in the manifest is missing")
        if path.stat().st_size != manifest.sizes.get(name) or file_sha256(path) != digest:
            raise CheckpointError(f"{directory}: file {name} was altered (its sha256 differs from the manifest)")
    return manifest


def remove_partial(root: Path) -> list[Path]:
    """Delete temp directories left by saves that never finished; returns them."""
    root = Path(root)
    removed = [p for p in root.glob(f"{PARTIAL_PREFIX}*") if p.is_dir()] if root.is_dir() else []
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed
