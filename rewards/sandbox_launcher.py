"""Runs inside the sandbox's first process (`python -I -S sandbox_launcher.py SPEC`);
only the standard library, no package imports.

1. (Started in its own session by the caller.) New mount, network and PID namespaces (and a user namespace when not
   root): no network interface but a down loopback, no view of other processes.
2. The first child is PID 1 of the new namespace. It builds the sandbox's root: the
   read-only system directories and Python installation, the writable work directory
   and /dev/null; nothing else of the host (no /etc, /proc, home or project files).
3. PID 1 forks the program's process, which enters that root, drops to an unprivileged
   user, sets resource limits and no_new_privs, and execs Python on the program.
4. When the program exits, PID 1 exits, and the kernel kills whatever it left behind.
"""
import ctypes
import json
import os
import resource
import sys

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18
PR_SET_NO_NEW_PRIVS, PR_SET_PDEATHSIG = 38, 1
NOBODY = 65534

libc = ctypes.CDLL(None, use_errno=True)


def _check(result, what):
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source, target, flags):
    _check(libc.mount(source.encode() if source else None, target.encode(), None, flags, None), f"mount {target}")


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def _enter_namespaces(as_root):
    if as_root:
        _check(libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID), "unshare")
        return
    uid, gid = os.getuid(), os.getgid()
    _check(libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID), "unshare")
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"0 {uid} 1")
    _write("/proc/self/gid_map", f"0 {gid} 1")


def _bind(source, root, read_only):
    target = root + source
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    _mount(source, target, MS_BIND | MS_REC)
    if read_only:
        _mount(None, target, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_REC)


def _build_root(spec):
    root = spec["root"]
    _mount(None, "/", MS_REC | MS_PRIVATE)
    for path in spec["read_only"]:
        _bind(path, root, read_only=True)
    for link, target in spec["symlinks"].items():
        os.symlink(target, root + link)
    _bind("/dev/null", root, read_only=False)


def _limit(spec):
    limits = spec["limits"]
    for name, value in (
        ("RLIMIT_CPU", limits["cpu_seconds"]),
        ("RLIMIT_AS", limits["memory_bytes"]),
        ("RLIMIT_FSIZE", limits["file_bytes"]),
        ("RLIMIT_NPROC", limits["processes"]),
        ("RLIMIT_NOFILE", limits["open_files"]),
        ("RLIMIT_CORE", 0),
    ):
        resource.setrlimit(getattr(resource, name), (value, value))


def _run_program(spec, as_root):
    os.chroot(spec["root"])
    os.chdir("/work")
    if as_root:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl")
    _limit(spec)
    os.execve(spec["python"], [spec["python"], "-I", "-S", "-B", "main.py"], spec["env"])


def _wait(pid):
    """Wait for `pid` and exit the same way (a signal becomes 128 + its number)."""
    _, status = os.waitpid(pid, 0)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))


def main():
    spec = json.loads(sys.argv[1])
    as_root = os.getuid() == 0
    _enter_namespaces(as_root)
    init = os.fork()
    if init:
        _wait(init)
    # PID 1 of the new namespace
    _check(libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0), "prctl")
    _build_root(spec)
    program = os.fork()
    if program:
        _wait(program)
    _run_program(spec, as_root)


if __name__ == "__main__":
    try:
        main()
    except OSError as err:
        print(f"sandbox setup failed: {err}", file=sys.stderr)
        os._exit(125)
