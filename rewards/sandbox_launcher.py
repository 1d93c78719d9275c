"""Builds the sandbox and starts the program in it (`python -I -S -B sandbox_launcher.py SPEC`);
only the standard library, no package imports.

1. The launcher dies with its caller (parent-death signal) and enforces the wall-clock
   limit itself, so neither outlives a caller that is killed.
2. It joins the run's cgroups (when the caller made them: memory and process limits the
   kernel enforces for all the sandbox's processes together), then unshares mount, network,
   PID, IPC, UTS and cgroup namespaces, and a user namespace when not root (the caller's uid
   becomes an unprivileged uid inside it).
3. Its child is PID 1 of the new PID namespace. It mounts a fresh tmpfs as the new root,
   binds the read-only system directories, the Python installation and the harness into
   it, hides what the program must not load (site-packages and dist-packages under an
   empty read-only tmpfs, test and interpreter-internals extension modules under an empty
   file), mounts a size-limited tmpfs on /work, `pivot_root`s into it, detaches the old
   root (the host's filesystem is no longer reachable) and makes the new root read-only.
   Every writable place (/work) is mounted noexec, nosuid and nodev: nothing written in the
   sandbox can be executed or mapped as code (a compiled extension module, say).
4. PID 1 forks the program's process, which drops every capability (bounding set
   included), switches to an unprivileged uid (a fresh one per sandbox when root),
   sets no_new_privs, resource limits and a seccomp filter (no ptrace, no reading other
   processes' memory, no kernel keyrings, no mounts or new namespaces), and execs the
   harness. When the program exits PID 1 exits and the kernel kills what it left behind.

Setup errors go to a status pipe the program never holds, so a program cannot pass
its own output off as a setup failure.
"""
import ctypes
import json
import os
import platform
import resource
import signal
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # -I leaves the script's directory out
import sandbox_seccomp  # noqa: E402

CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x02000000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_SECUREBITS, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP = 1, 24, 28, 38, 22
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
SECBITS_LOCKED_NOROOT = 0x2B  # NOROOT on, NO_SETUID_FIXUP and KEEP_CAPS off, each locked
SANDBOX_UID = 1000  # the program's uid inside a user namespace
ROOT_CANDIDATES = ("/mnt", "/tmp", "/var/tmp", "/media", "/srv", "/opt", "/run", "/home")

# Syscalls the program may not make (they fail with EPERM): debugging or reading other
# processes, kernel keyrings, mounts and namespaces, kernel modules, io_uring, bpf.
DENIED = (
    "ptrace", "process_vm_readv", "process_vm_writev", "add_key", "request_key", "keyctl", "mount", "umount2",
    "pivot_root", "chroot", "unshare", "setns", "bpf", "perf_event_open", "userfaultfd", "kexec_load", "init_module",
    "finit_module", "delete_module", "name_to_handle_at", "open_by_handle_at", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr", "kcmp",
    "clone_namespaces",  # clone with CLONE_NEW* flags: no nested namespaces (their kernel surface) either
)
ARCH = platform.machine()
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


class SetupError(Exception):
    pass


def _check(result, what):
    if result != 0:
        errno = ctypes.get_errno()
        raise SetupError(f"{what}: {os.strerror(errno)}")


def _mount(source, target, flags, fstype=None, data=None):
    _check(libc.mount(source.encode() if source else None, target.encode(), fstype.encode() if fstype else None,
                      flags, data.encode() if data else None), f"mount {target}")


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def _enter_namespaces(as_root):
    common = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP
    if as_root:
        _check(libc.unshare(common), "unshare")
        return
    uid, gid = os.getuid(), os.getgid()
    _check(libc.unshare(CLONE_NEWUSER | common), "unshare")
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{SANDBOX_UID} {uid} 1")
    _write("/proc/self/gid_map", f"{SANDBOX_UID} {gid} 1")


def _bind(source, target, read_only):
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    _mount(source, target, MS_BIND | MS_REC)
    if read_only:
        _mount(None, target, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_REC)


def _hide(paths, new):
    """Cover each of `paths` (inside the read-only binds): a directory with an empty
    read-only tmpfs, a file with an empty read-only file."""
    empty = new + "/.hidden"
    with open(empty, "w"):
        pass
    os.chmod(empty, 0)
    flags, root = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, os.path.realpath(new)
    for path in paths:
        target = new + path
        if os.path.realpath(target) != root + path or not os.path.exists(target):
            continue  # through a symlink: it could lead out of the new root
        if os.path.isdir(target):
            _mount("hidden", target, flags, "tmpfs", "size=4k,mode=555")
        else:
            _mount(empty, target, MS_BIND)
            _mount(None, target, MS_BIND | MS_REMOUNT | flags)


