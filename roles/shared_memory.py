"""Weights through shared memory: for engines on the trainer's node.

CPU tensors: the trainer writes the new weights into a file in tmpfs (`/dev/shm`) that
the engine maps read-only, so the bytes are written once and read in place (no object
store, no second copy). Two slot files alternate; each starts with the token of the
snapshot it holds. A writer takes an exclusive `flock` on its slot, a reader a shared
one from `get` until `release` (after the engine loaded the weights): the trainer never
overwrites weights an engine is still reading, and an engine that finds a newer
snapshot in its slot than the one it was told about raises `Superseded` (it polls the
bus again). After the first two versions the slots' pages exist and a publish is a
warm memory copy.

CUDA tensors: the same idea with CUDA IPC handles (`torch.multiprocessing`'s
`reduce_tensor`): the trainer keeps a copy of the weights on its GPU alive for the last
two versions and hands out handles; an engine on the same GPU opens them without any
copy through the host.
"""
from __future__ import annotations

import fcntl
import mmap
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xxhash

from rlhf_platform.weight_sync import NamedTensors, Superseded, _bytes_of, combined_digest, from_buffers, tensors_digest

_SAME_PROCESS: dict[str, NamedTensors] = {}  # token -> the GPU copies behind the newest handles (insertion order)
HEADER_BYTES = 64  # the slot's snapshot token (16 bytes), padded so tensors start aligned
ALIGN = 64


@dataclass(frozen=True)
class Entry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    num_bytes: int


