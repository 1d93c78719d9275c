"""The in-process executor: the run's role classes called directly in this process.

Not a mock: the same roles, algorithms and data types as under Ray; only the
transport differs. A call runs when it is made and its future holds the value (or the
exception), so a run is sequential and deterministic. It needs torch, transformers and
DeepSpeed, but neither Ray nor vLLM (with `rollout.backend=hf`): the way the scheduler
is tested in seconds, and the way a run goes on a machine without Ray.

`crash(role)` makes a role fail like a Ray actor whose process died: the next call
raises `RoleDied`, then the role is built again if it has restarts left.
`restart_unseen(role)` is the other way a process dies: between two calls, Ray starts it
again before the next call, which reaches the new role without any error.
"""
from __future__ import annotations

import os
from typing import Any, Callable

import torch

from rlhf_platform.weight_sync import NamedTensors
from rlhf_platform.roles.executor import Future, Placement, RoleDied, free_port, unwrap_args


class Done:
    """A call that has already run: its value, or the exception it raised."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._value, self._error = None, None
        try:
            self._value = fn()
        except Exception as err:  # raised again by result(), as Ray does
            self._error = err

    def result(self, timeout: float | None = None) -> Any:
        if self._error is not None:
            raise self._error
        return self._value

    def wait(self) -> None:
        return None

    def done(self) -> bool:
        return True


def _resolve(future: Future) -> Any:
    return future.result()


class LocalRole:
    """A handle on a role object in this process: `handle.method(...)` runs the method
    and returns a `Done` future."""

    def __init__(self, name: str, build: Callable[[], Any], restarts: int = 0) -> None:
        self._name = name
        self._build = build
        self._restarts_left = restarts
        self._crash_pending = False
        self._dead = False
        self._obj = build()

    @property
    def role_name(self) -> str:
        return self._name

    def __getattr__(self, method: str) -> Callable[..., Done]:
        if method.startswith("_"):
            raise AttributeError(method)

        def invoke(*args: Any, **kwargs: Any) -> Done:
            return Done(lambda: self._invoke(lambda obj, *a, **k: getattr(obj, method)(*a, **k), method, args, kwargs))

        return invoke

    def _invoke(self, fn: Callable[..., Any], call: str, args: tuple, kwargs: dict) -> Any:
        """`fn(the role's object, *args, **kwargs)`, failing as a dead process would."""
        if self._crash_pending:
            self._invoke_restart()
            raise RoleDied(f"{self._name}: its process died during {call}")
        if self._dead:
            raise RoleDied(f"{self._name} is dead (killed, or out of restarts)")
        args, kwargs = unwrap_args(args, kwargs, _resolve)
        try:
            return fn(self._obj, *args, **kwargs)
        except RoleDied as err:
            if getattr(err, "restarts_role", False):  # as a Ray actor, it would have ended its process
                self._invoke_restart()
            raise

    def _invoke_restart(self) -> None:
        self._crash_pending = False
        if self._restarts_left > 0:
            self._restarts_left -= 1
            self._obj = self._build()
        else:
            self._dead = True

    def crash(self) -> None:
        """Fail the next call as if the process died then; restart the role after it."""
        self._crash_pending = True

    def restart_unseen(self) -> None:
        """The process died and was started again between calls: the next call reaches a
        freshly built role, with no error (a Ray actor restarted before the call came)."""
        self._invoke_restart()

    def kill(self) -> None:
        self._dead = True
        self._obj = None


class InProcessTransport:
    """Weights handed over inside one process: a private copy of the tensors (the
    trainer goes on updating its own) is the handle."""

    def put(self, tensors: NamedTensors) -> Any:
        return {name: t.detach().clone() for name, t in tensors.items()}

    def get(self, handle: Any) -> NamedTensors:
        return handle

    def release(self, handle: Any) -> None:
        return None


class InProcessExecutor:
    """Starts roles as objects of this process (`executor=inprocess`)."""

    name = "inprocess"

    def start_role(
        self, cls: type, name: str, *args: Any, placement: Placement | None = None, restarts: int = 0, **kwargs: Any
    ) -> LocalRole:
        return LocalRole(name, lambda: cls(*args, **kwargs), restarts)

    def start_ranks(
        self, cls: type, name: str, world_size: int, *args: Any,
        placement: Placement | None = None, strategy: str = "PACK", group: Any = None, **kwargs: Any,
    ) -> list[LocalRole]:
        """One rank in this process (config refuses more under `executor=inprocess`):
        a one-rank process group on loopback, joined once per process."""
        if world_size != 1:
            raise ValueError(f"{name}: the in-process executor runs one rank, not {world_size}")
        # vLLM, when it runs in this process, may have formed a one-process group already.
        if not torch.distributed.is_initialized():
            os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
        for key, value in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
            os.environ.setdefault(key, value)
        rank = self.start_role(cls, f"{name}-rank0", *args, **kwargs)
        rank.setup().result()
        return [rank]

    def get_all(self, futures: list[Future]) -> list[Any]:
        return [f.result() for f in futures]

    def reserve(self, bundles: list[dict[str, float]], strategy: str, name: str) -> None:
        return None  # one process: nothing to place

    def in_bundle(self, group: Any, index: int) -> None:
        return None

    def release(self, group: Any) -> None:
        return None

    def call_with(self, role: LocalRole, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Done:
        return Done(lambda: role._invoke(fn, getattr(fn, "__name__", "call"), args, kwargs))

    def kill(self, role: LocalRole) -> None:
        role.kill()

    def release_ranks(self, ranks: list[LocalRole]) -> None:
        for rank in ranks:
            rank.kill()

    def crash(self, role: LocalRole) -> None:
        """Fault injection: `role` fails its next call as if its process died."""
        role.crash()

    def restart_unseen(self, role: LocalRole) -> None:
        """Fault injection: `role`'s process died and came back between two calls."""
        role.restart_unseen()

    def wait_alive(self, roles: list[Any], timeout_s: float = 900.0) -> None:
        return None  # a crashed role is rebuilt on its next call

    def transport(self) -> InProcessTransport:
        return InProcessTransport()

    def rendezvous(self, role: LocalRole) -> tuple[str, int]:
        return "127.0.0.1", free_port()

    def memory_metrics(self) -> dict[str, float]:
        return {}
