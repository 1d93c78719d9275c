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
    batch.

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


def shared_prompt_logprobs(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Logprobs of n responses to one prompt, running the prompt through the model once.

    `prompt_ids` is [P]; `response_ids` and `response_mask` are [n, R] (right-padded).
    Returns [n, R]: entry (i, j) is log p(response_ids[i, j] | prompt, response_ids[i, :j])
    after temperature, 0 where the mask is 0.

    The prompt's key/value cache is computed once with gradients and repeated for the
    n samples, so the result and its gradient equal `token_logprobs` on the n full
    sequences while the prompt costs one forward/backward instead of n. With GRPO's
    8 samples of a 45-token prompt and ~20-token replies this is 2.5x less compute.
    """
    n, length = response_ids.shape
    prompt = model(input_ids=prompt_ids.unsqueeze(0), use_cache=True, logits_to_keep=1)
    cache = prompt.past_key_values
    cache.batch_repeat_interleave(n)
    first = torch.log_softmax(prompt.logits[0, -1].float() / temperature, dim=-1)
    out = torch.zeros(n, length, dtype=torch.float32, device=first.device)
    out[:, 0] = first[response_ids[:, 0]]
    if length > 1:
        attention = torch.cat([torch.ones(n, len(prompt_ids), dtype=response_mask.dtype), response_mask], dim=1)
        logits = model(
            input_ids=response_ids[:, :-1],
            attention_mask=attention[:, :-1].long(),
            past_key_values=cache,
            use_cache=True,
        ).logits
        for row in range(n):
            lp = torch.log_softmax(logits[row].float() / temperature, dim=-1)
            out[row, 1:] = lp.gather(-1, response_ids[row, 1:].unsqueeze(-1)).squeeze(-1)
    return out * response_mask.to(out.dtype)


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
