"""Holes an attacker found in the first sandbox, each shown closed: escaping the root as a
non-root caller, IPC and keyrings shared between samples, limits that were per process or
per file only, and a sandbox that outlived its caller."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from rlhf_platform.rewards import sandbox as sandbox_module
from support import sandbox_processes
from rlhf_platform.rewards.sandbox import SandboxLimits, run_sandboxed

LIMITS = SandboxLimits(cpu_seconds=2, wall_seconds=6.0, memory_bytes=256 * 2**20, file_bytes=2**16)
REWARDS = Path(sandbox_module.__file__).parent

ESCAPES = r'''
import ctypes, os, struct
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
header = ctypes.create_string_buffer(struct.pack("Ii", 0x20080522, 0))
caps = ctypes.create_string_buffer(24)
libc.syscall(125, header, caps)  # capget
print("capabilities", struct.unpack("6I", caps.raw))
print("uid", os.getuid())
# the classic chroot escape: needs CAP_SYS_CHROOT, and there is no host root above this one anyway
os.makedirs("/work/jail", exist_ok=True)
print("chroot", libc.chroot(b"/work/jail"))
for _ in range(64):
    os.chdir("..")
print("top", sorted(os.listdir(".")))
print("mount", libc.mount(b"none", b"/work", b"proc", 0, None))
print("unshare", libc.unshare(0x10000000 | 0x00020000))
import platform
if platform.machine() == "x86_64":  # clone(CLONE_NEWUSER | CLONE_NEWNET | SIGCHLD): no nested namespaces
    child = libc.syscall(56, 0x10000000 | 0x40000000 | 17, 0, 0, 0, 0)
    if child == 0:
        os._exit(0)
    print("clone-namespaces", child)
    print("clone3", libc.syscall(435, 0, 0), ctypes.get_errno())
else:
    print("clone-namespaces -1")
    print("clone3 -1 38")
print("proc", os.path.exists("/proc/1/root"))
try:
    open("/escape", "w")
    print("root writable")
except OSError:
    print("root read-only")
'''


def _host_files_visible(stdout: str) -> bool:
    top = next(line for line in stdout.splitlines() if line.startswith("top"))
    return any(name in top for name in ("'etc'", "'home'", "'tmp'", "'proc'", "'work' ,"))


def _assert_no_escape(stdout: str) -> None:
    assert "capabilities (0, 0, 0, 0, 0, 0)" in stdout, stdout
    assert "chroot -1" in stdout and "mount -1" in stdout and "unshare -1" in stdout
    assert "clone-namespaces -1" in stdout and "clone3 -1 38" in stdout
    assert "proc False" in stdout and "root read-only" in stdout
    assert not _host_files_visible(stdout), stdout


def test_no_capabilities_and_no_way_out_of_the_root():
    result = run_sandboxed(ESCAPES, LIMITS)
    assert result.ok, result.stderr[-1000:]
    _assert_no_escape(result.stdout)


def _unprivileged_python() -> str | None:
    """An interpreter uid 65534 may run, and start again from itself (this one may live
    under a private /root)."""
    for python in ("/usr/bin/python3", sandbox_module._base_python()):
        check = "import subprocess, sys; subprocess.run([sys._base_executable, '-c', 'pass'], check=True)"
        ok = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(python), "-c", check],
                            capture_output=True, cwd="/")
        if ok.returncode == 0:
            return str(python)
    return None


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="switching to a non-root user needs root")
def test_the_user_namespace_mode_as_a_non_root_caller():
    """The documented non-root mode: the caller is uid 65534, the sandbox runs in a user
    namespace under an unprivileged uid with no capabilities, and cannot get out."""
    python = _unprivileged_python()
    if python is None:
        pytest.skip("no Python interpreter runnable by uid 65534 here")
    tmp_path = Path(tempfile.mkdtemp(prefix="rlhf-nonroot-"))  # pytest's tmp_path is private to root
    try:
        _probe_as_nobody(python, tmp_path)
    finally:
        shutil.rmtree(tmp_path)


def _probe_as_nobody(python: str, tmp_path: Path) -> None:
    package = tmp_path / "pkg" / "rlhf_platform" / "rewards"
    package.mkdir(parents=True)
    (package.parent / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    for module in ("sandbox.py", "sandbox_cgroup.py", "sandbox_harness.py", "sandbox_launcher.py", "sandbox_seccomp.py"):
        shutil.copy(REWARDS / module, package / module)
    script = tmp_path / "pkg" / "probe.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path / 'pkg')!r})
        from rlhf_platform.rewards.sandbox import SandboxLimits, run_sandboxed, run_tests
        limits = SandboxLimits(cpu_seconds=2, wall_seconds=6.0, memory_bytes=256 * 2**20, file_bytes=2**16)
        result = run_sandboxed({ESCAPES!r}, limits)
        print(result.stdout)
        print("RC", result.returncode, "CGROUP", result.contained_by_cgroup)
        print("TESTS", run_tests("def f(): return 1", "assert f() == 1", limits).passed,
              run_tests("import os\\ndef f(): return 2\\nos._exit(0)", "assert f() == 1", limits).passed)
    """))
    os.chmod(tmp_path, 0o755)
    subprocess.run(["chmod", "-R", "a+rX", str(tmp_path / "pkg")], check=True)
    probe = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", python, str(script)],
                           capture_output=True, text=True, timeout=60, cwd="/")
    out = probe.stdout
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert "RC 0 CGROUP False" in out and "TESTS True False" in out
    assert "uid 1000" in out
    _assert_no_escape(out)


