"""Checkpoint directories: written atomically, sealed by a manifest of sha256 digests.

A checkpoint is filled in a hidden temp directory beside its final path; when every
file is written, `manifest.json` (the sha256 and size of each file) is added and the
directory is renamed into place. A process killed mid-save leaves only the hidden
temp directory, which is never registered and is removed by `remove_partial`. Loading
verifies the manifest first and refuses, by name, a missing or altered file, a file the
manifest does not list, a symlink or other non-regular file, and a manifest entry that
is not a plain relative path inside the directory.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
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
        """One digest of the whole checkpoint: the sha256 of its sorted (name, sha256,
        size) entries as JSON, which no choice of file names can make ambiguous. The
        registry keeps it, so a manifest rewritten after the save is caught."""
        entries = [[name, digest, self.sizes[name]] for name, digest in sorted(self.files.items())]
        return hashlib.sha256(json.dumps(entries, separators=(",", ":")).encode()).hexdigest()

    def matches(self, checksum: str) -> bool:
        """Whether `checksum` (a registry's record) is this manifest's. Registries written
        before the JSON form kept the sha256 of "name digest" lines, unambiguous only
        while no name holds white space: that form is accepted only then."""
        if checksum == self.checksum:
            return True
        if any(ch.isspace() for name in self.files for ch in name):
            return False
        joined = "\n".join(f"{name} {digest}" for name, digest in sorted(self.files.items()))
        return checksum == hashlib.sha256(joined.encode()).hexdigest()


def file_sha256(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def _tree_files(directory: Path) -> set[str]:
    """The relative names of the regular files under `directory`. A symlink, or anything
    else that is neither a regular file nor a directory, is refused by name."""

    def unreadable(err: OSError) -> None:
        raise CheckpointError(f"{directory}: cannot read {err.filename} ({err.strerror})")

    names = set()
    for root, dirs, files in os.walk(directory, onerror=unreadable):
        for entry in dirs + files:
            path = Path(root, entry)
            name = path.relative_to(directory).as_posix()
            mode = path.lstat().st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                kind = "a symlink" if stat.S_ISLNK(mode) else "not a regular file"
                raise CheckpointError(f"{directory}: {name} is {kind}; a checkpoint holds only regular files and directories")
            if stat.S_ISREG(mode):
                names.add(name)
    return names


def _manifest_of(directory: Path) -> Manifest:
    names = sorted(_tree_files(directory) - {MANIFEST})
    return Manifest({n: file_sha256(directory / n) for n in names}, {n: (directory / n).stat().st_size for n in names})


def _fsync_tree(directory: Path, names: list[str]) -> None:
    for name in names:
        with open(directory / name, "rb") as f:
            os.fsync(f.fileno())


def write_checkpoint(target: Path, fill: Callable[[Path], None]) -> Manifest:
    """Create checkpoint directory `target`: `fill(tmp)` writes the files into a temp
    directory beside it, then the manifest is added and the directory renamed into place.
    An existing `target` is an error (a version is written once)."""
    target = Path(target)
    if os.path.lexists(target):
        raise CheckpointError(f"{target}: a checkpoint already exists there")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{target.name}-", dir=target.parent))
    try:
        fill(tmp)
        manifest = _manifest_of(tmp)
        (tmp / MANIFEST).write_text(json.dumps(asdict(manifest), indent=1, sort_keys=True) + "\n")
        _fsync_tree(tmp, [*manifest.files, MANIFEST])
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _check_name(name: object) -> str:
    """`name` if it is a plain relative path inside a checkpoint: not empty, not absolute,
    no `.`, `..` or empty component, no backslash or NUL; ValueError otherwise."""
    if (
        not isinstance(name, str)
        or not name
        or name.startswith("/")
        or "\\" in name
        or "\x00" in name
        or any(part in ("", ".", "..") for part in name.split("/"))
        or name == MANIFEST
    ):
        raise ValueError(f"file name {name!r} is not a plain relative path inside the checkpoint")
    return name


def _parse_manifest(raw: object) -> Manifest:
    """The manifest `raw` (decoded JSON) describes, every field checked; ValueError otherwise."""
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    for key in ("files", "sizes", "created"):
        if key not in raw:
            raise ValueError(f"no {key!r} key")
    files, sizes, created = raw["files"], raw["sizes"], raw["created"]
    if not isinstance(files, dict) or not isinstance(sizes, dict) or files.keys() != sizes.keys():
        raise ValueError("'files' and 'sizes' must be objects with the same file names")
    for name in files:
        _check_name(name)
        if not isinstance(files[name], str) or not re.fullmatch(r"[0-9a-f]{64}", files[name]):
            raise ValueError(f"files[{name!r}] is not a sha256 (64 hex digits)")
        if type(sizes[name]) is not int or sizes[name] < 0:
            raise ValueError(f"sizes[{name!r}] is not a number of bytes")
    if type(created) not in (int, float):
        raise ValueError("'created' is not a time")
    return Manifest(dict(files), dict(sizes), float(created))


def read_manifest(directory: Path) -> Manifest:
    """The manifest of checkpoint `directory`, checked (names, digests, sizes) before any
    of its names is joined to a path; CheckpointError naming the file otherwise."""
    path = Path(directory) / MANIFEST
    if path.is_symlink() or not path.is_file():
        raise CheckpointError(f"{directory}: no {MANIFEST}; not a complete checkpoint")
    try:
        return _parse_manifest(json.loads(path.read_text()))
    except (ValueError, RecursionError) as err:  # bad JSON and bad UTF-8 are ValueErrors too
        raise CheckpointError(f"{path}: unreadable manifest ({err})") from err


def verify_checkpoint(directory: Path, checksum: str | None = None) -> Manifest:
    """The checkpoint's manifest, after checking that the directory holds exactly the
    files it lists (no other file, no symlink), each with its recorded size and sha256,
    and, given the registry's `checksum`, that the manifest is the one saved (a
    directory whose files and manifest were both rewritten is refused); raises
    CheckpointError naming the first bad file."""
    directory = Path(directory)
    if directory.is_symlink() or not directory.is_dir():
        raise CheckpointError(f"{directory}: checkpoint directory does not exist (or is a symlink)")
    present = _tree_files(directory)
    manifest = read_manifest(directory)
    if checksum is not None and not manifest.matches(checksum):
        raise CheckpointError(
            f"{directory}: its {MANIFEST} is not the one the registry recorded at the save (checksum "
            f"{manifest.checksum[:12]}, registered {checksum[:12]}): the checkpoint was rewritten since"
        )
    extra = sorted(present - set(manifest.files) - {MANIFEST})
    if extra:
        raise CheckpointError(f"{directory}: file {extra[0]} is not in the manifest")
    for name, digest in manifest.files.items():
        path = directory / name
        if name not in present:
            raise CheckpointError(f"{directory}: file {name} listed in the manifest is missing")
        if path.stat().st_size != manifest.sizes[name] or file_sha256(path) != digest:
            raise CheckpointError(f"{directory}: file {name} was altered (its sha256 differs from the manifest)")
    return manifest


def copy_listed_file(directory: Path, name: str, manifest: Manifest, target: Path, chunk_bytes: int = 1 << 20) -> None:
    """Copy checkpoint file `name` to `target`, hashing the bytes as they are copied: a
    file swapped after `verify_checkpoint` (for a symlink, or other contents) is refused,
    and `target` removed, rather than copied."""
    try:
        fd = os.open(Path(directory) / name, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as err:
        raise CheckpointError(f"{directory}: cannot open {name} ({err.strerror}); was it replaced after the check?") from err
    digest, size = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "rb") as source, open(target, "wb") as out:
            if not stat.S_ISREG(os.fstat(source.fileno()).st_mode):
                raise CheckpointError(f"{directory}: {name} is no longer a regular file")
            while block := source.read(chunk_bytes):
                digest.update(block)
                size += len(block)
                out.write(block)
        if digest.hexdigest() != manifest.files[name] or size != manifest.sizes[name]:
            raise CheckpointError(f"{directory}: file {name} changed while it was copied (its sha256 differs from the manifest)")
    except BaseException:
        Path(target).unlink(missing_ok=True)
        raise


def read_state_file(directory: Path, name: str) -> dict:
    """The JSON object checkpoint file `name` holds; CheckpointError naming the file when
    it is missing, not JSON or not an object."""
    path = Path(directory) / name
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise CheckpointError(f"{directory}: no {name}; this checkpoint was not written by a run of this recipe") from err
    except (OSError, ValueError, RecursionError) as err:
        raise CheckpointError(f"{path}: unreadable ({err})") from err
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    return value


def remove_partial(root: Path) -> list[Path]:
    """Delete temp directories left by saves that never finished; returns them."""
    root = Path(root)
    removed = [p for p in root.glob(f"{PARTIAL_PREFIX}*") if p.is_dir() and not p.is_symlink()] if root.is_dir() else []
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed
