"""Asynchronous GRPO: rollout -> reward -> (reference) -> advantages -> train -> sync.

Rollout for step s may use weights from version s - max_staleness at the oldest:
it is launched only once that version is published (backpressure), and the freshness
filter drops, counts and re-queues anything older. With max_staleness=0 the loop is
synchronous; with 1, batch s+1 is generated while step s trains.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import ray

from rlhf_platform.algos.losses import aggregate_denominator
from rlhf_platform.config import Config
from rlhf_platform.pipeline import Pipeline
from rlhf_platform.roles.generation import SamplingSpec


@dataclass
class TrainStats:
    steps: int = 0
    samples: int = 0
    dropped_stale: int = 0
    version: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    versions_trained: list[list[int]] = field(default_factory=list)  # per step: each sample's weight version


@dataclass
class _Rollout:
    lease_id: int
    scored: Any  # ObjectRef of scored trajectories
    started: float


def _launch_rollout(pipe: Pipeline, cfg: Config, engine: Any, min_version: int) -> _Rollout:
    spec = SamplingSpec(
        n=cfg.rollout.samples_per_prompt,
        temperature=cfg.rollout.temperature,
        top_p=cfg.rollout.top_p,
        max_new_tokens=cfg.rollout.max_new_tokens,
    )
    lease = ray.get(pipe.queue.lease.remote(cfg.rollout.prompts_per_step))
    trajectories = engine.generate.remote(lease.prompts, spec, min_version)
    scored = pipe.reward.score.remote(trajectories)
    if pipe.reference is not None:
        scored = pipe.reference.annotate.remote(scored)
    return _Rollout(lease.lease_id, scored, time.perf_counter())


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
            in_flight.append(_launch_rollout(pipe, cfg, engine, max(0, launched - staleness)))
            launched += 1
        rollout = in_flight.popleft()
        trajectories = ray.get(rollout.scored)
        rollout_seconds = time.perf_counter() - rollout.started
        batch = ray.get(pipe.builder.build.remote(trajectories, stats.version))
        stats.dropped_stale += batch.dropped_stale
        if not batch.trajectories:  # all stale: put the prompts back and sample again
            pipe.queue.nack.remote(rollout.lease_id)
            launched -= 1
            continue
        train_started = time.perf_counter()
        denominator = aggregate_denominator([t.response_length for t in batch.trajectories], cfg.algo.loss_agg)
        world = len(pipe.trainers)
        results = ray.get(
            [t.train_step.remote(batch.shard(r, world), denominator) for r, t in enumerate(pipe.trainers)]
        )
        stats.version += 1
        if stats.version % cfg.trainer.sync_every == 0 or step + 1 == max_steps:
            ray.get([t.publish.remote() for t in pipe.trainers])
            published = stats.version
        pipe.queue.ack.remote(rollout.lease_id)
        step += 1
        stats.steps = step
        stats.samples += len(batch)
        stats.versions_trained.append([t.weight_version for t in batch.trajectories])
        metrics = {**results[0], **{f"rollout/{k}": v for k, v in batch.metrics.items()}}
        metrics["time/rollout_wait_seconds"] = rollout_seconds
        metrics["time/train_seconds"] = time.perf_counter() - train_started
        metrics["weight_version"] = float(stats.version)
        stats.history.append(metrics)
        if on_step is not None:
            on_step(step, metrics)
    return stats

