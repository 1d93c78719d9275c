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
    scheduling: Any = None  # a Ray scheduling strategy (a placement group bundle)

    def bundle(self) -> dict[str, float]:
        """What the actor reserves, as a placement group bundle (nothing zero)."""
        wanted = {"CPU": self.num_cpus, "GPU": self.num_gpus, **self.resources}
        return {k: float(v) for k, v in wanted.items() if v > 0}


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
    if placement.scheduling is not None:
        options["scheduling_strategy"] = placement.scheduling
    if placement.env:
        options["runtime_env"] = {"env_vars": placement.env}
    return ray.remote(cls).options(**options).remote(*args, **kwargs)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def rank_placement_group(bundle: dict[str, float], world_size: int, strategy: str, name: str, timeout_s: float = 600.0):
    """A placement group of one `bundle` per rank with `strategy` (PACK keeps ranks on as
    few nodes as possible, SPREAD on as many), ready; None when ranks reserve nothing."""
    from ray.util.placement_group import placement_group

    if not bundle:
        return None
    group = placement_group([dict(bundle) for _ in range(world_size)], strategy=strategy, name=f"{name}-ranks")
    ready, _ = ray.wait([group.ready()], timeout=timeout_s)
    if not ready:
        raise RuntimeError(
            f"{name}: {world_size} ranks of {bundle} ({strategy}) cannot be placed on this cluster "
            f"(available: {ray.available_resources()})"
        )
    return group


def start_rank_group(
    cls: type,
    name: str,
    world_size: int,
    *args: Any,
    placement: Placement | None = None,
    strategy: str = "PACK",
    **kwargs: Any,
) -> list[Any]:
    """Start `world_size` ranks of a torch.distributed role as `{name}-rank{i}` in one
    placement group (`strategy`), and wait until every rank has joined the process group
    (`cls.setup()`). Rank 0's node address and a free port on it become MASTER_ADDR and
    MASTER_PORT of every rank, so ranks may sit on different nodes."""
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    placement = placement or Placement()
    group = rank_placement_group(placement.bundle(), world_size, strategy, name)
    ranks = []
    for rank in range(world_size):
        env = dict(placement.env)
        # Each GPU rank sees only its own device (Ray sets CUDA_VISIBLE_DEVICES).
        env.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK="0" if placement.num_gpus else str(rank))
        scheduling = PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=rank) if group else None
        rank_placement = Placement(placement.num_cpus, placement.num_gpus, dict(placement.resources), env, scheduling)
        ranks.append(start_role(cls, f"{name}-rank{rank}", *args, placement=rank_placement, **kwargs))
    address, port = ray.get(ranks[0].__ray_call__.remote(_rendezvous_address))
    ray.get([r.__ray_call__.remote(_set_master, address, port) for r in ranks])
    ray.get([r.setup.remote() for r in ranks])
    return ranks


def _rendezvous_address(_role: Any) -> tuple[str, int]:
    """(this node's address, a free port on it), run inside rank 0."""
    address = ray.util.get_node_ip_address()
    return address, free_port(address)


def _set_master(_role: Any, address: str, port: int) -> None:
    import os

    os.environ.update(MASTER_ADDR=address, MASTER_PORT=str(port))
