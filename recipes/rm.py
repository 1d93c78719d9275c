"""Reward model training (Bradley-Terry): preference pairs -> held-out split -> steps
-> pairwise accuracy before and after -> an HF directory the Reward service can serve.

Pairs come from `task.pairs_path` or are sampled from the task as for DPO. A seeded
`algo.rm_held_out` share of them is never trained on; accuracy there is the share of
pairs whose chosen reply the model scores higher. The model is saved to
`<run dir>/reward_model` (atomically) for `reward.functions=[{name: reward_model, path: ...}]`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import ray

from rlhf_platform.config import Config
from rlhf_platform.pipeline import Pipeline
from rlhf_platform.preferences import pair_batches, split_pairs
from rlhf_platform.recipes.dpo import preference_pairs
from rlhf_platform.recipes.stats import TrainStats, merge_rank_metrics
from rlhf_platform.roles.group import Placement, start_rank_group
from rlhf_platform.roles.reward_model_trainer import RewardModelTrainer
from rlhf_platform.types import TrainBatch, Trajectory


def train(
    cfg: Config,
    model_dir: Path,
    run_dir: Path,
    pipe: Pipeline | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    pairs: list[Trajectory] | None = None,
) -> TrainStats:
    """Train a reward model for `trainer.max_steps` steps of `algo.pairs_per_step` pairs."""
    stats = TrainStats()
    pairs, stats.extra = preference_pairs(pipe, cfg, pairs)
    train_pairs, held_out = split_pairs(pairs, cfg.algo.rm_held_out, cfg.run.seed)
    ranks = start_rank_group(
        RewardModelTrainer, "reward-model-trainer", cfg.trainer.num_ranks, str(model_dir), cfg.trainer,
        seed=cfg.run.seed, placement=Placement(num_cpus=cfg.trainer.num_cpus),
    )
    try:
        before = ray.get([r.evaluate.remote(held_out) for r in ranks])[0]
        batches = pair_batches(train_pairs, cfg.algo.pairs_per_step, cfg.run.seed)
        for step in range(1, cfg.trainer.max_steps + 1):
            batch = TrainBatch(next(batches), version=stats.version)
            num_pairs = len(batch) // 2
            results = ray.get([r.train_step.remote(batch.shard(i, len(ranks)), num_pairs) for i, r in enumerate(ranks)])
            stats.version += 1
            stats.record_step(step, num_pairs, merge_rank_metrics(results), on_step)
        after = ray.get([r.evaluate.remote(held_out) for r in ranks])[0]
        saved = ray.get([r.save.remote(str(run_dir / "reward_model")) for r in ranks])[0]
    finally:
        for r in ranks:
            ray.kill(r)
    stats.extra.update(
        train_pairs=len(train_pairs) // 2,
        held_out_pairs=len(held_out) // 2,
        pair_accuracy_before=before["pair_accuracy"],
        pair_accuracy_after=after["pair_accuracy"],
        score_margin_after=after["score_margin"],
        reward_model_path=saved,
    )
    return stats
