"""Importance-sampling corrections for samples the trainer did not draw itself.

The engine samples with weights that may be older than the trainer's (stale samples)
and with other numerics (vLLM's kernels, bf16): its behaviour log-probs differ from the
trainer's log-probs at the step's start (pi_old). Each loss term is weighted by the
ratio pi_old / pi_behaviour, computed per token, per sequence (the product over the
reply) or as the sequence's geometric mean, and then

- truncated: min(ratio, cap) (truncated IS, as verl and TRL do), or
- masked: the ratio where it lies in [floor, cap], 0 outside (IcePop; TRL's
  `*_mask` modes): tokens or whole sequences too far off the policy are dropped.

Pure torch: tensors are [batch, tokens] with a 0/1 mask of the valid response tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

LEVELS = ("token", "sequence", "geometric", "none")
MODES = ("truncate", "mask")


@dataclass
class ImportanceWeights:
    weights: torch.Tensor  # [batch, tokens] (detached): multiplies each token's loss
    ratio_mean: torch.Tensor  # of the raw ratio over valid tokens (token level) or non-empty sequences
    ratio_max: torch.Tensor
    masked_fraction: torch.Tensor  # share of those tokens / sequences given weight 0 (mask mode)
    weight_mean: torch.Tensor  # of the weights actually applied, over the same units


def importance_weights(
    old_logprobs: torch.Tensor,
    behaviour_logprobs: torch.Tensor,
    mask: torch.Tensor,
    level: str = "token",
    mode: str = "truncate",
    cap: float = 2.0,
    floor: float | None = None,
    log_ratio_clamp: float = 20.0,
) -> ImportanceWeights:
    """Weights pi_old / pi_behaviour for every valid token (0 on padding).

    level: token (one ratio per token) | sequence (exp of the sum of the reply's token
    log-ratios: the exact sequence ratio) | geometric (exp of their mean: length-free,
    as GSPO's) | none (weights 1). mode: truncate (min(ratio, cap)) | mask (ratio inside
    [floor, cap], else 0; floor defaults to 1 / cap, as IcePop's two-sided band).
    Log-ratios are clamped to +-log_ratio_clamp before exp, and a non-finite one (a
    -inf or nan log-prob) counts as 0 (ratio 1, as TRL does), so a wild token cannot
    give inf or nan.
    """
    if level not in LEVELS:
        raise ValueError(f"unknown importance-sampling level {level!r}; choose one of {', '.join(LEVELS)}")
    if mode not in MODES:
        raise ValueError(f"unknown importance-sampling mode {mode!r}; choose one of {', '.join(MODES)}")
    mask = mask.float()
    valid = mask > 0
    with torch.no_grad():
        log_ratio = finite_log_ratio(old_logprobs.detach(), behaviour_logprobs.detach(), valid)
        if level == "none":
            ones = mask.clone()
            return ImportanceWeights(ones, torch.tensor(1.0), torch.tensor(1.0), torch.tensor(0.0), torch.tensor(1.0))
        if level == "token":
            ratio = torch.exp(log_ratio.clamp(-log_ratio_clamp, log_ratio_clamp))
            units = valid  # statistics over valid tokens
        else:
            seq_log = log_ratio.sum(-1)
            if level == "geometric":
                seq_log = seq_log / mask.sum(-1).clamp(min=1.0)
            ratio = torch.exp(seq_log.clamp(-log_ratio_clamp, log_ratio_clamp)).unsqueeze(-1).expand_as(mask)
            first_column = torch.arange(mask.shape[-1], device=mask.device) == 0
            units = valid.any(-1, keepdim=True) & first_column  # one cell per non-empty sequence
        if mode == "truncate":
            weights = ratio.clamp(max=cap)
            dropped = torch.zeros_like(valid)
        else:
            low = floor if floor is not None else 1.0 / cap
            dropped = (ratio < low) | (ratio > cap)
            weights = torch.where(dropped, 0.0, ratio)
        weights = weights * mask
        n = units.float().sum().clamp(min=1.0)
        ratio_max = max_over(ratio, units)
        return ImportanceWeights(
            weights=weights,
            ratio_mean=(ratio * units).sum() / n,
            ratio_max=ratio_max,
            masked_fraction=(dropped & units).float().sum() / n,
            weight_mean=(weights * units).sum() / n,
        )


def max_over(values: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """The max of `values` where the bool mask `units` is set, 1 when none is: no
    data-dependent branch or indexing, so it stays on the device without a sync."""
    masked = torch.where(units, values, torch.full_like(values, float("-inf"))).amax()
    return torch.where(units.any(), masked, torch.ones_like(masked))


def finite_log_ratio(logprobs: torch.Tensor, other: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """logprobs - other on valid tokens whose difference is finite, 0 elsewhere (padding,
    and tokens where both are -inf or one is nan); gradients flow through the kept ones."""
    diff = logprobs - other
    return torch.where(valid & torch.isfinite(diff), diff, torch.zeros_like(diff))


def mismatch_kl(old_logprobs: torch.Tensor, behaviour_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(behaviour || trainer) per valid token, estimated from the engine's samples
    with Schulman's k3 (r - 1 - log r, r = pi_trainer / pi_behaviour: unbiased, >= 0).
    At the same weights version it measures the train-inference mismatch alone."""
    mask = mask.float()
    with torch.no_grad():
        log_ratio = finite_log_ratio(old_logprobs.detach(), behaviour_logprobs.detach(), mask > 0).clamp(-20.0, 20.0)
        k3 = torch.exp(log_ratio) - 1.0 - log_ratio
        return (k3 * mask).sum() / mask.sum().clamp(min=1.0)
