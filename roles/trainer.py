"""The Trainer role: one DeepSpeed ZeRO data-parallel rank of the policy.

N ranks run as N actors joined by torch.distributed (gloo on CPU, NCCL on GPU), owned
by a rank group. Each step a rank trains on its shard of the batch with micro-batches,
DeepSpeed reduces the gradients and takes one optimizer step. Rank 0 publishes the
weights to the weight-sync bus under the version the recipe's `WeightVersions` gives.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch

from rlhf_platform.algos.kl import kl_estimate
from rlhf_platform.algos.losses import (
    PolicyLossOutput,
    aggregate,
    clipped_policy_loss,
    entropy_bonus,
    gspo_policy_loss,
)
from rlhf_platform.algos.preference import dpo_loss, sequence_logprob_sums
from rlhf_platform.batching import collate_group, per_token, prompt_groups
from rlhf_platform.config import AlgoConfig, LoraConfig, TrainerConfig
from rlhf_platform.lora import add_lora, merged_state_dict
from rlhf_platform.pairs import chosen_and_rejected, pair_micro_batches
from rlhf_platform.modeling import resolve_dtype, response_logprobs, shared_prompt_logprobs
from rlhf_platform.roles.deepspeed_rank import DeepSpeedRank, load_engine_state, optimizer_step, save_engine_state
from rlhf_platform.roles.executor import call
from rlhf_platform.types import TrainBatch, Trajectory
from rlhf_platform.weight_sync import Transport, engine_weights, snapshot_of, tensors_digest


class Trainer(DeepSpeedRank):
    def __init__(
        self,
        model_dir: str,
        trainer_cfg: TrainerConfig,
        algo_cfg: AlgoConfig,
        temperature: float = 1.0,
        publish_dtype: str = "auto",
        bus: Any = None,
        transport: Transport | None = None,
        seed: int = 0,
        loss_agg_constant: float | None = None,
        lora: LoraConfig | None = None,
    ) -> None:
        self.model_dir = model_dir
        self.lora = lora if lora is not None and lora.enabled else None
        self.cfg = self.engine_cfg = trainer_cfg
        self.lr = trainer_cfg.lr
        self.cpu_cores = trainer_cfg.cpu_cores
        self.algo = algo_cfg
        self.temperature = temperature
        self.publish_dtype = getattr(torch, resolve_dtype(publish_dtype))
        self.bus = bus
        self.transport = transport
        self.seed = seed
        self.loss_agg_constant = loss_agg_constant  # divisor of loss_agg=seq_sum_const
        self.engine = None

    def build_model(self) -> torch.nn.Module:
        """The policy in fp32 (LoRA adapters added when configured)."""
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=torch.float32)
        self.tied = bool(getattr(model.config, "tie_word_embeddings", False))
        return add_lora(model, self.lora) if self.lora is not None else model

    def train_step(self, shard: TrainBatch, denominator: float) -> dict[str, float]:
        """One optimizer step on this rank's shard.

        `denominator` is the token (or sequence) count of the whole batch across ranks,
        so the loss is the same mean whatever the split into ranks and micro-batches.
        """
        chunks = prompt_groups(shard.trajectories, self.cfg.micro_batch_size)
        return optimizer_step(self.engine, self.optimizer, chunks, lambda chunk: self._micro_step_loss(chunk, denominator))

    def train_preference_step(
        self, shard: TrainBatch, num_pairs: int, beta: float, loss_type: str, label_smoothing: float = 0.0
    ) -> dict[str, float]:
        """One DPO (or IPO) optimizer step on this rank's pairs.

        Each pair is a group of two trajectories sharing a prompt: reward 1 marks the
        chosen reply, 0 the rejected one; `ref_logprobs` are set by the Reference.
        `num_pairs` counts the pairs of the whole batch across ranks.
        """
        chunks = pair_micro_batches(shard.trajectories, self.cfg.micro_batch_size)
        return optimizer_step(
            self.engine, self.optimizer, chunks, lambda pairs: self._pair_loss(pairs, num_pairs, beta, loss_type, label_smoothing)
        )

    def _pair_loss(
        self, pairs: list[list[Trajectory]], num_pairs: int, beta: float, loss_type: str, label_smoothing: float
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The DPO loss of k pairs (one forward over their 2k sequences), as a share of the batch mean."""
        rows = chosen_and_rejected(pairs)
        logprobs, mask = response_logprobs(self.engine, rows, self.pad_id, self.temperature)
        sums = sequence_logprob_sums(logprobs, mask)
        ref = sequence_logprob_sums(per_token(rows, "ref_logprobs", mask.shape[1]), mask)
        k = len(pairs)
        out = dpo_loss(sums[:k], sums[k:], ref[:k], ref[k:], beta, loss_type, label_smoothing)
        share = out.loss * k / num_pairs
        stats = {
            "loss": float(share.detach()),
            "reward_accuracy": float(out.reward_accuracy),
            "reward_margin": float(out.margin.mean()),
            "chosen_reward": float(out.chosen_rewards.mean()),
            "rejected_reward": float(out.rejected_rewards.mean()),
        }
        return share * self.world_size, stats

    def _micro_step_loss(self, chunk, denominator: float) -> tuple[torch.Tensor, dict[str, float]]:
        batch = collate_group(chunk, self.pad_id)
        mask = batch.response_mask
        entropy = None
        forward = (self.engine, batch.prompt_ids, batch.response_ids, mask, self.temperature)
        if self.algo.policy.entropy_coef > 0:
            logprobs, entropy = shared_prompt_logprobs(*forward, with_entropy=True)
        else:
            logprobs = shared_prompt_logprobs(*forward)
        # One update per batch: the policy that produced `old` is the current one.
        old = logprobs.detach()
        out = self._policy_loss(logprobs, old, batch, denominator)
        loss = out.loss
        kl_value = 0.0
        if self.algo.kl.coef > 0 and self.algo.kl.mode == "loss" and batch.ref_logprobs is not None:
            kl = kl_estimate(logprobs, batch.ref_logprobs, self.algo.kl.estimator)
            kl_term = aggregate(kl, mask, self.algo.policy.loss_agg, denominator, self.loss_agg_constant)
            loss = loss + self.algo.kl.coef * kl_term
            kl_value = float(kl_term.detach())
        entropy_value = None
        if entropy is not None:
            loss = loss + entropy_bonus(
                entropy, mask, self.algo.policy.entropy_coef, self.algo.policy.loss_agg, denominator, self.loss_agg_constant
            )
            entropy_value = float((entropy.detach() * mask).sum() / mask.sum().clamp(min=1))
        # DeepSpeed averages gradients over ranks; the loss is already a share of the
        # global mean, so scale back up by the world size.
        loss = loss * self.world_size
        n = float(mask.sum().clamp(min=1))
        stats = {
            "loss": float(out.loss.detach()),
            "clip_fraction": float(out.clip_fraction),
            "approx_kl": float(out.approx_kl),
            "kl_ref": kl_value,
            "tis_weight": float(out.tis_weight_mean),
            # exact mean entropy when the bonus computed it, else -mean log p of the sampled tokens
            "entropy": entropy_value if entropy_value is not None else float(-(old * mask).sum() / n),
        }
        return loss, stats

    def _policy_loss(self, logprobs: torch.Tensor, old: torch.Tensor, batch, denominator: float) -> PolicyLossOutput:
        """The surrogate `algo.policy.loss` names: per-token PPO clip or GSPO's sequence ratio."""
        common = dict(loss_agg=self.algo.policy.loss_agg, denominator=denominator, constant=self.loss_agg_constant)
        if self.algo.policy.loss == "gspo":
            return gspo_policy_loss(
                logprobs, old, batch.advantages, batch.response_mask, self.algo.policy.clip_eps_low, self.algo.policy.clip_eps_high, **common
            )
        return clipped_policy_loss(
            logprobs,
            old,
            batch.advantages,
            batch.response_mask,
            self.algo.policy.clip_eps_low,
            self.algo.policy.clip_eps_high,
            behaviour_logprobs=batch.behaviour_logprobs,
            tis_cap=self.algo.policy.tis_cap,
            dual_clip=self.algo.policy.dual_clip,
            **common,
        )

    def _gathered_state(self) -> dict[str, torch.Tensor]:
        """A copy of the full policy weights in HF names (gathered under ZeRO-3, LoRA
        adapters merged), on every rank."""
        import deepspeed

        module = self.engine.module
        params = list(module.parameters())
        gather = deepspeed.zero.GatheredParameters(params) if self.cfg.zero_stage == 3 else nullcontext()
        with gather:
            return merged_state_dict(module)

    def _full_state(self) -> dict[str, torch.Tensor]:
        """The weights the engines load: in the publish dtype, without a tied LM head."""
        return engine_weights(self._gathered_state(), self.tied, self.publish_dtype)

    def save_state(self, directory: str) -> None:
        """Write this rank's DeepSpeed state to `directory`/deepspeed; rank 0 also writes
        the policy as an HF model directory to `directory`/hf. All ranks call it."""
        from transformers import AutoTokenizer

        save_engine_state(self.engine, f"{directory}/deepspeed", {})
        state = self._gathered_state()
        if self.rank == 0:
            self.engine.module.save_pretrained(f"{directory}/hf", state_dict=state)
            AutoTokenizer.from_pretrained(self.model_dir).save_pretrained(f"{directory}/hf")

    def load_state(self, directory: str) -> None:
        """Restore weights, optimizer and RNG from `save_state`'s `directory`. All ranks call it."""
        load_engine_state(self.engine, f"{directory}/deepspeed")

    def publish(self, version: int) -> int:
        """Publish the current weights as `version` (all ranks call; rank 0 sends)."""
        state = self._full_state()
        if self.rank == 0 and self.bus is not None:
            call(self.bus, "publish", snapshot_of(state, version, self.transport))
        return version

    def weights_digest(self) -> str:
        return tensors_digest(self._full_state())
