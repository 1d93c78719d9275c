"""A bad weight update never leaves an engine serving mixed or unverified weights, and
never stops the run: a published snapshot whose copy fails verification is fetched again,
then refused and published again; a load that fails half-way restarts the engine."""
from __future__ import annotations

import dataclasses

import pytest

from support import small_cfg

INPROCESS = ["executor=inprocess", "rollout.backend=hf", "eval.max_new_tokens=4", "rollout.max_new_tokens=6"]


@pytest.fixture(scope="module")
def prompts(tiny_tokenizer, tmp_path_factory):
    from rlhf_platform.data import task_rows
    from rlhf_platform.prompts import tokenize_rows

    train_rows, _ = task_rows(small_cfg().task, 0, tmp_path_factory.mktemp("data"))
    return tokenize_rows(tiny_tokenizer, train_rows, 200)[0]


def start(tiny_model_dir, prompts, *overrides):
    from rlhf_platform.recipes.run_roles import start_roles
    from rlhf_platform.roles.inprocess import InProcessExecutor

    cfg = small_cfg(*INPROCESS, *overrides)
    return cfg, start_roles(InProcessExecutor(), cfg, tiny_model_dir, prompts)


def assert_ledger_exact(roles, steps, per_step=4):
    ledger = roles.queue.get_ledger().result()
    assert len(ledger) == steps * per_step and len(set(ledger)) == len(ledger), "a prompt was lost or trained twice"


@pytest.mark.parametrize("streaming", [False, True], ids=["batch", "streaming"])
def test_a_corrupt_published_snapshot_is_refused_and_published_again(tiny_model_dir, prompts, streaming):
    from rlhf_platform.recipes import online_rl

    cfg, roles = start(tiny_model_dir, prompts, "trainer.max_steps=4", "rollout.max_staleness=0",
                       f"rollout.streaming={str(streaming).lower()}")
    bus = roles.bus._obj
    corrupted = []

    def corrupt(step, _metrics):
        if step == 2:  # what the engines fetch no longer matches what was published
            bus._latest = dataclasses.replace(bus._latest, digest="0" * 32)
            corrupted.append(bus._latest.version)

    try:
        stats, versions = online_rl.train(roles, cfg, on_step=corrupt)
        assert stats.steps == 4 and corrupted == [2]
        assert [f["fault"] for f in stats.faults] == ["rollout: WeightsRefused"]
        assert bus.corrupt_version() is None  # published again, then superseded
        assert roles.engines[0].served_version().result() >= 2
        assert_ledger_exact(roles, 4)
    finally:
        roles.shutdown()


def test_the_bus_takes_a_version_again_only_in_place_of_a_corrupt_copy():
    from rlhf_platform.weight_sync import WeightSnapshot, WeightSyncBus

    bus = WeightSyncBus()
    bus.publish(WeightSnapshot(1, "a", None, 0, 0.0))
    with pytest.raises(ValueError, match="must increase"):
        bus.publish(WeightSnapshot(1, "b", None, 0, 0.0))
    bus.report_corrupt("rollout-0", 0)  # an older version: nothing to do
    assert bus.corrupt_version() is None
    bus.report_corrupt("rollout-0", 1)
    assert bus.corrupt_version() == 1
    bus.publish(WeightSnapshot(1, "b", None, 0, 0.0))
    assert bus.corrupt_version() is None and bus.latest().digest == "b"


def test_a_load_failing_half_way_breaks_the_engine_until_it_restarts(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from rlhf_platform.roles.inprocess import InProcessExecutor, InProcessTransport
    from rlhf_platform.roles.rollout_engine import EngineBroken, RolloutEngine
    from rlhf_platform.weight_sync import WeightSyncBus, engine_weights, snapshot_of

    executor, transport = InProcessExecutor(), InProcessTransport()
    bus = executor.start_role(WeightSyncBus, "bus")
    engine = executor.start_role(RolloutEngine, "rollout-0", "rollout-0", "hf", tiny_model_dir, bus, transport, restarts=1)

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    state = engine_weights({k: v.clone() for k, v in model.state_dict().items()}, model.config.tie_word_embeddings)
    bus.publish(snapshot_of(state, 1, transport)).result()

    original = engine._obj.backend.load_weights
    def half_way(named_tensors):
        for i, (name, tensor) in enumerate(named_tensors):
            if i == 3:
                raise RuntimeError("out of memory")
        return original(named_tensors)

    engine._obj.backend.load_weights = half_way
    with pytest.raises(EngineBroken, match="half-way"):
        engine.sync(1).result()
    # the in-process executor built the engine again (as Ray restarts the actor): clean weights, version 0
    assert engine.served_version().result() == 0 and not engine._obj.broken
    assert engine.sync(1).result() == 1
