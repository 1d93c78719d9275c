"""Parity of our loss math with TRL's own implementation (trl==1.16.0, a test-only dependency).

TRL's trainers compute their losses inside `_compute_loss`, next to a model forward. We build
the trainer with `object.__new__` (no __init__, no model), set only the attributes the method
reads, and replace the forward by a stub that hands back our random tensors; TRL's loss
arithmetic itself runs unchanged. The expected side of every comparison is TRL's output; our
side is the function from `rlhf_platform.algos`. Losses are compared, and so are the gradients
with respect to the per-token logprobs.

Mapping (ours <- TRL):
  GRPOTrainer loss_type  grpo    <- clipped_policy_loss(loss_agg="seq_mean_token_mean")
                         bnpo    <- loss_agg="token_mean"
                         dapo    <- loss_agg="token_mean", denominator=num_items_in_batch
                         dr_grpo <- loss_agg="seq_sum_const", constant=max_completion_length
  importance_sampling_level="sequence" (GSPO) <- gspo_policy_loss, with the same aggregations.
  DPOTrainer loss_type sigmoid <- dpo_loss(loss_type="sigmoid") on sequence_logprob_sums.
"""
from __future__ import annotations

from collections import defaultdict
from types import MethodType, SimpleNamespace

import pytest
import torch
import trl.trainer.dpo_trainer as trl_dpo  # a declared test dependency: missing it fails, never skips
import trl.trainer.grpo_trainer as trl_grpo
import trl.trainer.utils as trl_utils
from torch.testing import assert_close

from rlhf_platform.algos.losses import clipped_policy_loss, gspo_policy_loss
from rlhf_platform.algos.preference import dpo_loss, sequence_logprob_sums

DTYPE = torch.float64  # so that any disagreement is the formula's, not rounding
TOL = dict(rtol=1e-9, atol=1e-9)  # tighter than the 1e-5 asked of parity


class _SingleProcessAccelerator:
    """What `_compute_loss` asks of accelerate's Accelerator, for one process."""

    num_processes = 1
    sync_gradients = True
    device = torch.device("cpu")

    def gather(self, tensor):
        return tensor

    def gather_for_metrics(self, tensor):
        return tensor

    def reduce(self, tensor, reduction="sum"):
        return tensor


def _metrics():
    return defaultdict(lambda: defaultdict(list))


# ---------------------------------------------------------------------------------------------
# GRPO family
# ---------------------------------------------------------------------------------------------

B, T = 6, 9
LENGTHS = [9, 7, 4, 9, 1, 6]  # rows shorter than T are right-padded
EPS_LOW, EPS_HIGH = 0.2, 0.28  # clip-higher: eps_low != eps_high
GSPO_EPS_LOW, GSPO_EPS_HIGH = 0.02, 0.03
# Tokens of an imaginary second micro-batch of the same generation batch (dapo divides by all of them).
OTHER_MICRO_BATCH_TOKENS = 23


def _grpo_inputs(seed: int, level: str):
    """Random logps [B, T], old logps that differ from them, advantages [B], padded 0/1 mask."""
    g = torch.Generator().manual_seed(seed)
    mask = (torch.arange(T).unsqueeze(0) < torch.tensor(LENGTHS).unsqueeze(1)).long()
    logps = -3.0 * torch.rand(B, T, generator=g, dtype=DTYPE)
    if level == "token":
        drift = 0.3 * torch.randn(B, T, generator=g, dtype=DTYPE)
    else:  # one offset per sequence, so some sequence ratios fall inside the GSPO range and some outside
        offsets = torch.linspace(-0.08, 0.08, B, dtype=DTYPE)[torch.randperm(B, generator=g)]
        drift = offsets.unsqueeze(1) + 0.01 * torch.randn(B, T, generator=g, dtype=DTYPE)
    old = logps - drift
    advantages = torch.randn(B, generator=g, dtype=DTYPE)
    return logps, old, advantages, mask


def _active_clipping(ratio, advantages, mask, eps_low, eps_high):
    """Where the clipped term is the one min() picks, per valid token (TRL's is_region_clipped)."""
    adv = advantages.unsqueeze(1)
    clipped = ((ratio < 1 - eps_low) & (adv < 0)) | ((ratio > 1 + eps_high) & (adv > 0))
    return clipped.expand_as(mask)[mask.bool()]


