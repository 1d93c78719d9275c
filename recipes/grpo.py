"""Asynchronous GRPO (and DAPO, GSPO, PPO): rollout -> reward -> (reference) ->
(critic values) -> advantages -> train policy (and critic) -> sync.

Rollout for step s may use weights from version s - max_staleness at the oldest:
it is launched only once that version is published (backpressure), and the freshness
filter drops, counts and re-queues anything older. With max_staleness=0 the loop is
synchronous; with 1, batch s+1 is generated while step s trains.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import ray

from rlhf_platform.algos.losses import aggregate_denominator
from rlhf_platform.config import Config
from rlhf_platform.pipeline import Pipeline
from rlhf_platform.recipes.stats import TrainStats, merge_rank_metrics
from rlhf_platform.guard import Guard
from rlhf_platform.memory import driver_rss_mb, object_store_mb
from rlhf_platform.run_checkpoints import RunState
from rlhf_platform.roles.generation import SamplingSpec
from rlhf_platform.types import TrainBatch, Trajectory


@dataclass
class _Rollout:
    lease_id: int
    scored: Any  # ObjectRef of scored trajectories
    started: float


def _launch_rollout(pipe: Pipeline, cfg: Config, engine: Any, min_version: int, num_prompts: int) -> _Rollout:
    lease = ray.get(pipe.queue.lease.remote(num_prompts))
    spec = SamplingSpec.for_rollout(cfg.rollout, lease.seed)
    trajectories = engine.generate.remote(lease.prompts, spec, min_version)
    scored = pipe.reward.score.remote(trajectories)
    if pipe.reference is not None:
        scored = pipe.reference.annotate.remote(scored)
    if pipe.critics:  # PPO: the values GAE needs, from critic rank 0
        scored = pipe.critics[0].annotate.remote(scored)
    return _Rollout(lease.lease_id, scored, time.perf_counter())


MAX_EMPTY_BATCHES = 20


def _top_up(pipe: Pipeline, cfg: Config, batch: TrainBatch, version: int, published: int) -> TrainBatch:
    """DAPO dynamic sampling: while fewer than `prompts_per_step` groups survived the
    uniform-reward filter, sample that many more prompts (at most
    `algo.max_sampling_rounds` extra rollouts, run synchronously on the newest published weights)."""
    groups = {t.group_id for t in batch.trajectories}
    rounds = 0
    while len(groups) < cfg.rollout.prompts_per_step and rounds < cfg.algo.max_sampling_rounds:
        rounds += 1
        engine = pipe.engines[rounds % len(pipe.engines)]
        rollout = _launch_rollout(pipe, cfg, engine, published, cfg.rollout.prompts_per_step - len(groups))
        extra = ray.get(pipe.builder.build.remote(ray.get(rollout.scored), version))
        pipe.queue.ack.remote(rollout.lease_id)
        batch.trajectories.extend(extra.trajectories)
        batch.metrics["dropped_uniform_groups"] += extra.metrics.get("dropped_uniform_groups", 0.0)
        groups |= {t.group_id for t in extra.trajectories}
    batch.metrics["sampling_rounds"] = float(rounds)
    return batch


def _train_steps(ranks: list[Any], batch: TrainBatch, denominator: float) -> list[Any]:
    """Launch one optimizer step on every rank of a data-parallel group, each on its shard."""
    return [rank.train_step.remote(batch.shard(r, len(ranks)), denominator) for r, rank in enumerate(ranks)]


def train(
    pipe: Pipeline,
    cfg: Config,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    guard: Guard | None = None,
    start: RunState | None = None,
) -> TrainStats:
    """Run GRPO steps up to `trainer.max_steps` (after `start`'s step when resuming a
    checkpoint). The `guard` checkpoints, gates each candidate against the champion,
    and calls for a rollback or a stop when an update is bad."""
    stats = TrainStats()
    max_steps, staleness = cfg.trainer.max_steps, cfg.rollout.max_staleness
    step = start.step if start else 0
    stats.version = start.weight_version if start else 0
    first_version = stats.version - step  # weight version = step + first_version
    in_flight: deque[_Rollout] = deque()
    launched = step
    published = stats.version  # the newest version the engines can load
    failures_in_a_row = 0  # rollouts lost to a dead actor since the last good one
    if guard is not None:
        guard.start(pipe, step, stats.version)
    while step < max_steps:
        # Keep rollouts going for every step whose weights are already published.
        while launched < max_steps and launched + first_version - published <= staleness:
            engine = pipe.engines[launched % len(pipe.engines)]
            min_version = max(0, launched - staleness + first_version)
            in_flight.append(_launch_rollout(pipe, cfg, engine, min_version, cfg.rollout.prompts_per_step))
            launched += 1
        rollout = in_flight.popleft()
        try:
            trajectories = ray.get(rollout.scored)
        except ray.exceptions.RayActorError as err:
            # An engine, reward or reference actor died; Ray restarts it. Its prompts and
            # those of every rollout in flight go back to the queue and are sampled again.
            stats.faults.append({"step": step + 1, "fault": f"rollout: {type(err).__name__}"})
            failures_in_a_row += 1
            if failures_in_a_row > cfg.ray.actor_restarts + 1:
                raise RuntimeError(f"rollout failed {failures_in_a_row} times in a row; last: {err}") from err
            pipe.queue.nack.remote(rollout.lease_id)
            _drain(pipe, in_flight)
            pipe.wait_for_restarts()
            launched = step
            continue
        failures_in_a_row = 0
        rollout_seconds = time.perf_counter() - rollout.started
        batch = ray.get(pipe.builder.build.remote(trajectories, stats.version))
        stats.dropped_stale += batch.dropped_stale
        if batch.dropped_stale == len(trajectories):  # all stale: put the prompts back and sample again
            pipe.queue.nack.remote(rollout.lease_id)
            launched -= 1
            continue
        pipe.queue.ack.remote(rollout.lease_id)
        if cfg.algo.dynamic_sampling:
            batch = _top_up(pipe, cfg, batch, stats.version, published)
            if not batch.trajectories:  # every group uniform, even after extra rounds: sample again
                stats.empty_batches += 1
                if stats.empty_batches > MAX_EMPTY_BATCHES:
                    raise RuntimeError(
                        f"dynamic sampling found no prompt with both right and wrong samples in {stats.empty_batches} "
                        "batches: the task is too easy or too hard for this model (set algo.dynamic_sampling=false "
                        "or change task.digits)"
                    )
                launched -= 1
                continue
        train_started, train_started_at = time.perf_counter(), time.time()
        try:
            results = _train(pipe, cfg, batch, lr_spike=cfg.faults.lr_spike_step == step + 1, lr=guard.lr if guard else cfg.trainer.lr)
        except ray.exceptions.RayActorError as err:
            # A trainer or critic rank died mid-step: no update happened. Restart the
            # groups from the last checkpoint, which also rewinds the prompt queue.
            stats.faults.append({"step": step + 1, "fault": f"trainer: {type(err).__name__}"})
            if guard is None or sum(f["fault"].startswith("trainer") for f in stats.faults) > cfg.trainer.group_restarts:
                raise
            _drain(pipe, in_flight)
            state = guard.checkpoints.restart_training(pipe, stats.version + 1)
            step, stats.version = state.step, state.weight_version
            published, launched, first_version = stats.version, step, stats.version - step
            continue
        stats.version += 1
        if stats.version % cfg.trainer.sync_every == 0 or step + 1 == max_steps:
            ray.get([t.publish.remote() for t in pipe.trainers])
            published = stats.version
        step += 1
        stats.versions_trained.append([t.weight_version for t in batch.trajectories])
        metrics = {**merge_rank_metrics(results), **{f"rollout/{k}": v for k, v in batch.metrics.items()}}
        metrics["time/rollout_wait_seconds"] = rollout_seconds
        metrics["time/train_seconds"] = time.perf_counter() - train_started
        metrics.update(activity_timeline(batch.trajectories, train_started_at, train_started_at + metrics["time/train_seconds"]))
        metrics.update(_bounds(pipe, in_flight))
        verdict = guard.after_step(pipe, step, stats.version, metrics) if guard else None
        if verdict is not None and verdict.action == "rollback":
            _drain(pipe, in_flight)
            launched = step
            stats.version = published = guard.roll_back(pipe, step, stats.version, verdict.reason)
            first_version = stats.version - step
            metrics["guard/rolled_back"] = 1.0
            stats.rollbacks.append({"step": step, "reason": verdict.reason})
        stats.record_step(step, len(batch), metrics, on_step)
        if verdict is not None and verdict.action == "stop":
            stats.stopped = verdict.reason
            break
    _drain(pipe, in_flight)
    return stats


def _train(pipe: Pipeline, cfg: Config, batch: TrainBatch, lr_spike: bool, lr: float) -> list[dict[str, float]]:
    """One optimizer step of the policy (and critic) ranks on `batch`; raises RayActorError
    as soon as a rank dies. `lr_spike` is fault injection (`faults.lr_spike_step`): this
    one step runs at lr x `faults.lr_spike_factor`."""
    denominator = aggregate_denominator([t.response_length for t in batch.trajectories], cfg.algo.loss_agg)
    if lr_spike:
        ray.get([t.set_lr.remote(lr * cfg.faults.lr_spike_factor) for t in pipe.trainers])
    if cfg.critic.train_concurrently:
        results = _get_all(_train_steps(pipe.trainers, batch, denominator) + _train_steps(pipe.critics, batch, denominator))
    else:
        results = _get_all(_train_steps(pipe.trainers, batch, denominator))
        results += _get_all(_train_steps(pipe.critics, batch, denominator))
    if lr_spike:
        ray.get([t.set_lr.remote(lr) for t in pipe.trainers])
    return results


def activity_timeline(trajectories: list[Trajectory], train_start: float, train_end: float) -> dict[str, float]:
    """Wall-clock spans of a step's generation (the engine batches that sampled its
    trajectories) and of its training, for `rlhf report`'s timeline of the overlap."""
    spans = [t.generated_at for t in trajectories if t.generated_at is not None]
    timeline = {"timeline/train_start": train_start, "timeline/train_end": train_end}
    if spans:
        timeline.update({"timeline/rollout_start": min(s for s, _ in spans), "timeline/rollout_end": max(e for _, e in spans)})
    return timeline


def _bounds(pipe: Pipeline, in_flight: deque[_Rollout]) -> dict[str, float]:
    """What the run holds after a step: memory, and the queues (bounded by max_staleness)."""
    queue = ray.get(pipe.queue.get_stats.remote())
    return {
        "memory/driver_rss_mb": driver_rss_mb(),
        "memory/object_store_mb": object_store_mb(),
        "queue/rollouts_in_flight": float(len(in_flight)),
        "queue/prompts_in_flight": float(queue.in_flight),
        "queue/prompts_requeued": float(queue.requeued),
    }


def _get_all(refs: list[Any]) -> list[Any]:
    """Results of `refs` in order; the first failure raises at once (ranks still blocked
    in a collective with a dead rank would otherwise hold `ray.get` until gloo times out)."""
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        ray.get(ready)
    return ray.get(refs)


def _drain(pipe: Pipeline, in_flight: deque[_Rollout]) -> None:
    """Wait for rollouts still running and put their prompts back in the queue (after a
    rollback their weights are discarded; at the end they were never trained on)."""
    while in_flight:
        rollout = in_flight.popleft()
        ray.wait([rollout.scored])
        pipe.queue.nack.remote(rollout.lease_id)

