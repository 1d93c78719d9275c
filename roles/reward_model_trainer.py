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
from rlhf_platform.devices import to_device
from rlhf_platform.roles.deepspeed_rank import DeepSpeedRank, load_engine_state, optimizer_step, save_engine_state
from rlhf_platform.pairs import chosen_and_rejected, pair_micro_batches
from rlhf_platform.reward_model import RewardModel
from rlhf_platform.types import TrainBatch, Trajectory


class RewardModelTrainer(DeepSpeedRank):
    def __init__(self, model_dir: str, trainer_cfg: TrainerConfig, seed: int = 0) -> None:
        self.model_dir = model_dir
        self.cfg = self.engine_cfg = trainer_cfg
        self.lr = trainer_cfg.lr
        self.seed = seed
        self.engine = None

    def build_model(self) -> torch.nn.Module:
        """The policy's backbone with a fresh scalar score head (seeded: equal on every rank)."""
        return RewardModel.from_pretrained(self.model_dir)

    def _scores(self, pairs: list[list[Trajectory]]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = to_device(self.device, *sequence_batch(chosen_and_rejected(pairs), self.pad_id))
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
            "loss": share.detach(),
            "pair_accuracy": out.accuracy.detach(),
            "score_margin": (chosen - rejected).detach().mean(),
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

    def save_state(self, directory: str) -> None:
        """A checkpoint of this rank: its DeepSpeed state in `directory`/deepspeed and (rank
        0) the reward model as an HF directory in `directory`/hf. All ranks call it."""
        save_engine_state(self.engine, f"{directory}/deepspeed", {})
        self.save(f"{directory}/hf")

    def load_state(self, directory: str) -> None:
        """Restore the reward model, its optimizer and RNG from `save_state`'s `directory`.
        All ranks call it."""
        load_engine_state(self.engine, f"{directory}/deepspeed")