def _build_root(spec, uid):
    """Mount the sandbox's root on a fresh tmpfs, pivot into it and detach the host's."""
    _mount(None, "/", MS_REC | MS_PRIVATE)
    sources = spec["read_only"] + spec["harness"]
    new = next((d for d in ROOT_CANDIDATES if os.path.isdir(d) and not any(
        s == d or s.startswith(d + "/") for s in sources)), None)  # a mount there would hide a source
    if new is None:
        raise SetupError(f"no directory to mount the sandbox root on that holds none of {sources}")
    _mount("sandbox", new, MS_NOSUID | MS_NODEV | MS_NOEXEC, "tmpfs", "size=8m,mode=755")
    for path in spec["read_only"]:
        _bind(path, new + path, read_only=True)
    _hide(spec.get("hidden", []), new)
    for link, target in spec["symlinks"].items():
        os.symlink(target, new + link)
    for device in ("/dev/null", "/dev/zero", "/dev/urandom"):
        _bind(device, new + device, read_only=False)
    for source in spec["harness"]:  # the harness and the modules it imports
        _bind(source, new + "/.sandbox/" + os.path.basename(source), read_only=True)
    os.mkdir(new + "/work")
    limits = spec["limits"]
    _mount("work", new + "/work", MS_NOSUID | MS_NODEV | MS_NOEXEC, "tmpfs",
           f"size={limits['disk_bytes']},nr_inodes={limits['disk_files']},mode=700,uid={uid},gid={uid}")
    os.mkdir(new + "/.old")
    _check(libc.syscall(sandbox_seccomp.syscall_number("pivot_root"), new.encode(), (new + "/.old").encode()), "pivot_root")
    os.chdir("/")
    _check(libc.umount2(b"/.old", MNT_DETACH), "umount old root")
    os.rmdir("/.old")
    _mount(None, "/", MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _check(libc.sethostname(b"sandbox", 7), "sethostname")


def _drop_privileges(uid, as_root):
    for cap in range(64):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and cap < 41:
            _check(-1, f"drop capability {cap} from the bounding set")
    _check(libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient capabilities")
    _check(libc.prctl(PR_SET_SECUREBITS, SECBITS_LOCKED_NOROOT, 0, 0, 0), "securebits")
    if as_root:
        os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    header = struct.pack("Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    _check(libc.syscall(sandbox_seccomp.syscall_number("capset"), header, bytes(24)), "capset")  # no capabilities left
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


def _limit(limits):
    for name, value in (
        ("RLIMIT_CPU", limits["cpu_seconds"]),
        ("RLIMIT_AS", limits["memory_bytes"]),
        ("RLIMIT_FSIZE", limits["file_bytes"]),
        ("RLIMIT_NPROC", limits["processes"]),
        ("RLIMIT_NOFILE", limits["open_files"]),
        ("RLIMIT_CORE", 0),
    ):
        resource.setrlimit(getattr(resource, name), (value, value))


def _start_program(spec, uid, as_root):
    os.chdir("/work")
    _drop_privileges(uid, as_root)
    _limit(spec["limits"])
    sandbox_seccomp.deny(DENIED)
    env = dict(spec["env"], SANDBOX_VERDICT_FD=str(spec["verdict_fd"]))
    os.execve(spec["python"], [spec["python"], "-I", "-S", "-B", "/.sandbox/sandbox_harness.py"], env)


def _wait(pid):
    """Wait for `pid` and exit the same way (a signal becomes 128 + its number)."""
    _, status = os.waitpid(pid, 0)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))


def _kill_on_deadline(child, seconds, report):
    def expire(*_):
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:  # it ended (and was reaped) just before the alarm
            pass
        os.write(report, b"wall-clock limit")
        os._exit(128 + signal.SIGKILL)

    signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)


def main(spec, report):
    _check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")
    if os.getppid() != spec["caller_pid"]:
        os._exit(128 + signal.SIGKILL)  # the caller is already gone
    if ARCH not in sandbox_seccomp.ARCHES:
        raise SetupError(f"no seccomp filter for architecture {ARCH}")
    as_root = os.getuid() == 0
    uid = spec["uid"] if as_root else SANDBOX_UID
    for group in spec["cgroups"]:
        _write(os.path.join(group, "cgroup.procs"), str(os.getpid()))
    _enter_namespaces(as_root)
    init = os.fork()
    if init:
        _kill_on_deadline(init, spec["limits"]["wall_seconds"], report)
        _wait(init)
    # PID 1 of the new namespace: dies with the launcher, which dies with the caller
    _check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")
    _build_root(spec, uid)
    program = os.fork()
    if program:
        os.close(report)
        os.close(spec["verdict_fd"])
        _wait(program)
    _start_program(spec, uid, as_root)


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    report = spec["status_fd"]
    os.set_inheritable(report, False)  # closed when the program's exec happens
    try:
        main(spec, report)
    except (OSError, SetupError) as err:
        os.write(report, f"sandbox setup failed ({ARCH}): {err}".encode()[:4000])
        os._exit(125)
