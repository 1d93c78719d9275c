"""Policy, value and entropy losses. Pure torch: every tensor is [batch, tokens] with a 0/1 mask."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rlhf_platform.algos.importance import finite_log_ratio, max_over

LOSS_AGG_MODES = ("token_mean", "seq_mean_token_mean", "seq_sum_const")


def aggregate(
    values: torch.Tensor,
    mask: torch.Tensor,
    mode: str,
    denominator: float | None = None,
    constant: float | None = None,
) -> torch.Tensor:
    """Reduce per-token values to a scalar.

    token_mean: sum over unmasked tokens / their count.
    seq_mean_token_mean: each sequence's token mean (empty sequences give 0), summed
    over sequences / their count.
    seq_sum_const: each sequence's token sum divided by `constant` (required; e.g. the
    maximum response length), summed over sequences / their count. As in Dr. GRPO, a
    token weighs the same whatever the length of its sequence, and the scale does not
    depend on the batch's lengths.
    `denominator` replaces the count (tokens or sequences), so that micro-batches and
    data-parallel shards can divide by the count of the whole batch.
    """
    mask = mask.to(values.dtype)
    if mode == "token_mean":
        total = (values * mask).sum()
        count = mask.sum()
    elif mode == "seq_mean_token_mean":
        total = ((values * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).sum()
        count = values.new_tensor(float(values.shape[0]))
    elif mode == "seq_sum_const":
        if constant is None or constant <= 0:
            raise ValueError(f"seq_sum_const needs a positive `constant`, got {constant!r}")
        total = (values * mask).sum() / constant
        count = values.new_tensor(float(values.shape[0]))
    else:
        raise ValueError(f"unknown loss aggregation {mode!r}; choose one of {', '.join(LOSS_AGG_MODES)}")
    if denominator is not None:
        count = values.new_tensor(float(denominator))
    return total / count.clamp(min=1.0)


def aggregate_denominator(response_lengths: list[int], mode: str) -> float:
    """The count `aggregate` divides by for a whole batch: its response tokens
    (token_mean) or its sequences (seq_mean_token_mean, seq_sum_const; the constant of
    seq_sum_const is passed separately)."""
    if mode == "token_mean":
        return float(sum(response_lengths))
    if mode in ("seq_mean_token_mean", "seq_sum_const"):
        return float(len(response_lengths))
    raise ValueError(f"unknown loss aggregation {mode!r}; choose one of {', '.join(LOSS_AGG_MODES)}")


@dataclass
class PolicyLossOutput:
    loss: torch.Tensor
    clip_fraction: torch.Tensor  # share of valid tokens (GSPO: sequences) whose clip is active
    approx_kl: torch.Tensor  # KL(pi_old || pi) per token, k3 estimate
    clip_fraction_low: torch.Tensor = field(default_factory=lambda: torch.tensor(0.0))  # active at 1 - eps_low (A < 0)
    clip_fraction_high: torch.Tensor = field(default_factory=lambda: torch.tensor(0.0))  # active at 1 + eps_high (A > 0)
    ratio_mean: torch.Tensor = field(default_factory=lambda: torch.tensor(1.0))  # pi / pi_old over valid tokens (GSPO: sequences)
    ratio_max: torch.Tensor = field(default_factory=lambda: torch.tensor(1.0))
    dual_clip_fraction: torch.Tensor = field(default_factory=lambda: torch.tensor(0.0))


def _clip_stats(
    ratio: torch.Tensor, active: torch.Tensor, units: torch.Tensor, clip_eps_low: float, clip_eps_high: float
) -> dict[str, torch.Tensor]:
    """Clip fractions (all, low side, high side) and ratio mean / max over `units` (a
    bool mask of the tokens or sequences counted). `active`: min() took the clipped term."""
    n = units.float().sum().clamp(min=1.0)
    active = active & units
    return dict(
        clip_fraction=active.float().sum() / n,
        clip_fraction_low=(active & (ratio < 1.0 - clip_eps_low)).float().sum() / n,
        clip_fraction_high=(active & (ratio > 1.0 + clip_eps_high)).float().sum() / n,
        ratio_mean=(ratio * units).sum() / n,
        ratio_max=max_over(ratio, units),
    )


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps_low: float = 0.2,
    clip_eps_high: float = 0.2,
    is_weights: torch.Tensor | None = None,
    loss_agg: str = "token_mean",
    denominator: float | None = None,
    *,
    dual_clip: float | None = None,
    constant: float | None = None,
    log_ratio_clamp: float = 20.0,
) -> PolicyLossOutput:
    """PPO clipped surrogate, per token, with asymmetric clip range (DAPO clip-higher).

    loss_t = -min(r_t A_t, clip(r_t, 1 - eps_low, 1 + eps_high) A_t), r_t = exp(logp - old_logp),
    the log-ratio clamped to +-log_ratio_clamp first (no inf from one wild token).
    With `dual_clip` = c > 1, tokens with A_t < 0 use min(loss_t, -c A_t): a negative
    advantage times a huge ratio can no longer blow up the loss (dual-clip PPO).
    `is_weights` (detached, [batch, tokens], from `importance.importance_weights`)
    multiply each token's loss: the correction for samples the engine drew from older
    weights or with other numerics (with old = the proximal policy: decoupled PPO).
    `constant` is the divisor of loss_agg="seq_sum_const".
    """
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
    mask = mask.float()
    log_ratio = finite_log_ratio(logprobs, old_logprobs, mask > 0).clamp(-log_ratio_clamp, log_ratio_clamp)
    ratio = torch.exp(log_ratio)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_eps_low, 1.0 + clip_eps_high) * advantages
    per_token = -torch.minimum(unclipped, clipped)
    dual_clipped = torch.zeros_like(per_token, dtype=torch.bool)
    if dual_clip is not None:
        bound = -dual_clip * advantages
        dual_clipped = (advantages < 0) & (bound < per_token)
        per_token = torch.where(dual_clipped, bound, per_token)
    if is_weights is not None:
        per_token = per_token * is_weights.detach()
    loss = aggregate(per_token, mask, loss_agg, denominator, constant)
    with torch.no_grad():
        valid = mask > 0
        n = mask.sum().clamp(min=1.0)
        # tokens whose clip is active: min() took the clipped term (as TRL and verl count)
        stats = _clip_stats(ratio.detach(), clipped < unclipped, valid, clip_eps_low, clip_eps_high)
        approx_kl = ((ratio - 1.0 - log_ratio) * mask).sum() / n
        dual_fraction = (dual_clipped.float() * mask).sum() / n
    return PolicyLossOutput(loss, approx_kl=approx_kl, dual_clip_fraction=dual_fraction, **stats)


def gspo_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps_low: float = 3e-4,
    clip_eps_high: float = 4e-4,
    loss_agg: str = "seq_mean_token_mean",
    denominator: float | None = None,
    constant: float | None = None,
    is_weights: torch.Tensor | None = None,
    log_ratio_clamp: float = 20.0,
) -> PolicyLossOutput:
    """GSPO: PPO clipping on the sequence-level ratio s_i = exp(mean_t(logp - old_logp)).

    The mean runs over the valid tokens of sequence i (length |y_i|), so s_i does not
    grow with length. Written per token as s_it = sg(s_i) * exp(logp_t - sg(logp_t)):
    s_it equals s_i, and d s_it / d logp_t = s_i. loss_t = -min(s_it A_i, clip(s_it,
    1 - eps_low, 1 + eps_high) A_i); with the default seq_mean_token_mean aggregation
    this is the paper's objective and token t of an unclipped sequence gets gradient
    -s_i A_i / (|y_i| * n_sequences) on logp_t; a clipped sequence gets none.
    `advantages` is [batch] (one per sequence) or [batch, tokens]. A zero-length
    sequence contributes 0 (it still counts in the sequence count). The default clip
    range is the paper's (3e-4, 4e-4). The clip statistics count non-empty sequences;
    `is_weights` multiply each token's loss as in `clipped_policy_loss`; the mean
    log-ratio is clamped to +-log_ratio_clamp before exp.
    """
    mask = mask.float()
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(-1)
    valid = mask > 0
    token_log_ratio = finite_log_ratio(logprobs, old_logprobs, valid)
    lengths = mask.sum(-1)
    raw_seq_log_ratio = token_log_ratio.sum(-1) / lengths.clamp(min=1.0)
    seq_log_ratio = raw_seq_log_ratio.clamp(-log_ratio_clamp, log_ratio_clamp)
    # beyond the clamp the value is held and, as for a clamped token ratio, no gradient passes
    in_range = (raw_seq_log_ratio.abs() < log_ratio_clamp).float().unsqueeze(-1).detach()
    current = finite_log_ratio(logprobs, logprobs.detach(), valid)  # 0, with d/d logp = 1 on valid tokens
    log_s = current * in_range + seq_log_ratio.detach().unsqueeze(-1)
    s = torch.exp(log_s)
    unclipped = s * advantages
    clipped = torch.clamp(s, 1.0 - clip_eps_low, 1.0 + clip_eps_high) * advantages
    per_token = -torch.minimum(unclipped, clipped)
    if is_weights is not None:
        per_token = per_token * is_weights.detach()
    loss = aggregate(per_token, mask, loss_agg, denominator, constant)
    with torch.no_grad():
        seq_ratio = torch.exp(seq_log_ratio)
        non_empty = lengths > 0
        active = ((clipped < unclipped) & valid).any(-1)  # min() took the clipped term
        stats = _clip_stats(seq_ratio, active, non_empty, clip_eps_low, clip_eps_high)
        token_log_ratio = token_log_ratio.clamp(-log_ratio_clamp, log_ratio_clamp)
        n = mask.sum().clamp(min=1.0)
        approx_kl = ((torch.exp(token_log_ratio) - 1.0 - token_log_ratio) * mask).sum() / n
    return PolicyLossOutput(loss, approx_kl=approx_kl, **stats)


@dataclass
class ValueLossOutput:
    loss: torch.Tensor
    clip_fraction: torch.Tensor  # share of valid tokens where the clipped term was the larger


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float | None = None,
    loss_agg: str = "token_mean",
    denominator: float | None = None,
    constant: float | None = None,
) -> ValueLossOutput:
    """PPO value loss: 0.5 * max((v - R)^2, (clip(v, old - eps, old + eps) - R)^2), aggregated.

    The clipped term keeps the value head from moving more than eps from the values
    the advantages were computed with. clip_eps=None gives plain 0.5 * (v - R)^2.
    """
    mask = mask.float()
    per_token = (values - returns).square()
    used_clipped = torch.zeros_like(per_token, dtype=torch.bool)
    if clip_eps is not None:
        v_clipped = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
        clipped_sq = (v_clipped - returns).square()
        used_clipped = clipped_sq > per_token
        per_token = torch.maximum(per_token, clipped_sq)
    loss = aggregate(0.5 * per_token, mask, loss_agg, denominator, constant)
    with torch.no_grad():
        clip_fraction = (used_clipped.float() * mask).sum() / mask.sum().clamp(min=1.0)
    return ValueLossOutput(loss, clip_fraction)


def entropy_from_logits(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token entropy [batch, tokens] of softmax(logits [batch, tokens, vocab]); 0 where masked.

    H = -sum_v p_v log p_v, computed in float32 from log_softmax. Logits of -inf
    (banned tokens) contribute 0.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    finite_logp = logp.clamp(min=torch.finfo(logp.dtype).min)  # 0 * -inf would be nan
    entropy = -(logp.exp() * finite_logp).sum(-1)
    return entropy * mask.float()


def entropy_bonus(
    entropy: torch.Tensor,
    mask: torch.Tensor,
    coef: float,
    loss_agg: str = "token_mean",
    denominator: float | None = None,
    constant: float | None = None,
) -> torch.Tensor:
    """The term to add to the loss for an entropy bonus: -coef * aggregate(entropy), from
    per-token entropies [batch, tokens] (`entropy_from_logits`, or the trainer's
    row-at-a-time computation). Aggregated like the policy loss, so the two share one
    denominator."""
    return -coef * aggregate(entropy, mask, loss_agg, denominator, constant)
