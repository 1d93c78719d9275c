"""The online-RL scheduler under the in-process executor: the real roles (tiny model,
HF generation, a one-rank DeepSpeed trainer) called in this process, in seconds.

Staleness bounds for every `sync_every` / `max_staleness` pair, DAPO top-up, rollback
renumbering, a trainer rank or a rollout role dying, and exact resume.
"""
from __future__ import annotations

import itertools
from collections import deque

import pytest

from support import small_cfg

from rlhf_platform.versions import WeightVersions

INPROCESS = ["executor=inprocess", "rollout.backend=hf", "eval.max_new_tokens=4", "rollout.max_new_tokens=6"]


@pytest.fixture(scope="module")
def prompts(tiny_tokenizer, tmp_path_factory):
    from rlhf_platform.data import task_rows
    from rlhf_platform.prompts import tokenize_rows

    cfg = small_cfg()
    train_rows, eval_rows = task_rows(cfg.task, 0, tmp_path_factory.mktemp("data"))
    return tokenize_rows(tiny_tokenizer, train_rows, 200)[0], tokenize_rows(tiny_tokenizer, eval_rows, 200)[0][:4]


def start(tiny_model_dir, prompts, *overrides):
    from rlhf_platform.recipes.run_roles import start_roles
    from rlhf_platform.roles.inprocess import InProcessExecutor

    cfg = small_cfg(*INPROCESS, *overrides)
    return cfg, start_roles(InProcessExecutor(), cfg, tiny_model_dir, prompts[0])


def train(cfg, roles, **kwargs):
    from rlhf_platform.recipes import online_rl

    return online_rl.train(roles, cfg, **kwargs)


def lags(stats):
    """Per trained step: how far each sample's weights lagged the trainer (step i trains
    at version i when nothing was renumbered)."""
    return [[step - v for v in versions] for step, versions in enumerate(stats.versions_trained)]


def assert_ledger_exact(roles, steps, per_step=4):
    ledger = roles.queue.get_ledger().result()
    queue = roles.queue.get_stats().result()
    assert len(ledger) == steps * per_step and len(set(ledger)) == len(ledger), "a prompt was lost or trained twice"
    assert queue.in_flight == 0 and queue.leased - queue.requeued == queue.acked


@pytest.mark.parametrize("sync_every,max_staleness", list(itertools.product([1, 2, 3, 5], [0, 1, 2, 3])))
def test_every_sync_every_and_staleness_pair_makes_progress_within_its_bound(sync_every, max_staleness):
    """The loop's arithmetic alone: launches, publishes and the samples' lag, 40 steps."""
    versions = WeightVersions.starting_at(0, sync_every, max_staleness)
    in_flight: deque[int] = deque()  # the version each launched rollout sampled
    trained_lags = []
    for step in range(40):
        while versions.can_launch(40 - step):
            assert versions.launch() <= versions.published  # backpressure: its version is out
            in_flight.append(versions.published)
        sampled = in_flight.popleft()  # never empty: no IndexError for any pair
        trained_lags.append(versions.lag_of(sampled))
        if versions.step_trained(last_step=step == 39):
            versions.mark_published()
    assert max(trained_lags) <= versions.max_lag == (max_staleness + 1) * sync_every - 1
    assert versions.trained == versions.published == 40
    if versions.max_lag:
        assert max(trained_lags) == versions.max_lag  # the bound is used, not just respected


def test_sync_every_2_on_cluster_local_runs_in_process(tiny_model_dir, tmp_path):
    """`trainer.sync_every=2` with cluster=local (max_staleness 0) used to pop an empty deque."""
    from rlhf_platform.recipes.run import run

    cfg = small_cfg(*INPROCESS, "cluster=local", "trainer.sync_every=2", "trainer.max_steps=5", "eval.before=false",
                    f"run.root={tmp_path}", "run.name=sync2")
    assert cfg.rollout.max_staleness == 0
    summary = run(cfg, tmp_path / "sync2")
    assert summary["steps"] == 5 and summary["weight_version"] == 5 and summary["dropped_stale"] == 0
    assert summary["final_version"] is not None and summary["eval_accuracy_after"] is not None


