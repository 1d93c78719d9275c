"""Run untrusted, model-written Python in a sandbox and report what happened.

The program runs in `rewards/sandbox_launcher.py`'s namespaces: no network, no other
processes in view, a root holding only the read-only system directories and Python
installation plus a fresh work directory, an unprivileged user, no_new_privs, and
limits on CPU time, address space, file size (which also caps its output), processes
and open files. The caller adds a wall-clock limit and kills the whole process group
when it passes. Nothing from the caller's environment (API keys, tokens) is passed in.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

LAUNCHER = Path(__file__).with_name("sandbox_launcher.py")
NOBODY = 65534
SETUP_FAILED = 125  # the launcher's exit code when it could not build the sandbox


class SandboxUnavailable(RuntimeError):
    """This machine cannot build the sandbox (no namespaces); nothing was run."""


@dataclass(frozen=True)
class SandboxLimits:
    cpu_seconds: int = 5
    wall_seconds: float = 10.0
    memory_bytes: int = 512 * 2**20  # address space
    file_bytes: int = 2**20  # largest file it may write, stdout and stderr included
    processes: int = 16  # RLIMIT_NPROC of the sandbox user
    open_files: int = 64


@dataclass
class SandboxResult:
    returncode: int  # 128 + N when killed by signal N
    stdout: str
    stderr: str
    timed_out: bool  # the wall-clock limit killed it

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


def _base_python() -> Path:
    """The real interpreter (not a venv's symlink): it runs with -I -S, without site-packages."""
    return Path(getattr(sys, "_base_executable", sys.executable)).resolve()


def _system_layout() -> tuple[list[str], dict[str, str]]:
    """Host paths bound read-only into the sandbox, and top-level symlinks to recreate."""
    read_only, symlinks = ["/usr"], {}
    for top in ("/bin", "/lib", "/lib64", "/sbin"):
        if os.path.islink(top):
            symlinks[top] = os.readlink(top)
        elif os.path.isdir(top):
            read_only.append(top)
    prefix = str(Path(sys.base_prefix).resolve())
    if not prefix.startswith("/usr/"):
        read_only.append(prefix)
    return read_only, symlinks


def run_sandboxed(code: str, limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """Run `code` as main.py in a fresh sandbox; the result is read from capped output."""
    scratch = Path(tempfile.mkdtemp(prefix="rlhf-sandbox-"))
    try:
        root, out = scratch / "root", scratch / "out"
        work = root / "work"
        work.mkdir(parents=True)
        out.mkdir()
        (work / "main.py").write_text(code)
        if os.getuid() == 0:
            os.chown(work, NOBODY, NOBODY)
            os.chown(work / "main.py", NOBODY, NOBODY)
        read_only, symlinks = _system_layout()
        spec = {
            "root": str(root),
            "python": str(_base_python()),
            "read_only": read_only,
            "symlinks": symlinks,
            "env": {"PATH": "/usr/bin:/bin", "HOME": "/work", "LANG": "C.UTF-8"},
            "limits": asdict(limits),
        }
        with open(out / "stdout", "wb") as stdout, open(out / "stderr", "wb") as stderr:
            proc = subprocess.Popen(
                [str(_base_python()), "-I", "-S", "-B", str(LAUNCHER), json.dumps(spec)],
                stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, env={}, start_new_session=True,
            )
            timed_out = False
            try:
                proc.wait(timeout=limits.wall_seconds)
            except subprocess.TimeoutExpired:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        cap = limits.file_bytes
        result = SandboxResult(
            returncode=proc.returncode if proc.returncode >= 0 else 128 - proc.returncode,
            stdout=(out / "stdout").read_bytes()[:cap].decode("utf-8", "replace"),
            stderr=(out / "stderr").read_bytes()[:cap].decode("utf-8", "replace"),
            timed_out=timed_out,
        )
        if result.returncode == SETUP_FAILED and "sandbox setup failed" in result.stderr:
            raise SandboxUnavailable(result.stderr.strip())
        return result
    finally:
        _remove(scratch)


def _remove(path: Path) -> None:
    """Delete the scratch tree, unmounting nothing (the mounts lived in the sandbox's
    own mount namespace and vanished with it)."""
    shutil.rmtree(path, ignore_errors=True)
