"""A cgroup per sandbox, where the kernel lets this process make one: memory (the work
directory's tmpfs included) and process count for all the sandbox's processes together.

Made under this process's own cgroup (v1 `memory` and `pids` hierarchies, or v2 with both
controllers delegated); where that fails (not root, no delegation), `make` returns None
and the sandbox falls back to per-process limits, a size-limited tmpfs and its own uid.
"""
from __future__ import annotations

import os
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
    name = f"rlhf-sandbox-{uuid.uuid4().hex[:12]}"
    made = SandboxCgroup([])
    try:
        if "memory" in mounts and "pids" in mounts:
            memory = Path(mounts["memory"] + own["memory"]) / name
            pids = Path(mounts["pids"] + own["pids"]) / name
            for path in (memory, pids):
                path.mkdir()
                made.paths.append(path)
            (memory / "memory.limit_in_bytes").write_text(str(memory_bytes))
            (pids / "pids.max").write_text(str(processes))
        elif "" in mounts:
            group = Path(mounts[""] + own[""]) / name
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
