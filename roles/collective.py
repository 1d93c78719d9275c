"""Weights by collective broadcast: a torch.distributed group of the trainer's rank 0
(member 0) and every rollout engine (members 1..N), NCCL between GPUs, gloo on CPUs.

The group is its own (a TCPStore and a process group object, not torch's default
group, which the trainer ranks already use) and is formed once at start: the driver
gives every member the rendezvous address (`attach`), each forms the group in a
background thread. Each engine then runs a receiver thread that takes every broadcast
as it comes (while vLLM generates), so a publish costs the trainer one pass over the
weights: a header (names, dtypes, shapes, bucket layout) then the tensors packed into
buckets of `weight_sync.bucket_mb`, one broadcast each. The engine keeps the newest
snapshot until it loads it at its next poll of the bus, which still versions,
verifies (digest) and switches atomically.

A member that dies breaks the group: the driver attaches every member again after a
role restart (`RunRoles.connect_weights`); a publish to a group missing a member fails
after `weight_sync.timeout_s`.
"""
from __future__ import annotations

import pickle
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

from rlhf_platform.roles.shared_memory import ALIGN, Entry
from rlhf_platform.weight_sync import NamedTensors, Superseded


@dataclass
class Received:
    seq: int
    tensors: NamedTensors | None  # dropped once loaded (release)


