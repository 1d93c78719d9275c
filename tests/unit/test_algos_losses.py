import math

import pytest
import torch
from torch.testing import assert_close

from rlhf_platform.algos.losses import (
    aggregate,
    aggregate_denominator,
    clipped_policy_loss,
    entropy_bonus,
    entropy_from_logits,
    gspo_policy_loss,
    value_loss,
)


def test_seq_sum_const_aggregation():
    values = torch.tensor([[1.0, 3.0, 100.0], [2.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    # ((1 + 3) / 4 + 2 / 4) / 2 sequences
    assert_close(aggregate(values, mask, "seq_sum_const", constant=4), torch.tensor(((1 + 3) / 4 + 2 / 4) / 2))
    # the denominator replaces the sequence count: 1.5 / 3
    assert_close(aggregate(values, mask, "seq_sum_const", denominator=3, constant=4), torch.tensor(1.5 / 3))
    assert_close(aggregate(values, torch.zeros(2, 3), "seq_sum_const", constant=4), torch.tensor(0.0))
    with pytest.raises(ValueError, match="constant"):
        aggregate(values, mask, "seq_sum_const")
    with pytest.raises(ValueError, match="seq_sum_const"):
        aggregate(values, mask, "sum")


def test_seq_sum_const_micro_batches_add_up():
    values = torch.tensor([[1.0, 3.0, 100.0], [2.0, 0.0, 0.0], [4.0, 4.0, 4.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1]])
    denominator = aggregate_denominator([2, 1, 3], "seq_sum_const")
    assert denominator == 3.0  # sequences; the constant is passed separately
    whole = aggregate(values, mask, "seq_sum_const", denominator, constant=8)
    halves = (slice(0, 1), slice(1, 3))
    parts = sum(aggregate(values[h], mask[h], "seq_sum_const", denominator, constant=8) for h in halves)
    assert_close(whole, torch.tensor((4 + 2 + 12) / 8 / 3))
    assert_close(parts, whole)


def test_aggregate_denominator_modes():
    assert aggregate_denominator([3, 1, 0], "token_mean") == 4.0
    assert aggregate_denominator([3, 1, 0], "seq_mean_token_mean") == 3.0
    with pytest.raises(ValueError):
        aggregate_denominator([3], "tokens")


def test_dual_clip_by_hand():
    # old logprobs 0; ratios 4, 2, 4, 4 (last is padding)
    lp = torch.tensor([[math.log(4), math.log(2), math.log(4), math.log(4)]], requires_grad=True)
    old = torch.zeros(1, 4)
    adv = torch.tensor([[-1.0, -1.0, 1.0, -1.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    # plain PPO per token: -min(rA, clip(r)A) = [4, 2, -1.2]
    plain = clipped_policy_loss(lp, old, adv, mask)
    assert_close(plain.loss, torch.tensor((4 + 2 - 1.2) / 3))
    # dual clip c = 3, only where A < 0: min(4, 3) = 3, min(2, 3) = 2; A > 0 token unchanged
    out = clipped_policy_loss(lp, old, adv, mask, dual_clip=3.0)
    assert_close(out.loss, torch.tensor((3 + 2 - 1.2) / 3))
    assert_close(out.dual_clip_fraction, torch.tensor(1 / 3))
    out.loss.backward()
    # t0 dual-clipped and t2 clipped: no gradient; t1: d(-r A)/d logp = -A r = 2, / 3 tokens
    assert_close(lp.grad, torch.tensor([[0.0, 2 / 3, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="dual_clip"):
        clipped_policy_loss(lp, old, adv, mask, dual_clip=1.0)


def test_clipped_loss_seq_sum_const():
    lp = torch.zeros(2, 2)
    adv = torch.tensor([[1.0, 1.0], [2.0, 7.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    # ratio 1: per token -A = [[-1, -1], [-2, pad]]; sum -4 / constant 4 / 2 sequences
    out = clipped_policy_loss(lp, lp, adv, mask, loss_agg="seq_sum_const", constant=4)
    assert_close(out.loss, torch.tensor(-4 / 4 / 2))


def test_value_loss_clipped_by_hand():
    values = torch.tensor([[1.0, 2.0, 0.5, 7.0], [1.0, 1.0, 1.0, 1.0]], requires_grad=True)
    old = torch.tensor([[0.8, 2.5, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0]])
    returns = torch.tensor([[2.0, 3.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [0, 0, 0, 0]])  # padding, and a zero-length row
    # t0: (1-2)^2 = 1, clipped v = 0.8 + 0.1 = 0.9 -> (0.9-2)^2 = 1.21 -> 1.21 (clipped term)
    # t1: (2-3)^2 = 1, clipped v = 2.5 - 0.1 = 2.4 -> (2.4-3)^2 = 0.36 -> 1
    # t2: v = old, both 0.25
    out = value_loss(values, old, returns, mask, clip_eps=0.1)
    assert_close(out.loss, torch.tensor(0.5 * (1.21 + 1.0 + 0.25) / 3))
    assert_close(out.clip_fraction, torch.tensor(1 / 3))
    out.loss.backward()
    # t0: the clipped term is flat in v -> 0; t1: (v - R)/3 = -1/3; t2: (0.5 - 0)/3
    assert_close(values.grad, torch.tensor([[0.0, -1 / 3, 0.5 / 3, 0.0], [0.0, 0.0, 0.0, 0.0]]))
    # no clipping: 0.5 * (1 + 1 + 0.25) / 3
    assert_close(value_loss(values, old, returns, mask).loss, torch.tensor(0.5 * 2.25 / 3))
    # per sequence: row 0 token mean 0.41, empty row 0, over 2 sequences
    out = value_loss(values, old, returns, mask, 0.1, loss_agg="seq_mean_token_mean")
    assert_close(out.loss, torch.tensor((0.5 * 2.46 / 3 + 0.0) / 2))


def test_entropy_from_logits_by_hand():
    logits = torch.tensor(
        [[[0.0, 0.0, -math.inf], [0.0, math.log(3), -math.inf], [5.0, 1.0, 0.0]]], requires_grad=True
    )
    mask = torch.tensor([[1, 1, 0]])
    # t0: uniform over 2 -> log 2 (the -inf token contributes 0); t1: p = [1/4, 3/4]; t2 padding
    h1 = 0.25 * math.log(4) + 0.75 * math.log(4 / 3)
    ent = entropy_from_logits(logits, mask)
    assert_close(ent, torch.tensor([[math.log(2), h1, 0.0]]))
    bonus = entropy_bonus(ent, mask, coef=0.01)
    assert_close(bonus, torch.tensor(-0.01 * (math.log(2) + h1) / 2))
    bonus.backward()
    assert bool(torch.isfinite(logits.grad).all())
    # uniform logits: entropy is maximal, so the gradient is 0
    assert_close(logits.grad[0, 0, :2], torch.zeros(2))
    # seq_sum_const: (log 2 + h1) / 8 / 1 sequence
    assert_close(
        entropy_bonus(ent, mask, 1.0, "seq_sum_const", constant=8), torch.tensor(-(math.log(2) + h1) / 8)
    )


def _gspo_batch():
    # row 0: 2 valid tokens, padding logprob -inf; row 1: 3 tokens; row 2: empty
    lp = torch.tensor([[0.1, 0.2, -math.inf], [-0.3, 0.0, 0.0], [0.5, 0.5, 0.5]], requires_grad=True)
    old = torch.zeros(3, 3)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [0, 0, 0]])
    adv = torch.tensor([1.0, -2.0, 5.0])
    return lp, old, mask, adv


def test_gspo_unclipped_loss_and_gradient():
    lp, old, mask, adv = _gspo_batch()
    # s_0 = exp((0.1 + 0.2)/2) = exp(0.15), s_1 = exp((-0.3 + 0 + 0)/3) = exp(-0.1), s_2 = 1 (empty)
    s0, s1 = math.exp(0.15), math.exp(-0.1)
    out = gspo_policy_loss(lp, old, adv, mask, clip_eps_low=0.2, clip_eps_high=0.2)
    # mean over 3 sequences of -s_i A_i; the empty sequence gives 0
    assert_close(out.loss, torch.tensor((-s0 * 1.0 + s1 * 2.0 + 0.0) / 3))
    assert_close(out.clip_fraction, torch.tensor(0.0))
    k3 = sum(math.exp(x) - 1 - x for x in (0.1, 0.2, -0.3, 0.0, 0.0)) / 5
    assert_close(out.approx_kl, torch.tensor(k3))
    out.loss.backward()
    # each token of sequence i: -s_i A_i / |y_i| / 3 sequences -- the same for every token of i
    expected = torch.tensor(
        [[-s0 * 1.0 / 2 / 3, -s0 * 1.0 / 2 / 3, 0.0], [s1 * 2.0 / 3 / 3] * 3, [0.0, 0.0, 0.0]]
    )
    assert_close(lp.grad, expected)


def test_gspo_clipped_sequence_gets_no_gradient():
    lp, old, mask, adv = _gspo_batch()
    s1 = math.exp(-0.1)
    # eps 0.1: s_0 = 1.162 > 1.1 with A > 0 -> clipped at 1.1; s_1 = 0.905 in [0.9, 1.1] -> unclipped
    out = gspo_policy_loss(lp, old, adv, mask, clip_eps_low=0.1, clip_eps_high=0.1)
    assert_close(out.loss, torch.tensor((-1.1 * 1.0 + s1 * 2.0 + 0.0) / 3))
    assert_close(out.clip_fraction, torch.tensor(1 / 2))  # of the 2 non-empty sequences
    out.loss.backward()
    expected = torch.tensor([[0.0, 0.0, 0.0], [s1 * 2.0 / 9] * 3, [0.0, 0.0, 0.0]])
    assert_close(lp.grad, expected)


def test_gspo_token_advantages_match_sequence_advantages():
    lp, old, mask, adv = _gspo_batch()
    seq = gspo_policy_loss(lp, old, adv, mask, 0.2, 0.2).loss
    tok = gspo_policy_loss(lp, old, adv.unsqueeze(-1).expand(3, 3), mask, 0.2, 0.2).loss
    assert_close(tok, seq)
    # token_mean over the 5 valid tokens: (-s0 * 2 tokens + 2 s1 * 3 tokens) / 5
    out = gspo_policy_loss(lp, old, adv, mask, 0.2, 0.2, loss_agg="token_mean")
    assert_close(out.loss, torch.tensor((-2 * math.exp(0.15) + 3 * 2 * math.exp(-0.1)) / 5))


def test_clip_fraction_counts_only_active_clips():
    """A token whose ratio is out of range but whose unclipped term min() keeps (A > 0
    with a low ratio, A < 0 with a high one) is not clipped; peers do not count it."""
    from rlhf_platform.algos.losses import clipped_policy_loss, gspo_policy_loss

    old = torch.zeros(1, 4)
    logprobs = torch.log(torch.tensor([[0.5, 1.5, 0.5, 1.5]]))  # ratios 0.5, 1.5, 0.5, 1.5
    advantages = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    mask = torch.ones(1, 4)
    out = clipped_policy_loss(logprobs, old, advantages, mask, 0.2, 0.2)
    assert float(out.clip_fraction) == pytest.approx(0.5)  # tokens 2 (A>0, r>1.2) and 3 (A<0, r<0.8)
    # GSPO: one sequence pushed past the range the way its advantage pulls, one not
    seq_logprobs = torch.tensor([[0.01, 0.01], [0.01, 0.01]])
    seq_out = gspo_policy_loss(seq_logprobs, torch.zeros(2, 2), torch.tensor([1.0, -1.0]), torch.ones(2, 2))
    assert float(seq_out.clip_fraction) == pytest.approx(0.5)


def test_gspo_clamped_sequence_ratio_passes_no_gradient():
    """Beyond algo.policy.log_ratio_clamp GSPO holds the ratio and passes no gradient, as
    a clamped token ratio does (the value alone was clamped once: gradient 2.4e8 here)."""
    logprobs = torch.zeros(1, 3, requires_grad=True)
    out = gspo_policy_loss(logprobs, torch.full((1, 3), -25.0), torch.tensor([-1.0]), torch.ones(1, 3))
    out.loss.backward()
    assert torch.isfinite(out.loss) and logprobs.grad.abs().max() == 0.0


@pytest.mark.parametrize("loss", ["ppo_clip", "gspo"])
def test_non_finite_log_probs_give_a_finite_loss_and_gradient(loss):
    """A token whose log-probs are both -inf (or nan) counts as ratio 1, as TRL does."""
    logprobs = torch.tensor([[-0.5, float("-inf"), -1.0]], requires_grad=True)
    old = torch.tensor([[-0.7, float("-inf"), float("nan")]])
    fn = clipped_policy_loss if loss == "ppo_clip" else gspo_policy_loss
    out = fn(logprobs, old, torch.ones(1, 3), torch.ones(1, 3))
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(logprobs.grad).all()
    assert math.isfinite(float(out.ratio_mean)) and math.isfinite(float(out.approx_kl))


def test_importance_weights_and_mismatch_ignore_non_finite_tokens():
    from rlhf_platform.algos.importance import importance_weights, mismatch_kl

    old = torch.tensor([[-1.0, float("-inf"), -2.0]])
    behaviour = torch.tensor([[-1.5, float("-inf"), float("nan")]])
    for level in ("token", "sequence", "geometric"):
        weights = importance_weights(old, behaviour, torch.ones(1, 3), level)
        assert torch.isfinite(weights.weights).all() and math.isfinite(float(weights.ratio_mean))
    token = importance_weights(old, behaviour, torch.ones(1, 3), "token")
    assert token.weights[0].tolist() == pytest.approx([min(math.exp(0.5), 2.0), 1.0, 1.0])
    assert math.isfinite(float(mismatch_kl(old, behaviour, torch.ones(1, 3))))
