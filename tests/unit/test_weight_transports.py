"""The weight transports behind the bus, in one process: shared memory (tmpfs slots,
reader/writer locks) and the collective broadcast group (gloo on loopback; the
engines' receiver threads run beside the sender as they do in their actors)."""
from __future__ import annotations

import copy
import threading
import time
from pathlib import Path

import pytest
import torch

from rlhf_platform.roles.collective import CollectiveTransport, bucket_layout
from rlhf_platform.roles.executor import free_port
from rlhf_platform.roles.shared_memory import SharedMemoryTransport
from rlhf_platform.weight_sync import Superseded, WeightSyncBus, fetch_verified, snapshot_of


def weights(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "embed.weight": torch.randn(50, 16, generator=g),
        "layer.bias": torch.randn(7, generator=g).to(torch.bfloat16),  # odd size: the next entry stays aligned
        "layer.weight": torch.randn(16, 16, generator=g).half(),
        "scalar": torch.tensor(3.0),
    }


def assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert list(got) == list(want)
    for name in want:
        assert got[name].dtype == want[name].dtype and torch.equal(got[name], want[name]), name


@pytest.fixture
def shared_memory(tmp_path):
    writer = SharedMemoryTransport(str(tmp_path))
    yield writer, copy.deepcopy(writer)  # the engine's copy, as Ray would unpickle it
    writer.close()


def test_shared_memory_round_trip_verified_and_released(shared_memory):
    writer, reader = shared_memory
    bus = WeightSyncBus()
    for version in (1, 2, 3):
        bus.publish(snapshot_of(weights(version), version, writer))
        got = fetch_verified(bus.latest(), reader)  # digest checked on the mapped bytes
        assert_same(got, weights(version))
        reader.release(bus.latest().handle)
    assert len(list(Path(writer.directory).iterdir())) == 2  # two slots, reused


def test_shared_memory_reader_of_an_overwritten_slot_is_told_to_poll_again(shared_memory):
    writer, reader = shared_memory
    first = writer.put(weights(1))
    writer.put(weights(2))
    third = writer.put(weights(3))  # took the first one's slot
    with pytest.raises(Superseded):
        reader.get(first)
    assert_same(reader.get(third), weights(3))
    reader.release(third)


def test_shared_memory_writer_waits_for_a_reader_of_its_slot(shared_memory):
    writer, reader = shared_memory
    first = writer.put(weights(1))
    writer.put(weights(2))
    held = reader.get(first)  # the engine is loading version 1 from slot 0
    done = threading.Event()
    thread = threading.Thread(target=lambda: (writer.put(weights(3)), done.set()))
    thread.start()
    time.sleep(0.3)
    assert not done.is_set(), "the trainer overwrote a slot an engine was reading"
    assert_same(held, weights(1))
    reader.release(first)
    thread.join(timeout=10)
    assert done.is_set()


def test_shared_memory_names_the_node_problem(tmp_path):
    writer = SharedMemoryTransport(str(tmp_path))
    handle = writer.put(weights(1))
    writer.close()
    with pytest.raises(FileNotFoundError, match="trainer's node"):
        SharedMemoryTransport(str(tmp_path)).get(handle)


def test_bucket_layout_packs_in_order_and_isolates_big_tensors():
    tensors = {"a": torch.zeros(10), "b": torch.zeros(1000), "c": torch.zeros(3), "d": torch.zeros(5)}
    buckets = bucket_layout(tensors, bucket_bytes=256)
    assert [[e.name for e in entries] for _, entries in buckets] == [["a"], ["b"], ["c", "d"]]
    assert all(e.offset % 64 == 0 for _, entries in buckets for e in entries)
    assert all(size >= e.offset + e.num_bytes for size, entries in buckets for e in entries)


