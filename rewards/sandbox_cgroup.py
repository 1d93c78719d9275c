"""A cgroup per sandbox, where the kernel lets this process make one: memory (the work
directory's tmpfs included) and process count for all the sandbox's processes together.

Made under this process's own cgroup (v1 `memory` and `pids` hierarchies, or v2 with both
controllers delegated); where that fails (not root, no delegation), `make` returns None
and the sandbox falls back to per-process limits, a size-limited tmpfs and its own uid.

A group is named after the process that made it (`rlhf-sandbox-<pid namespace>-<pid>-<id>`)
and removed by it when the run ends. A caller killed mid-run (a reward worker past its
deadline is SIGKILLed) cannot remove its group, so `make` first sweeps the groups next to
the one it makes: those whose owner is dead (any process left in them is killed), and
those with no process in them for longer than a run could take to start (groups of
another pid namespace, of a reused pid, or from before owners were named).
"""
from __future__ import annotations

import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path


@dataclass
class SandboxCgroup:
    paths: list[Path]  # one directory per hierarchy; the launcher writes its pid into each

    def remove(self) -> None:
        """Kill anything left in the groups and delete them (a few tries while the kernel reaps)."""
        for path in self.paths:
            for _ in range(50):
                try:
                    for pid in (path / "cgroup.procs").read_text().split():
                        try:
                            os.kill(int(pid), 9)
                        except ProcessLookupError:
                            pass
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


PREFIX = "rlhf-sandbox-"
_OWNED = re.compile(r"rlhf-sandbox-(\d+)-(\d+)-[0-9a-f]+")
EMPTY_GRACE_S = 120.0  # a group this old with no process in it is not waiting for its launcher


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid").partition("[")[2].rstrip("]") or "0"
    except OSError:
        return "0"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _empty(path: Path) -> bool:
    try:
        return not (path / "cgroup.procs").read_text().split()
    except OSError:
        return False


def sweep(parents: list[Path]) -> int:
    """Remove the sandbox groups under `parents` that no run will remove: their owner (in
    this pid namespace) is dead, or they have held no process for EMPTY_GRACE_S. Returns
    how many were removed."""
    namespace, now, removed = _pid_namespace(), time.time(), 0
    for parent in parents:
        try:
            names = [name for name in os.listdir(parent) if name.startswith(PREFIX)]
        except OSError:
            continue
        for name in names:
            path = parent / name
            owned = _OWNED.fullmatch(name)
            orphaned = owned is not None and owned.group(1) == namespace and not _alive(int(owned.group(2)))
            try:
                stale = _empty(path) and now - path.stat().st_mtime > EMPTY_GRACE_S
            except OSError:
                continue
            if orphaned or stale:
                SandboxCgroup([path]).remove()
                removed += not path.exists()
    return removed


def _own_groups() -> dict[str, str]:
    """{controller or "" for v2: this process's cgroup path} from /proc/self/cgroup."""
    groups = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            groups[controller] = path
    return groups


def _mounts() -> dict[str, str]:
    """{controller or "" for v2: mount point} of the cgroup filesystems."""
    mounts = {}
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, point, fstype, options = line.split()[:4]
        if fstype == "cgroup2":
            mounts.setdefault("", point)
        elif fstype == "cgroup":
            for option in options.split(","):
                if option in ("memory", "pids"):
                    mounts[option] = point
    return mounts


def make(memory_bytes: int, processes: int) -> SandboxCgroup | None:
    """New cgroups limiting memory and processes, or None where this process cannot make them."""
    if os.geteuid() != 0:
        return None
    try:
        own, mounts = _own_groups(), _mounts()
    except (OSError, ValueError):
        return None
    name = f"{PREFIX}{_pid_namespace()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    made = SandboxCgroup([])
    try:
        if "memory" in mounts and "pids" in mounts:
            memory = Path(mounts["memory"] + own["memory"]) / name
            pids = Path(mounts["pids"] + own["pids"]) / name
            sweep([memory.parent, pids.parent])
            for path in (memory, pids):
                path.mkdir()
                made.paths.append(path)
            (memory / "memory.limit_in_bytes").write_text(str(memory_bytes))
            (pids / "pids.max").write_text(str(processes))
        elif "" in mounts:
            group = Path(mounts[""] + own[""]) / name
            sweep([group.parent])
            group.mkdir()
            made.paths.append(group)
            (group / "memory.max").write_text(str(memory_bytes))
            if (group / "memory.swap.max").exists():
                (group / "memory.swap.max").write_text("0")
            (group / "pids.max").write_text(str(processes))
        else:
            return None
    except (OSError, KeyError):
        made.remove()
        return None
    return made
