"""Starting or joining the Ray cluster."""
from __future__ import annotations

from rlhf_platform.config import RayConfig


def connect_ray(cfg: RayConfig, runtime_env: dict | None = None) -> None:
    """Join `ray.address` if given ("auto" finds a running cluster), else start a local
    cluster bound to 127.0.0.1 with the dashboard on `ray.dashboard_host`."""
    import ray

    if ray.is_initialized():
        return
    if cfg.address:
        ray.init(address=cfg.address, runtime_env=runtime_env, log_to_driver=True)
        return
    ray.init(
        num_cpus=cfg.num_cpus,
        include_dashboard=cfg.include_dashboard,
        dashboard_host=cfg.dashboard_host,
        _node_ip_address="127.0.0.1",
        runtime_env=runtime_env,
        log_to_driver=True,
    )
