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
from rlhf_platform.roles.generation import SamplingSpec
from rlhf_platform.types import TrainBatch


@dataclass
class _Rollout:
    lease_id: int
    scored: Any  # ObjectRef of scored trajectories
    started: float


def _launch_rollout(pipe: Pipeline, cfg: Config, engine: Any, min_version: int, num_prompts: int) -> _Rollout:
    spec = SamplingSpec(
        n=cfg.rollout.samples_per_prompt,
        temperature=cfg.rollout.temperature,
        top_p=cfg.rollout.top_p,
        max_new_tokens=cfg.rollout.max_new_tokens,
    )
    lease = ray.get(pipe.queue.lease.remote(num_prompts))
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


def train(pipe: Pipeline, cfg: Config, on_step: Callable[[int, dict[str, float]], None] | None = None) -> TrainStats:
    """Run `trainer.max_steps` GRPO steps; returns counts and per-step metrics."""
    stats = TrainStats()
    max_steps, staleness = cfg.trainer.max_steps, cfg.rollout.max_staleness
    in_flight: deque[_Rollout] = deque()
    launched = 0
    published = 0  # the newest version the engines can load
    step = 0
    while step < max_steps:
        # Keep rollouts going for every step whose weights are already published.
        while launched < max_steps and launched - published <= staleness:
            engine = pipe.engines[launched % len(pipe.engines)]
            in_flight.append(_launch_rollout(pipe, cfg, engine, max(0, launched - staleness), cfg.rollout.prompts_per_step))
            launched += 1
        rollout = in_flight.popleft()
        trajectories = ray.get(rollout.scored)
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
        train_started = time.perf_counter()
        denominator = aggregate_denominator([t.response_length for t in batch.trajectories], cfg.algo.loss_agg)
        if cfg.critic.train_concurrently:
            results = ray.get(_train_steps(pipe.trainers, batch, denominator) + _train_steps(pipe.critics, batch, denominator))
        else:
            results = ray.get(_train_steps(pipe.trainers, batch, denominator))
            results += ray.get(_train_steps(pipe.critics, batch, denominator))
        stats.version += 1
        if stats.version % cfg.trainer.sync_every == 0 or step + 1 == max_steps:
            ray.get([t.publish.remote() for t in pipe.trainers])
            published = stats.version
        step += 1
        stats.versions_trained.append([t.weight_version for t in batch.trajectories])
        metrics = {**merge_rank_metrics(results), **{f"rollout/{k}": v for k, v in batch.metrics.items()}}
        metrics["time/rollout_wait_seconds"] = rollout_seconds
        metrics["time/train_seconds"] = time.perf_counter() - train_started
        stats.record_step(step, len(batch), metrics, on_step)
    return stats

