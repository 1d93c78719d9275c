from collections import Counter

from rlhf_platform.roles.prompt_queue import PromptQueue
from rlhf_platform.types import Prompt


def prompts():
    return [Prompt(f"l{lvl}-{i}", "q", (1,), "a", lvl) for lvl in (0, 1) for i in range(10)]


def test_lease_ack_nack_ledger():
    q = PromptQueue(prompts(), [1.0, 1.0], seed=0)
    a = q.lease(4)
    b = q.lease(4)
    q.nack(a.lease_id)
    q.ack(b.lease_id)
    c = q.lease(4)
    # nacked prompts come back first, nothing is lost or duplicated in the ledger
    assert Counter(p.prompt_id for p in c.prompts) == Counter(p.prompt_id for p in a.prompts)
    q.ack(c.lease_id)
    assert len(q.get_ledger()) == 8 and len(set(q.get_ledger())) == 8
    assert q.get_stats().in_flight == 0 and q.get_stats().requeued == 4


def test_level_weights_and_determinism():
    q = PromptQueue(prompts(), [1.0, 0.0], seed=3)
    assert {p.difficulty for p in q.lease(15).prompts} == {0}
    ids1 = [p.prompt_id for p in PromptQueue(prompts(), None, seed=7).lease(12).prompts]
    ids2 = [p.prompt_id for p in PromptQueue(prompts(), None, seed=7).lease(12).prompts]
    assert ids1 == ids2


def test_state_round_trip_continues_exactly_and_requeues_in_flight_prompts():
    import json

    original = PromptQueue(prompts(), [1.0, 1.0], seed=5)
    for _ in range(3):
        original.ack(original.lease(4).lease_id)
    in_flight = original.lease(3)
    state = json.loads(json.dumps(original.get_state()))  # what a checkpoint stores

    restored = PromptQueue(prompts(), [1.0, 1.0], seed=5)
    restored.load_state(state)
    original.nack(in_flight.lease_id)  # what the restored queue assumes happened
    assert restored.get_ledger() == original.get_ledger()
    assert restored.lease(3).prompts == in_flight.prompts  # the unacked prompts come first
    original.lease(3)
    for _ in range(5):  # then the same draws, epochs included
        assert restored.lease(4).prompts == original.lease(4).prompts
    assert restored.stats.epochs == original.stats.epochs


def test_state_naming_an_unknown_prompt_is_refused():
    import pytest

    state = PromptQueue(prompts(), None, seed=0).get_state()
    state["retry"] = ["no-such-prompt"]
    with pytest.raises(ValueError, match="no-such-prompt"):
        PromptQueue(prompts(), None, seed=0).load_state(state)


def test_leases_in_flight_at_a_checkpoint_come_back_with_their_ids_and_seeds():
    import json

    original = PromptQueue(prompts(), [1.0, 1.0], seed=5)
    original.ack(original.lease(1).lease_id)
    in_flight = [original.lease(1), original.lease(1)]  # streaming: one lease per group
    state = json.loads(json.dumps(original.get_state()))
    restored = PromptQueue(prompts(), [1.0, 1.0], seed=5)
    restored.load_state(state)
    again = [restored.lease(1), restored.lease(1)]
    assert [(l.lease_id, l.seed, l.prompts) for l in again] == [(l.lease_id, l.seed, l.prompts) for l in in_flight]
    assert restored.lease(1).lease_id == in_flight[-1].lease_id + 1  # then new leases, numbered on
    # a lease of another size (the config changed) gives its prompts back instead
    other = PromptQueue(prompts(), [1.0, 1.0], seed=5)
    other.load_state(state)
    assert other.lease(2).prompts == [p for l in in_flight for p in l.prompts]


def prompts_at(levels):
    return [Prompt(f"l{lvl}-{i}", "q", (1,), "a", lvl) for lvl in levels for i in range(10)]


def test_level_beyond_task_weights_is_an_error_naming_them():
    import pytest

    with pytest.raises(ValueError, match=r"level\(s\) \[2\].*task\.weights=\[1\.0, 1\.0\].*levels present are \[0, 1, 2\]"):
        PromptQueue(prompts_at((0, 1, 2)), [1.0, 1.0], seed=0)
    with pytest.raises(ValueError, match=r"level\(s\) \[-1\]"):
        PromptQueue(prompts_at((-1, 0)), [1.0, 1.0], seed=0)
    # without weights every level present is sampled, whatever its number
    sparse = PromptQueue(prompts_at((0, 5)), None, seed=0)
    assert {p.difficulty for p in sparse.lease(20).prompts} == {0, 5}


def test_a_disabled_curriculum_leaves_the_queue_as_it_was():
    import json

    from rlhf_platform.config import CurriculumConfig

    plain = PromptQueue(prompts(), [1.0, 1.0], seed=5)
    off = PromptQueue(prompts(), [1.0, 1.0], seed=5, curriculum=CurriculumConfig())
    for q in (plain, off):
        q.ack(q.lease(4).lease_id)
        q.nack(q.lease(4).lease_id)
    off.record_outcomes({"l0-0": [1.0]})  # nothing to learn when it is off
    assert off.get_state() == plain.get_state() and "curriculum" not in off.get_state()
    assert off.get_stats() == plain.get_stats() and off.get_stats().curriculum == {}
    restored = PromptQueue(prompts(), [1.0, 1.0], seed=5, curriculum=CurriculumConfig())
    restored.load_state(json.loads(json.dumps(plain.get_state())))
    assert restored.lease(4).prompts == plain.lease(4).prompts


def test_counts_survive_a_checkpoint_of_a_restored_queue_before_its_reissue():
    """save -> restore -> save before the in-flight lease went out again: `leased` stays
    what was leased (it used to drop by the reissued lease's prompts each time)."""
    import json

    prompts = [Prompt(f"p{i}", f"q{i}", (1, i), str(i)) for i in range(20)]
    queue = PromptQueue(prompts, seed=1)
    for _ in range(3):
        queue.ack(queue.lease(4).lease_id)
    queue.lease(4)  # in flight at the checkpoint
    state = json.loads(json.dumps(queue.get_state()))
    for _ in range(2):  # restored, checkpointed again before the lease is reissued
        queue = PromptQueue(prompts, seed=1)
        queue.load_state(state)
        state = json.loads(json.dumps(queue.get_state()))
    assert state["leased"] == 12 and state["acked"] == 12
    queue.ack(queue.lease(4).lease_id)
    assert queue.stats.leased == queue.stats.acked == len(queue.get_ledger()) == 16


def test_huge_finite_level_weights_are_drawn_by_their_ratio():
    """Hostile-review finding Q2: task.weights=[1e308, 1e308] summed to inf, and the first lease
    failed with a bare "Total of weights must be finite"."""
    from collections import Counter

    prompts = [Prompt(f"p{i}", f"q{i}", (1,), "1", i % 2) for i in range(8)]
    queue = PromptQueue(prompts, [1e308, 1e308], seed=0)
    drawn = Counter(p.difficulty for _ in range(200) for p in queue.lease(1).prompts)
    assert set(drawn) == {0, 1} and 60 < drawn[0] < 140
    lopsided = PromptQueue(prompts, [1.7e308, 1e300], seed=0)
    assert {p.difficulty for _ in range(50) for p in lopsided.lease(1).prompts} == {0}
