"""Reward functions run in worker processes that a deadline can kill.

A thread cannot be stopped: a reward function that hangs keeps its thread for good, and
after enough hangs every call falls back. Here each call goes to an idle worker process,
forked by a fork server that has imported `rlhf_platform.rewards` once
(`reward_fork_server`), and a call that outlives its deadline is answered by killing
that worker (and with it anything it started, such as a sandbox). Workers die with the
fork server, which exits when this process's end of its control socket closes.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from typing import Any, Callable


LOAD_DEADLINE_S = 60.0  # to unpickle a call (import the function's module) before its own deadline starts


class WorkerTimeout(TimeoutError):
    """The call outlived its deadline; its worker was killed."""


class WorkerDied(RuntimeError):
    """The worker process ended during the call (killed by a limit, crashed)."""


class _ForkServer:
    def __init__(self) -> None:
        mine, theirs = socket.socketpair()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rlhf_platform.roles.reward_fork_server", str(theirs.fileno())],
            pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self.control = mine
        self.replies = mine.makefile("rb")

    def fork(self) -> tuple[Connection, int]:
        """A new worker: our end of its connection, and its pid."""
        mine, theirs = socket.socketpair()
        try:
            socket.send_fds(self.control, [b"w"], [theirs.fileno()])
            line = self.replies.readline()
        finally:
            theirs.close()
        if not line:
            raise WorkerDied(f"reward fork server exited (code {self.process.poll()})")
        return Connection(mine.detach()), int(line)

    def close(self) -> None:
        self.replies.close()
        self.control.close()
        self.process.wait(10)


class _Worker:
    def __init__(self, conn: Connection, pid: int) -> None:
        self.conn, self.pid = conn, pid

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.conn.close()


class RewardWorkers:
    """At most `processes` reward calls at once, each in its own killable worker process."""

    def __init__(self, processes: int = 4) -> None:
        self.processes = processes
        self._slots = threading.BoundedSemaphore(processes)
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self._server: _ForkServer | None = None
        self.killed = 0  # workers killed at a deadline or found dead

    def call(self, fn: Callable[..., Any], deadline_s: float, *args: Any, **kwargs: Any) -> Any:
        """`fn(*args, **kwargs)` in a worker; raises what it raised, WorkerTimeout after
        `deadline_s` seconds (counted from when the worker has loaded the call), or WorkerDied."""
        with self._slots:
            worker = self._take()
            try:
                worker.conn.send((fn, args, kwargs))
                if not worker.conn.poll(LOAD_DEADLINE_S) or worker.conn.recv() != "started":
                    raise WorkerTimeout(f"could not load {getattr(fn, '__qualname__', fn)} in {LOAD_DEADLINE_S} s")
                if not worker.conn.poll(deadline_s):
                    raise WorkerTimeout(f"timed out after {deadline_s} s")
                status, value = worker.conn.recv()
            except WorkerTimeout:
                self._discard(worker)
                raise
            except (EOFError, OSError) as err:
                self._discard(worker)
                raise WorkerDied("reward worker died during the call") from err
            with self._lock:
                self._idle.append(worker)
        if status == "error":
            raise value
        return value

    def _take(self) -> _Worker:
        with self._lock:
            if self._idle:
                return self._idle.pop()
            if self._server is None or self._server.process.poll() is not None:
                self._server = _ForkServer()
            return _Worker(*self._server.fork())

    def _discard(self, worker: _Worker) -> None:
        self.killed += 1
        worker.kill()

    def close(self) -> None:
        """Kill the idle workers and stop the fork server (busy workers die with it)."""
        with self._lock:
            workers, self._idle, server, self._server = self._idle, [], self._server, None
        for worker in workers:
            worker.kill()
        if server is not None:
            server.close()
