"""Starting or joining the Ray cluster."""
from __future__ import annotations

import os

from rlhf_platform.config import RayConfig

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
    import ray

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