@pytest.mark.parametrize("sync_every,max_staleness", [(1, 1), (2, 0), (3, 1)])
def test_samples_never_lag_more_than_the_bound(tiny_model_dir, prompts, sync_every, max_staleness):
    cfg, roles = start(tiny_model_dir, prompts, "trainer.max_steps=6", f"trainer.sync_every={sync_every}",
                       f"rollout.max_staleness={max_staleness}")
    try:
        stats, versions = train(cfg, roles)
        bound = (max_staleness + 1) * sync_every - 1
        assert stats.steps == 6 and stats.dropped_stale == 0
        assert max(max(step) for step in lags(stats)) == bound  # asynchronous up to the bound, never past it
        assert versions.trained == versions.published == 6 and roles.bus.latest_version().result() == 6
        assert_ledger_exact(roles, 6)
    finally:
        roles.shutdown()


def test_dapo_keeps_groups_with_signal_without_topping_up(tiny_model_dir, prompts):
    cfg, roles = start(tiny_model_dir, prompts, "trainer.max_steps=2", "algo.dapo.dynamic_sampling=true",
                       "reward.functions=[{name:brevity,weight:1.0}]")  # replies differ: every group has signal
    try:
        stats, _ = train(cfg, roles)
        assert stats.steps == 2
        assert [m["rollout/sampling_rounds"] for m in stats.history] == [0.0, 0.0]
        assert [m["rollout/dropped_uniform_groups"] for m in stats.history] == [0.0, 0.0]
    finally:
        roles.shutdown()


def test_dapo_tops_up_uniform_batches_then_stops_with_a_clear_error(tiny_model_dir, prompts):
    from rlhf_platform.recipes.online_rl import MAX_EMPTY_BATCHES

    # One sample a prompt: every group's rewards are "all equal", so every group is dropped.
    cfg, roles = start(tiny_model_dir, prompts, "trainer.max_steps=2", "algo.dapo.dynamic_sampling=true",
                       "algo.dapo.max_sampling_rounds=1", "rollout.max_staleness=0", "rollout.samples_per_prompt=1")
    try:
        with pytest.raises(RuntimeError, match="dynamic sampling found no prompt with both right and wrong"):
            train(cfg, roles)
        queue = roles.queue.get_stats().result()
        rollouts = (MAX_EMPTY_BATCHES + 1) * (1 + cfg.algo.dapo.max_sampling_rounds)  # each empty batch was topped up once
        assert queue.leased == rollouts * cfg.rollout.prompts_per_step
    finally:
        roles.shutdown()


def guarded(cfg, roles, run_dir, eval_prompts):
    from rlhf_platform.recipes.checkpointing import RunCheckpoints, open_registry
    from rlhf_platform.recipes.guard import Guard

    return Guard(cfg, RunCheckpoints(cfg, run_dir, open_registry(cfg, run_dir)), eval_prompts)


def test_rollback_republishes_the_champion_as_the_next_version(tiny_model_dir, prompts, tmp_path):
    cfg, roles = start(
        tiny_model_dir, prompts, "trainer.max_steps=6", "rollout.max_staleness=0", "algo.kl.coef=0.01",
        "reward.functions=[{name:brevity,weight:1.0}]", "gate.every=2", "gate.divergence_max_kl=0.3",
        "faults.lr_spike_step=3", "faults.lr_spike_factor=1000",
    )
    try:
        guard = guarded(cfg, roles, tmp_path / "run", prompts[1])
        stats, versions = train(cfg, roles, guard=guard)
        assert [r["step"] for r in stats.rollbacks] == [4] and stats.steps == 6
        # 6 steps, and the champion's weights were published again as version 5
        assert versions.trained == versions.published == 7 == roles.bus.latest_version().result()
        assert [m["weight_version"] for m in stats.history] == [1, 2, 3, 5, 6, 7]
        assert stats.history[4]["train/kl_ref"] < 0.3  # trained from the champion again
    finally:
        roles.shutdown()