def test_system_v_ipc_and_kernel_keys_do_not_carry_from_one_sample_to_the_next():
    plant = """
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    print("shm", libc.shmget(0x5EED, 4096, 0o1666))
    libc.syscall.restype = ctypes.c_long
    print("add_key", libc.syscall(248, b"user", b"planted", b"secret", 6, -3))  # into the session keyring
    print("read_key", libc.syscall(250, 11, -3, None, 0))  # KEYCTL_READ of the session keyring
    """
    first = run_sandboxed(textwrap.dedent(plant), LIMITS)
    assert "shm 0" in first.stdout or "shm " in first.stdout
    assert "add_key -1" in first.stdout and "read_key -1" in first.stdout  # keyrings: EPERM
    second = run_sandboxed("import ctypes\nprint('seen', ctypes.CDLL(None).shmget(0x5EED, 4096, 0o666))\n", LIMITS)
    assert "seen -1" in second.stdout  # a fresh IPC namespace


def test_the_work_directory_is_a_size_limited_tmpfs_not_the_hosts_disk():
    small = SandboxLimits(cpu_seconds=5, wall_seconds=10.0, memory_bytes=256 * 2**20, file_bytes=2**20,
                          disk_bytes=4 * 2**20)
    fill = """
    import os
    written = 0
    try:
        for i in range(1000):
            with open(f"f{i}", "wb") as f:
                f.write(b"x" * (2**20 - 1))
            written += 1
    except OSError as err:
        print("stopped", err.errno, written)
    """
    before = shutil.disk_usage("/tmp").used
    result = run_sandboxed(textwrap.dedent(fill), small)
    assert "stopped 28" in result.stdout, result.stdout + result.stderr  # ENOSPC
    assert int(result.stdout.split()[-1]) <= 4
    assert shutil.disk_usage("/tmp").used - before < 64 * 2**20


def test_several_children_together_cannot_exceed_the_memory_limit():
    """Each child stays under the per-process address-space limit; together they would use
    4x the limit. The cgroup (where this process may make one) stops them."""
    hog = """
    import os, time
    children = []
    for _ in range(4):
        pid = os.fork()
        if pid == 0:
            block = bytearray(200 * 2**20)
            block[::4096] = b"x" * len(block[::4096])
            time.sleep(3)
            os._exit(0)
        children.append(pid)
    statuses = [os.waitpid(pid, 0)[1] for pid in children]
    print("all alive", all(s == 0 for s in statuses))
    """
    result = run_sandboxed(textwrap.dedent(hog), LIMITS)
    if not result.contained_by_cgroup:
        pytest.skip("no cgroup for the sandbox here: the bound is processes x memory_bytes")
    assert "all alive True" not in result.stdout


