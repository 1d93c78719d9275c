"""Model-side helpers shared by the trainer and the reference: per-token logprobs."""
from __future__ import annotations

import torch


def token_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    temperature: float = 1.0,
    start: int = 0,
) -> torch.Tensor:
    """log p(input_ids[:, t+1] | input_ids[:, :t+1]) for every t: shape [B, L-1], float32.

    Logits are divided by the sampling `temperature`, so the result matches the
    distribution the rollout engine sampled from.

    Only positions t >= `start` are computed (earlier ones are 0): the LM head and
    log-softmax over a 49k vocabulary are a fifth of a small model's compute, and
    prompt positions never enter the loss. Pass the first response position of the
    batch (`PaddedBatch.first_response_position`).

    log_softmax runs in float32 one row at a time so a large vocabulary does not
    materialise a second [B, L, V] float32 tensor at once.
    """
    length = input_ids.shape[1]
    start = max(0, min(start, length - 1))
    keep = length - start  # logits for positions start .. L-1; the last predicts nothing
    logits = model(
        input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=keep
    ).logits[:, :-1]
    targets = input_ids[:, start + 1 :]
    out = torch.zeros(input_ids.shape[0], length - 1, dtype=torch.float32, device=logits.device)
    for row in range(logits.shape[0]):
        lp = torch.log_softmax(logits[row].float() / temperature, dim=-1)
        out[row, start:] = lp.gather(-1, targets[row].unsqueeze(-1)).squeeze(-1)
    return out


def resolve_dtype(name: str) -> str:
    """The dtype a role uses for config value `name`: "auto" is bfloat16 on a GPU and
    float32 on a CPU (CPUs without AVX512-BF16/AMX run bf16 matmuls on a slow
    reference kernel: a SmolLM2 train step took over 20x longer than in fp32 here)."""
    if name != "auto":
        return name
    return "bfloat16" if torch.cuda.is_available() else "float32"


def use_cores(num_threads: int | None = None) -> int:
    """Set torch's intra-op threads to `num_threads`, or to every core this process may
    run on. Ray sets OMP_NUM_THREADS=1 in actors that reserve no CPUs, which halved the
    trainer's speed on 2 cores. Returns the thread count."""
    import os

    threads = num_threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    return threads
