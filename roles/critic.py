"""The Critic role: one DeepSpeed ZeRO rank of PPO's value model.

It has its own model (the policy's backbone by default, `critic.model_path` otherwise),
optimizer and learning rate. Rank 0 annotates each rollout with the values GAE needs;
after the Advantage Builder has set the value targets, every rank trains on its shard
with the clipped value loss (clipped around those rollout-time values), in step with the
policy's trainer: the same epochs over the same mini-batches.
"""
from __future__ import annotations

import torch

from rlhf_platform.algos.losses import value_loss
from rlhf_platform.batching import GroupBatch, prompt_groups
from rlhf_platform.config import AlgoConfig, CriticConfig, TrainerConfig
from rlhf_platform.roles.deepspeed_rank import DeepSpeedRank, Stats, load_engine_state, run_update, save_engine_state
from rlhf_platform.types import Trajectory, UpdatePlan
from rlhf_platform.value_model import ValueModel


class Critic(DeepSpeedRank):
    def __init__(
        self,
        model_dir: str,
        trainer_cfg: TrainerConfig,
        critic_cfg: CriticConfig,
        algo_cfg: AlgoConfig,
        seed: int = 0,
        loss_agg_constant: float | None = None,
    ) -> None:
        self.model_dir = critic_cfg.model_path or model_dir
        self.engine_cfg = trainer_cfg
        self.cfg = critic_cfg
        self.lr = critic_cfg.lr
        self.algo = algo_cfg
        self.seed = seed
        self.loss_agg_constant = loss_agg_constant
        self.engine = None

    def build_model(self) -> torch.nn.Module:
        """The policy's backbone (or `critic.model_path`'s) with a zero-initialised value head."""
        return ValueModel.from_pretrained(self.model_dir)

    @torch.no_grad()
    def annotate(self, trajectories: list[Trajectory]) -> list[Trajectory]:
        """Set `values` (V before each response token) on every trajectory."""
        self.engine.eval()
        for chunk in prompt_groups(trajectories, self.engine_cfg.micro_batch_size):
            values = self._values(self.collate(chunk)).cpu()
            for row, traj in enumerate(chunk):
                traj.values = values[row, : traj.response_length].tolist()
        return trajectories

    def _values(self, batch: GroupBatch) -> torch.Tensor:
        """V [n, R] of a group already on this rank's device."""
        return self.engine(batch.prompt_ids, batch.response_ids, batch.response_mask)

    def train_step(self, plan: UpdatePlan) -> dict[str, float]:
        """This rank's part of one step's update of the clipped value loss: the plan's
        epochs over its mini-batches, one optimizer step each, aggregated like the
        policy's loss (each mini-batch's normaliser counts it across ranks)."""
        return run_update(self.engine, self.optimizer, plan, self.engine_cfg.micro_batch_size, self._value_loss, "critic")

    def _value_loss(self, chunk: list[Trajectory], denominator: float, epoch: int = 0) -> tuple[torch.Tensor, Stats]:
        batch = self.collate(chunk)
        if batch.values is None or batch.returns is None:
            raise ValueError(f"group {chunk[0].group_id}: the critic trains on trajectories with values and returns (GAE)")
        values = self._values(batch)
        out = value_loss(
            values, batch.values, batch.returns, batch.trained_mask, self.cfg.value_clip,
            self.algo.policy.loss_agg, denominator, self.loss_agg_constant,
        )
        mask = batch.trained_mask
        n = mask.sum().clamp(min=1)
        stats: Stats = {
            "loss": out.loss.detach(),
            "value_clip_fraction": out.clip_fraction,
            "value_mean": (values.detach() * mask).sum() / n,
            "return_mean": (batch.returns * mask).sum() / n,
        }
        # DeepSpeed averages gradients over ranks; the loss is a share of the global mean.
        return out.loss * self.world_size, stats

    def save_state(self, directory: str) -> None:
        """Write this rank's DeepSpeed state of the value model to `directory`. All ranks call it."""
        save_engine_state(self.engine, directory, {})

    def load_state(self, directory: str) -> None:
        """Restore the value model and its optimizer from `save_state`'s `directory`."""
        load_engine_state(self.engine, directory)