def test_the_gate_judges_published_weights_whatever_sync_every(tiny_model_dir, prompts, tmp_path):
    """gate.every=1 with sync_every=2: each gated step's weights are published for the
    gate's evaluation (an engine asked for an unpublished version waits forever)."""
    cfg, roles = start(tiny_model_dir, prompts, "trainer.max_steps=3", "trainer.sync_every=2", "gate.every=1",
                       "gate.max_length_drift=null", "gate.accuracy_tolerance=1.0")
    try:
        stats, versions = train(cfg, roles, guard=guarded(cfg, roles, tmp_path / "run", prompts[1]))
        assert stats.steps == 3 and versions.published == 3 and not stats.rollbacks
        assert [m["gate/passed"] for m in stats.history] == [1.0, 1.0, 1.0]
    finally:
        roles.shutdown()


def test_a_dead_trainer_rank_restarts_the_group_from_the_last_checkpoint(tiny_model_dir, prompts, tmp_path):
    cfg, roles = start(tiny_model_dir, prompts, "trainer.max_steps=6", "checkpoint.every=2", "rollout.max_staleness=1")
    old_rank = roles.policy.ranks[0]

    def crash_after_step_three(step, _metrics):
        if step == 3 and roles.policy.ranks[0] is old_rank:
            roles.executor.crash(old_rank)  # its process "dies" during the next step

    try:
        stats, versions = train(cfg, roles, on_step=crash_after_step_three, guard=guarded(cfg, roles, tmp_path / "run", []))
        assert stats.steps == 6 and [f["fault"] for f in stats.faults] == ["trainer: RoleDied"]
        assert stats.faults[0]["step"] == 4 and roles.policy.ranks[0] is not old_rank and roles.policy.restarts == 1
        assert versions.trained == 6 + 2  # restarted at step 2's weights, renumbered as version 4
        assert_ledger_exact(roles, 6)  # steps 3 and 4 ran again on the same prompts
    finally:
        roles.shutdown()


@pytest.mark.parametrize("streaming", [False, True], ids=["batch", "streaming"])
@pytest.mark.parametrize("role", ["engine", "reward", "reference"])
def test_a_crashed_rollout_role_loses_no_prompt(tiny_model_dir, prompts, role, streaming):
    cfg, roles = start(tiny_model_dir, prompts, "trainer.max_steps=5", "rollout.max_staleness=1", "algo.kl.coef=0.01",
                       f"rollout.streaming={str(streaming).lower()}")
    victim = {"engine": roles.engines[0], "reward": roles.reward, "reference": roles.reference}[role]

    def crash(step, _metrics):
        if step == 2:
            roles.executor.crash(victim)  # fails its next call, then restarts

    try:
        stats, _ = train(cfg, roles, on_step=crash)
        assert stats.steps == 5 and [f["fault"] for f in stats.faults] == ["rollout: RoleDied"]
        assert_ledger_exact(roles, 5)
    finally:
        roles.shutdown()


