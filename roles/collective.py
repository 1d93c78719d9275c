"""Weights by collective broadcast: a torch.distributed group of the trainer's rank 0
(member 0) and every rollout engine (members 1..N), NCCL between GPUs, gloo on CPUs.

The group is its own (a TCPStore and a process group object, not torch's default
group, which the trainer ranks already use) and is formed once at start: the driver
gives every member the rendezvous address (`attach`), each forms the group in a
background thread. A publish writes a header (its token, names, dtypes, shapes, the
bucket layout) to the store, then broadcasts the tensors packed into buckets of
`weight_sync.bucket_mb`. Each engine runs a receiver thread that polls the store for
the next header (no collective is left pending while the trainer trains, so an idle
group never times out) and takes the broadcasts while vLLM generates; the engine keeps
the newest snapshot until it loads it at its next poll of the bus, which still
versions, verifies (digest) and switches atomically. Handles name a snapshot by token.

A member that dies breaks the group: the driver attaches every member again after a
role restart (`RunRoles.connect_weights`), and trainer rank 0 then sends the last
published weights again under their token, so a restarted engine can load the version
the bus names. A publish to a group missing a member fails after `weight_sync.timeout_s`.
"""
from __future__ import annotations

import pickle
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

from rlhf_platform.roles.executor import rendezvous_store
from rlhf_platform.roles.shared_memory import ALIGN, Entry
from rlhf_platform.weight_sync import NamedTensors, Superseded

POLL_S = 0.02  # how often a receiver checks the store for the next header


@dataclass
class Received:
    token: str
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
        self.backend = backend  # auto (nccl on GPU, gloo on CPU) | gloo | nccl
        self.bucket_bytes = int(bucket_mb * 2**20)
        self.timeout_s = timeout_s
        self._state: _Membership | None = None
        self._last: tuple[str, NamedTensors] | None = None  # sender: the last published (token, tensors)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_state": None, "_last": None}  # a membership (threads, sockets) never travels

    def attach(self, member: int, world_size: int, host: str, port: int) -> None:
        """Join the weight group as `member` (0 sends: trainer rank 0; 1.. receive: the
        engines) at the rendezvous `host:port`; returns at once (the group forms in the
        background when every member has attached). Attaching again leaves the old
        group; the sender then sends its last published weights again."""
        if self._state is not None:
            self._state.retire()
        self._state = _Membership(self, member, world_size, host, port)

    def put(self, tensors: NamedTensors) -> dict[str, str]:
        token = uuid.uuid4().hex
        self._membership().send(tensors, token)
        self._last = (token, tensors)
        return {"token": token}

    def get(self, handle: dict[str, str]) -> NamedTensors:
        return self._membership().snapshot(handle["token"])

    def release(self, handle: dict[str, str]) -> None:
        if self._state is not None:
            self._state.loaded(handle["token"])

    def close(self) -> None:
        """Leave the group (the sender's receivers stop; end of run)."""
        if self._state is not None:
            self._state.retire()
            self._state = None

    def _membership(self) -> "_Membership":
        if self._state is None:
            raise RuntimeError("collective transport: this process never joined the weight group (attach)")
        return self._state


