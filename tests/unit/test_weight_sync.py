import pytest
import torch

from rlhf_platform.weight_sync import DigestMismatch, WeightSyncBus, fetch_verified, snapshot_of, tensors_digest


class InMemoryTransport:
    def __init__(self):
        self.store = {}

    def put(self, tensors):
        self.store[id(tensors)] = tensors
        return id(tensors)

    def get(self, handle):
        return self.store[handle]


def test_digest_changes_with_any_byte():
    t = {"w": torch.zeros(3, dtype=torch.bfloat16)}
    d = tensors_digest(t)
    t["w"][1] = 1.0
    assert tensors_digest(t) != d


def test_bus_versions_increase_and_digest_is_checked():
    bus, transport = WeightSyncBus(), InMemoryTransport()
    tensors = {"w": torch.ones(2)}
    snap = snapshot_of(tensors, 1, transport)
    bus.publish(snap)
    assert bus.latest_version() == 1
    with pytest.raises(ValueError, match="versions must increase"):
        bus.publish(snapshot_of(tensors, 1, transport))
    assert torch.equal(fetch_verified(bus.latest(), transport)["w"], tensors["w"])
    tensors["w"][0] = 5.0  # altered after publishing
    with pytest.raises(DigestMismatch):
        fetch_verified(snap, transport)
