"""The prompt queue's adaptive curriculum: pass rates, filtering, priority sampling, state."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from rlhf_platform.config import ConfigError, CurriculumConfig
from rlhf_platform.curriculum import Curriculum, outcomes
from rlhf_platform.roles.prompt_queue import PromptQueue
from rlhf_platform.types import Prompt, Trajectory


def prompts(per_level: int = 10, levels: tuple[int, ...] = (0, 1)) -> list[Prompt]:
    return [Prompt(f"l{lvl}-{i}", "q", (1,), "a", lvl) for lvl in levels for i in range(per_level)]


def queue(seed: int = 5, **curriculum) -> PromptQueue:
    return PromptQueue(prompts(), [1.0, 1.0], seed=seed, curriculum=CurriculumConfig(enabled=True, **curriculum))


def ids(lease) -> list[str]:
    return [p.prompt_id for p in lease.prompts]


def play(q: PromptQueue, leases: int, size: int = 4) -> list[list[str]]:
    """Lease, ack and report outcomes (deterministic: a prompt's rewards follow its id)."""
    drawn = []
    for _ in range(leases):
        lease = q.lease(size)
        q.ack(lease.lease_id)
        q.record_outcomes({p.prompt_id: [float(int(p.prompt_id.split("-")[1]) % 3 > k) for k in range(2)] for p in lease.prompts})
        drawn.append(ids(lease))
    return drawn


@pytest.mark.parametrize("sampling", ["uniform", "prioritized"])
def test_state_round_trip_through_json_gives_identical_leases(sampling):
    original = queue(sampling=sampling)
    play(original, 6)
    in_flight = original.lease(4)
    state = json.loads(json.dumps(original.get_state()))  # what a checkpoint stores
    restored = queue(sampling=sampling)
    restored.load_state(state)
    original.nack(in_flight.lease_id)  # what the restored queue assumes happened
    assert state["curriculum"]["history"] and restored.get_stats().curriculum == original.get_stats().curriculum
    assert play(restored, 8) == play(original, 8)
    assert restored.get_ledger() == original.get_ledger()
    assert restored.get_stats().curriculum == original.get_stats().curriculum


def test_live_state_round_trip_keeps_the_curriculum_and_the_leases_held():
    original = queue()
    play(original, 3)
    held = original.lease(4)
    state = json.loads(json.dumps(original.live_state()))
    restored = queue()
    restored.load_live_state(state)
    restored.ack(held.lease_id)
    original.ack(held.lease_id)
    assert play(restored, 5) == play(original, 5)


def test_a_checkpoint_without_curriculum_state_starts_it_fresh():
    plain = PromptQueue(prompts(), [1.0, 1.0], seed=5)
    plain.ack(plain.lease(4).lease_id)
    q = queue()
    q.load_state(json.loads(json.dumps(plain.get_state())))
    assert q.get_stats().curriculum["prompts_seen"] == 0 and q.get_ledger() == plain.get_ledger()


def test_filtering_counts_and_never_leases_filtered_prompts():
    q = queue(sampling="uniform", filter="both", filter_visits=2, history=3)
    q.record_outcomes({"l0-0": [1.0, 1.0], "l0-1": [0.0, 0.0], "l0-2": [1.0, 0.0]})
    assert q.get_stats().curriculum["filtered_easy"] == 0  # one visit of the two it takes
    q.record_outcomes({"l0-0": [1.0, 1.0], "l0-1": [0.0, 0.0], "l0-2": [1.0, 1.0]})
    counts = q.get_stats().curriculum
    assert (counts["filtered_easy"], counts["filtered_hard"], counts["visits"]) == (1, 1, 6)
    drawn = [pid for lease in play_without_outcomes(q, 10) for pid in lease]
    assert "l0-0" not in drawn and "l0-1" not in drawn and "l0-2" in drawn
    stats = q.get_stats()
    assert len(q.get_ledger()) == 40 and stats.acked == stats.leased == 40  # the ledger stays exact
    q.record_outcomes({"l0-0": [1.0, 0.0]})  # a mixed visit (it was in flight) lets it back in
    assert q.get_stats().curriculum["filtered_easy"] == 0


def play_without_outcomes(q: PromptQueue, leases: int) -> list[list[str]]:
    drawn = []
    for _ in range(leases):
        lease = q.lease(4)
        q.ack(lease.lease_id)
        drawn.append(ids(lease))
    return drawn


@pytest.mark.parametrize("filter_mode,easy,hard", [("none", 0, 0), ("easy", 1, 0), ("hard", 0, 1), ("both", 1, 1)])
def test_filter_modes(filter_mode, easy, hard):
    q = queue(filter=filter_mode)
    q.record_outcomes({"l0-0": [1.0], "l0-1": [0.0]})
    counts = q.get_stats().curriculum
    assert (counts["filtered_easy"], counts["filtered_hard"]) == (easy, hard)


@pytest.mark.parametrize("sampling", ["uniform", "prioritized"])
def test_a_level_filtered_empty_is_refilled_and_counted(sampling):
    q = queue(sampling=sampling, filter="easy")
    q.record_outcomes({f"l0-{i}": [1.0, 1.0] for i in range(10)})  # every level-0 prompt too easy
    assert q.get_stats().curriculum["filtered_easy"] == 10
    drawn = [pid for lease in play_without_outcomes(q, 10) for pid in lease]
    assert any(pid.startswith("l0-") for pid in drawn)  # the level's weight is honoured: it came back
    counts = q.get_stats().curriculum
    assert counts["refills"] >= 1 and counts["refilled_prompts"] == 10 and counts["filtered_easy"] == 0


def test_priority_sampling_favours_intermediate_pass_rates():
    levels = [Prompt(f"p{i}", "q", (1,), "a", 0) for i in range(9)]
    q = PromptQueue(levels, None, seed=11, curriculum=CurriculumConfig(enabled=True, filter="none", history=4))
    rates = {"p0": [1, 1, 0, 0], "p1": [1, 0, 0, 0], "p2": [0, 0, 0, 0]}  # pass rates 1/2, 1/4, 0; three each
    q.record_outcomes({f"p{i}": [float(r) for r in rates[f"p{i % 3}"]] for i in range(9)})
    counts = Counter()
    for _ in range(3000):
        lease = q.lease(1)
        q.ack(lease.lease_id)
        counts[int(lease.prompts[0].prompt_id[1:]) % 3] += 1
    # weights p(1-p) + 0.05: 0.30, 0.2375, 0.05
    assert counts[0] > counts[1] > counts[2] > 0
    assert counts[2] < 0.2 * counts[0]


def test_prioritized_leases_hold_no_prompt_twice():
    q = queue()
    for lease in play(q, 20, size=8):
        assert len(set(lease)) == len(lease)
    retry = q.lease(8)
    q.nack(retry.lease_id)
    again = q.lease(12)  # the 8 returned ones first, then 4 others
    assert len(set(ids(again))) == 12 and ids(again)[:8] == ids(retry)


def test_curriculum_off_changes_nothing():
    plain = PromptQueue(prompts(), [1.0, 1.0], seed=5)
    off = PromptQueue(prompts(), [1.0, 1.0], seed=5, curriculum=CurriculumConfig(enabled=False))
    assert play(off, 8) == play(plain, 8)
    assert "curriculum" not in off.get_state() and off.get_stats().curriculum == {}
    assert off.get_state() == plain.get_state()


def test_outcomes_are_checked_and_grouped():
    q = queue()
    with pytest.raises(ValueError, match="no-such-prompt"):
        q.record_outcomes({"no-such-prompt": [1.0]})
    trajectories = [
        Trajectory("a", "a#1", [1], [2], [0.0], 0, "stop", reward=1.0),
        Trajectory("a", "a#1", [1], [2], [0.0], 0, "stop", reward=0.0),
        Trajectory("b", "b#1", [1], [2], [0.0], 0, "stop", reward=None),  # not scored: no outcome
    ]
    assert outcomes(trajectories) == {"a": [1.0, 0.0]}


def test_pass_rate_uses_the_last_visits_and_the_threshold():
    c = Curriculum(CurriculumConfig(enabled=True, history=2, solved_threshold=0.8, filter="none"))
    assert c.pass_rate("x") is None and c.priority("x") == pytest.approx(0.25 + 0.05)
    for rewards in ([1.0, 1.0], [0.9, 0.1], [0.5, 0.79]):
        c.record("x", rewards)
    assert c.pass_rate("x") == pytest.approx(1 / 4)  # the first visit fell out of the window
    assert c.priority("x") == pytest.approx(0.25 * 0.75 + 0.05)


@pytest.mark.parametrize(
    "section,key",
    [
        (CurriculumConfig(history=0), "curriculum.history"),
        (CurriculumConfig(filter="all"), "curriculum.filter"),
        (CurriculumConfig(filter_visits=5, history=4), "curriculum.filter_visits"),
        (CurriculumConfig(sampling="greedy"), "curriculum.sampling"),
        (CurriculumConfig(epsilon=0.0), "curriculum.epsilon"),
        (CurriculumConfig(solved_threshold=float("nan")), "curriculum.solved_threshold"),
    ],
)
def test_curriculum_keys_are_validated(section, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        section.validate()


def test_curriculum_is_set_from_the_command_line():
    from support import small_cfg

    cfg = small_cfg("curriculum.enabled=true", "curriculum.sampling=uniform", "curriculum.filter=hard")
    assert (cfg.curriculum.enabled, cfg.curriculum.sampling, cfg.curriculum.filter) == (True, "uniform", "hard")
    assert small_cfg().curriculum == CurriculumConfig()
    with pytest.raises(ConfigError, match="curriculum.enabled=true is for the grpo"):
        small_cfg("recipe=dpo", "curriculum.enabled=true")


@pytest.mark.parametrize("streaming", [False, True], ids=["batch", "streaming"])
def test_the_driver_reports_outcomes_and_the_ledger_stays_exact(tiny_model_dir, tiny_tokenizer, tmp_path, streaming):
    """The in-process scheduler with the curriculum on: every trained prompt's rewards
    reach the queue, the counts reach the step metrics, and no prompt is lost."""
    from support import small_cfg

    from rlhf_platform.data import task_rows
    from rlhf_platform.prompts import tokenize_rows
    from rlhf_platform.recipes import online_rl
    from rlhf_platform.recipes.run_roles import start_roles
    from rlhf_platform.roles.inprocess import InProcessExecutor

    cfg = small_cfg("executor=inprocess", "rollout.backend=hf", "eval.max_new_tokens=4", "rollout.max_new_tokens=6",
                    "trainer.max_steps=3", "rollout.max_staleness=1", f"rollout.streaming={str(streaming).lower()}",
                    "curriculum.enabled=true")
    train_rows, _ = task_rows(cfg.task, 0, tmp_path / "data")
    roles = start_roles(InProcessExecutor(), cfg, tiny_model_dir, tokenize_rows(tiny_tokenizer, train_rows, 200)[0])
    try:
        stats, _ = online_rl.train(roles, cfg)
        queue = roles.queue.get_stats().result()
        assert stats.steps == 3 and queue.in_flight == 0 and queue.leased - queue.requeued == queue.acked
        assert len(roles.queue.get_ledger().result()) == 3 * cfg.rollout.prompts_per_step
        assert queue.curriculum["visits"] >= 3 * cfg.rollout.prompts_per_step  # each trained prompt, at least
        assert all("curriculum/filtered_easy" in m and "curriculum/refills" in m for m in stats.history)
    finally:
        roles.shutdown()


@pytest.mark.parametrize(
    "history,message",
    [
        ({"p0": [[0, 0]]}, r"prompt 'p0': visit 1 is \[0, 0\]"),
        ({"p1": [[1, 2], [5, 1]]}, r"prompt 'p1': visit 2 is \[5, 1\]"),
        ({"p0": [["1.5", 2]]}, r"prompt 'p0': visit 1 is \['1.5', 2\]"),
        ({"p0": [[1.0, 2]]}, r"prompt 'p0': visit 1 is \[1.0, 2\]"),
        ({"p0": [[-1, 2]]}, r"prompt 'p0': visit 1 is \[-1, 2\]"),
        ({"p0": [[True, 2]]}, r"prompt 'p0': visit 1 is \[True, 2\]"),
        ({"p0": [[1, 2, 3]]}, r"prompt 'p0': visit 1 is \[1, 2, 3\]"),
        ({"p0": 3}, r"prompt 'p0': 3 is not a list of visits"),
    ],
)
def test_a_checkpoints_bad_visits_are_refused_at_load_naming_the_prompt(history, message):
    """Hostile-review finding Q1: visits like [5, 1], [0, 0] or ["1.5", 2] loaded, then failed at
    lease time with bare errors ("Total of weights must be greater than zero")."""
    from rlhf_platform.types import Prompt

    queue = PromptQueue([Prompt(f"p{i}", f"q{i}", (1,), "1", 0) for i in range(4)], [1.0], curriculum=CurriculumConfig(enabled=True))
    state = queue.get_state()
    state["curriculum"] = {"history": history}
    with pytest.raises(ValueError, match=message + r"; a visit is \[solved, samples\], integers with samples >= 1"):
        queue.load_state(state)


@pytest.mark.parametrize("key,value", [("refills", -1), ("visits", "3"), ("refilled", 1.5)])
def test_a_checkpoints_bad_curriculum_counts_are_refused(key, value):
    from rlhf_platform.curriculum import Curriculum

    with pytest.raises(ValueError, match=f"curriculum {key} is {value!r}; it must be an integer >= 0"):
        Curriculum(CurriculumConfig(enabled=True)).load_state({"history": {}, key: value})