def test_resume_from_a_checkpoint_continues_exactly(tiny_model_dir, prompts, tmp_path):
    from rlhf_platform.recipes.checkpointing import RunCheckpoints, open_registry

    common = ["rollout.max_staleness=0", "checkpoint.every=2"]
    cfg, roles = start(tiny_model_dir, prompts, "trainer.max_steps=4", *common)
    try:
        straight, _ = train(cfg, roles, guard=guarded(cfg, roles, tmp_path / "straight", []))
        straight_ledger = roles.queue.get_ledger().result()
    finally:
        roles.shutdown()
    cfg, roles = start(tiny_model_dir, prompts, "trainer.max_steps=2", *common)
    try:
        train(cfg, roles, guard=guarded(cfg, roles, tmp_path / "resumed", []))
    finally:
        roles.shutdown()
    cfg, roles = start(tiny_model_dir, prompts, "trainer.max_steps=4", *common)
    try:
        checkpoints = RunCheckpoints(cfg, tmp_path / "resumed", open_registry(cfg, tmp_path / "resumed"))
        state = checkpoints.restore(roles, checkpoints.resume_version("latest"))
        assert (state.step, state.weight_version) == (2, 2)
        resumed, _ = train(cfg, roles, start=state)
        assert roles.queue.get_ledger().result() == straight_ledger
        assert [m["train/loss"] for m in resumed.history] == [m["train/loss"] for m in straight.history[2:]]
    finally:
        roles.shutdown()


BLOCK_RAY_AND_VLLM = """
import importlib.abc, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("ray", "vllm"):
            raise ImportError(f"{name} is not installed on this machine (blocked by the test)")
sys.meta_path.insert(0, Absent())
from rlhf_platform.commands.train import train_main
train_main()
"""


def test_rlhf_train_in_process_needs_neither_ray_nor_vllm(tmp_path):
    """`rlhf-train executor=inprocess` on a machine where `import ray` and `import vllm`
    fail (as on the lent GPU machines): the whole run, evaluation and final save included."""
    import json
    import sys

    from support import SMALL, run_in_own_session

    cmd = [sys.executable, "-c", BLOCK_RAY_AND_VLLM, *SMALL, "executor=inprocess", "rollout.backend=hf",
           "trainer.max_steps=2", f"run.root={tmp_path}", "run.name=noray"]
    code, out, err = run_in_own_session(cmd, tmp_path / "noray", timeout_s=300)
    assert code == 0, err[-3000:]
    summary = json.loads((tmp_path / "noray" / "summary.json").read_text())
    assert summary["executor"] == "inprocess" and summary["steps"] == 2 and summary["final_version"] == 1
    assert "Ray" not in err and "final model: registry version 1" in out


def test_balanced_slices_are_contiguous_cover_everything_and_balance_tokens():
    from rlhf_platform.recipes.rollout import balanced_slices

    assert balanced_slices([1.0] * 8, 2) == [slice(0, 4), slice(4, 8)]
    assert balanced_slices([10.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], 2) == [slice(0, 1), slice(1, 11)]
    assert balanced_slices([1.0], 3) == [slice(0, 1), slice(1, 1), slice(1, 1)]  # fewer items than engines
    for costs in ([3.0, 5.0, 2.0, 8.0, 1.0, 1.0, 4.0], [1.0] * 13, [7.0, 7.0, 7.0]):
        for parts in (1, 2, 3, 4):
            slices = balanced_slices(costs, parts)
            assert [i for s in slices for i in range(s.start, s.stop)] == list(range(len(costs)))
            assert max(sum(costs[s]) for s in slices) < sum(costs) / parts + max(costs)


def test_two_engines_share_every_step_and_samples_come_back_complete_and_in_order(tiny_model_dir, prompts):
    from rlhf_platform.recipes.rollout import generate_across
    from rlhf_platform.sampling import SamplingSpec

    cfg, roles = start(tiny_model_dir, prompts, "trainer.max_steps=3", "rollout.num_engines=2", "rollout.max_staleness=0")
    engines = [engine._obj for engine in roles.engines]
    tokens_per_step = []
    try:
        asked = prompts[0][:5]
        scored = roles.reward.score(*generate_across(roles.engines, asked, SamplingSpec(n=3, max_new_tokens=4, seed=1), 0)).result()
        assert [t.prompt_id for t in scored] == [p.prompt_id for p in asked for _ in range(3)]  # complete, in order
        assert len({t.group_id.split("#")[1] for t in scored}) == 2  # two engine batches
        assert all(t.reward is not None for t in scored)
        before = [e.tokens_generated for e in engines]
        stats, _ = train(cfg, roles, on_step=lambda step, _m: tokens_per_step.append([e.tokens_generated for e in engines]))
        assert stats.steps == 3
        for previous, now in zip([before, *tokens_per_step], tokens_per_step):
            assert all(b > a for a, b in zip(previous, now)), "an engine sat out a step"
        assert [len(v) for v in stats.versions_trained] == [cfg.rollout.prompts_per_step * cfg.rollout.samples_per_prompt] * 3
        assert_ledger_exact(roles, 3)
    finally:
        roles.shutdown()


