"""Roles dying mid-run on the real stack (Ray, vLLM, DeepSpeed, tiny model): the run
finishes, and the prompt ledger shows every prompt trained once, none lost."""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import ray

from support import small_cfg

pytestmark = pytest.mark.e2e

STEPS, PROMPTS_PER_STEP = 6, 4


def _pid(role) -> int:
    return ray.get(role.actor.__ray_call__.remote(lambda self: os.getpid()))


def _start(tmp_path, tiny_model_dir, tiny_tokenizer, *overrides):
    from rlhf_platform.data import task_rows
    from rlhf_platform.prompts import tokenize_rows
    from rlhf_platform.recipes.run_roles import start_roles
    from rlhf_platform.roles.ray_executor import RayExecutor

    cfg = small_cfg(f"trainer.max_steps={STEPS}", "rollout.max_staleness=1", "algo.kl.coef=0.01", *overrides)
    train_rows, _ = task_rows(cfg.task, 0, tmp_path)
    prompts, _ = tokenize_rows(tiny_tokenizer, train_rows, 200)
    return cfg, start_roles(RayExecutor(cfg.ray), cfg, tiny_model_dir, prompts)


def _assert_ledger_exact(roles, steps: int = STEPS) -> None:
    ledger = roles.queue.get_ledger().result()
    stats = roles.queue.get_stats().result()
    assert len(ledger) == steps * PROMPTS_PER_STEP, "a prompt was lost or trained twice"
    assert len(set(ledger)) == len(ledger), "a prompt was trained twice"
    assert stats.in_flight == 0 and stats.leased - stats.requeued == stats.acked  # every lease accounted for


def _kill_during_step(step_done: threading.Event, kill) -> threading.Thread:
    """Kill while the next rollout is being generated and this step trains."""

    def run():
        step_done.wait(300)
        time.sleep(0.05)
        kill()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


# A process killed by the OS, and an actor killed through Ray; which role dies, and the
# scheduler's recovery for each, is covered in seconds in process
# (tests/unit/test_scheduler_inprocess.py::test_a_crashed_rollout_role_loses_no_prompt).
@pytest.mark.parametrize("role,how", [("engine", "SIGKILL"), ("reward", "ray.kill"), ("queue", "SIGKILL")])
def test_run_survives_a_role_dying(ray_local, tmp_path, tiny_model_dir, tiny_tokenizer, role, how):
    from rlhf_platform.recipes import online_rl

    cfg, roles = _start(tmp_path, tiny_model_dir, tiny_tokenizer)
    actor = {"engine": roles.engines[0], "reward": roles.reward, "queue": roles.queue.handle}[role]
    pid = _pid(actor)
    step_two = threading.Event()
    if how == "ray.kill":
        kill = lambda: ray.kill(actor.actor, no_restart=False)  # noqa: E731
    else:
        kill = lambda: os.kill(pid, signal.SIGKILL)  # noqa: E731
    killer = _kill_during_step(step_two, kill)
    try:
        stats, _ = online_rl.train(roles, cfg, on_step=lambda step, _: step == 2 and step_two.set())
        killer.join(10)
        assert stats.steps == STEPS
        assert _pid(actor) != pid  # it died, and Ray started it again
        _assert_ledger_exact(roles)
        if role == "queue":  # the driver put its state back: no lease, no ledger entry lost
            assert roles.queue.recoveries >= 1
        print(f"{role} {how}: faults seen by the driver {stats.faults}")
    finally:
        roles.shutdown()


def test_a_queue_killed_between_calls_is_restored_before_the_next_call(ray_local):
    """Ray starts a killed actor again before the next call comes: the call reaches a fresh
    queue, with no error. It must not ack a lease that queue never made (a KeyError) or
    lease prompts already leased: the handle restores the kept state first."""
    from rlhf_platform.recipes.run_roles import QUEUE_MUTATING
    from rlhf_platform.roles.prompt_queue import PromptQueue
    from rlhf_platform.roles.ray_executor import RayExecutor
    from rlhf_platform.roles.recovering_role import RecoveringRole
    from rlhf_platform.types import Prompt

    executor = RayExecutor()
    prompts = [Prompt(f"p{i}", f"q{i}", (1, i), str(i)) for i in range(8)]
    handle = executor.start_role(PromptQueue, "prompt-queue-between-calls", prompts, restarts=2)
    queue = RecoveringRole(handle, executor, QUEUE_MUTATING, 2, "live_state", "load_live_state")
    try:
        first = queue.lease(2).result()
        pid = _pid(handle)
        os.kill(pid, signal.SIGKILL)
        executor.wait_alive([handle])  # restarted, and answering, before the driver's next call
        assert _pid(handle) != pid
        queue.ack(first.lease_id).result()
        second = queue.lease(2).result()
        assert second.lease_id == first.lease_id + 1
        assert not {p.prompt_id for p in first.prompts} & {p.prompt_id for p in second.prompts}
        assert queue.get_ledger().result() == [p.prompt_id for p in first.prompts]
        assert queue.recoveries == 1
    finally:
        executor.kill(handle)


def test_trainer_rank_lost_restarts_the_group_from_the_last_checkpoint(ray_local, tmp_path, tiny_model_dir, tiny_tokenizer):
    from rlhf_platform.recipes import online_rl
    from rlhf_platform.recipes.checkpointing import RunCheckpoints, open_registry
    from rlhf_platform.recipes.guard import Guard

    cfg, roles = _start(tmp_path, tiny_model_dir, tiny_tokenizer, "cluster=local_2ranks", "checkpoint.every=2")
    run_dir = tmp_path / "run"
    guard = Guard(cfg, RunCheckpoints(cfg, run_dir, open_registry(cfg, run_dir)), [])
    old_ranks = list(roles.policy.ranks)

    def kill_rank_one(step, _):
        if step == 3 and roles.policy.ranks[1] is old_ranks[1]:
            os.kill(_pid(roles.policy.ranks[1]), signal.SIGKILL)

    try:
        stats, versions = online_rl.train(roles, cfg, on_step=kill_rank_one, guard=guard)
        assert stats.steps == STEPS and [f["fault"].split(":")[0] for f in stats.faults] == ["trainer"]
        assert stats.faults[0]["step"] == 4
        assert all(new is not old for new, old in zip(roles.policy.ranks, old_ranks))
        digests = roles.policy.run("weights_digest")
        assert digests[0] == digests[1]  # the new group is consistent
        # Restarted from the step-2 checkpoint: steps 3 and 4 ran again on the same prompts.
        _assert_ledger_exact(roles)
        assert versions.trained == STEPS + 2  # weight versions keep rising across the restart
    finally:
        roles.shutdown()


def test_a_call_that_hangs_fails_naming_the_role_after_the_deadline(ray_local):
    """`ray.call_timeout_s` bounds every wait on a role: a hung call becomes an error that
    names the role and the method, not a run that waits forever."""
    import threading

    from rlhf_platform.config import RayConfig
    from rlhf_platform.roles.executor import RoleTimeout
    from rlhf_platform.roles.ray_executor import RayExecutor

    executor = RayExecutor(RayConfig(call_timeout_s=1.5))
    role = executor.start_role(threading.Event, "hang-probe")  # its wait(s) blocks s seconds
    try:
        assert role.is_set().result() is False
        started = time.monotonic()
        with pytest.raises(RoleTimeout, match=r"hang-probe\.wait did not answer within 1.5 s"):
            role.wait(120).result()
        with pytest.raises(RoleTimeout, match=r"hang-probe\.wait"):
            executor.get_all([role.wait(120)])
        assert time.monotonic() - started < 15
    finally:
        ray.kill(role.actor)