def bucket_layout(tensors: NamedTensors, bucket_bytes: int) -> list[tuple[int, list[Entry]]]:
    """Tensors packed in order into buckets of at most `bucket_bytes` (a larger tensor
    gets a bucket of its own), 64-byte aligned: [(bucket size, its entries)]."""
    buckets: list[tuple[int, list[Entry]]] = []
    entries: list[Entry] = []
    offset = 0
    for name, t in tensors.items():
        num_bytes = t.numel() * t.element_size()
        if entries and offset + num_bytes > bucket_bytes:
            buckets.append((offset, entries))
            entries, offset = [], 0
        entries.append(Entry(name, str(t.dtype).removeprefix("torch."), tuple(t.shape), offset, num_bytes))
        offset += -(-num_bytes // ALIGN) * ALIGN
    if entries:
        buckets.append((offset, entries))
    return buckets


class CollectiveTransport:
    """`weight_sync.transport=collective`. Built in the driver; trainer rank 0's copy
    sends (`put`), each engine's copy receives (`get`)."""

    def __init__(self, backend: str = "auto", bucket_mb: float = 256.0, timeout_s: float = 600.0) -> None:
        self.backend = backend
        self.bucket_bytes = int(bucket_mb * 2**20)
        self.timeout_s = timeout_s
        self._state: _Membership | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_state": None}  # a membership (threads, sockets) never travels

    def attach(self, member: int, world_size: int, host: str, port: int) -> None:
        """Join the weight group as `member` (0 sends: trainer rank 0; 1.. receive: the
        engines) at the rendezvous `host:port`; returns at once (the group forms in the
        background when every member has attached). Attaching again leaves the old group."""
        if self._state is not None:
            self._state.retire()
        self._state = _Membership(self, member, world_size, host, port)

    def put(self, tensors: NamedTensors) -> dict[str, int]:
        return {"seq": self._membership().send(tensors)}

    def get(self, handle: dict[str, int]) -> NamedTensors:
        return self._membership().newest(handle["seq"])

    def release(self, handle: dict[str, int]) -> None:
        if self._state is not None:
            self._state.loaded(handle["seq"])

    def close(self) -> None:
        """Sender: tell the receivers to stop (end of run); receiver: nothing."""
        if self._state is not None:
            self._state.retire()
            self._state = None

    def _membership(self) -> "_Membership":
        if self._state is None:
            raise RuntimeError("collective transport: this process never joined the weight group (attach)")
        return self._state


class _Membership:
    """One process's place in one weight group: the group, and (receivers) the thread
    that takes every broadcast and keeps the newest snapshot."""

    def __init__(self, transport: CollectiveTransport, member: int, world_size: int, host: str, port: int) -> None:
        self.transport = transport
        self.member = member
        self.world_size = world_size
        self.group: Any = None
        self.error: BaseException | None = None
        self.retired = False
        self.sent = 0
        self.received: Received | None = None
        self.changed = threading.Condition()
        self.device = torch.device("cpu")
        threading.Thread(target=self._run, args=(host, port), name=f"weight-group-{member}", daemon=True).start()

    # --- both sides
    def _run(self, host: str, port: int) -> None:
        try:
            self.group = self._form(host, port)
            with self.changed:
                self.changed.notify_all()
            while self.member != 0 and not self.retired:
                self._receive_one()
        except BaseException as err:  # surfaced to the next put/get
            with self.changed:
                self.error = err
                self.changed.notify_all()

    def _form(self, host: str, port: int) -> Any:
        import torch.distributed as dist

        timeout = timedelta(seconds=self.transport.timeout_s)
        store = dist.TCPStore(host, port, self.world_size, self.member == 0, timeout, wait_for_workers=False)
        backend = self.transport.backend
        if backend == "auto":
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            self.device = torch.device("cuda", torch.cuda.current_device())
            return dist.ProcessGroupNCCL(store, self.member, self.world_size)
        options = dist.ProcessGroupGloo._Options()
        options._timeout = timeout
        loopback = host in ("127.0.0.1", "localhost")
        options._devices = [
            dist.ProcessGroupGloo.create_device(hostname="127.0.0.1") if loopback else dist.ProcessGroupGloo.create_default_device()
        ]
        return dist.ProcessGroupGloo(store, self.member, self.world_size, options)

    def _ready_group(self) -> Any:
        deadline = time.monotonic() + self.transport.timeout_s
        with self.changed:
            while self.group is None and self.error is None:
                if not self.changed.wait(timeout=max(0.0, deadline - time.monotonic())):
                    raise TimeoutError(f"weight group: not every member joined within {self.transport.timeout_s}s")
            if self.error is not None:
                raise RuntimeError(f"weight group (member {self.member}): {self.error}") from self.error
            return self.group

    def _broadcast(self, tensor: torch.Tensor) -> None:
        import torch.distributed as dist

        options = dist.BroadcastOptions()
        options.rootRank = 0
        self.group.broadcast([tensor], options).wait()

    def retire(self) -> None:
        """Leave the group: the sender tells receivers to stop; a receiver stops keeping snapshots."""
        if self.member == 0 and self.group is not None and self.error is None:
            self._send_object(None)
        self.retired = True

    # --- sender (trainer rank 0)
    def send(self, tensors: NamedTensors) -> int:
        if self.member != 0:
            raise RuntimeError(f"weight group: member {self.member} receives; only member 0 (trainer rank 0) publishes")
        self._ready_group()
        self.sent += 1
        buckets = bucket_layout(tensors, self.transport.bucket_bytes)
        self._send_object({"seq": self.sent, "buckets": buckets})
        for size, entries in buckets:
            buffer = torch.empty(size, dtype=torch.uint8, device=self.device)
            for e in entries:
                buffer[e.offset : e.offset + e.num_bytes].copy_(tensors[e.name].detach().contiguous().reshape(-1).view(torch.uint8))
            self._broadcast(buffer)
        return self.sent

    def _send_object(self, value: Any) -> None:
        payload = torch.frombuffer(bytearray(pickle.dumps(value)), dtype=torch.uint8)
        self._broadcast(torch.tensor([payload.numel()], dtype=torch.int64, device=self.device))
        self._broadcast(payload.to(self.device))

    # --- receiver (an engine)
    def _receive_one(self) -> None:
        size = torch.zeros(1, dtype=torch.int64, device=self.device)
        self._broadcast(size)
        payload = torch.empty(int(size.item()), dtype=torch.uint8, device=self.device)
        self._broadcast(payload)
        header = pickle.loads(payload.cpu().numpy().tobytes())
        if header is None:  # the sender retired
            self.retired = True
            return
        tensors: NamedTensors = {}
        for bucket_size, entries in header["buckets"]:
            buffer = torch.empty(bucket_size, dtype=torch.uint8, device=self.device)
            self._broadcast(buffer)
            for e in entries:
                tensors[e.name] = buffer[e.offset : e.offset + e.num_bytes].view(getattr(torch, e.dtype)).reshape(e.shape)
        with self.changed:
            self.received = Received(header["seq"], tensors)
            self.changed.notify_all()

    def newest(self, seq: int) -> NamedTensors:
        """The snapshot broadcast as `seq`, waiting for it to arrive; `Superseded` when a
        newer one already replaced it."""
        deadline = time.monotonic() + self.transport.timeout_s
        with self.changed:
            while (self.received is None or self.received.seq < seq) and self.error is None:
                if not self.changed.wait(timeout=max(0.0, deadline - time.monotonic())):
                    raise TimeoutError(f"weight group: snapshot {seq} did not arrive within {self.transport.timeout_s}s")
            if self.error is not None:
                raise RuntimeError(f"weight group (member {self.member}): {self.error}") from self.error
            if self.received.seq > seq or self.received.tensors is None:
                raise Superseded(f"weight group: snapshot {seq} was replaced by {self.received.seq}")
            return self.received.tensors

    def loaded(self, seq: int) -> None:
        """Drop a loaded snapshot (the engine holds its own copy now)."""
        with self.changed:
            if self.received is not None and self.received.seq == seq:
                self.received.tensors = None
