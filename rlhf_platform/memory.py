"""Memory the run holds, for the soak test and the dashboard: the driver's resident set
and the bytes in Ray's object store across nodes."""
from __future__ import annotations

import os

import psutil
import ray


def driver_rss_mb() -> float:
    return psutil.Process(os.getpid()).memory_info().rss / 2**20


def object_store_mb() -> float:
    """Bytes held in the object stores of every alive node, in MiB (one RPC per node)."""
    from ray._private.internal_api import node_stats

    used = 0
    for node in ray.nodes():
        if node.get("Alive"):
            stats = node_stats(node["NodeManagerAddress"], node["NodeManagerPort"])
            used += stats.store_stats.object_store_bytes_used
    return used / 2**20
