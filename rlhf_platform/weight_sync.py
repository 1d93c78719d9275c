"""The versioned weight-sync bus between the trainer and the rollout engines.

The trainer publishes version v (a monotonically increasing integer it owns) with a
digest of the tensors; engines poll `latest()` between generation batches, fetch the
tensors through the transport, check the digest, and switch atomically. The bus keeps
only the newest snapshot, so older tensors are freed from the object store.

Transports move the tensors; the bus does not care which one (`weight_sync.transport`,
built by `roles/transports.make_transport`):

  object_store   `roles/object_store`: the Ray object store; any hardware, across nodes
  shared_memory  `roles/shared_memory`: tmpfs files the engine maps (CUDA IPC handles
                 for GPU tensors); engines on the trainer's node
  collective     `roles/collective`: a torch.distributed group of trainer rank 0 and
                 every engine, bucketed broadcast (NCCL on GPU, gloo on CPU)
  (in process)   `roles/inprocess.InProcessTransport`: a private copy, one process
"""
from __future__ import annotations

import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import xxhash

NamedTensors = dict[str, torch.Tensor]


def tensors_digest(tensors: NamedTensors) -> str:
    """xxh3-128 over each tensor's name, dtype, shape and the xxh3-128 of its bytes, in
    name order.

    It checks that what an engine loads is what the trainer published (a transfer gone
    wrong, a mixed-up version), not a security boundary: checkpoints, which can be
    tampered with at rest, use sha256 manifests. xxh3 runs at memory speed (sha256 took
    15x longer here), and the tensors are hashed on several threads (xxhash releases
    the GIL): it runs twice per sync, on both sides of the transfer."""
    names = sorted(tensors)
    workers = min(4, os.cpu_count() or 1)
    hash_one = lambda name: bytes_hash(_bytes_of(tensors[name]))  # noqa: E731
    if workers > 1 and len(names) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            inner = dict(zip(names, pool.map(hash_one, names)))
    else:
        inner = {name: hash_one(name) for name in names}
    return combined_digest(tensors, inner)


def bytes_hash(data: np.ndarray) -> bytes:
    """The xxh3-128 of one tensor's bytes (`tensors_digest` combines them)."""
    return xxhash.xxh3_128(data.data).digest()


def combined_digest(tensors: NamedTensors, inner: dict[str, bytes]) -> str:
    """`tensors_digest` from each tensor's `bytes_hash` (a transport that hashes the
    bytes while it writes them makes the same digest in one pass)."""
    h = xxhash.xxh3_128()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(inner[name])
    return h.hexdigest()


def _bytes_of(tensor: torch.Tensor) -> np.ndarray:
    """A tensor's bytes as a flat uint8 array (no copy for a contiguous CPU tensor)."""
    return tensor.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy()


def to_buffers(tensors: NamedTensors) -> dict[str, tuple[str, tuple[int, ...], np.ndarray]]:
    """Each tensor as (dtype, shape, its bytes as a numpy array), without copying.

    Ray serialises numpy arrays out of band: `ray.put` copies their bytes once into the
    object store and `ray.get` on the same node maps them without a copy. Torch tensors
    instead go through `torch.save` into a pickle (a copy on each side plus the store's),
    which made publishing SmolLM2 4x slower. bf16 has no numpy dtype, hence raw bytes."""
    return {name: (str(t.dtype).removeprefix("torch."), tuple(t.shape), _bytes_of(t)) for name, t in tensors.items()}