def _grpo_trainer_stub(loss_type, level, eps_low, eps_high, max_completion_length, grad_accum, steps_per_generation):
    """A GRPOTrainer built without __init__, with only what `_compute_loss` reads set
    (its forward, `_get_per_token_logps_and_entropies`, is the caller's to set)."""
    trainer = object.__new__(trl_grpo.GRPOTrainer)
    trainer.loss_type = loss_type
    trainer.importance_sampling_level = level
    trainer.epsilon_low, trainer.epsilon_high = eps_low, eps_high
    trainer.beta = 0.0
    trainer.top_entropy_quantile = 1.0
    trainer.off_policy_mask_threshold = None
    trainer.use_vllm = False
    trainer.aux_loss_enabled = False
    trainer._entropy_bonus_enabled = False
    trainer.max_completion_length = max_completion_length
    trainer.current_gradient_accumulation_steps = grad_accum
    trainer.args = SimpleNamespace(delta=None, use_bias_correction_kl=False, steps_per_generation=steps_per_generation)
    trainer.model = SimpleNamespace(training=True)
    trainer._metrics = _metrics()
    trainer.accelerator = _SingleProcessAccelerator()
    return trainer


def _trl_grpo_loss(logps, old, advantages, mask, loss_type, level, eps_low, eps_high, num_items=None, micro_batches=1):
    """GRPOTrainer._compute_loss on our tensors: (loss, d loss / d logps)."""
    trainer = _grpo_trainer_stub(loss_type, level, eps_low, eps_high, T, micro_batches, micro_batches)

    leaf = logps.clone().requires_grad_(True)

    def per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, **kwargs):
        assert logits_to_keep == T
        return leaf, torch.zeros_like(leaf), None

    trainer._get_per_token_logps_and_entropies = MethodType(per_token_logps_and_entropies, trainer)
    inputs = {
        "prompt_ids": torch.zeros(B, 3, dtype=torch.long),
        "prompt_mask": torch.ones(B, 3, dtype=torch.long),
        "completion_ids": torch.zeros(B, T, dtype=torch.long),
        "completion_mask": mask,
        "advantages": advantages,
        "old_per_token_logps": old,
    }
    if num_items is not None:
        inputs["num_items_in_batch"] = torch.tensor(float(num_items), dtype=DTYPE)
    loss = trainer._compute_loss(trainer.model, inputs)
    loss.backward()
    return loss.detach(), leaf.grad


# TRL loss_type -> our loss_agg
GRPO_CASES = {
    "grpo": "seq_mean_token_mean",
    "bnpo": "token_mean",
    "dapo": "token_mean",
    "dr_grpo": "seq_sum_const",
}


def _our_kwargs_and_trl_extras(loss_type, mask):
    """Our aggregation arguments and the matching TRL inputs for one loss type."""
    ours = {"loss_agg": GRPO_CASES[loss_type]}
    trl = {}
    if loss_type == "dr_grpo":
        ours["constant"] = float(T)  # TRL divides by B * max_completion_length
    if loss_type == "dapo":
        # This micro-batch is one of two of a generation batch: TRL divides by num_items_in_batch (the
        # generation batch's tokens, rescaled to the accumulation window), we by `denominator`.
        num_items = int(mask.sum()) + OTHER_MICRO_BATCH_TOKENS
        ours["denominator"] = float(num_items)
        trl = {"num_items": num_items, "micro_batches": 2}
    return ours, trl


@pytest.mark.parametrize("loss_type", list(GRPO_CASES))
def test_clipped_policy_loss_matches_trl_grpo(loss_type):
    logps, old, advantages, mask = _grpo_inputs(seed=0, level="token")
    clipped = _active_clipping(torch.exp(logps - old), advantages, mask, EPS_LOW, EPS_HIGH)
    assert clipped.any() and not clipped.all()  # both branches of the min are exercised

    ours_kwargs, trl_kwargs = _our_kwargs_and_trl_extras(loss_type, mask)
    theirs, their_grad = _trl_grpo_loss(
        logps, old, advantages, mask, loss_type, "token", EPS_LOW, EPS_HIGH, **trl_kwargs
    )

    leaf = logps.clone().requires_grad_(True)
    out = clipped_policy_loss(
        leaf,
        old,
        advantages.unsqueeze(1).expand(B, T),
        mask,
        clip_eps_low=EPS_LOW,
        clip_eps_high=EPS_HIGH,
        is_weights=None,
        dual_clip=None,
        **ours_kwargs,
    )
    out.loss.backward()

    assert_close(out.loss.detach(), theirs, **TOL)
    assert_close(leaf.grad, their_grad, **TOL)


