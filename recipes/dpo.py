"""Offline DPO: preference pairs -> reference logprobs -> DPO steps -> publish.

Pairs come from `task.pairs_path`, or, by default, from the task itself: the rollout
engine samples `rollout.samples_per_prompt` replies to each of `algo.pair_prompts`
training prompts with the initial weights, the verifier scores them, and in each
prompt with both a correct and a wrong reply one of each becomes a pair. The
Reference's logprobs are computed once; every step takes `algo.pairs_per_step` pairs
(cycling through them, reshuffled each epoch) and the weights are published to the
engines every `trainer.sync_every` steps and at the end, so held-out evaluation sees
the trained model.
"""
from __future__ import annotations

from typing import Callable

import ray

from rlhf_platform.config import Config
from rlhf_platform.pipeline import Pipeline
from rlhf_platform.preferences import pair_batches, pairs_from_scored_samples
from rlhf_platform.recipes.stats import TrainStats, merge_rank_metrics
from rlhf_platform.roles.generation import SamplingSpec
from rlhf_platform.types import TrainBatch, Trajectory


def sample_pairs(pipe: Pipeline, cfg: Config) -> tuple[list[Trajectory], dict[str, float]]:
    """Pairs built by sampling the initial policy on task prompts and verifying."""
    pairs: list[Trajectory] = []
    unpaired = 0
    remaining = cfg.algo.pair_prompts
    while remaining > 0:
        count = min(remaining, cfg.rollout.prompts_per_step * len(pipe.engines))
        leases = []
        for i, engine in enumerate(pipe.engines):
            share = count // len(pipe.engines) + (1 if i < count % len(pipe.engines) else 0)
            if share:
                lease = ray.get(pipe.queue.lease.remote(share))
                spec = SamplingSpec.for_rollout(cfg.rollout, lease.seed)
                leases.append((lease.lease_id, pipe.reward.score.remote(engine.generate.remote(lease.prompts, spec, 0))))
        for lease_id, scored in leases:
            batch_pairs, batch_unpaired = pairs_from_scored_samples(ray.get(scored), cfg.run.seed)
            pairs.extend(batch_pairs)
            unpaired += batch_unpaired
            pipe.queue.ack.remote(lease_id)
        remaining -= count
    return pairs, {"pairs_built": float(len(pairs) // 2), "prompts_without_pair": float(unpaired)}


def preference_pairs(
    pipe: Pipeline | None, cfg: Config, pairs: list[Trajectory] | None
) -> tuple[list[Trajectory], dict[str, float]]:
    """The given pairs, or pairs sampled from the task (with counts for the summary)."""
    extra: dict[str, float] = {}
    if pairs is None:
        pairs, extra = sample_pairs(pipe, cfg)
    if not pairs:
        raise RuntimeError(
            "no preference pairs: no sampled prompt had both a correct and a wrong reply "
            f"(algo.pair_prompts={cfg.algo.pair_prompts}); raise it or rollout.temperature, or give task.pairs_path"
        )
    return pairs, extra


def train(
    pipe: Pipeline,
    cfg: Config,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    pairs: list[Trajectory] | None = None,
) -> TrainStats:
    """Run `trainer.max_steps` DPO steps over `pairs` (two trajectories each), or over
    pairs sampled from the task when none are given."""
    stats = TrainStats()
    pairs, stats.extra = preference_pairs(pipe, cfg, pairs)
    pairs = ray.get(pipe.reference.annotate.remote(pairs))
    batches = pair_batches(pairs, cfg.algo.pairs_per_step, cfg.run.seed)
    world = len(pipe.trainers)
    for step in range(1, cfg.trainer.max_steps + 1):
        batch = TrainBatch(next(batches), version=stats.version, dropped_stale=0)
        num_pairs = len(batch) // 2
        results = ray.get(
            [
                t.train_preference_step.remote(
                    batch.shard(r, world), num_pairs, cfg.algo.dpo_beta, cfg.algo.dpo_loss, cfg.algo.dpo_label_smoothing
                )
                for r, t in enumerate(pipe.trainers)
            ]
        )
        stats.version += 1
        if stats.version % cfg.trainer.sync_every == 0 or step == cfg.trainer.max_steps:
            ray.get([t.publish.remote() for t in pipe.trainers])
        stats.record_step(step, num_pairs, merge_rank_metrics(results), on_step)
    return stats