def collective_group(receivers: int, timeout_s: float = 60.0):
    """A sender and its receivers (each a copy, as each role holds its own), attached."""
    sender = CollectiveTransport(bucket_mb=0.001, timeout_s=timeout_s)  # ~1 KB buckets: several broadcasts
    copies = [copy.deepcopy(sender) for _ in range(receivers)]
    port = free_port()
    for member, transport in enumerate([sender, *copies]):
        transport.attach(member, receivers + 1, "127.0.0.1", port)
    return sender, copies


def test_collective_broadcast_reaches_every_engine_verified():
    sender, receivers = collective_group(2)
    bus = WeightSyncBus()
    try:
        for version in (1, 2):
            bus.publish(snapshot_of(weights(version), version, sender))  # returns once every engine has the bytes
            for receiver in receivers:
                assert_same(fetch_verified(bus.latest(), receiver), weights(version))
                receiver.release(bus.latest().handle)
        stale = bus.latest().handle
        bus.publish(snapshot_of(weights(3), 3, sender))
        with pytest.raises(Superseded):
            receivers[0].get(stale)  # version 2 was loaded and dropped; 3 is newer
        assert_same(receivers[1].get(bus.latest().handle), weights(3))
    finally:
        sender.close()


def test_an_idle_collective_group_outlives_its_timeout():
    sender, (receiver,) = collective_group(1, timeout_s=2.0)
    try:
        first = sender.put(weights(1))
        assert_same(receiver.get(first), weights(1))
        time.sleep(3.0)  # no collective is pending while the trainer trains
        assert_same(receiver.get(sender.put(weights(2))), weights(2))
    finally:
        sender.close()


def test_a_restarted_engine_gets_the_published_weights_after_the_group_is_formed_again():
    bus = WeightSyncBus()
    sender, (receiver,) = collective_group(1)
    try:
        bus.publish(snapshot_of(weights(1), 1, sender))
        assert_same(fetch_verified(bus.latest(), receiver), weights(1))
        receiver.close()  # the engine died; Ray starts a fresh one (no snapshot, no group)
        fresh = copy.deepcopy(CollectiveTransport(bucket_mb=0.001, timeout_s=60))
        port = free_port()
        sender.attach(0, 2, "127.0.0.1", port)  # RunRoles.connect_weights
        fresh.attach(1, 2, "127.0.0.1", port)
        assert_same(fetch_verified(bus.latest(), fresh), weights(1))  # resent under the token the bus names
        bus.publish(snapshot_of(weights(2), 2, sender))
        assert_same(fetch_verified(bus.latest(), fresh), weights(2))
    finally:
        sender.close()


def test_collective_travels_without_its_threads():
    transport = CollectiveTransport()
    transport.attach(0, 2, "127.0.0.1", free_port())
    clone = copy.deepcopy(transport)
    with pytest.raises(RuntimeError, match="never joined"):
        clone.get({"token": "x"})
    time.sleep(0.5)  # the group is forming in the background (its store exists, the peer never comes)
    started = time.monotonic()
    transport.close()  # leaving a group still forming does not wait for it
    assert time.monotonic() - started < 2.0


def test_a_failed_fetch_releases_the_shared_memory_slot(tiny_model_dir, tmp_path):
    from dataclasses import replace

    from rlhf_platform.roles.rollout_engine import RolloutEngine, WeightsRefused
    from rlhf_platform.weight_sync import engine_weights

    bus, writer = WeightSyncBus(), SharedMemoryTransport(str(tmp_path), lock_timeout_s=5.0)
    engine = RolloutEngine("rollout-0", "hf", str(tiny_model_dir), bus, copy.deepcopy(writer), wait_timeout_s=5.0)
    state = engine_weights(engine.backend.model.state_dict(), engine.backend.model.config.tie_word_embeddings)
    try:
        bus.publish(replace(snapshot_of(state, 1, writer), digest="0" * 32))  # the bytes do not match
        with pytest.raises(WeightsRefused, match="fetched twice"):  # fetched again, then refused
            engine.sync(1)
        assert bus.corrupt_version() == 1 and engine.version == 0
        writer.put(state)
        writer.put(state)  # slot 0 again: the failed reader's lock is gone, so this does not wait
    finally:
        writer.close()
