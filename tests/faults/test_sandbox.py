"""Hostile model-written programs in the code verifier's sandbox: each is contained,
scored as a failure, and leaves the host (and this test process) untouched."""
from __future__ import annotations

import os
import socket
import subprocess
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from concurrent.futures import ThreadPoolExecutor

from rlhf_platform.rewards.code import code_tests, extract_code
from support import sandbox_processes
from rlhf_platform.rewards.sandbox import SandboxLimits, run_sandboxed

LIMITS = SandboxLimits(cpu_seconds=2, wall_seconds=6.0, memory_bytes=256 * 2**20, file_bytes=2**16, processes=16)
PROJECT_FILE = Path(__file__).resolve().parents[2] / "README.md"


def run(code: str):
    started = time.monotonic()
    result = run_sandboxed(textwrap.dedent(code), LIMITS)
    return result, time.monotonic() - started


def scored(code: str) -> float:
    return code_tests(["q"], [f"```python\n{textwrap.dedent(code)}\n```"], answer=["assert True"], limits=LIMITS)[0]


def test_a_correct_program_passes_and_a_wrong_one_fails():
    good = "```python\ndef add(a, b):\n    return a + b\n```"
    bad = "Here:\n```python\ndef add(a, b):\n    return a - b\n```"
    tests = "assert add(2, 3) == 5"
    assert code_tests(["q", "q"], [good, bad], answer=[tests, tests], limits=LIMITS) == [1.0, 0.0]
    assert extract_code("no fence: x = 1") == "no fence: x = 1"


def test_infinite_loop_is_stopped_by_the_cpu_limit():
    result, seconds = run("while True:\n    pass\n")
    assert not result.ok and result.returncode == 128 + 9 and seconds < LIMITS.wall_seconds
    assert scored("while True:\n    pass\n") == 0.0


def test_sleeping_forever_is_stopped_by_the_wall_clock():
    result, seconds = run("import time\ntime.sleep(3600)\n")
    assert result.timed_out and not result.ok and seconds < LIMITS.wall_seconds + 3


def _sandbox_processes() -> int:
    return len(sandbox_processes())


FORK_BOMB = """
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
"""


def test_fork_bomb_is_contained_and_leaves_no_process():
    result, seconds = run(FORK_BOMB)
    assert not result.ok and seconds < LIMITS.wall_seconds + 3
    time.sleep(0.5)
    assert _sandbox_processes() == 0  # the PID namespace died with its first process
    assert scored(FORK_BOMB) == 0.0


def test_a_fork_bomb_does_not_starve_a_concurrent_sample():
    """Each sandbox has its own uid (and, as root, its own pids cgroup): one sample's fork
    bomb cannot use up the process limit of a correct sample running beside it."""
    with ThreadPoolExecutor(2) as pool:
        bomb = pool.submit(run_sandboxed, textwrap.dedent(FORK_BOMB), LIMITS)
        time.sleep(0.5)
        spawning = "import subprocess, sys\nfor _ in range(4):\n    subprocess.run([sys.executable, '-c', 'pass'], check=True)\n"
        good = pool.submit(run_sandboxed, spawning, LIMITS)
        assert good.result().ok, good.result().stderr[-500:]
        assert not bomb.result().ok


def test_memory_bomb_hits_the_address_space_limit():
    result, _ = run("blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 2**20))\n")
    assert not result.ok and "MemoryError" in result.stderr


def test_no_network_not_even_the_hosts_loopback():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    code = f"""
    import socket
    for address in [("127.0.0.1", {port}), ("1.1.1.1", 53)]:
        try:
            socket.create_connection(address, timeout=1)
            print("CONNECTED", address)
        except OSError as err:
            print("blocked", type(err).__name__)
    """
    result, _ = run(code)
    assert "CONNECTED" not in result.stdout and result.stdout.count("blocked") == 2
    with pytest.raises(socket.timeout):
        listener.accept()  # nothing reached the host's listener
    listener.close()


def test_files_outside_its_directory_cannot_be_read():
    code = f"""
    for path in ["/etc/passwd", {str(PROJECT_FILE)!r}, "/proc/self/environ", "/root/.bashrc"]:
        try:
            open(path).read()
            print("LEAK", path)
        except OSError:
            print("blocked")
    """
    result, _ = run(code)
    assert PROJECT_FILE.is_file()
    assert "LEAK" not in result.stdout and result.stdout.count("blocked") == 4


def test_files_outside_its_directory_cannot_be_written():
    escape = f"/tmp/rlhf-escape-{uuid.uuid4().hex}"
    code = f"""
    for path in [{escape!r}, "/usr/escape", "/escape", "../escape"]:
        try:
            open(path, "w").write("x")
            print("WROTE", path)
        except OSError:
            print("blocked")
    open("inside.txt", "w").write("fine")  # its own directory is writable
    print(open("inside.txt").read())
    """
    result, _ = run(code)
    assert not Path(escape).exists()
    assert result.stdout.count("blocked") == 4 and "WROTE" not in result.stdout and "fine" in result.stdout


def test_it_cannot_signal_its_parent_or_anyone_else():
    code = f"""
    import os, signal
    for pid in [{os.getpid()}, {os.getppid()}, 1, -1]:
        try:
            os.kill(pid, signal.SIGKILL)
            print("sent", pid)
        except OSError as err:
            print("blocked", type(err).__name__)
    print("parent seen as", os.getppid())
    """
    result, _ = run(code)
    # the caller's pids do not exist in the sandbox's PID namespace; its PID 1 is not its to signal
    assert result.stdout.splitlines() == [
        "blocked ProcessLookupError",
        "blocked ProcessLookupError",
        "blocked PermissionError",
        "blocked ProcessLookupError",
        "parent seen as 1",
    ]


def test_huge_output_is_capped():
    result, _ = run("import sys\nsys.stdout.write('x' * (64 * 2**20))\n")
    assert not result.ok and len(result.stdout) <= LIMITS.file_bytes


def test_secrets_in_the_environment_are_not_passed_in(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "sekrit-key")
    monkeypatch.setenv("HF_TOKEN", "sekrit-token")
    result, _ = run("import os\nprint(sorted(os.environ.items()))\n")
    assert result.ok and "sekrit" not in result.stdout and "HOME" in result.stdout