@pytest.mark.parametrize("loss_type", list(GRPO_CASES))
def test_gspo_policy_loss_matches_trl_sequence_level(loss_type):
    logps, old, advantages, mask = _grpo_inputs(seed=1, level="sequence")
    seq_ratio = torch.exp(((logps - old) * mask).sum(-1) / mask.sum(-1)).unsqueeze(1)
    clipped = _active_clipping(seq_ratio, advantages, mask, GSPO_EPS_LOW, GSPO_EPS_HIGH)
    assert clipped.any() and not clipped.all()

    ours_kwargs, trl_kwargs = _our_kwargs_and_trl_extras(loss_type, mask)
    theirs, their_grad = _trl_grpo_loss(
        logps, old, advantages, mask, loss_type, "sequence", GSPO_EPS_LOW, GSPO_EPS_HIGH, **trl_kwargs
    )

    leaf = logps.clone().requires_grad_(True)
    out = gspo_policy_loss(
        leaf, old, advantages, mask, clip_eps_low=GSPO_EPS_LOW, clip_eps_high=GSPO_EPS_HIGH, **ours_kwargs
    )
    out.loss.backward()

    assert_close(out.loss.detach(), theirs, **TOL)
    assert_close(leaf.grad, their_grad, **TOL)


# ---------------------------------------------------------------------------------------------
# DPO
# ---------------------------------------------------------------------------------------------

PAIRS, SEQ = 5, 12
PROMPT_LEN = 3
CHOSEN_LENGTHS = [9, 5, 7, 2, 8]  # completion tokens after the prompt
REJECTED_LENGTHS = [4, 9, 7, 6, 1]
DPO_BETA = 0.3


def _dpo_batch(seed: int):
    """TRL's DPO layout: rows [chosen..., rejected...], completion_mask over the full sequence, and
    per-token logps [2P, SEQ - 1] aligned with the shifted completion mask."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(CHOSEN_LENGTHS + REJECTED_LENGTHS).unsqueeze(1)
    pos = torch.arange(SEQ).unsqueeze(0)
    completion_mask = ((pos >= PROMPT_LEN) & (pos < PROMPT_LEN + lengths)).long()
    attention_mask = (pos < PROMPT_LEN + lengths).long()
    input_ids = torch.randint(1, 50, (2 * PAIRS, SEQ), generator=g) * attention_mask
    token_logps = -2.0 * torch.rand(2 * PAIRS, SEQ - 1, generator=g, dtype=DTYPE)
    ref_token_logps = token_logps - 0.4 * torch.randn(2 * PAIRS, SEQ - 1, generator=g, dtype=DTYPE)
    return input_ids, attention_mask, completion_mask, token_logps, ref_token_logps


def _trl_dpo(input_ids, attention_mask, completion_mask, token_logps, ref_seq_logps, loss_type, label_smoothing=0.0):
    """DPOTrainer._compute_loss on our tensors: (loss, d loss / d token_logps, metrics).

    The stub model plays the fused LM head's contract (`trl.trainer.utils.FusedCausalLMOutput`):
    per-token logprobs of the next-token labels, zero where the label is -100. The reference
    logps are precomputed sequence sums, as with `precompute_ref_log_probs=True`."""
    leaf = token_logps.clone().requires_grad_(True)

    def model(input_ids, attention_mask, labels, fused_lm_head, use_cache):
        assert fused_lm_head
        label_mask = labels[:, 1:] != -100
        zeros = torch.zeros_like(leaf.detach())
        return trl_utils.FusedCausalLMOutput(
            log_probs=leaf.masked_fill(~label_mask, 0.0),
            entropy=zeros,
            mean_logits=zeros,
            is_top1=torch.zeros_like(label_mask),
            label_mask=label_mask,
        )

    trainer = object.__new__(trl_dpo.DPOTrainer)
    trainer.model = SimpleNamespace(training=True)
    trainer.accelerator = _SingleProcessAccelerator()
    trainer.args = SimpleNamespace(gradient_checkpointing_kwargs=None)
    trainer.aux_loss_enabled = False
    trainer.ld_alpha = None
    trainer.precompute_ref_logps = True
    trainer.f_divergence_type = "reverse_kl"
    trainer.loss_types = [loss_type]
    trainer.loss_weights = [1.0]
    trainer.beta = DPO_BETA
    trainer.label_smoothing = label_smoothing
    trainer.use_weighting = False
    trainer._metrics = _metrics()
    trainer._total_train_tokens = 0
    trainer._tp_size = 1

    ref_chosen, ref_rejected = ref_seq_logps.chunk(2)
    inputs = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "completion_mask": completion_mask,
        "ref_chosen_logps": ref_chosen,
        "ref_rejected_logps": ref_rejected,
    }
    loss = trainer._compute_loss(model, inputs, return_outputs=False)
    loss.backward()
    return loss.detach(), leaf.grad, trainer._metrics["train"]


def test_dpo_sigmoid_matches_trl():
    input_ids, attention_mask, completion_mask, token_logps, ref_token_logps = _dpo_batch(seed=2)
    shift_mask = completion_mask[:, 1:]
    ref_seq = sequence_logprob_sums(ref_token_logps, shift_mask)
    theirs, their_grad, metrics = _trl_dpo(input_ids, attention_mask, completion_mask, token_logps, ref_seq, "sigmoid")

    leaf = token_logps.clone().requires_grad_(True)
    policy_chosen, policy_rejected = sequence_logprob_sums(leaf, shift_mask).chunk(2)
    ref_chosen, ref_rejected = ref_seq.chunk(2)
    out = dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=DPO_BETA, loss_type="sigmoid")
    out.loss.backward()

    assert_close(out.loss.detach(), theirs, **TOL)
    assert_close(leaf.grad, their_grad, **TOL)
    # TRL logs batch means of the implicit rewards beta * (logp - ref_logp) and of their comparisons.
    assert_close(out.chosen_rewards.mean().item(), metrics["rewards/chosen"][0], **TOL)
    assert_close(out.rejected_rewards.mean().item(), metrics["rewards/rejected"][0], **TOL)
    assert_close(out.margin.item(), metrics["rewards/margins"][0], **TOL)
    assert_close(out.reward_accuracy.item(), metrics["rewards/accuracies"][0], **TOL)
    assert 0.0 < metrics["rewards/accuracies"][0] < 1.0  # pairs ranked both ways


@pytest.mark.parametrize("pair", range(PAIRS))
def test_dpo_label_smoothing_matches_trl(pair):
    """Conservative DPO (our sigmoid loss with label_smoothing > 0). TRL 1.16's "sigmoid" branch
    ignores label_smoothing; its "aot" branch is -(1 - ls) log sigmoid(beta d) - ls log sigmoid(-beta d)
    with d built from batch-sorted log ratios, and for a single pair the sort is the identity and d is
    DPO's h. So TRL is run one pair at a time."""
    ls = 0.15
    input_ids, attention_mask, completion_mask, token_logps, ref_token_logps = _dpo_batch(seed=3)
    rows = [pair, PAIRS + pair]  # this pair's chosen and rejected rows
    input_ids, attention_mask, completion_mask = input_ids[rows], attention_mask[rows], completion_mask[rows]
    token_logps, ref_token_logps = token_logps[rows], ref_token_logps[rows]
    shift_mask = completion_mask[:, 1:]
    ref_seq = sequence_logprob_sums(ref_token_logps, shift_mask)
    theirs, their_grad, _ = _trl_dpo(
        input_ids, attention_mask, completion_mask, token_logps, ref_seq, "aot", label_smoothing=ls
    )

    leaf = token_logps.clone().requires_grad_(True)
    policy_chosen, policy_rejected = sequence_logprob_sums(leaf, shift_mask).chunk(2)
    ref_chosen, ref_rejected = ref_seq.chunk(2)
    out = dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=DPO_BETA, label_smoothing=ls)
    out.loss.backward()

    assert_close(out.loss.detach(), theirs, **TOL)
    assert_close(leaf.grad, their_grad, **TOL)


