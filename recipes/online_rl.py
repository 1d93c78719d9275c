"""Online RL: GRPO, DAPO, GSPO and PPO are settings of this one loop.

  rollout -> reward -> (reference) -> (critic values) -> advantages -> train -> sync

Rollout may run `rollout.max_staleness` weight syncs ahead of training: a rollout is
launched once a version fresh enough for it is published (backpressure,
`WeightVersions`), and the freshness filter drops, counts and re-queues anything older.
With max_staleness=0 and sync_every=1 the loop is synchronous; with max_staleness=1,
batch s+1 is generated while step s trains.
"""
from __future__ import annotations

import json
from pathlib import Path
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from rlhf_platform.algos.losses import aggregate_denominator
from rlhf_platform.config import Config
from rlhf_platform.curriculum import outcomes
from rlhf_platform.memory import driver_rss_mb
from rlhf_platform.recipes.checkpointing import RunState
from rlhf_platform.recipes.guard import Guard, Verdict
from rlhf_platform.recipes.policy_run import PolicyRun
from rlhf_platform.recipes.rollout import generate_across
from rlhf_platform.recipes.run_roles import RunRoles
from rlhf_platform.recipes.stats import TrainStats, merge_rank_metrics
from rlhf_platform.roles.executor import Executor, RoleDied
from rlhf_platform.sampling import SamplingSpec
from rlhf_platform.types import TrainBatch, Trajectory, UpdatePlan
from rlhf_platform.versions import WeightVersions

if TYPE_CHECKING:
    from rlhf_platform.recipes.run import RunInputs

MAX_EMPTY_BATCHES = 20
OnStep = Callable[[int, dict[str, float]], None]
ScheduleSink = Callable[[list[dict[str, Any]]], None]


@dataclass
class Rollout:
    lease_id: int
    scored: Any  # future of the scored (and annotated) trajectories
    started: float


def train(
    roles: RunRoles, cfg: Config, on_step: OnStep | None = None, guard: Guard | None = None, start: RunState | None = None,
    schedule_sink: ScheduleSink | None = None,
) -> tuple[TrainStats, WeightVersions]:
    """Run steps up to `trainer.max_steps` (after `start`'s step when resuming). The
    `guard` checkpoints, gates each candidate against the champion, and calls for a
    rollback or a stop when an update is bad. Returns the counts and the versions.
    With `rollout.streaming` the streaming loop (`recipes/streaming_rl.py`) runs instead.
    `schedule_sink` takes each step's schedule rows as soon as it is trained."""
    if cfg.rollout.streaming:
        from rlhf_platform.recipes.streaming_rl import train_streaming

        return train_streaming(roles, cfg, on_step, guard, start, schedule_sink)
    step = start.step if start else 0
    stats = TrainStats(steps=step, schedule_sink=schedule_sink)
    versions = WeightVersions.starting_at(start.weight_version if start else 0, cfg.trainer.sync_every, cfg.rollout.max_staleness)
    in_flight: deque[Rollout] = deque()
    failures_in_a_row = 0  # rollouts lost to a dead role since the last good one
    if guard is not None:
        guard.start(roles, step, versions.trained)
    while step < cfg.trainer.max_steps:
        while versions.can_launch(cfg.trainer.max_steps - step):
            in_flight.append(launch_rollout(roles, cfg, versions.launch(), cfg.rollout.prompts_per_step))
        rollout = in_flight.popleft()
        try:
            trajectories = rollout.scored.result()
        except RoleDied as err:
            failures_in_a_row += 1
            recover_rollout(roles, cfg, stats, rollout, in_flight, versions, step, err, failures_in_a_row)
            continue
        failures_in_a_row = 0
        for traj in trajectories:
            traj.lease_id = rollout.lease_id
        rollout_seconds = time.perf_counter() - rollout.started
        batch = roles.builder.build(trajectories, versions.trained).result()
        stats.dropped_stale += batch.dropped_stale
        if batch.dropped_stale == len(trajectories):  # all stale: put the prompts back and sample again
            roles.queue.nack(rollout.lease_id)
            versions.relaunch()
            continue
        roles.queue.ack(rollout.lease_id)
        report_outcomes(roles, cfg, trajectories)
        if cfg.algo.dapo.dynamic_sampling and not top_up(roles, cfg, batch, versions, stats):
            versions.relaunch()  # every group uniform, even after extra rounds: sample again
            continue
        train_started = time.perf_counter()
        try:
            results = train_policy(roles, cfg, batch, lr_spike=cfg.faults.lr_spike_step == step + 1, lr=guard.lr if guard else cfg.trainer.lr)
        except RoleDied as err:
            step = restart_training(roles, cfg, stats, guard, lambda: drain(roles, in_flight), versions, step, err)
            continue
        extra = {"time/rollout_wait_seconds": rollout_seconds, **run_bounds(roles, len(in_flight))}
        step, stop = finish_step(
            roles, cfg, stats, guard, versions, step, batch, results, train_started, extra, lambda: drain(roles, in_flight), on_step
        )
        if stop:
            break
    drain(roles, in_flight)
    return stats, versions


