"""Helpers shared by the tests (importable as `support`: pytest puts tests/ on the path)."""
from __future__ import annotations

import os
import signal
import subprocess

import pytest


def run_in_own_session(cmd: list[str], log_prefix: str | os.PathLike, timeout_s: float) -> tuple[int, str, str]:
    """Run `cmd` in its own process group with output in files, so neither a hang nor
    Ray's daemons (which inherit the descriptors) can block the test: on timeout the
    whole group is killed and the test fails with the output so far."""
    out_path, err_path = f"{log_prefix}.out", f"{log_prefix}.err"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, start_new_session=True)
        try:
            returncode = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            returncode = -signal.SIGKILL
    stdout, stderr = open(out_path).read(), open(err_path).read()
    if returncode == -signal.SIGKILL:
        pytest.fail(f"{cmd} did not finish in {timeout_s}s; stderr tail:\n{stderr[-3000:]}")
    return returncode, stdout, stderr
