"""Weights through the Ray object store: the transport of the Ray executor."""
from __future__ import annotations

from typing import Any

from rlhf_platform.weight_sync import NamedTensors, from_buffers, to_buffers


class ObjectStoreTransport:
    """Tensors travel through the Ray object store as raw buffers: one copy in, and
    zero-copy reads on the same node."""

    def put(self, tensors: NamedTensors) -> Any:
        import ray

        # Wrapped in a list so Ray passes the reference on instead of resolving it.
        return [ray.put(to_buffers(tensors))]

    def get(self, handle: Any) -> NamedTensors:
        import ray

        return from_buffers(ray.get(handle[0]))

    def release(self, handle: Any) -> None:
        return None  # the bus drops the reference when a newer version is published