def finish_step(
    roles: RunRoles, cfg: Config, stats: TrainStats, guard: Guard | None, versions: WeightVersions, step: int,
    batch: TrainBatch, results: list[dict[str, float]], train_started: float, extra: dict[str, float],
    drain_rollouts: Callable[[], None], on_step: OnStep | None,
) -> tuple[int, bool]:
    """After an update: publish (every sync_every steps, and whenever these weights are
    evaluated next), record the step (metrics, schedule), let the guard judge it (a
    rollback drains the rollouts in flight). Returns the step count and whether to stop."""
    if versions.step_trained(last_step=step + 1 == cfg.trainer.max_steps or (guard is not None and guard.judges_at(step + 1))):
        roles.policy.publish(versions.mark_published())
    train_seconds, train_ended = time.perf_counter() - train_started, time.time()
    step += 1
    stats.versions_trained.append([t.weight_version for t in batch.trajectories])
    stats.add_schedule(schedule_rows(step, batch.trajectories))
    metrics = {**merge_rank_metrics(results), **{f"rollout/{k}": v for k, v in batch.metrics.items()}, **extra}
    metrics["time/train_seconds"] = train_seconds
    metrics.update(activity_timeline(batch.trajectories, train_ended - train_seconds, train_ended))
    verdict = guard.after_step(roles, step, versions.trained, metrics) if guard else None
    if verdict is not None and verdict.action == "rollback":
        roll_back(roles, guard, stats, drain_rollouts, versions, step, verdict, metrics)
    stats.record_step(step, len(batch), metrics, versions.trained, on_step)
    if verdict is not None and verdict.action == "stop":
        stats.stopped = verdict.reason
        if versions.published != versions.trained:  # the held-out evaluation after the run reads them
            roles.policy.publish(versions.mark_published())
        return step, True
    return step, False


def launch_rollout(roles: RunRoles, cfg: Config, min_version: int, num_prompts: int) -> Rollout:
    """Lease prompts and start their rollout at weights >= `min_version`: generate (the
    prompts split over every engine), score, then (when the run has them) reference
    logprobs and critic values."""
    lease = roles.queue.lease(num_prompts).result()
    spec = SamplingSpec.for_rollout(cfg.rollout, lease.seed)
    scored = roles.score(*generate_across(roles.engines, lease.prompts, spec, min_version))
    return Rollout(lease.lease_id, scored, time.perf_counter())


def top_up(roles: RunRoles, cfg: Config, batch: TrainBatch, versions: WeightVersions, stats: TrainStats) -> bool:
    """DAPO dynamic sampling: while fewer than `prompts_per_step` groups survived the
    uniform-reward filter, sample that many more prompts (at most
    `algo.dapo.max_sampling_rounds` extra rollouts, on the newest published weights).
    Returns False when the batch is still empty (too many in a row raise)."""
    groups = {t.group_id for t in batch.trajectories}
    rounds = 0
    while len(groups) < cfg.rollout.prompts_per_step and rounds < cfg.algo.dapo.max_sampling_rounds:
        rounds += 1
        rollout = launch_rollout(roles, cfg, versions.published, cfg.rollout.prompts_per_step - len(groups))
        extra = roles.builder.build(rollout.scored, versions.trained).result()
        roles.queue.ack(rollout.lease_id)
        report_outcomes(roles, cfg, rollout.scored.result() if cfg.curriculum.enabled else [])
        for traj in extra.trajectories:
            traj.lease_id = rollout.lease_id
        batch.trajectories.extend(extra.trajectories)
        batch.metrics["dropped_uniform_groups"] += extra.metrics.get("dropped_uniform_groups", 0.0)
        groups |= {t.group_id for t in extra.trajectories}
    batch.metrics["sampling_rounds"] = float(rounds)
    if batch.trajectories:
        return True
    stats.empty_batches += 1
    if stats.empty_batches > MAX_EMPTY_BATCHES:
        raise RuntimeError(
            f"dynamic sampling found no prompt with both right and wrong samples in {stats.empty_batches} "
            "batches: the task is too easy or too hard for this model (set algo.dapo.dynamic_sampling=false "
            "or change task.digits)"
        )
    return False


