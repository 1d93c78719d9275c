"""The prompt queue and the Advantage Builder are single actors holding state a run cannot
lose. When one dies (here: the in-process executor's crash, which fails the next call and
builds the role again, as Ray restarts an actor), the driver puts its saved state back
and makes the call again: the run goes on exactly as if nothing had happened."""
from __future__ import annotations

import pytest

from support import small_cfg

INPROCESS = ["executor=inprocess", "rollout.backend=hf", "eval.max_new_tokens=4", "rollout.max_new_tokens=6"]
COMMON = ["trainer.max_steps=4", "rollout.max_staleness=1", "algo.kl.coef=0.01", "algo.kl.target=0.05",
          "algo.kl.mode=reward", "algo.advantage.estimator=reinforce_pp_baseline", "algo.advantage.reward_norm=running"]


@pytest.fixture(scope="module")
def prompts(tiny_tokenizer, tmp_path_factory):
    from rlhf_platform.data import task_rows
    from rlhf_platform.prompts import tokenize_rows

    train_rows, _ = task_rows(small_cfg().task, 0, tmp_path_factory.mktemp("data"))
    return tokenize_rows(tiny_tokenizer, train_rows, 200)[0]


def run(tiny_model_dir, prompts, streaming, crash_role=None):
    """(ledger, builder state, queue stats, recoveries) of a 4-step run, crashing `crash_role` at steps 1 and 2."""
    from rlhf_platform.recipes import online_rl
    from rlhf_platform.recipes.run_roles import start_roles
    from rlhf_platform.roles.inprocess import InProcessExecutor

    cfg = small_cfg(*INPROCESS, *COMMON, f"rollout.streaming={str(streaming).lower()}")
    roles = start_roles(InProcessExecutor(), cfg, tiny_model_dir, prompts)
    victim = {"queue": roles.queue, "builder": roles.builder, None: None}[crash_role]

    def crash(step, _metrics):
        if victim is not None and step in (1, 2):
            roles.executor.crash(victim.handle)

    try:
        stats, _ = online_rl.train(roles, cfg, on_step=crash)
        assert stats.steps == 4 and not stats.faults
        return (roles.queue.get_ledger().result(), roles.builder.get_state().result(), roles.queue.get_stats().result(),
                victim.recoveries if victim else 0)
    finally:
        roles.shutdown()


@pytest.mark.parametrize("streaming", [False, True], ids=["batch", "streaming"])
def test_a_crashed_queue_or_builder_is_restored_and_the_run_is_unchanged(tiny_model_dir, prompts, streaming):
    ledger, builder, queue, _ = run(tiny_model_dir, prompts, streaming)
    assert len(ledger) == 16 and len(set(ledger)) == 16
    for role in ("queue", "builder"):
        crashed_ledger, crashed_builder, crashed_queue, recoveries = run(tiny_model_dir, prompts, streaming, role)
        assert recoveries == 2, role
        assert crashed_ledger == ledger  # the same prompts, each trained once, in the same order
        assert crashed_builder == builder  # reward moments and the adaptive KL coefficient carried on
        assert crashed_queue.in_flight == 0 and crashed_queue.acked == queue.acked


@pytest.mark.parametrize("streaming", [False, True], ids=["batch", "streaming"])
@pytest.mark.parametrize("first_caller", ["any", "engine"])
def test_a_restarted_weight_bus_is_published_to_again(tiny_model_dir, prompts, streaming, first_caller):
    """The bus holds only the newest snapshot: a restarted (empty) bus gets the trainer's
    weights again. A call that meets the dead bus fails (an engine's: its rollout goes
    back; the trainer's publish waits for the bus to come back), and an engine that finds
    the restarted bus empty raises `WeightsLost`; the driver then publishes again."""
    from rlhf_platform.recipes import online_rl
    from rlhf_platform.recipes.run_roles import start_roles
    from rlhf_platform.roles.executor import RoleDied
    from rlhf_platform.roles.inprocess import InProcessExecutor

    cfg = small_cfg(*INPROCESS, "trainer.max_steps=4", "rollout.max_staleness=1", f"rollout.streaming={str(streaming).lower()}")
    roles = start_roles(InProcessExecutor(), cfg, tiny_model_dir, prompts)
    bus = roles.bus

    def crash(step, _metrics):
        if step == 2:
            roles.executor.crash(bus)  # fails its next call, then starts empty
            if first_caller == "engine":  # the crash happens now: the bus is empty when an engine next polls it
                with pytest.raises(RoleDied):
                    bus.latest_version().result()

    try:
        stats, versions = online_rl.train(roles, cfg, on_step=crash)
        assert stats.steps == 4
        faults = [f["fault"] for f in stats.faults]
        assert faults == (["rollout: WeightsLost"] if first_caller == "engine" else ["rollout: RoleDied"])
        assert roles.bus.latest_version().result() == versions.published
        ledger = roles.queue.get_ledger().result()
        assert len(ledger) == 16 and len(set(ledger)) == 16
    finally:
        roles.shutdown()
