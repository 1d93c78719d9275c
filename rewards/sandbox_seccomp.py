"""Seccomp filters for the sandbox (only the standard library: the launcher and the harness
inside the sandbox both import it). A filter is a BPF program the kernel runs on every
system call of the process and its children; once installed it cannot be removed."""
import ctypes
import os
import platform
import struct

PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
ARCHES = {  # audit architecture id, and the numbers of the calls a filter may deny
    "x86_64": (0xC000003E, {
        "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "add_key": 248, "request_key": 249,
        "keyctl": 250, "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "unshare": 272, "setns": 308,
        "bpf": 321, "perf_event_open": 298, "userfaultfd": 323, "kexec_load": 246, "init_module": 175,
        "finit_module": 313, "delete_module": 176, "name_to_handle_at": 303, "open_by_handle_at": 304,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428, "move_mount": 429,
        "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442, "kcmp": 312,
        "rt_sigaction": 13, "capset": 126, "clone": 56, "clone3": 435,
    }),
    "aarch64": (0xC00000B7, {
        "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "add_key": 217, "request_key": 218,
        "keyctl": 219, "mount": 40, "umount2": 39, "pivot_root": 41, "chroot": 51, "unshare": 97, "setns": 268,
        "bpf": 280, "perf_event_open": 241, "userfaultfd": 282, "kexec_load": 104, "init_module": 105,
        "finit_module": 273, "delete_module": 106, "name_to_handle_at": 264, "open_by_handle_at": 265,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428, "move_mount": 429,
        "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442, "kcmp": 272,
        "rt_sigaction": 134, "capset": 91, "clone": 220, "clone3": 435,
    }),
}
ARCH = platform.machine()


def syscall_number(name):
    return ARCHES[ARCH][1][name]


CLONE_NEW_FLAGS = 0x7E020000  # CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET
CLONE_THREAD = 0x00010000


def _program(denied):
    """Kill calls of another architecture; EPERM for `denied` (and x32 calls); with
    "clone_namespaces" in `denied`, EPERM for clone with a CLONE_NEW* flag, with
    "clone_threads", EPERM for clone with CLONE_THREAD (no new threads), and with either,
    ENOSYS for clone3 (whose flags a filter cannot read; libc falls back to clone); allow
    the rest."""
    arch_id, numbers = ARCHES[ARCH]
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    returns = {"allow": 0x7FFF0000, "eperm": 0x00050000 | 1, "enosys": 0x00050000 | 38, "kill": 0x80000000}
    prog = [(ld, 0, 0, 4), (jeq, 1, 0, arch_id), (ret, 0, 0, returns["kill"]), (ld, 0, 0, 0)]  # (code, jt, jf, k)
    if ARCH == "x86_64":
        prog.append((jge, "eperm", 0, 0x40000000))  # the x32 ABI
    clone_flags = (CLONE_NEW_FLAGS if "clone_namespaces" in denied else 0) | (
        CLONE_THREAD if "clone_threads" in denied else 0)
    for nr in sorted({numbers[name] for name in denied if name not in ("clone_namespaces", "clone_threads")}):
        prog.append((jeq, "eperm", 0, nr))
    if clone_flags:
        prog += [(jeq, "enosys", 0, numbers["clone3"]), (jeq, 0, "allow", numbers["clone"]),
                 (ld, 0, 0, 16), (jset, "eperm", "allow", clone_flags)]  # args[0], its low 32 bits
    labels = {"allow": len(prog), "eperm": len(prog) + 1, "enosys": len(prog) + 2}
    prog += [(ret, 0, 0, returns["allow"]), (ret, 0, 0, returns["eperm"]), (ret, 0, 0, returns["enosys"])]

    def offset(at, target):
        return labels[target] - at - 1 if isinstance(target, str) else target

    code = [(c, offset(i, jt), offset(i, jf), k) for i, (c, jt, jf, k) in enumerate(prog)]
    return b"".join(struct.pack("HBBI", *ins) for ins in code), len(code)


def deny(denied):
    """Make every call named in `denied` fail with EPERM in this process and its children,
    for good (needs no_new_privs). Raises OSError where the kernel refuses the filter."""
    if ARCH not in ARCHES:
        raise OSError(f"no seccomp filter for architecture {ARCH}")
    code, length = _program(denied)
    buf = ctypes.create_string_buffer(code)

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = Prog(length, ctypes.addressof(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"seccomp: {os.strerror(errno)}")
