"""Model-side helpers shared by the trainer and the reference: per-token logprobs."""
from __future__ import annotations

import torch


def token_logprobs(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """log p(input_ids[:, t+1] | input_ids[:, :t+1]) for every t: shape [B, L-1], float32.

    Logits are divided by the sampling `temperature`, so the result matches the
    distribution the rollout engine sampled from.

    Computed with log_softmax in float32 chunks so a large vocabulary does not
    materialise a second [B, L, V] float32 tensor at once.
    """
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, :-1]
    targets = input_ids[:, 1:]
    out = []
    for row in range(logits.shape[0]):
        lp = torch.log_softmax(logits[row].float() / temperature, dim=-1)
        out.append(lp.gather(-1, targets[row].unsqueeze(-1)).squeeze(-1))
    return torch.stack(out)
