"""A driver-side handle on a single-instance role whose state the driver keeps, so the
role's death is a restart, not the end of the run.

The prompt queue and the Advantage Builder hold state a run cannot lose (the leases and
the ledger; the reward moments and the adaptive KL coefficient). After each call that
changes it, the handle keeps a copy (`get_state`); a call that finds the role dead
waits until the executor started it again (its constructor ran anew), loads the copy,
and makes the call again, so the call happens exactly once on the state as it was.
Calls through this handle are made one at a time and waited for.

A process can also die between two calls and be started again before the next one
comes: that call would reach a fresh role, without error, and lease prompts already
leased or ack a lease the fresh queue never made. So the handle marks the role object it
speaks to with a token of its own (set when the role starts and when its state is
loaded), and every call goes through `_guarded_call`, which refuses an object without
the token (`RoleRestarted`) before the method runs.
"""
from __future__ import annotations

import sys
import uuid
from typing import Any

from rlhf_platform.roles.executor import Executor, RoleDied, RoleRestarted

_TOKEN = "_recovering_role_token"  # the attribute of the role object that holds the handle's token


def _guarded_call(role: Any, token: str, method: str, /, *args: Any, **kwargs: Any) -> Any:
    """`role.method(*args, **kwargs)`, run in the role's process, if `role` is the object
    whose state the handle keeps (not one constructed anew by a restart)."""
    if getattr(role, _TOKEN, None) != token:
        raise RoleRestarted(f"{type(role).__name__} was started again since its state was last loaded")
    return getattr(role, method)(*args, **kwargs)


def _adopt(role: Any, token: str, load: str | None = None, state: Any = None) -> None:
    """Load `state` into `role` (with its method `load`, unless None), then mark it as the
    object the handle with `token` speaks to."""
    if load is not None:
        getattr(role, load)(state)
    setattr(role, _TOKEN, token)


class Resolved:
    """A call's value, already there: what the handle returns in place of a future."""

    def __init__(self, value: Any) -> None:
        self._value = value

    def result(self, timeout: float | None = None) -> Any:
        return self._value

    def wait(self) -> None:
        return None

    def done(self) -> bool:
        return True


class RecoveringRole:
    def __init__(
        self, handle: Any, executor: Executor, mutating: frozenset[str], restarts: int,
        save: str = "get_state", load: str = "load_state",
    ) -> None:
        self.handle = handle
        self.executor = executor
        self.mutating = mutating | {"load_state", load}
        self.restarts = restarts
        self._save, self._load = save, load  # the role's methods that give and take its state
        self.recoveries = 0  # deaths recovered from
        self._token = uuid.uuid4().hex
        executor.call_with(handle, _adopt, self._token).result()
        self.saved = self._guarded(save)

    @property
    def role_name(self) -> str:
        return self.handle.role_name

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)

        def invoke(*args: Any, **kwargs: Any) -> Resolved:
            return Resolved(self._call(method, args, kwargs))

        return invoke

    def _guarded(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self.executor.call_with(self.handle, _guarded_call, self._token, method, *args, **kwargs).result()

    def _call(self, method: str, args: tuple, kwargs: dict) -> Any:
        restore = False
        for attempt in range(self.restarts + 1):
            try:
                if restore:  # the role died: wait for its restart, then put the kept state back
                    self.executor.wait_alive([self.handle])
                    self.executor.call_with(self.handle, _adopt, self._token, self._load, self.saved).result()
                    self.recoveries += 1
                value = self._guarded(method, *args, **kwargs)
                if method in self.mutating:
                    self.saved = self._guarded(self._save)
                return value
            except RoleDied as err:
                if attempt == self.restarts:
                    raise
                print(f"{self.role_name} died before or during {method} ({err}); restoring its state", file=sys.stderr)
                restore = True
        raise AssertionError("unreachable")
