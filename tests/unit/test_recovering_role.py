"""A role whose state the driver keeps survives its process dying at any moment: during
a call (the call fails) or between two calls (Ray starts it again before the next call
comes, which then reaches a fresh role without any error)."""
from __future__ import annotations

import pytest

from rlhf_platform.recipes.run_roles import QUEUE_MUTATING
from rlhf_platform.roles.executor import RoleDied
from rlhf_platform.roles.inprocess import InProcessExecutor
from rlhf_platform.roles.prompt_queue import PromptQueue
from rlhf_platform.roles.recovering_role import RecoveringRole
from rlhf_platform.types import Prompt


def _queue(executor: InProcessExecutor, restarts: int = 4) -> RecoveringRole:
    prompts = [Prompt(f"p{i}", f"q{i}", (1, i), str(i)) for i in range(12)]
    handle = executor.start_role(PromptQueue, "prompt-queue", prompts, seed=3, restarts=restarts)
    return RecoveringRole(handle, executor, QUEUE_MUTATING, restarts, "live_state", "load_live_state")


def _play(executor: InProcessExecutor, fault=None) -> tuple[list[str], list[list[str]]]:
    """(ledger, prompts of each lease) of 4 lease/ack rounds, `fault(queue)` after each lease."""
    queue, leased = _queue(executor), []
    for _ in range(4):
        lease = queue.lease(2).result()
        leased.append([p.prompt_id for p in lease.prompts])
        if fault is not None:
            fault(queue)
        queue.ack(lease.lease_id).result()
    return queue.get_ledger().result(), leased


@pytest.mark.parametrize("how", ["during_a_call", "between_calls"])
def test_a_queue_that_died_goes_on_from_its_kept_state(how):
    executor = InProcessExecutor()
    ledger, leased = _play(executor)
    kill = executor.crash if how == "during_a_call" else executor.restart_unseen
    recovered: list[RecoveringRole] = []

    def fault(queue):
        recovered[:] = [queue]
        kill(queue.handle)

    assert _play(executor, fault) == (ledger, leased)  # no lease repeated, none lost, acks land
    assert recovered[0].recoveries == 4
    assert len(set(ledger)) == 8


def test_a_fresh_role_is_refused_rather_than_called():
    """Without the kept state put back, a restarted queue would ack a lease it never made
    (a KeyError) or lease prompts already leased; the handle's token catches it first."""
    from rlhf_platform.roles.recovering_role import _guarded_call

    executor = InProcessExecutor()
    queue = _queue(executor)
    lease = queue.lease(2).result()
    executor.restart_unseen(queue.handle)
    with pytest.raises(RoleDied, match="started again"):
        executor.call_with(queue.handle, _guarded_call, queue._token, "ack", lease.lease_id).result()
    queue.ack(lease.lease_id).result()  # through the handle: restored, then acked once
    assert queue.get_stats().result().acked == 2 and queue.recoveries == 1


def test_out_of_restarts_the_death_is_raised():
    executor = InProcessExecutor()
    queue = _queue(executor, restarts=1)
    executor.restart_unseen(queue.handle)  # uses the one restart
    queue.lease(2).result()
    executor.crash(queue.handle)
    with pytest.raises(RoleDied):
        queue.lease(2).result()