def test_killing_the_caller_kills_the_sandbox_and_leaves_nothing_behind():
    caller = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        from rlhf_platform.rewards.sandbox import SandboxLimits, run_sandboxed
        run_sandboxed("import time\\nprint('started', flush=True)\\ntime.sleep(3600)", SandboxLimits(wall_seconds=600.0))
    """)])
    try:
        deadline = time.monotonic() + 120  # the caller imports the reward functions first (slow on a loaded machine)
        while not sandbox_processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sandbox_processes(), f"the sandbox never started (caller exit code {caller.poll()})"
    finally:
        caller.send_signal(signal.SIGKILL)
        caller.wait()
    deadline = time.monotonic() + 10
    while sandbox_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not sandbox_processes()  # the parent-death signal took the launcher, PID 1 and the program
    assert not list(Path("/tmp").glob("rlhf-sandbox-*"))  # no scratch directory on the host


def test_the_wall_clock_is_enforced_by_the_launcher_not_only_the_caller():
    started = time.monotonic()
    result = run_sandboxed("import time\ntime.sleep(60)", SandboxLimits(wall_seconds=1.5))
    assert result.timed_out and time.monotonic() - started < 5


NATIVE_CODE = r'''
import ctypes, glob, os, subprocess, sys
print("site-packages", [os.listdir(p) for p in glob.glob(sys.base_prefix + "/lib/python3*/site-packages")
                        + glob.glob("/usr/lib/python3/dist-packages") + glob.glob("/usr/local/lib/python3*/dist-packages")])
dynload = [p for p in sys.path if p.endswith("lib-dynload")][0]
print("internals", sorted({os.stat(p).st_size for pattern in ("_test*", "_xx*", "_ctypes_test*")
                           for p in glob.glob(os.path.join(dynload, pattern))}))
open("/work/x.c", "w").write("int f(void) { return 42; }\n")
built = subprocess.run(["gcc", "-shared", "-fPIC", "/work/x.c", "-o", "/work/x.so"], capture_output=True)
if built.returncode != 0:  # no compiler here: any file will do to show the mount refuses code
    open("/work/x.so", "wb").write(open(dynload + "/" + [n for n in os.listdir(dynload) if n.startswith("math")][0], "rb").read())
try:
    ctypes.CDLL("/work/x.so")
    print("loaded")
except OSError:
    print("load refused")
os.chmod("/work/x.so", 0o755)
try:
    subprocess.run(["/work/x.so"])
    print("executed")
except OSError as err:
    print("exec refused", err.errno)
'''


def test_nothing_written_in_the_sandbox_runs_as_code_and_native_back_doors_are_hidden():
    """A shared object compiled (or copied) into /work loaded into the harness's process;
    the host's site-packages (_cffi_backend) and the interpreter's test modules
    (_testcapi, _xxsubinterpreters) were there to load."""
    result = run_sandboxed(NATIVE_CODE, LIMITS)
    assert result.ok, result.stderr[-2000:]
    out = result.stdout
    assert "load refused" in out and "exec refused 13" in out, out  # EACCES: /work is noexec
    site = next(line for line in out.splitlines() if line.startswith("site-packages"))
    assert site in ("site-packages []", "site-packages [[]]", "site-packages [[], []]", "site-packages [[], [], []]"), site
    assert "internals [0]" in out or "internals []" in out, out  # each an empty file


def _sandbox_groups(pid: int | None = None) -> list[Path]:
    pattern = f"rlhf-sandbox-*-{pid}-*" if pid else "rlhf-sandbox-*"
    return [p for p in Path("/sys/fs/cgroup").glob("**/" + pattern) if p.is_dir()]


@pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox makes cgroups only as root")
def test_a_killed_callers_cgroups_are_swept_by_the_next_sandbox():
    """A reward worker SIGKILLed at its deadline cannot remove its sandbox's cgroups; they
    are named after it, and the next sandbox started anywhere on the machine removes them."""
    if not run_sandboxed("pass", LIMITS).contained_by_cgroup:
        pytest.skip("no cgroup for the sandbox here")
    caller = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        from rlhf_platform.rewards.sandbox import SandboxLimits, run_sandboxed
        run_sandboxed("import time\\nprint('started', flush=True)\\ntime.sleep(3600)", SandboxLimits(wall_seconds=600.0))
    """)])
    try:
        deadline = time.monotonic() + 120
        while not (_sandbox_groups(caller.pid) and sandbox_processes()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _sandbox_groups(caller.pid), "the caller's sandbox never made its cgroups"
    finally:
        caller.send_signal(signal.SIGKILL)
        caller.wait()
    deadline = time.monotonic() + 10
    while sandbox_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    left = _sandbox_groups(caller.pid)
    assert left  # nothing could remove them yet
    assert run_sandboxed("pass", LIMITS).ok
    assert not [p for p in left if p.exists()]
