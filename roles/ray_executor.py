"""The Ray executor: every role a named Ray actor (`rollout-0`, `trainer-rank0`, ...),
so the dashboard's actor list reads like the architecture.

`ray.remote` is applied here, so role classes stay plain. Trainer ranks sit in one
placement group and get the torch.distributed environment they need; rank 0's node
address is the rendezvous, so ranks may sit on other nodes than the driver.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable

import ray

from rlhf_platform.config import RayConfig
from rlhf_platform.roles.executor import Future, Placement, RoleDied, RoleTimeout, free_port, unwrap_args

# Ray's switch for single-machine clusters (named for macOS/Windows, where it is the
# default). Off, Ray keeps a node on 127.0.0.1: every gcs/raylet/worker server listens
# on loopback only. On (Ray's Linux default) it replaces 127.0.0.1 with the machine's
# outward address and listens on all interfaces.
_LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def keep_ray_on_loopback() -> None:
    """Make a local Ray cluster started from this process loopback-only: for this
    process (Ray may already be imported) and the processes Ray starts (environment)."""
    os.environ[_LOOPBACK_SWITCH] = "0"
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def connect_ray(cfg: RayConfig, runtime_env: dict | None = None) -> None:
    """Join `ray.address` if given ("auto" finds a running cluster), else start a local
    cluster bound to 127.0.0.1 with the dashboard on `ray.dashboard_host`."""
    if ray.is_initialized():
        return
    if cfg.address:
        ray.init(address=cfg.address, runtime_env=runtime_env, log_to_driver=True)
        return
    keep_ray_on_loopback()
    ray.init(
        num_cpus=cfg.num_cpus,
        include_dashboard=cfg.include_dashboard,
        dashboard_host=cfg.dashboard_host,
        _node_ip_address="127.0.0.1",
        _metrics_export_port=cfg.metrics_export_port,
        runtime_env=runtime_env,
        log_to_driver=True,
    )


class RayFuture:
    """A call on an actor: its ObjectRef, what it calls (for errors) and how long
    `result()` waits by default."""

    def __init__(self, ref: Any, call: str = "a role call", deadline_s: float | None = None) -> None:
        self.ref = ref
        self.call = call
        self.deadline_s = deadline_s

    def result(self, timeout: float | None = None) -> Any:
        timeout = self.deadline_s if timeout is None else timeout
        try:
            return ray.get(self.ref, timeout=timeout)
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as err:
            raise RoleDied(str(err)) from err
        except ray.exceptions.GetTimeoutError:
            raise RoleTimeout(f"{self.call} did not answer within {timeout:g} s (ray.call_timeout_s)") from None

    def wait(self) -> None:
        ray.wait([self.ref])

    def done(self) -> bool:
        ready, _ = ray.wait([self.ref], timeout=0)
        return bool(ready)


def _ref(future: Any) -> Any:
    return future.ref if isinstance(future, RayFuture) else future.result()


@dataclass
class RayRole:
    """A handle on a role's actor: `handle.method(...)` calls it and returns a RayFuture.
    Picklable, so roles can hold handles on each other (the engines on the bus)."""

    actor: Any
    role_name: str
    placement_group: Any = None  # the group a rank's bundle is in (released with the ranks)
    call_timeout_s: float | None = None  # how long a call's result() waits by default

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_") or method in ("actor", "role_name", "placement_group", "call_timeout_s"):
            raise AttributeError(method)
        remote = getattr(self.actor, method).remote

        def invoke(*args: Any, **kwargs: Any) -> RayFuture:
            args, kwargs = unwrap_args(args, kwargs, _ref)
            return RayFuture(remote(*args, **kwargs), f"{self.role_name}.{method}", self.call_timeout_s)

        return invoke


def _ping(_actor: Any) -> bool:
    return True


def _rendezvous_address(_role: Any) -> tuple[str, int]:
    """(this node's address, a free port on it), run inside rank 0."""
    address = ray.util.get_node_ip_address()
    return address, free_port(address)


def _set_master(_role: Any, address: str, port: int) -> None:
    os.environ.update(MASTER_ADDR=address, MASTER_PORT=str(port))


def rank_placement_group(bundle: dict[str, float], world_size: int, strategy: str, name: str, timeout_s: float = 600.0):
    """A placement group of one `bundle` per rank with `strategy` (PACK keeps ranks on as
    few nodes as possible, SPREAD on as many), ready; None when ranks reserve nothing."""
    if not bundle:
        return None
    return ready_placement_group([dict(bundle) for _ in range(world_size)], strategy, f"{name}-ranks", timeout_s)


def ready_placement_group(bundles: list[dict[str, float]], strategy: str, name: str, timeout_s: float = 600.0):
    """A placement group of `bundles` with `strategy`, once the cluster has placed it."""
    from ray.util.placement_group import placement_group

    group = placement_group(bundles, strategy=strategy, name=name)
    ready, _ = ray.wait([group.ready()], timeout=timeout_s)
    if not ready:
        raise RuntimeError(
            f"{name}: bundles {bundles} ({strategy}) cannot be placed on this cluster (available: {ray.available_resources()})"
        )
    return group


class RayExecutor:
    """Starts roles as named Ray actors on the cluster `ray.*` names (`executor=ray`)."""

    name = "ray"

    def __init__(self, cfg: RayConfig | None = None) -> None:
        cfg = cfg or RayConfig()
        connect_ray(cfg)
        self.call_timeout_s = cfg.call_timeout_s

    def start_role(
        self, cls: type, name: str, *args: Any, placement: Placement | None = None, restarts: int = 0, **kwargs: Any
    ) -> RayRole:
        """Start `cls(*args, **kwargs)` as the named actor `name`. If its process dies,
        Ray starts it again (running `__init__` anew) up to `restarts` times; calls that
        were running on it fail with RoleDied and the caller retries them."""
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
        return RayRole(ray.remote(cls).options(**options).remote(*args, **kwargs), name, call_timeout_s=self.call_timeout_s)

    def start_ranks(
        self, cls: type, name: str, world_size: int, *args: Any,
        placement: Placement | None = None, strategy: str = "PACK", group: Any = None, **kwargs: Any,
    ) -> list[RayRole]:
        """`world_size` ranks `{name}-rank{i}` in one placement group (`strategy`; or in
        bundles 0.. of a shared `group`), each joined to the process group
        (`cls.setup()`); rank 0's node is the rendezvous."""
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        placement = placement or Placement()
        shared = group is not None
        if not shared:
            group = rank_placement_group(placement.bundle(), world_size, strategy, name)
        ranks = []
        for rank in range(world_size):
            env = dict(placement.env)
            # Each GPU rank sees only its own device (Ray sets CUDA_VISIBLE_DEVICES).
            env.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK="0" if placement.num_gpus else str(rank))
            scheduling = PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=rank) if group else None
            rank_placement = Placement(placement.num_cpus, placement.num_gpus, dict(placement.resources), env, scheduling)
            handle = self.start_role(cls, f"{name}-rank{rank}", *args, placement=rank_placement, **kwargs)
            handle.placement_group = None if shared else group  # a shared group outlives a restart of the ranks
            ranks.append(handle)
        address, port = ray.get(ranks[0].actor.__ray_call__.remote(_rendezvous_address))
        ray.get([r.actor.__ray_call__.remote(_set_master, address, port) for r in ranks])
        self.get_all([r.setup() for r in ranks])
        return ranks

    def reserve(self, bundles: list[dict[str, float]], strategy: str, name: str) -> Any:
        return ready_placement_group(bundles, strategy, name)

    def in_bundle(self, group: Any, index: int) -> Any:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        return PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=index)

    def release(self, group: Any) -> None:
        from ray.util.placement_group import remove_placement_group

        if group is not None:
            remove_placement_group(group)

    def get_all(self, futures: list[Future]) -> list[Any]:
        """Values in order; the first failure raises at once (ranks still blocked in a
        collective with a dead rank would otherwise hold `ray.get` until gloo times out)."""
        values: dict[Any, Any] = {}
        by_ref = {f.ref: f for f in futures}
        pending = list(by_ref)
        deadline = time.monotonic() + self.call_timeout_s
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                late = by_ref[pending[0]]
                raise RoleTimeout(f"{late.call} did not answer within {self.call_timeout_s:g} s (ray.call_timeout_s)")
            values[ready[0]] = by_ref[ready[0]].result()  # fetched and deserialised once
        return [values[f.ref] for f in futures]

    def call_with(self, role: RayRole, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> RayFuture:
        args, kwargs = unwrap_args(args, kwargs, _ref)
        call = f"{role.role_name}.{getattr(fn, '__name__', 'call')}"
        return RayFuture(role.actor.__ray_call__.remote(fn, *args, **kwargs), call, self.call_timeout_s)

    def kill(self, role: RayRole) -> None:
        ray.kill(role.actor)

    def release_ranks(self, ranks: list[RayRole]) -> None:
        """Kill the ranks and remove their placement group, so a restarted group can
        reserve the same resources again."""
        from ray.util.placement_group import remove_placement_group

        for rank in ranks:
            ray.kill(rank.actor)
        groups = {id(r.placement_group): r.placement_group for r in ranks if r.placement_group is not None}
        for group in groups.values():
            remove_placement_group(group)

    def wait_alive(self, roles: list[Any], timeout_s: float = 900.0) -> None:
        """Block until every role answers again (Ray restarts a dead one; calls fail while
        it restarts). Raises when one is dead for good or still down after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        for role in roles:
            while True:
                try:
                    ray.get(role.actor.__ray_call__.remote(_ping), timeout=max(1.0, deadline - time.monotonic()))
                    break
                except (ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)

    def rendezvous(self, role: RayRole) -> tuple[str, int]:
        return tuple(ray.get(role.actor.__ray_call__.remote(_rendezvous_address)))

    def transport(self) -> Any:
        from rlhf_platform.roles.object_store import ObjectStoreTransport

        return ObjectStoreTransport()

    def memory_metrics(self) -> dict[str, float]:
        return {"memory/object_store_mb": object_store_mb()}


def object_store_mb() -> float:
    """Bytes held in the object stores of every alive node, in MiB (one RPC per node)."""
    from ray._private.internal_api import node_stats

    used = 0
    for node in ray.nodes():
        if node.get("Alive"):
            stats = node_stats(node["NodeManagerAddress"], node["NodeManagerPort"])
            used += stats.store_stats.object_store_bytes_used
    return used / 2**20
