"""Run untrusted, model-written Python in a sandbox and report what happened.

`rewards/sandbox_launcher.py` builds the sandbox: no network, no other processes in view,
private IPC and hostname, a fresh tmpfs root holding only the read-only system
directories, the Python installation and the harness (the host's root is detached, not
just chroot'ed away from), a size-limited tmpfs work directory, an unprivileged uid of
its own with no capabilities, no_new_privs, a seccomp filter (no ptrace, keyrings,
mounts or namespaces), per-process limits (CPU time, address space, file size, open
files, processes) and, where this process may make one, a cgroup capping the memory and
process count of all its processes together. The launcher dies with its caller and
enforces the wall clock itself. Nothing from the caller's environment is passed in, and
nothing of a run stays on the host: the root and work directory lived in the sandbox's
own mount namespace, the output in unlinked files.

`rewards/sandbox_harness.py` runs the code; given tests, it decides the verdict in a way
the code cannot forge (see `run_tests`).
"""
from __future__ import annotations

import ast
import glob
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rlhf_platform.rewards import sandbox_cgroup
from rlhf_platform.rewards.sandbox_harness import canonical, strict_checks

LAUNCHER = Path(__file__).with_name("sandbox_launcher.py")
HARNESS = [Path(__file__).with_name(name) for name in ("sandbox_harness.py", "sandbox_seccomp.py")]
SETUP_FAILED = 125  # the launcher's exit code when it could not build the sandbox
VERDICT_BYTES = 4 * 2**20  # the most the verdict pipe is read


class SandboxUnavailable(RuntimeError):
    """This machine cannot build the sandbox (no namespaces); nothing was run."""


@dataclass(frozen=True)
class SandboxLimits:
    cpu_seconds: int = 5
    wall_seconds: float = 10.0
    memory_bytes: int = 512 * 2**20  # address space of each process; with a cgroup, also all of them together
    file_bytes: int = 2**20  # largest file it may write, stdout and stderr included
    processes: int = 16  # processes of the sandbox's own uid (and its cgroup)
    open_files: int = 64
    disk_bytes: int = 64 * 2**20  # size of the work directory's tmpfs
    disk_files: int = 4096  # inodes of the work directory


@dataclass
class SandboxResult:
    returncode: int  # 128 + N when killed by signal N
    stdout: str
    stderr: str
    timed_out: bool  # the wall-clock limit killed it
    contained_by_cgroup: bool = False  # a cgroup capped its memory and processes together
    passed: bool | None = None  # with tests: the harness's verdict
    reason: str = ""  # with tests: why it did not pass

    @property
    def ok(self) -> bool:
        """Without tests: it exited 0 in time. With tests: the verdict (the exit status counts for nothing)."""
        if self.passed is not None:
            return self.passed
        return self.returncode == 0 and not self.timed_out


def _base_python() -> Path:
    """The real interpreter (not a venv's symlink): it runs with -I -S, without site-packages."""
    return Path(getattr(sys, "_base_executable", sys.executable)).resolve()


# Under the read-only system directories, what the sandbox hides: host configuration kept
# under /usr (/usr/local/etc: tool settings that may hold credentials), every Python's installed
# packages (native code such as _cffi_backend that raises no audit events), and extension
# modules made for testing the interpreter or reaching into it (_testcapi, _testinternalcapi,
# _xxsubinterpreters: a subinterpreter has no audit hook). _ctypes stays: the harness
# needs it to install its seccomp filter, and refuses it to the code (sandbox_harness).
HIDDEN_DIRECTORIES = ("lib*/python3*/site-packages", "lib*/python3*/dist-packages", "local/lib*/python3*/site-packages",
                      "local/lib*/python3*/dist-packages")
HIDDEN_MODULES = ("_test*", "_xx*", "xx*", "_ctypes_test*", "_cffi*")


def _system_layout() -> tuple[list[str], dict[str, str], list[str]]:
    """Host paths bound read-only into the sandbox, top-level symlinks to recreate, and
    paths under them to hide."""
    read_only, symlinks = ["/usr"], {}
    for top in ("/bin", "/lib", "/lib64", "/sbin"):
        if os.path.islink(top):
            symlinks[top] = os.readlink(top)
        elif os.path.isdir(top):
            read_only.append(top)
    prefix = str(Path(sys.base_prefix).resolve())
    if not prefix.startswith("/usr/"):
        read_only.append(prefix)
    hidden = [path for path in ("/usr/local/etc", "/usr/etc") if os.path.isdir(path)]  # host configuration
    for root in read_only:
        for pattern in HIDDEN_DIRECTORIES:
            hidden += glob.glob(os.path.join(root, pattern))
        for dynload in glob.glob(os.path.join(root, "lib*/python3*/lib-dynload")):
            for pattern in HIDDEN_MODULES:
                hidden += glob.glob(os.path.join(dynload, pattern))
    hidden = sorted({path for path in hidden if os.path.realpath(path) == path})  # no symlink on the way
    return read_only, symlinks, hidden


