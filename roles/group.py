"""Starting roles as named Ray actors, and calling a role whether or not it is one.

A role is a plain class; `ray.remote` is applied here, so unit tests build roles
without Ray. Trainer ranks get the torch.distributed environment they need.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any

import ray


def call(role: Any, method: str, *args: Any, **kwargs: Any) -> Any:
    """Call `method` on a role: through Ray (and wait) for an actor, directly otherwise."""
    fn = getattr(role, method)
    if hasattr(fn, "remote"):
        return ray.get(fn.remote(*args, **kwargs))
    return fn(*args, **kwargs)


@dataclass
class Placement:
    """What one actor of a role reserves on the cluster."""

    num_cpus: float = 0.0
    num_gpus: float = 0.0
    resources: dict[str, float] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


def start_role(
    cls: type, name: str, *args: Any, placement: Placement | None = None, restarts: int = 0, **kwargs: Any
) -> Any:
    """Start `cls(*args, **kwargs)` as the named actor `name` (shown so on the dashboard).
    If its process dies, Ray starts it again (running `__init__` anew) up to `restarts`
    times; calls that were running on it fail and the caller retries them."""
    placement = placement or Placement()
    options: dict[str, Any] = {
        "name": name,
        "num_cpus": placement.num_cpus,
        "num_gpus": placement.num_gpus,
        "max_concurrency": 1,
        "max_restarts": restarts,
    }
    if placement.resources:
        options["resources"] = placement.resources
    if placement.env:
        options["runtime_env"] = {"env_vars": placement.env}
    return ray.remote(cls).options(**options).remote(*args, **kwargs)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start_rank_group(
    cls: type, name: str, world_size: int, *args: Any, placement: Placement | None = None, **kwargs: Any
) -> list[Any]:
    """Start `world_size` ranks of a torch.distributed role as `{name}-rank{i}`, rank 0
    first, each with MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE/LOCAL_RANK set, and wait
    until every rank has joined the process group (`cls.setup()`)."""
    placement = placement or Placement()
    master_port = free_port()
    ranks = []
    for rank in range(world_size):
        env = dict(placement.env)
        env.update(
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(master_port),
            RANK=str(rank),
            WORLD_SIZE=str(world_size),
            LOCAL_RANK=str(rank),
        )
        rank_placement = Placement(placement.num_cpus, placement.num_gpus, dict(placement.resources), env)
        ranks.append(start_role(cls, f"{name}-rank{rank}", *args, placement=rank_placement, **kwargs))
    ray.get([r.setup.remote() for r in ranks])
    return ranks
