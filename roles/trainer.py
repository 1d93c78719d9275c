"""The Trainer role: one DeepSpeed ZeRO data-parallel rank of the policy.

N ranks run as N actors joined by torch.distributed (gloo on CPU, NCCL on GPU), owned
by a rank group. Each step a rank runs the step's update plan on its shard: the
log-probs of the policy at the step's start (pi_old) are taken once, then `ppo_epochs`
passes over `mini_batches`, one optimizer step each (micro-batches accumulate, DeepSpeed
reduces the gradients). The clipped ratio is pi / pi_old; an importance weight
pi_old / pi_behaviour corrects for samples the engine drew from older weights or with
other numerics (decoupled PPO). Rank 0 publishes the weights to the weight-sync bus
under the version the recipe's `WeightVersions` gives.
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Any

import torch

from rlhf_platform.algos.importance import finite_log_ratio, importance_weights, mismatch_kl
from rlhf_platform.algos.kl import kl_estimate
from rlhf_platform.algos.losses import (
    PolicyLossOutput,
    aggregate,
    clipped_policy_loss,
    entropy_bonus,
    gspo_policy_loss,
)
from rlhf_platform.algos.preference import dpo_loss, sequence_logprob_sums
from rlhf_platform.batching import GroupBatch, per_token, prompt_groups
from rlhf_platform.config import AlgoConfig, LoraConfig, TrainerConfig
from rlhf_platform.lora import add_lora, merged_state_dict
from rlhf_platform.pairs import chosen_and_rejected, pair_micro_batches
from rlhf_platform.modeling import resolve_dtype, response_logprobs, shared_prompt_logprobs
from rlhf_platform.roles.deepspeed_rank import (
    DeepSpeedRank,
    Stats,
    load_engine_state,
    sum_over_ranks,
    optimizer_step,
    run_update,
    save_engine_state,
)
from rlhf_platform.roles.executor import RoleDied, call
from rlhf_platform.types import TrainBatch, Trajectory, UpdatePlan
from rlhf_platform.weight_sync import Transport, engine_weights, snapshot_of, tensors_digest

BUS_RESTART_WAIT_S = 300.0  # how long a publish waits for a restarting weight bus


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

    def train_step(self, plan: UpdatePlan) -> dict[str, float]:
        """This rank's part of one step's update: `plan.epochs` passes over its shards of
        the mini-batches, one optimizer step each. pi_old is the policy at the start of
        the step (taken once, before the first update) or, with
        algo.old_logprobs=behaviour, the engine's log-probs. With algo.target_kl, the
        remaining epochs are skipped once KL(pi_old || pi) over the plan's tokens (every
        rank's) exceeds it after an epoch."""
        self.update_version = plan.version
        self.plan = plan
        if self.algo.old_logprobs == "recompute":
            self._take_old_logprobs(plan)
        return run_update(
            self.engine, self.optimizer, plan, self.cfg.micro_batch_size, self._micro_step_loss, stop_after=self._kl_too_far
        )

    @torch.no_grad()
    def _take_old_logprobs(self, plan: UpdatePlan) -> None:
        """Set `old_logprobs` on the plan's trajectories: the policy's before any update,
        in eval mode. Without dropout the first mini-batch's come from its first training
        forward (the weights have not moved yet, the result is the same); the others need
        a forward pass now, unless the plan is a single pass."""
        for traj in plan.trajectories:
            traj.old_logprobs = None
        if plan.epochs * len(plan.mini_batches) == 1:
            return
        has_dropout = any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in self.engine.module.modules())
        for mini in plan.mini_batches if has_dropout else plan.mini_batches[1:]:
            for chunk in prompt_groups(mini.trajectories, self.cfg.micro_batch_size):
                _store_old_logprobs(chunk, self._logprobs_now(chunk))

    @torch.no_grad()
    def _logprobs_now(self, chunk: list[Trajectory]) -> torch.Tensor:
        """[n, R] log-probs of a chunk's responses under the current weights, in eval mode."""
        self.engine.eval()
        batch = self.collate(chunk)
        return shared_prompt_logprobs(self.engine, batch.prompt_ids, batch.response_ids, batch.response_mask, self.temperature)

    def _kl_too_far(self, epoch_steps: list[dict[str, float]]) -> bool:
        """Early stop after an epoch: KL(pi_old || pi) (k3, token-weighted over every
        rank's tokens of the plan, measured now by a forward pass) above algo.target_kl.
        Every rank calls it and reaches the same answer."""
        if self.algo.target_kl is None:
            return False
        total, tokens = 0.0, 0.0
        for chunk in prompt_groups(self.plan.trajectories, self.cfg.micro_batch_size):
            batch = self.collate(chunk)
            old = batch.behaviour_logprobs if self.algo.old_logprobs == "behaviour" else batch.old_logprobs
            log_ratio = finite_log_ratio(self._logprobs_now(chunk), old, batch.trained_mask > 0)
            total += float(((torch.exp(log_ratio) - 1.0 - log_ratio) * batch.trained_mask).sum())
            tokens += float(batch.trained_mask.sum())
        total, tokens = sum_over_ranks([total, tokens])
        return tokens > 0 and total / tokens > self.algo.target_kl

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
        ref = sequence_logprob_sums(per_token(rows, "ref_logprobs", mask.shape[1]).to(self.device), mask)
        k = len(pairs)
        out = dpo_loss(sums[:k], sums[k:], ref[:k], ref[k:], beta, loss_type, label_smoothing)
        share = out.loss * k / num_pairs
        stats = {
            "loss": share.detach(),
            "reward_accuracy": out.reward_accuracy.detach(),
            "reward_margin": out.margin.detach().mean(),
            "chosen_reward": out.chosen_rewards.detach().mean(),
            "rejected_reward": out.rejected_rewards.detach().mean(),
        }
        return share * self.world_size, stats

    def _micro_step_loss(self, chunk: list[Trajectory], denominator: float, epoch: int = 0) -> tuple[torch.Tensor, Stats]:
        """A chunk's share of the mini-batch's loss (on this rank's device) and its
        statistics as 0-dim tensors (read after the backward)."""
        batch = self.collate(chunk)
        mask = batch.trained_mask  # the loss's tokens; the forward attends to the whole response
        entropy = None
        forward = (self.engine, batch.prompt_ids, batch.response_ids, batch.response_mask, self.temperature)
        if self.algo.policy.entropy_coef > 0:
            logprobs, entropy = shared_prompt_logprobs(*forward, with_entropy=True)
        else:
            logprobs = shared_prompt_logprobs(*forward)
        old = self._old(chunk, batch, logprobs, epoch)
        stats: Stats = {}
        is_weights = None
        if self.algo.old_logprobs == "recompute":  # pi_old is the trainer's: correct for the engine's samples
            is_weights = self._is_weights(chunk, batch, old, stats if epoch == 0 else {})
        out = self._policy_loss(logprobs, old, batch, denominator, is_weights)
        loss = out.loss
        kl_value: float | torch.Tensor = 0.0
        if self.algo.kl.coef > 0 and self.algo.kl.mode == "loss" and batch.ref_logprobs is not None:
            kl = kl_estimate(logprobs, batch.ref_logprobs, self.algo.kl.estimator)
            kl_term = aggregate(kl, mask, self.algo.policy.loss_agg, denominator, self.loss_agg_constant)
            loss = loss + self.algo.kl.coef * kl_term
            kl_value = kl_term.detach()
        entropy_value = None
        if entropy is not None:
            loss = loss + entropy_bonus(
                entropy, mask, self.algo.policy.entropy_coef, self.algo.policy.loss_agg, denominator, self.loss_agg_constant
            )
            entropy_value = (entropy.detach() * mask).sum() / mask.sum().clamp(min=1)
        # DeepSpeed averages gradients over ranks; the loss is already a share of the
        # global mean, so scale back up by the world size.
        loss = loss * self.world_size
        n = mask.sum().clamp(min=1)
        stats.update({
            "loss": out.loss.detach(),
            "clip_fraction": out.clip_fraction,
            "clip_fraction_low": out.clip_fraction_low,
            "clip_fraction_high": out.clip_fraction_high,
            "ratio_mean": out.ratio_mean,
            "ratio_max": out.ratio_max,
            "approx_kl": out.approx_kl,
            "kl_ref": kl_value,
            # exact mean entropy when the bonus computed it, else -mean log p of the sampled tokens
            "entropy": entropy_value if entropy_value is not None else -(logprobs.detach() * mask).sum() / n,
        })
        if self.algo.policy.dual_clip is not None:
            stats["dual_clip_fraction"] = out.dual_clip_fraction
        return loss, stats

    def _old(self, chunk: list[Trajectory], batch: GroupBatch, logprobs: torch.Tensor, epoch: int) -> torch.Tensor:
        """pi_old's log-probs for this chunk: the engine's (algo.old_logprobs=behaviour),
        the ones taken at the step's start, or, on the step's first pass over a chunk
        not taken yet, this forward's (the weights have not moved since the start)."""
        if self.algo.old_logprobs == "behaviour":
            return batch.behaviour_logprobs
        if batch.old_logprobs is not None:
            return batch.old_logprobs
        if epoch > 0:
            raise RuntimeError(f"group {chunk[0].group_id}: no pi_old log-probs in epoch {epoch} (they are taken in epoch 0)")
        old = logprobs.detach()
        if self.plan.epochs * len(self.plan.mini_batches) > 1:  # later passes read them back
            _store_old_logprobs(chunk, old)
        return old

    def _is_weights(self, chunk: list[Trajectory], batch: GroupBatch, old: torch.Tensor, stats: Stats) -> torch.Tensor | None:
        """Importance weights pi_old / pi_behaviour (algo.is_correction); fills `stats`
        with their ratio statistics and the train-inference mismatch KL over the samples
        the engine drew with the weights being trained (same version: numerics alone)."""
        correction = self.algo.is_correction
        if batch.behaviour_logprobs is None:
            return None
        mask = batch.trained_mask
        weights = importance_weights(
            old, batch.behaviour_logprobs, mask, correction.level, correction.mode, correction.cap, correction.floor,
            self.algo.policy.log_ratio_clamp,
        )
        if correction.level != "none":
            stats.update(
                is_ratio_mean=weights.ratio_mean, is_ratio_max=weights.ratio_max,
                is_weight_mean=weights.weight_mean, is_masked_fraction=weights.masked_fraction,
            )
        same = [t.weight_version == self.update_version for t in chunk]
        if any(same):  # rows of other versions are masked out (no data-dependent indexing on the device)
            rows = torch.tensor(same, dtype=mask.dtype, device=mask.device).unsqueeze(-1)
            stats["mismatch_kl"] = mismatch_kl(old, batch.behaviour_logprobs, mask * rows)
        return None if correction.level == "none" else weights.weights

    def _policy_loss(
        self, logprobs: torch.Tensor, old: torch.Tensor, batch: GroupBatch, denominator: float, is_weights: torch.Tensor | None
    ) -> PolicyLossOutput:
        """The surrogate `algo.policy.loss` names: per-token PPO clip or GSPO's sequence ratio."""
        policy = self.algo.policy
        common = dict(
            loss_agg=policy.loss_agg, denominator=denominator, constant=self.loss_agg_constant,
            is_weights=is_weights, log_ratio_clamp=policy.log_ratio_clamp,
        )
        if policy.loss == "gspo":
            return gspo_policy_loss(logprobs, old, batch.advantages, batch.trained_mask, policy.clip_eps_low, policy.clip_eps_high, **common)
        return clipped_policy_loss(
            logprobs, old, batch.advantages, batch.trained_mask, policy.clip_eps_low, policy.clip_eps_high,
            dual_clip=policy.dual_clip, **common,
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
            snapshot = snapshot_of(state, version, self.transport)
            deadline = time.monotonic() + BUS_RESTART_WAIT_S
            while True:
                try:
                    call(self.bus, "publish", snapshot)
                    break
                except RoleDied:  # the bus is restarting: publish to it once it is back (empty)
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
        return version

    def attach_weights(self, member: int, world_size: int, host: str, port: int) -> None:
        """Rank 0: join the collective transport's weight group as its sender (returns at once)."""
        self.transport.attach(member, world_size, host, port)

    def close_weights(self) -> None:
        """Rank 0: leave the weight group at the end of the run (its receivers stop)."""
        self.transport.close()

    def weights_digest(self) -> str:
        return tensors_digest(self._full_state())


def _store_old_logprobs(chunk: list[Trajectory], logprobs: torch.Tensor) -> None:
    """Keep pi_old's log-probs [n, R] on the chunk's trajectories for the later passes."""
    for row, traj in enumerate(chunk):
        traj.old_logprobs = logprobs[row, : traj.response_length].tolist()