def update_plan(cfg: Config, batch: TrainBatch) -> UpdatePlan:
    """The step's update: `batch` cut into `algo.mini_batches` of whole groups, each
    with its loss normaliser over the whole mini-batch, for `algo.ppo_epochs` passes.
    A batch with fewer groups than that (a DAPO top-up that ran out of rounds) makes
    fewer mini-batches: an empty one would still move the weights (Adam's momentum)."""
    minis = [mini for mini in batch.split(cfg.algo.mini_batches) if mini.trajectories]
    denominators = [aggregate_denominator([t.trained_length for t in mb.trajectories], cfg.algo.policy.loss_agg) for mb in minis]
    return UpdatePlan(minis, denominators, cfg.algo.ppo_epochs)


def train_policy(roles: RunRoles, cfg: Config, batch: TrainBatch, lr_spike: bool, lr: float) -> list[dict[str, float]]:
    """One step's update of the policy (and critic) ranks on `batch` (`update_plan`:
    epochs x mini-batches); raises RoleDied as soon as a rank dies. `lr_spike` is fault
    injection (`faults.lr_spike_step`): this one step runs at lr x `faults.lr_spike_factor`."""
    plan = update_plan(cfg, batch)
    if lr_spike:
        roles.policy.set_lr(lr * cfg.faults.lr_spike_factor)
    if roles.critic is not None and cfg.critic.train_concurrently:
        futures = roles.policy.start_sharded("train_step", plan)
        results = roles.executor.get_all(futures + roles.critic.start_sharded("train_step", plan))
    else:
        results = roles.policy.train_step(plan)
        results += roles.critic.train_step(plan) if roles.critic is not None else []
    if lr_spike:
        roles.policy.set_lr(lr)
    return results


def recover_rollout(
    roles: RunRoles, cfg: Config, stats: TrainStats, rollout: Rollout, in_flight: deque[Rollout],
    versions: WeightVersions, step: int, err: RoleDied, failures_in_a_row: int,
) -> None:
    """An engine, reward or reference role died (it restarts): its prompts and those of
    every rollout in flight go back to the queue and are sampled again."""
    roles.queue.nack(rollout.lease_id)
    drain(roles, in_flight)
    recover_services(roles, cfg, stats, versions, step, err, failures_in_a_row)
    versions.rewind()


def recover_services(
    roles: RunRoles, cfg: Config, stats: TrainStats, versions: WeightVersions, step: int, err: RoleDied,
    failures_in_a_row: int, republish: bool = True,
) -> None:
    """After a rollout role failed (Ray restarts a dead one): count the fault, give up
    after too many in a row, wait until every service answers, re-form the weight group
    (a restarted engine left it), and publish again what an engine found corrupt or a
    restarted bus lost (`republish`: not while an update is in flight, whose end
    publishes anyway)."""
    stats.faults.append({"step": step + 1, "fault": f"rollout: {type(err.__cause__ or err).__name__}"})
    if failures_in_a_row > cfg.ray.actor_restarts + 1:
        raise RuntimeError(f"rollout failed {failures_in_a_row} times in a row; last: {err}") from err
    roles.executor.wait_alive([*roles.services(), roles.bus])
    roles.connect_weights()
    if republish:
        roles.republish_if_needed(versions)


def restart_training(
    roles: RunRoles, cfg: Config, stats: TrainStats, guard: Guard | None, drain_rollouts: Callable[[], None],
    versions: WeightVersions, step: int, err: RoleDied,
) -> int:
    """A trainer or critic rank died mid-step (no update happened): restart the groups
    from the last checkpoint, which also rewinds the prompt queue; returns its step.
    `drain_rollouts` first ends every rollout in flight (their prompts go back)."""
    stats.faults.append({"step": step + 1, "fault": f"trainer: {type(err.__cause__ or err).__name__}"})
    if guard is None or sum(f["fault"].startswith("trainer") for f in stats.faults) > cfg.trainer.group_restarts:
        raise err
    drain_rollouts()
    state = guard.checkpoints.restart_training(roles, versions.next_version())
    versions.renumber(state.weight_version)
    return state.step


def roll_back(
    roles: RunRoles, guard: Guard, stats: TrainStats, drain_rollouts: Callable[[], None],
    versions: WeightVersions, step: int, verdict: Verdict, metrics: dict[str, float],
) -> None:
    """The guard judged this step bad: restore the champion (published as the next
    version) and discard every rollout sampled from the bad weights (`drain_rollouts`)."""
    drain_rollouts()
    guard.roll_back(roles, step, versions.next_version(), verdict.reason)
    versions.renumber(versions.next_version())
    metrics["guard/rolled_back"] = 1.0
    stats.rollbacks.append({"step": step, "reason": verdict.reason})


