"""The Reward Model Trainer role: one DeepSpeed ZeRO rank of a Bradley-Terry reward
model (`recipe=rm`). Pairs arrive as two-trajectory groups (reward 1 marks the chosen
reply, as for DPO); the loss is -log sigmoid(s_chosen - s_rejected)."""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch

from rlhf_platform.algos.preference import bradley_terry_loss
from rlhf_platform.batching import sequence_batch
from rlhf_platform.config import TrainerConfig
from rlhf_platform.distributed import join_process_group, optimizer_step, start_engine
from rlhf_platform.modeling import pad_token_id, use_cores
from rlhf_platform.preferences import chosen_and_rejected, pair_micro_batches
from rlhf_platform.reward_model import RewardModel
from rlhf_platform.types import TrainBatch, Trajectory


class RewardModelTrainer:
    def __init__(self, model_dir: str, trainer_cfg: TrainerConfig, seed: int = 0) -> None:
        self.model_dir = model_dir
        self.cfg = trainer_cfg
        self.seed = seed
        self.engine = None

    def setup(self) -> int:
        use_cores(self.cfg.num_threads)
        torch.manual_seed(self.seed)  # the fresh score head is the same on every rank and run
        self.rank, self.world_size = join_process_group(self.cfg.dist_backend)
        self.pad_id = pad_token_id(self.model_dir)
        self.engine, self.optimizer = start_engine(RewardModel.from_pretrained(self.model_dir), self.cfg, self.cfg.lr, self.world_size)
        return self.rank

    def _scores(self, pairs: list[list[Trajectory]]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = sequence_batch(chosen_and_rejected(pairs), self.pad_id)
        scores = self.engine(ids, mask)
        return scores[: len(pairs)], scores[len(pairs) :]

    def train_step(self, shard: TrainBatch, num_pairs: int) -> dict[str, float]:
        """One optimizer step on this rank's pairs; `num_pairs` counts the whole batch."""
        chunks = pair_micro_batches(shard.trajectories, self.cfg.micro_batch_size)
        return optimizer_step(self.engine, self.optimizer, chunks, lambda c: self._loss(c, num_pairs))

    def _loss(self, pairs: list[list[Trajectory]], num_pairs: int) -> tuple[torch.Tensor, dict[str, float]]:
        chosen, rejected = self._scores(pairs)
        out = bradley_terry_loss(chosen, rejected)
        share = out.loss * len(pairs) / num_pairs  # this chunk's share of the batch mean
        stats = {
            "loss": float(share.detach()),
            "pair_accuracy": float(out.accuracy),
            "score_margin": float((chosen - rejected).detach().mean()),
        }
        return share * self.world_size, stats

    @torch.no_grad()
    def evaluate(self, trajectories: list[Trajectory]) -> dict[str, float]:
        """Pairwise accuracy (share of pairs whose chosen reply scores higher) and mean
        margin on held-out pairs. Every rank must call it under ZeRO-3."""
        self.engine.eval()
        correct, margin, count = 0.0, 0.0, 0
        for pairs in pair_micro_batches(trajectories, self.cfg.micro_batch_size):
            count += len(pairs)
            chosen, rejected = self._scores(pairs)
            correct += float((chosen > rejected).sum())
            margin += float((chosen - rejected).sum())
        return {"pair_accuracy": correct / max(count, 1), "score_margin": margin / max(count, 1)}

    def save(self, target: str) -> str | None:
        """Write the reward model as an HF directory (rank 0; all ranks call under ZeRO-3)."""
        import deepspeed

        params = list(self.engine.module.parameters())
        gather = deepspeed.zero.GatheredParameters(params) if self.cfg.zero_stage == 3 else nullcontext()
        with gather:
            if self.rank == 0:
                return str(self.engine.module.save(Path(target), self.model_dir))
        return None