def from_buffers(buffers: dict[str, tuple[str, tuple[int, ...], np.ndarray]]) -> NamedTensors:
    """The tensors `to_buffers` described, as views of its arrays (read-only when they
    live in the object store: callers copy them into their own parameters)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return {
            name: torch.from_numpy(array).view(getattr(torch, dtype)).reshape(shape)
            for name, (dtype, shape, array) in buffers.items()
        }


@dataclass(frozen=True)
class WeightSnapshot:
    """A published version: what engines need to fetch and verify it."""

    version: int
    digest: str
    handle: Any  # transport-specific (a list holding one ObjectRef for the object store)
    num_bytes: int
    published_at: float


class Transport(Protocol):
    def put(self, tensors: NamedTensors) -> Any:
        """Make tensors fetchable; return a handle small enough to pass around."""

    def get(self, handle: Any) -> NamedTensors:
        """Fetch the tensors a handle names (raises `Superseded` when a newer snapshot
        replaced them first: the engine polls the bus again)."""

    def release(self, handle: Any) -> None:
        """The engine has loaded what `get` returned: the transport may reuse its memory."""


class DigestMismatch(RuntimeError):
    pass


class Superseded(RuntimeError):
    """The snapshot asked for was replaced by a newer one before it was read."""


def fetch_verified(snapshot: WeightSnapshot, transport: Transport) -> NamedTensors:
    """Fetch a snapshot's tensors and check them against its digest."""
    tensors = transport.get(snapshot.handle)
    digest = tensors_digest(tensors)
    if digest != snapshot.digest:
        raise DigestMismatch(f"weight version {snapshot.version}: digest {digest[:12]} != published {snapshot.digest[:12]}")
    return tensors


class WeightSyncBus:
    """Holds the newest published snapshot. A plain class; the pipeline runs it as the
    named Ray actor `weight-bus`."""

    def __init__(self) -> None:
        self._latest: WeightSnapshot | None = None
        self._served: dict[str, int] = {}
        self._corrupt: dict[int, list[str]] = {}  # version: the engines whose fetches of it failed verification

    def publish(self, snapshot: WeightSnapshot) -> int:
        """Record a new version; versions must increase, except that a version reported
        corrupt may be published again in place of the bad copy."""
        latest = self._latest
        if latest is not None and snapshot.version <= latest.version:
            if not (snapshot.version == latest.version and latest.version in self._corrupt):
                raise ValueError(f"version {snapshot.version} published after {latest.version}; versions must increase")
        self._corrupt.pop(snapshot.version, None)
        self._latest = snapshot
        return snapshot.version

    def report_corrupt(self, engine: str, version: int) -> None:
        """An engine fetched `version` twice and neither copy matched its digest."""
        if self._latest is not None and self._latest.version == version:
            self._corrupt.setdefault(version, []).append(engine)

    def corrupt_version(self) -> int | None:
        """The latest version, if an engine reported it corrupt (it needs publishing again)."""
        latest = self._latest
        return latest.version if latest is not None and latest.version in self._corrupt else None

    def latest(self) -> WeightSnapshot | None:
        return self._latest

    def latest_version(self) -> int:
        return -1 if self._latest is None else self._latest.version

    def report_served(self, engine: str, version: int) -> None:
        """Engines report the version they serve after each switch."""
        self._served[engine] = version

    def served(self) -> dict[str, int]:
        return dict(self._served)


def engine_weights(state: NamedTensors, tied_lm_head: bool, dtype: torch.dtype | None = None) -> NamedTensors:
    """The tensors an engine loads from a full model state dict: without the LM head when
    it is tied to the embeddings (the engine ties it itself), cast to `dtype` if given."""
    return {
        name: tensor if dtype is None else tensor.to(dtype)
        for name, tensor in state.items()
        if not (tied_lm_head and name == "lm_head.weight")
    }


def snapshot_of(tensors: NamedTensors, version: int, transport: Transport) -> WeightSnapshot:
    """Digest and put tensors, returning the snapshot to publish. A transport with
    `put_digested` hashes the bytes as it writes them (one pass over the weights)."""
    num_bytes = sum(t.numel() * t.element_size() for t in tensors.values())
    put_digested = getattr(transport, "put_digested", None)
    if put_digested is not None:
        handle, digest = put_digested(tensors)
    else:
        digest, handle = tensors_digest(tensors), transport.put(tensors)
    return WeightSnapshot(version=version, digest=digest, handle=handle, num_bytes=num_bytes, published_at=time.time())
