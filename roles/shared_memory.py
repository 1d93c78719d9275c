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
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rlhf_platform.weight_sync import NamedTensors, Superseded, _bytes_of

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
    writes (`put`), the engines' copies read (`get`, `release`)."""

    def __init__(self, root: str = "/dev/shm", slots: int = 2) -> None:
        self.directory = os.path.join(root, f"rlhf-weights-{uuid.uuid4().hex[:12]}")
        self.slots = slots
        self._written = 0  # puts by this process (the trainer): picks the slot
        self._reading: dict[str, tuple[int, mmap.mmap]] = {}  # token -> (locked fd, mapping), engine side
        self._cuda_kept: list[NamedTensors] = []  # the last versions' GPU copies behind open IPC handles

    def put(self, tensors: NamedTensors) -> dict[str, Any]:
        token = uuid.uuid4().hex
        if any(t.is_cuda for t in tensors.values()):
            return self._put_cuda(tensors, token)
        entries, size = layout_of(tensors)
        os.makedirs(self.directory, exist_ok=True)
        path = os.path.join(self.directory, f"slot{self._written % self.slots}")
        self._written += 1
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # waits for an engine still reading this slot
            if os.fstat(fd).st_size != size:
                os.ftruncate(fd, size)
            with mmap.mmap(fd, size) as mapped:
                view = np.frombuffer(mapped, dtype=np.uint8)
                view[:16] = np.frombuffer(bytes.fromhex(token), dtype=np.uint8)
                for entry in entries:
                    view[entry.offset : entry.offset + entry.num_bytes] = _bytes_of(tensors[entry.name])
                del view  # the mapping closes only once no array points into it
        except OSError as err:
            raise OSError(f"shared_memory transport: writing {size / 2**20:.0f} MiB to {path} failed ({err}); "
                          "is the tmpfs large enough (docker --shm-size)?") from err
        finally:
            os.close(fd)  # releases the lock
        return {"path": path, "token": token, "entries": entries}

    def get(self, handle: dict[str, Any]) -> NamedTensors:
        if "cuda" in handle:
            return {name: rebuild(*args) for name, (rebuild, args) in handle["cuda"].items()}
        path = handle["path"]
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"shared_memory transport: {path} does not exist on this node; engines must run on the trainer's "
                "node (use weight_sync.transport=collective or object_store across nodes)"
            ) from None
        fcntl.flock(fd, fcntl.LOCK_SH)
        # Mapped through a second descriptor: mmap keeps a duplicate of the one it is
        # given, which would hold the lock (flock belongs to the open file) past release.
        mapping_fd = os.open(path, os.O_RDONLY)
        try:
            mapped = mmap.mmap(mapping_fd, 0, prot=mmap.PROT_READ)
        finally:
            os.close(mapping_fd)
        if mapped[:16].hex() != handle["token"]:  # a newer version took the slot
            mapped.close()
            os.close(fd)
            raise Superseded(f"{path} holds a newer snapshot than {handle['token'][:8]}")
        self._reading[handle["token"]] = (fd, mapped)
        data = np.frombuffer(mapped, dtype=np.uint8)
        return {e.name: _tensor_view(data, e) for e in handle["entries"]}

    def release(self, handle: dict[str, Any]) -> None:
        """The engine has loaded the weights `get` returned: unlock the slot."""
        fd_and_map = self._reading.pop(handle.get("token", ""), None)
        if fd_and_map is not None:
            os.close(fd_and_map[0])  # the mapping itself goes with the last tensor viewing it

    def close(self) -> None:
        """Remove the slot files (the driver calls it when the run ends)."""
        shutil.rmtree(self.directory, ignore_errors=True)

    def _put_cuda(self, tensors: NamedTensors, token: str) -> dict[str, Any]:
        from torch.multiprocessing.reductions import reduce_tensor

        kept = {name: t.detach().clone() for name, t in tensors.items()}
        self._cuda_kept = [*self._cuda_kept[-(self.slots - 1):], kept]
        return {"token": token, "cuda": {name: reduce_tensor(t) for name, t in kept.items()}}


def _tensor_view(data: np.ndarray, entry: Entry) -> torch.Tensor:
    """A read-only tensor over the mapped bytes of one entry (no copy)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        raw = torch.from_numpy(data[entry.offset : entry.offset + entry.num_bytes])
    return raw.view(getattr(torch, entry.dtype)).reshape(entry.shape)