def test_ipo_matches_trl_on_length_normalised_logps():
    """IPO differs from TRL's by definition: TRL 1.16 divides each answer's log ratio by its
    completion length before forming h, (h_norm - 1/(2 beta))^2, while our dpo_loss uses the
    sequence logprobs it is given as they are, (h - 1/(2 beta))^2, and sequence sums are what
    sequence_logprob_sums provides. On sums the two losses differ. Here our dpo_loss is given
    per-token-mean logprobs (sum / length, policy and reference alike), which makes its h TRL's
    h_norm, so the rest of the IPO arithmetic is compared."""
    input_ids, attention_mask, completion_mask, token_logps, ref_token_logps = _dpo_batch(seed=4)
    shift_mask = completion_mask[:, 1:]
    ref_seq = sequence_logprob_sums(ref_token_logps, shift_mask)
    theirs, their_grad, _ = _trl_dpo(input_ids, attention_mask, completion_mask, token_logps, ref_seq, "ipo")

    lengths = shift_mask.sum(-1).to(DTYPE)
    leaf = token_logps.clone().requires_grad_(True)
    policy_chosen, policy_rejected = (sequence_logprob_sums(leaf, shift_mask) / lengths).chunk(2)
    ref_chosen, ref_rejected = (ref_seq / lengths).chunk(2)
    out = dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=DPO_BETA, loss_type="ipo")
    out.loss.backward()

    assert_close(out.loss.detach(), theirs, **TOL)
    assert_close(leaf.grad, their_grad, **TOL)