def run_sandboxed(code: str, limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """Run `code` as a program (`python main.py`) in a fresh sandbox; `ok` is a clean exit in time."""
    result, _ = _launch({"code": code, "tests": None}, limits)
    return result


def run_tests(code: str, tests: str, limits: SandboxLimits = SandboxLimits(), strict: bool = False) -> SandboxResult:
    """Run `code`, then `tests` (Python statements, asserts kept), in a fresh sandbox.

    Passes only when the harness wrote this run's secret pass token after every test ran;
    ending early, rewriting the exit status, re-running itself, printing anything or
    reading its own file cannot produce it. Tests that compare with `==` trust the
    objects compared (a forged `__eq__` satisfies them), and the verdict trusts the
    harness's in-process protections. With `strict`, every assert must be a top-level
    `assert EXPR == LITERAL`; the sandbox gets the tests with the literals taken out, EXPR's value is sent
    out encoded by exact type, and the comparison with the literal happens here, so even
    code that took over the whole interpreter cannot know what to report. Raises
    ValueError for strict tests of another form (a nested assert, or none)."""
    expected: list = []
    if strict:  # the sandbox gets the tests with every expected literal taken out
        tree, literals = strict_checks(tests)
        tests, expected = ast.unparse(tree), [canonical(v) for v in literals]
    pass_token, value_token = secrets.token_hex(16), secrets.token_hex(16)
    request = {"code": code, "tests": tests, "strict": strict, "pass_token": pass_token, "value_token": value_token}
    result, verdict = _launch(request, limits)
    lines = verdict.decode("utf-8", "replace").splitlines()
    passed = pass_token in lines
    if strict and passed:
        values = _strict_values(lines, value_token)
        if values is None:
            passed, result.reason = False, "strict check failed: a malformed value line"
        else:
            mismatched = [i for i, want in enumerate(expected) if values.get(i) != [want]]
            if mismatched or len(values) != len(expected):
                passed = False
                result.reason = f"strict check {mismatched[0] if mismatched else len(expected)} failed"
    elif not passed:
        reasons = [line for line in lines if line.startswith("FAIL ")]
        result.reason = (reasons[-1][5:] if reasons else "no verdict (ended before the tests finished)")[:200]
    result.passed = passed
    return result


def _strict_values(lines: list[str], value_token: str) -> dict[int, list] | None:
    """{check index: [encoded values reported]} from the verdict lines, or None when a line
    carrying the value token is malformed (only a compromised harness writes one)."""
    values: dict[int, list] = {}
    for line in lines:
        if not line.startswith(value_token + " "):
            continue
        parts = line[len(value_token) + 1:].split(" ", 1)
        if len(parts) != 2 or not parts[0].isdigit() or len(parts[0]) > 9:
            return None
        try:
            values.setdefault(int(parts[0]), []).append(json.loads(parts[1]))
        except (ValueError, RecursionError):
            return None
    return values


def _launch(request: dict, limits: SandboxLimits) -> tuple[SandboxResult, bytes]:
    """Start the launcher, feed the harness `request`, wait; the result and what the verdict pipe carried."""
    cgroup = sandbox_cgroup.make(limits.memory_bytes + limits.disk_bytes, limits.processes + 2)
    status_read, status_write = os.pipe()
    verdict_read, verdict_write = os.pipe()
    read_only, symlinks, hidden = _system_layout()
    spec = {
        "python": str(_base_python()),
        "harness": [str(path) for path in HARNESS],
        "read_only": read_only,
        "symlinks": symlinks,
        "hidden": hidden,
        "env": {"PATH": "/usr/bin:/bin", "HOME": "/work", "TMPDIR": "/work", "LANG": "C.UTF-8"},
        "limits": asdict(limits),
        "status_fd": status_write,
        "verdict_fd": verdict_write,
        "caller_pid": os.getpid(),
        "uid": 10_000_000 + secrets.randbelow(1_000_000_000),  # its own uid when root: its process limit is its own
        "cgroups": [str(p) for p in cgroup.paths] if cgroup else [],
    }
    verdict = bytearray()
    reader = threading.Thread(target=_drain, args=(verdict_read, verdict), daemon=True)
    try:
        with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
            started = time.monotonic()
            proc = subprocess.Popen(
                [str(_base_python()), "-I", "-S", "-B", str(LAUNCHER), json.dumps(spec)],
                stdin=subprocess.PIPE, stdout=stdout, stderr=stderr, env={}, start_new_session=True,
                pass_fds=(status_write, verdict_write),
            )
            os.close(status_write)
            os.close(verdict_write)
            status_write = verdict_write = -1
            reader.start()
            try:
                proc.communicate(json.dumps(request).encode(), timeout=limits.wall_seconds + 5)
            except subprocess.TimeoutExpired:  # the launcher's own deadline failed: kill it, which kills the sandbox
                proc.kill()
                proc.wait()
            except BrokenPipeError:  # the harness never read its request: the status says why
                proc.wait()
            reader.join(timeout=5)
            status = _read_all(status_read).decode("utf-8", "replace")
            if status.startswith("sandbox setup failed"):
                raise SandboxUnavailable(status.strip())
            cap = limits.file_bytes
            result = SandboxResult(
                returncode=proc.returncode if proc.returncode >= 0 else 128 - proc.returncode,
                stdout=_read_capped(stdout, cap), stderr=_read_capped(stderr, cap),
                timed_out=status == "wall-clock limit" or time.monotonic() - started > limits.wall_seconds + 5,
                contained_by_cgroup=cgroup is not None,
            )
            return result, bytes(verdict)
    finally:
        for fd in (status_read, status_write, verdict_write):
            if fd >= 0:
                os.close(fd)
        if cgroup:
            cgroup.remove()


def _drain(fd: int, into: bytearray) -> None:
    """Read `fd` to its end, keeping at most VERDICT_BYTES."""
    try:
        while chunk := os.read(fd, 1 << 16):
            if len(into) < VERDICT_BYTES:
                into += chunk[: VERDICT_BYTES - len(into)]
    finally:
        os.close(fd)


def _read_all(fd: int) -> bytes:
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 1 << 16)
    except BlockingIOError:
        return b""


def _read_capped(file, cap: int) -> str:
    file.seek(0)
    return file.read(cap).decode("utf-8", "replace")