def schedule_rows(step: int, trajectories: list[Trajectory]) -> list[dict[str, Any]]:
    """What a run records of each sample it trained (`schedule.jsonl`): the step, the
    prompt and its lease, the engine and seed that sampled it, the weight version of its
    oldest token and the versions' token spans ([version, first, end]: a partial
    rollout's interruption points), and the stale tokens masked out of the loss."""
    return [
        {
            "step": step, "prompt_id": t.prompt_id, "group_id": t.group_id, "lease_id": t.lease_id, "engine": t.engine,
            "seed": t.sampling_seed, "weight_version": t.weight_version, "response_tokens": t.response_length,
            "version_spans": [list(span) for span in t.version_spans()], "masked_tokens": t.masked_prefix,
            "sample": t.sample_index, "segments": [list(s) for s in t.segments] if t.segments is not None else None,
            "finish_reason": t.finish_reason,
        }
        for t in trajectories
    ]


def activity_timeline(trajectories: list[Trajectory], train_start: float, train_end: float) -> dict[str, float]:
    """Wall-clock spans of a step's generation (the engine batches that sampled its
    trajectories) and of its training, for `rlhf report`'s timeline of the overlap."""
    spans = [t.generated_at for t in trajectories if t.generated_at is not None]
    timeline = {"timeline/train_start": train_start, "timeline/train_end": train_end}
    if spans:
        timeline.update({"timeline/rollout_start": min(s for s, _ in spans), "timeline/rollout_end": max(e for _, e in spans)})
    return timeline


def report_outcomes(roles: RunRoles, cfg: Config, trajectories: list[Trajectory]) -> None:
    """With `curriculum.enabled`: the rewards of an acked lease's scored samples go to the
    prompt queue (each prompt's pass rate). Nothing otherwise."""
    if cfg.curriculum.enabled:
        roles.queue.record_outcomes(outcomes(trajectories))


def run_bounds(roles: RunRoles, rollouts_in_flight: int) -> dict[str, float]:
    """What the run holds after a step: memory, the queues (bounded by max_staleness),
    and with the curriculum on its counts (`curriculum/filtered_easy`, ...)."""
    queue = roles.queue.get_stats().result()
    return {
        "memory/driver_rss_mb": driver_rss_mb(),
        **roles.executor.memory_metrics(),
        "queue/rollouts_in_flight": float(rollouts_in_flight),
        "queue/prompts_in_flight": float(queue.in_flight),
        "queue/prompts_requeued": float(queue.requeued),
        **{f"curriculum/{name}": float(value) for name, value in queue.curriculum.items()},
    }


def drain(roles: RunRoles, in_flight: deque[Rollout]) -> None:
    """Wait for rollouts still running and put their prompts back in the queue (after a
    rollback their weights are discarded; at the end they were never trained on)."""
    while in_flight:
        rollout = in_flight.popleft()
        rollout.scored.wait()
        roles.queue.nack(rollout.lease_id)


class OnlineRLRecipe(PolicyRun):
    """`recipe=grpo|dapo|gspo|ppo`: the loop above with the guard (checkpoints, eval
    gate, rollback) and resume."""

    def __init__(self, inputs: "RunInputs") -> None:
        super().__init__(inputs)
        self.replay = None  # replay=RUN_DIR: the recorded replies, read before any role starts
        if self.cfg.replay is not None:
            from rlhf_platform.recipes.replay import Replay, read_schedule

            prompts = {p.prompt_id: p for p in inputs.train_prompts}
            self.replay = Replay(read_schedule(Path(self.cfg.replay)), prompts)

    def setup(self, executor: Executor) -> None:
        super().setup(executor)
        if self.resume_version is not None:
            if self.replay is not None:  # what older versions sampled of the replies trained after the checkpoint
                saved = self.checkpoints.registry.get(self.resume_version)
                self.replay.catch_up(self.roles, self.cfg, self.checkpoints, saved.step, saved.weight_version)
            self.resumed(self.checkpoints.restore(self.roles, self.resume_version))

    def train(self, on_step: OnStep) -> TrainStats:
        schedule = self.inputs.run_dir / "schedule.jsonl"
        if self.resume_version is None:
            schedule.write_text("")  # a resumed run appends to what the run recorded

        def record(rows: list[dict[str, Any]]) -> None:
            with open(schedule, "a") as out:
                out.writelines(json.dumps(row) + "\n" for row in rows)

        if self.replay is not None:
            self.stats, versions = self.replay.train(self.roles, self.cfg, on_step, self.guard, self.start, record)
        else:
            self.stats, versions = train(self.roles, self.cfg, on_step, self.guard, self.start, record)
        self.version = versions.trained
        ledger = self.roles.queue.get_ledger().result()
        (self.inputs.run_dir / "prompt_ledger.json").write_text(json.dumps(ledger) + "\n")
        return self.stats
