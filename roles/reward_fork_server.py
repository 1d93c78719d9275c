"""The reward workers' fork server (`python -m rlhf_platform.roles.reward_fork_server FD`).

A clean, single-threaded process that imports the reward functions once, then, for each
socket it receives on its control socket (FD), forks a worker that serves reward calls
on it. It exits when the control socket closes (its owner is gone); each worker dies
with it (parent-death signal). Forking here, not in the multi-threaded service, keeps
workers free of locks held by other threads.
"""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys
from multiprocessing.connection import Connection


def serve(conn: Connection) -> None:
    """Worker loop: receive (function, args, kwargs), say "started" once it is loaded (the
    function's module imported), then answer ("ok", value) or ("error", exception)."""
    while True:
        try:
            fn, args, kwargs = conn.recv()
        except (EOFError, OSError):
            return
        conn.send("started")
        try:
            reply = ("ok", fn(*args, **kwargs))
        except BaseException as err:  # noqa: BLE001 - every failure goes back to the caller
            reply = ("error", err)
        try:
            conn.send(reply)
        except Exception as err:  # noqa: BLE001 - an unpicklable result or exception
            conn.send(("error", RuntimeError(f"{type(err).__name__}: {err}")))


def main(control_fd: int) -> None:
    import rlhf_platform.rewards  # noqa: F401 - imported once, shared by every worker

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # workers are reaped by the kernel
    control = socket.socket(fileno=control_fd)
    while True:
        try:
            _, fds, _, _ = socket.recv_fds(control, 16, 1)
        except OSError:
            return
        if not fds:
            return  # the owner closed the control socket
        pid = os.fork()
        if pid == 0:
            control.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
            if os.getppid() == 1:
                os._exit(0)
            serve(Connection(fds[0]))
            os._exit(0)
        os.close(fds[0])
        control.sendall(f"{pid}\n".encode())


if __name__ == "__main__":
    main(int(sys.argv[1]))