class _Membership:
    """One process's place in one weight group: the group and its store, and (receivers)
    the thread that takes every broadcast and keeps the newest snapshot."""

    def __init__(self, transport: CollectiveTransport, member: int, world_size: int, host: str, port: int) -> None:
        self.transport = transport
        self.member = member
        self.world_size = world_size
        self.group: Any = None
        self.store: Any = None
        self.error: BaseException | None = None
        self.retired = False
        self.headers = 0  # headers sent (sender) or taken (receiver) in this group
        self.sending = threading.Lock()  # a resend and a put never interleave their broadcasts
        self.received: Received | None = None
        self.arrivals = 0
        self.tokens: set[str] = set()  # every snapshot received in this group
        self.changed = threading.Condition()
        self.device = torch.device("cpu")
        self.stream: Any = None  # NCCL: broadcasts run on their own CUDA stream
        threading.Thread(target=self._run, args=(host, port), name=f"weight-group-{member}", daemon=True).start()

    # --- both sides
    def _run(self, host: str, port: int) -> None:
        try:
            group = self._form(host, port)
            with self.changed:
                self.group = group
                retired = self.retired
                self.changed.notify_all()
            if self.member == 0:
                last = self.transport._last
                if retired:  # left while forming: the receivers stop now
                    self._tell_receivers_to_stop()
                elif last is not None:  # re-formed after a restart: the engines need what the bus names
                    self.send(last[1], last[0])
                return
            while not self.retired:
                self._receive_one()
        except BaseException as err:  # surfaced to the next put/get
            with self.changed:
                self.error = err
                self.changed.notify_all()

    def _form(self, host: str, port: int) -> Any:
        import torch.distributed as dist

        timeout = timedelta(seconds=self.transport.timeout_s)
        self.store = rendezvous_store(host, port, self.world_size, self.member == 0, timeout)
        group_store = dist.PrefixStore("group", self.store)
        backend = self.transport.backend
        if backend == "auto":
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            self.device = torch.device("cuda", torch.cuda.current_device())
            self.stream = torch.cuda.Stream(self.device)
            options = dist.ProcessGroupNCCL.Options()
            options._timeout = timeout
            return dist.ProcessGroupNCCL(group_store, self.member, self.world_size, options)
        options = dist.ProcessGroupGloo._Options()
        options._timeout = timeout
        loopback = host in ("127.0.0.1", "localhost")
        options._devices = [
            dist.ProcessGroupGloo.create_device(hostname="127.0.0.1") if loopback else dist.ProcessGroupGloo.create_default_device()
        ]
        return dist.ProcessGroupGloo(group_store, self.member, self.world_size, options)

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
        if self.stream is None:
            self.group.broadcast([tensor], options).wait()
            return
        self.stream.wait_stream(torch.cuda.current_stream(self.device))  # the buffer is filled first
        with torch.cuda.stream(self.stream):
            self.group.broadcast([tensor], options).wait()
        self.stream.synchronize()  # the bytes are there before anyone reads them

    def retire(self) -> None:
        """Leave the group: the sender tells its receivers to stop (through the store,
        which lives in its process: this works even when a member died); a receiver
        stops taking snapshots. A group still forming is left to its thread, which uses
        the store until it is formed and then tells the receivers itself."""
        with self.changed:
            self.retired = True
            formed = self.group is not None
        if self.member == 0 and formed:
            self._tell_receivers_to_stop()

    def _tell_receivers_to_stop(self) -> None:
        try:
            with self.sending:
                self.store.set(f"header/{self.headers + 1}", pickle.dumps(None))
        except Exception:  # the store is gone already: nothing to tell
            pass

    # --- sender (trainer rank 0)
    def send(self, tensors: NamedTensors, token: str) -> None:
        if self.member != 0:
            raise RuntimeError(f"weight group: member {self.member} receives; only member 0 (trainer rank 0) publishes")
        self._ready_group()
        buckets = bucket_layout(tensors, self.transport.bucket_bytes)
        with self.sending:
            self.headers += 1
            self.store.set(f"header/{self.headers}", pickle.dumps({"token": token, "buckets": buckets}))
            for size, entries in buckets:
                buffer = torch.empty(size, dtype=torch.uint8, device=self.device)
                for e in entries:
                    buffer[e.offset : e.offset + e.num_bytes].copy_(tensors[e.name].detach().contiguous().reshape(-1).view(torch.uint8))
                self._broadcast(buffer)

    # --- receiver (an engine)
    def _receive_one(self) -> None:
        key = f"header/{self.headers + 1}"
        while not self.store.check([key]):
            if self.retired:
                return
            time.sleep(POLL_S)
        header = pickle.loads(self.store.get(key))
        self.headers += 1
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
            self.received = Received(header["token"], tensors)
            self.tokens.add(header["token"])
            self.arrivals += 1
            self.changed.notify_all()

    def snapshot(self, token: str) -> NamedTensors:
        """The snapshot broadcast under `token`: the newest one if it is, else the next
        to arrive if that is it; `Superseded` when another one arrives instead."""
        deadline = time.monotonic() + self.transport.timeout_s
        with self.changed:
            seen = self.arrivals
            while True:
                if self.error is not None:
                    raise RuntimeError(f"weight group (member {self.member}): {self.error}") from self.error
                if self.received is not None and self.received.token == token and self.received.tensors is not None:
                    return self.received.tensors
                if self.arrivals > seen or token in self.tokens:  # another arrived after it, or it was loaded
                    raise Superseded(f"weight group: snapshot {token[:8]} was replaced before it was read")
                if not self.changed.wait(timeout=max(0.0, deadline - time.monotonic())):
                    raise TimeoutError(f"weight group: snapshot {token[:8]} did not arrive within {self.transport.timeout_s}s")

    def loaded(self, token: str) -> None:
        """Drop a loaded snapshot (the engine holds its own copy now)."""
        with self.changed:
            if self.received is not None and self.received.token == token:
                self.received.tensors = None