def layout_of(tensors: NamedTensors) -> tuple[list[Entry], int]:
    """Where each tensor's bytes go in a slot (64-byte aligned), and the slot's size."""
    entries, offset = [], HEADER_BYTES
    for name, t in tensors.items():
        num_bytes = t.numel() * t.element_size()
        entries.append(Entry(name, str(t.dtype).removeprefix("torch."), tuple(t.shape), offset, num_bytes))
        offset += -(-num_bytes // ALIGN) * ALIGN
    return entries, offset


class SharedMemoryTransport:
    """`weight_sync.transport=shared_memory`. Built in the driver; the trainer's copy
    writes (`put`), the engines' copies read (`get`, `release`).

    Both sides keep each slot mapped once for the whole run: a fresh mapping of 500 MB
    costs a page fault per 4 KiB page on every access (it made a publish 6x a memory
    copy here); a kept one costs none after the first version."""

    def __init__(self, root: str = "/dev/shm", slots: int = 2, lock_timeout_s: float = 600.0) -> None:
        self.directory = os.path.join(root, f"rlhf-weights-{uuid.uuid4().hex[:12]}")
        self.slots = slots
        self.lock_timeout_s = lock_timeout_s  # how long a publish waits for an engine still reading its slot
        self._written = 0  # puts by this process (the trainer): picks the slot
        self._mapped: dict[str, tuple[int, mmap.mmap]] = {}  # slot path -> (its lock descriptor, its mapping)
        self._cuda_kept: list[NamedTensors] = []  # the last versions' GPU copies behind open IPC handles

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_mapped": {}, "_cuda_kept": []}  # descriptors and mappings stay in their process

    def put(self, tensors: NamedTensors) -> dict[str, Any]:
        return self.put_digested(tensors)[0]

    def put_digested(self, tensors: NamedTensors) -> tuple[dict[str, Any], str]:
        """Write `tensors` to the next slot, hashing each one's bytes in the slot right
        after copying them (still in cache): (the handle, `tensors_digest(tensors)`)."""
        token = uuid.uuid4().hex
        if any(t.is_cuda for t in tensors.values()):
            return self._put_cuda(tensors, token), tensors_digest(tensors)
        entries, size = layout_of(tensors)
        inner: dict[str, bytes] = {}
        os.makedirs(self.directory, exist_ok=True)
        path = os.path.join(self.directory, f"slot{self._written % self.slots}")
        self._written += 1
        lock, mapped = self._slot(path, size, writable=True)
        self._lock_exclusive(lock, path)  # waits for an engine still reading this slot
        try:
            view = np.frombuffer(mapped, dtype=np.uint8)
            view[:16] = np.frombuffer(bytes.fromhex(token), dtype=np.uint8)
            for entry in entries:
                inner[entry.name] = _copy_hashing(_bytes_of(tensors[entry.name]), view[entry.offset : entry.offset + entry.num_bytes])
            del view
        except (OSError, BufferError) as err:
            raise OSError(f"shared_memory transport: writing {size / 2**20:.0f} MiB to {path} failed ({err}); "
                          "is the tmpfs large enough (docker --shm-size)?") from err
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
        return {"path": path, "token": token, "entries": entries}, combined_digest(tensors, inner)

    def get(self, handle: dict[str, Any]) -> NamedTensors:
        if "cuda" in handle:
            if handle["pid"] == os.getpid():  # CUDA cannot open its own IPC handles
                if handle["token"] not in _SAME_PROCESS:
                    raise Superseded(f"GPU snapshot {handle['token'][:8]} was replaced")
                return _SAME_PROCESS[handle["token"]]
            return {name: rebuild(*args) for name, (rebuild, args) in handle["cuda"].items()}
        path = handle["path"]
        lock, mapped = self._slot(path, None, writable=False)
        needed = max((e.offset + e.num_bytes for e in handle["entries"]), default=0)
        if len(mapped) < needed:  # the writer grew the slot since this process mapped it
            os.close(self._mapped.pop(path)[0])
            lock, mapped = self._slot(path, None, writable=False)
        fcntl.flock(lock, fcntl.LOCK_SH)  # held until release: the trainer does not overwrite it meanwhile
        if mapped[:16].hex() != handle["token"]:  # a newer version took the slot
            fcntl.flock(lock, fcntl.LOCK_UN)
            raise Superseded(f"{path} holds a newer snapshot than {handle['token'][:8]}")
        data = np.frombuffer(mapped, dtype=np.uint8)
        return from_buffers({e.name: (e.dtype, e.shape, data[e.offset : e.offset + e.num_bytes]) for e in handle["entries"]})

    def release(self, handle: dict[str, Any]) -> None:
        """The engine has loaded the weights `get` returned: unlock the slot."""
        slot = self._mapped.get(handle.get("path", ""))
        if slot is not None:
            fcntl.flock(slot[0], fcntl.LOCK_UN)

    def close(self) -> None:
        """Remove the slot files (the driver calls it when the run ends)."""
        shutil.rmtree(self.directory, ignore_errors=True)

    def _slot(self, path: str, size: int | None, writable: bool) -> tuple[int, mmap.mmap]:
        """The slot's lock descriptor and mapping, opened once per process (again when
        the writer needs another size). The mapping is made through a second
        descriptor: flock belongs to the open file, and mmap keeps a duplicate of the
        descriptor it is given."""
        kept = self._mapped.get(path)
        if kept is not None and (size is None or len(kept[1]) == size):
            return kept
        if kept is not None:
            os.close(kept[0])  # a writer's slot of another size: mapped anew below
        try:
            lock = os.open(path, os.O_RDWR | os.O_CREAT if writable else os.O_RDONLY, 0o600)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"shared_memory transport: {path} does not exist on this node; engines must run on the trainer's "
                "node (use weight_sync.transport=collective or object_store across nodes)"
            ) from None
        if writable:
            self._lock_exclusive(lock, path)
            try:
                if os.fstat(lock).st_size != size:
                    os.ftruncate(lock, size)
                # Reserve the pages now: a tmpfs too small for them fails here with
                # ENOSPC, not later with SIGBUS while the trainer writes into the mapping.
                os.posix_fallocate(lock, 0, size)
            except OSError as err:
                raise OSError(f"shared_memory transport: cannot reserve {size / 2**20:.0f} MiB in {path} ({err}); "
                              "is the tmpfs large enough (docker --shm-size, weight_sync.shm_root)?") from err
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        mapping_fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
        try:
            mapped = mmap.mmap(mapping_fd, 0, prot=mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0))
        finally:
            os.close(mapping_fd)
        self._mapped[path] = (lock, mapped)
        return lock, mapped

    def _lock_exclusive(self, lock: int, path: str) -> None:
        """The writer's lock on a slot, waiting at most `lock_timeout_s` for readers."""
        deadline = time.monotonic() + self.lock_timeout_s
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"shared_memory transport: an engine has held {path} for over {self.lock_timeout_s}s "
                        "(reading weights it never released)"
                    ) from None
                time.sleep(0.01)

    def _put_cuda(self, tensors: NamedTensors, token: str) -> dict[str, Any]:
        from torch.multiprocessing.reductions import reduce_tensor

        kept = {name: t.detach().clone() for name, t in tensors.items()}
        self._cuda_kept = [*self._cuda_kept[-(self.slots - 1):], kept]
        _SAME_PROCESS[token] = kept  # an engine in this process (executor=inprocess) takes them directly
        while len(_SAME_PROCESS) > self.slots:  # the oldest first
            _SAME_PROCESS.pop(next(iter(_SAME_PROCESS)))
        return {"token": token, "pid": os.getpid(), "cuda": {name: reduce_tensor(t) for name, t in kept.items()}}


def _copy_hashing(source: np.ndarray, target: np.ndarray, chunk: int = 1 << 20) -> bytes:
    """Copy `source` into `target` a chunk at a time, hashing each chunk while it is in
    cache: `bytes_hash(source)` for the price of the copy (xxh3 streams)."""
    h = xxhash.xxh3_128()
    for start in range(0, len(source), chunk):
        target[start : start + chunk] = source[start : start + chunk]
        h.update(target[start : start + chunk].data)
    return h.digest()