@pytest.mark.parametrize("transport", ["shared_memory", "collective"])
def test_weights_reach_two_engines_through_each_transport(tiny_model_dir, prompts, transport):
    from rlhf_platform.weight_sync import engine_weights, tensors_digest

    cfg, roles = start(tiny_model_dir, prompts, "trainer.max_steps=3", "rollout.num_engines=2", "rollout.max_staleness=1",
                       f"weight_sync.transport={transport}")
    try:
        stats, versions = train(cfg, roles)
        assert stats.steps == 3 and versions.published == 3
        for engine in roles.engines:
            assert engine.sync(3).result() == 3
        assert roles.bus.served().result() == {"rollout-0": 3, "rollout-1": 3}
        trainer_digest = roles.policy.rank0.weights_digest().result()
        for engine in roles.engines:
            model = engine._obj.backend.model
            served = engine_weights(model.state_dict(), model.config.tie_word_embeddings)
            assert tensors_digest(served) == trainer_digest  # the bytes the trainer published, loaded
    finally:
        roles.shutdown()


def test_the_count_task_runs_and_is_scored_by_its_verifier(tiny_model_dir, tmp_path):
    """`task=count` (the long-tail task) end to end in process: its prompts, the
    count_answer verifier as reward, held-out accuracy by the task's own check."""
    from rlhf_platform.recipes.run import run

    cfg = small_cfg(*INPROCESS, "task=count", "task.train_size=20", "task.eval_size=2", "rollout.max_new_tokens=8",
                    "eval.max_new_tokens=8", "trainer.max_steps=2", f"run.root={tmp_path}", "run.name=count")
    assert [f.name for f in cfg.reward.functions] == ["count_answer"]
    summary = run(cfg, tmp_path / "count")
    assert summary["steps"] == 2 and summary["eval_accuracy_after"] is not None  # 0.0 for the untrained tiny model


def test_an_asynchronous_run_records_its_schedule(tiny_model_dir, tmp_path):
    """schedule.jsonl: every trained sample with its step, lease and seed, engine and
    weight version (the record a replay of an asynchronous run starts from)."""
    import json

    from rlhf_platform.recipes.run import run
    from rlhf_platform.roles.prompt_queue import lease_seed

    cfg = small_cfg(*INPROCESS, "rollout.max_staleness=1", "trainer.max_steps=4", "rollout.num_engines=2",
                    "eval.before=false", f"run.root={tmp_path}", "run.name=sched")
    run(cfg, tmp_path / "sched")
    rows = [json.loads(line) for line in (tmp_path / "sched" / "schedule.jsonl").read_text().splitlines()]
    per_step = cfg.rollout.prompts_per_step * cfg.rollout.samples_per_prompt
    assert [r["step"] for r in rows] == [s for s in range(1, 5) for _ in range(per_step)]
    for row in rows:
        engine_index = int(row["engine"].removeprefix("rollout-"))
        assert row["seed"] == lease_seed(cfg.run.seed, row["lease_id"]) + engine_index  # each engine its own stream
        assert 0 <= (row["step"] - 1) - row["weight_version"] <= 1  # within the staleness bound
        assert row["response_tokens"] >= 0 and row["prompt_id"]
    assert {r["engine"] for r in rows if r["step"] == 1} == {"rollout-0", "rollout-1"}
    assert any(r["step"] - 1 - r["weight_version"] == 1 for r in rows)  # asynchronous


