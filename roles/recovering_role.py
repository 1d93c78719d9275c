"""A driver-side handle on a single-instance role whose state the driver keeps, so the
role's death is a restart, not the end of the run.

The prompt queue and the Advantage Builder hold state a run cannot lose (the leases and
the ledger; the reward moments and the adaptive KL coefficient). After each call that
changes it, the handle keeps a copy (`get_state`); a call that finds the role dead
waits until the executor started it again (its constructor ran anew), loads the copy,
and makes the call again, so the call happens exactly once on the state as it was.
Calls through this handle are made one at a time and waited for.
"""
from __future__ import annotations

import sys
from typing import Any

from rlhf_platform.roles.executor import Executor, RoleDied


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
        self.saved = getattr(handle, save)().result()

    @property
    def role_name(self) -> str:
        return self.handle.role_name

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)

        def invoke(*args: Any, **kwargs: Any) -> Resolved:
            return Resolved(self._call(method, args, kwargs))

        return invoke

    def _call(self, method: str, args: tuple, kwargs: dict) -> Any:
        for attempt in range(self.restarts + 1):
            try:
                value = getattr(self.handle, method)(*args, **kwargs).result()
                if method in self.mutating:
                    self.saved = getattr(self.handle, self._save)().result()
                return value
            except RoleDied as err:
                if attempt == self.restarts:
                    raise
                print(f"{self.role_name} died during {method} ({err}); restoring its state", file=sys.stderr)
                self.executor.wait_alive([self.handle])
                getattr(self.handle, self._load)(self.saved).result()
                self.recoveries += 1
        raise AssertionError("unreachable")
