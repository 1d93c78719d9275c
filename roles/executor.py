"""How a run's roles are started and called: the interface both executors implement.

A role is a plain class. An executor starts it and hands back a *role handle*: calling
`handle.method(*args)` starts the call and returns a `Future`; `future.result()` waits
for it. A future may be passed as an argument to another call (the value flows from one
role to the next without the recipe waiting for it). Two executors implement this:

  ray        (`roles/ray_executor.py`) each role is a named Ray actor
  inprocess  (`roles/inprocess.py`) the same classes, called directly in this process

Recipes and the rank group speak only this interface, so the whole loop runs, and is
tested, the same way under both. A call on a role whose process died raises `RoleDied`
from `result()` under either executor.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable, Protocol


class RoleDied(RuntimeError):
    """The role's process died during (or before) the call; the call did not complete.
    The role restarts if it has restarts left (its constructor runs again)."""


class RoleRestarted(RoleDied):
    """The role's process died and was started again since the caller last reached it:
    the call met a freshly constructed role that lacks the state the caller keeps for it,
    and was refused before it ran (`RecoveringRole` restores the state and calls again)."""


class RoleTimeout(TimeoutError):
    """A call on a role did not answer within the deadline (`ray.call_timeout_s`): a hang
    becomes an error naming the role and the call, not a run that waits forever."""


class Future(Protocol):
    def result(self, timeout: float | None = None) -> Any:
        """The call's value; raises what the call raised (`RoleDied` if its role died)."""

    def wait(self) -> None:
        """Block until the call has finished, successfully or not, without raising."""

    def done(self) -> bool:
        """Whether the call has finished (successfully or not), without blocking."""


@dataclass
class Placement:
    """What one actor of a role reserves on the cluster (ignored in process)."""

    num_cpus: float = 0.0
    num_gpus: float = 0.0
    resources: dict[str, float] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    scheduling: Any = None  # a Ray scheduling strategy (a placement group bundle)

    def bundle(self) -> dict[str, float]:
        """What the actor reserves, as a placement group bundle (nothing zero)."""
        wanted = {"CPU": self.num_cpus, "GPU": self.num_gpus, **self.resources}
        return {k: float(v) for k, v in wanted.items() if v > 0}


class Executor(Protocol):
    name: str

    def start_role(
        self, cls: type, name: str, *args: Any, placement: Placement | None = None, restarts: int = 0, **kwargs: Any
    ) -> Any:
        """Start `cls(*args, **kwargs)` as the role `name`; returns its handle."""

    def start_ranks(
        self, cls: type, name: str, world_size: int, *args: Any,
        placement: Placement | None = None, strategy: str = "PACK", group: Any = None, **kwargs: Any,
    ) -> list[Any]:
        """Start `world_size` ranks `{name}-rank{i}` of a torch.distributed role and wait
        until each has joined the process group (`cls.setup()`). Rank i goes in bundle i
        of `group` (from `reserve`, shared with other roles) or of a placement group of
        its own."""

    def reserve(self, bundles: list[dict[str, float]], strategy: str, name: str) -> Any:
        """A placement group of `bundles`, ready, that roles share (`in_bundle`)."""

    def in_bundle(self, group: Any, index: int) -> Any:
        """The scheduling that puts a role in bundle `index` of a `reserve`d group."""

    def release(self, group: Any) -> None:
        """Free a `reserve`d group (its roles are stopped first)."""

    def get_all(self, futures: list[Future]) -> list[Any]:
        """The futures' values in order; the first failure raises at once."""

    def call_with(self, role: Any, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
        """Run `fn(the role's object, *args, **kwargs)` in the role's process, in turn
        with its other calls (arguments that are futures are resolved first)."""

    def kill(self, role: Any) -> None:
        """Stop a role for good."""

    def release_ranks(self, ranks: list[Any]) -> None:
        """Stop the ranks `start_ranks` started, and free what they reserved together."""

    def wait_alive(self, roles: list[Any], timeout_s: float = 900.0) -> None:
        """Block until every role answers again after a restart."""

    def transport(self) -> Any:
        """How weights travel from the trainer to the engines under this executor."""

    def rendezvous(self, role: Any) -> tuple[str, int]:
        """(`role`'s node address, a port free there): where a group it leads meets."""

    def memory_metrics(self) -> dict[str, float]:
        """Memory the executor holds outside the driver (e.g. Ray's object store)."""


def is_future(value: Any) -> bool:
    """A call's future (looked up on the type: a role handle answers any attribute)."""
    return callable(getattr(type(value), "result", None)) and callable(getattr(type(value), "wait", None))


def unwrap_args(args: tuple, kwargs: dict, convert) -> tuple[tuple, dict]:
    """A call's arguments with each future among them (top level only, as Ray resolves
    them) passed through `convert`: a call may take another call's result."""
    args = tuple(convert(a) if is_future(a) else a for a in args)
    kwargs = {k: convert(v) if is_future(v) else v for k, v in kwargs.items()}
    return args, kwargs


def in_actor_process() -> bool:
    """Whether this code runs in a Ray actor's own process (a role that cannot go on may
    end it, and Ray starts it again), rather than in the driver's."""
    try:
        import ray

        return ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None
    except Exception:  # noqa: BLE001 - no Ray, or no runtime context
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` now (a torch.distributed rendezvous)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def rendezvous_store(host: str, port: int, world_size: int, is_master: bool, timeout: timedelta) -> Any:
    """torch's TCPStore for `world_size` processes meeting at `host:port`. The master's
    server listens on `host` only (loopback on a local cluster): torch's own listener
    binds every address, and the store is unauthenticated."""
    import torch.distributed as dist

    listen_fd = None
    if is_master:
        listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(1024)
        listen_fd = listener.detach()  # owned by the store's server from here on
    return dist.TCPStore(host, port, world_size, is_master, timeout, wait_for_workers=False, master_listen_fd=listen_fd)


def call(role: Any, method: str, *args: Any, **kwargs: Any) -> Any:
    """Call `method` on a role and wait for it: through its handle under either
    executor, or directly on a plain role object (unit tests)."""
    out = getattr(role, method)(*args, **kwargs)
    return out.result() if is_future(out) else out