# -- streaming (rollout.streaming=true): groups leased one by one, trained as they finish --

STREAMING = ["rollout.streaming=true"]


@pytest.mark.parametrize("sync_every,max_staleness,stale_tokens", [(1, 0, "drop"), (1, 2, "drop"), (2, 1, "mask")])
def test_streaming_trains_within_the_bound_and_loses_no_prompt(tiny_model_dir, prompts, sync_every, max_staleness, stale_tokens):
    cfg, roles = start(tiny_model_dir, prompts, *STREAMING, "trainer.max_steps=6", f"trainer.sync_every={sync_every}",
                       f"rollout.max_staleness={max_staleness}", f"rollout.stale_tokens={stale_tokens}")
    try:
        stats, versions = train(cfg, roles)
        assert stats.steps == 6 and versions.trained == versions.published == 6
        assert max(max(step) for step in lags(stats)) == versions.max_lag  # the bound is used, never passed
        assert all(len(step) == 16 for step in stats.versions_trained)
        assert all(row["lease_id"] is not None and row["group_id"].endswith(f"#L{row['lease_id']}") for row in stats.schedule)
        assert_ledger_exact(roles, 6)
    finally:
        roles.shutdown()


def test_streaming_restarts_a_dead_trainer_from_its_checkpoint(tiny_model_dir, prompts, tmp_path):
    cfg, roles = start(tiny_model_dir, prompts, *STREAMING, "trainer.max_steps=5", "checkpoint.every=2", "rollout.max_staleness=1")
    old_rank = roles.policy.ranks[0]

    def crash_after_step_three(step, _metrics):
        if step == 3 and roles.policy.ranks[0] is old_rank:
            roles.executor.crash(old_rank)

    try:
        stats, versions = train(cfg, roles, on_step=crash_after_step_three, guard=guarded(cfg, roles, tmp_path / "run", []))
        assert stats.steps == 5 and [f["fault"] for f in stats.faults] == ["trainer: RoleDied"]
        assert versions.trained == 5 + 2
        assert_ledger_exact(roles, 5)
    finally:
        roles.shutdown()


def test_streaming_rollback_discards_what_the_bad_weights_sampled(tiny_model_dir, prompts, tmp_path):
    cfg, roles = start(
        tiny_model_dir, prompts, *STREAMING, "trainer.max_steps=6", "rollout.max_staleness=1", "algo.kl.coef=0.01",
        "reward.functions=[{name:brevity,weight:1.0}]", "gate.every=2", "gate.divergence_max_kl=0.3",
        "faults.lr_spike_step=3", "faults.lr_spike_factor=1000",
    )
    try:
        stats, versions = train(cfg, roles, guard=guarded(cfg, roles, tmp_path / "run", prompts[1]))
        assert [r["step"] for r in stats.rollbacks] == [4] and stats.steps == 6
        assert versions.trained == versions.published == 7
        # after the rollback (champion republished as version 5) nothing older is trained
        assert all(v >= 5 - 1 for step in stats.versions_trained[4:] for v in step)
        assert_ledger_exact(roles, 6)
    finally:
        roles.shutdown()


def test_streaming_dynamic_sampling_drops_uniform_groups_then_stops_with_a_clear_error(tiny_model_dir, prompts):
    from rlhf_platform.recipes.online_rl import MAX_EMPTY_BATCHES

    cfg, roles = start(tiny_model_dir, prompts, *STREAMING, "trainer.max_steps=2", "algo.dapo.dynamic_sampling=true",
                       "rollout.samples_per_prompt=1")
    try:
        with pytest.raises(RuntimeError, match="dynamic sampling found no prompt with both right and wrong"):
            train(cfg, roles)
        queue = roles.queue.get_stats().result()
        assert queue.acked >= MAX_EMPTY_BATCHES * cfg.rollout.prompts_per_step  # each uniform group counted as used
    finally:
        roles.shutdown()
