"""Model-side helpers shared by the trainer and the reference: per-token logprobs."""
from __future__ import annotations

import torch

from rlhf_platform.batching import response_mask, response_width, sequence_batch
from rlhf_platform.devices import module_device, to_device


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


def _shared_prompt_forward(
    model: torch.nn.Module, prompt_ids: torch.Tensor, response_ids: torch.Tensor, response_mask: torch.Tensor, field: str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run one prompt once and its n responses on a repeated copy of its KV cache.

    Returns `field` ("logits" of a causal LM, "last_hidden_state" of a base model) at the
    positions that predict each response token: the prompt's last position [D] (shared
    by all n samples, for response token 0) and the responses' own positions
    [n, R-1, D] (for tokens 1..R-1; None when R is 1).
    """
    n, length = response_ids.shape
    keep = {"logits_to_keep": 1} if field == "logits" else {}
    prompt = model(input_ids=prompt_ids.unsqueeze(0), use_cache=True, **keep)
    first = getattr(prompt, field)[0, -1]
    if length == 1:
        return first, None
    cache = prompt.past_key_values
    cache.batch_repeat_interleave(n)
    attention = torch.cat([torch.ones(n, len(prompt_ids), dtype=response_mask.dtype, device=response_mask.device), response_mask], dim=1)
    rest = model(
        input_ids=response_ids[:, :-1], attention_mask=attention[:, :-1].long(), past_key_values=cache, use_cache=True
    )
    return first, getattr(rest, field)


def shared_prompt_logprobs(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
    temperature: float = 1.0,
    with_entropy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Logprobs of n responses to one prompt, running the prompt through the model once.

    `prompt_ids` is [P]; `response_ids` and `response_mask` are [n, R] (right-padded).
    Returns [n, R]: entry (i, j) is log p(response_ids[i, j] | prompt, response_ids[i, :j])
    after temperature, 0 where the mask is 0. With `with_entropy`, also the entropy
    [n, R] of each of those next-token distributions (for an entropy bonus).

    The prompt's key/value cache is computed once with gradients and repeated for the
    n samples, so the result and its gradient equal `token_logprobs` on the n full
    sequences while the prompt costs one forward/backward instead of n. With GRPO's
    8 samples of a 45-token prompt and ~20-token replies this is 2.5x less compute.
    log_softmax runs one row at a time so no second float32 [n, R, V] tensor exists.
    """
    n, length = response_ids.shape
    first_logits, rest_logits = _shared_prompt_forward(model, prompt_ids, response_ids, response_mask, "logits")
    out = torch.zeros(n, length, dtype=torch.float32, device=first_logits.device)
    entropy = torch.zeros_like(out) if with_entropy else None
    first = torch.log_softmax(first_logits.float() / temperature, dim=-1)
    out[:, 0] = first[response_ids[:, 0]]
    if entropy is not None:
        entropy[:, 0] = -(first.exp() * first).sum(-1)
    if rest_logits is not None:
        for row in range(n):
            lp = torch.log_softmax(rest_logits[row].float() / temperature, dim=-1)
            out[row, 1:] = lp.gather(-1, response_ids[row, 1:].unsqueeze(-1)).squeeze(-1)
            if entropy is not None:
                entropy[row, 1:] = -(lp.exp() * lp).sum(-1)
    mask = response_mask.to(out.dtype)
    return (out * mask, entropy * mask) if entropy is not None else out * mask


def response_logprobs(
    model: torch.nn.Module, trajectories: list, pad_id: int, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Response-aligned logprobs [B, R] and mask [B, R] of replies to different prompts,
    all in one forward over the right-padded full sequences.

    Entry (i, j) is log p(response token j of row i | its prompt and earlier reply
    tokens), as `shared_prompt_logprobs` gives for one prompt. Use it where prompts
    differ (DPO pairs): one batched forward instead of one per prompt.
    """
    ids, attention = to_device(module_device(model), *sequence_batch(trajectories, pad_id))
    prompt_lengths = [len(t.prompt_token_ids) for t in trajectories]
    if min(prompt_lengths) < 1:
        raise ValueError("every trajectory needs a non-empty prompt")
    start = min(prompt_lengths) - 1  # first position that predicts a response token
    full = token_logprobs(model, ids, attention, temperature, start=start)
    width = response_width(trajectories)
    mask = response_mask(trajectories, width)
    out = torch.zeros(len(trajectories), width, dtype=torch.float32, device=full.device)
    for row, (traj, offset) in enumerate(zip(trajectories, prompt_lengths)):
        length = traj.response_length
        if length:
            out[row, :length] = full[row, offset - 1 : offset - 1 + length]
    return out, mask.to(out.device)


def shared_prompt_hidden_states(
    backbone: torch.nn.Module, prompt_ids: torch.Tensor, response_ids: torch.Tensor, response_mask: torch.Tensor
) -> torch.Tensor:
    """Last hidden states [n, R, H] of a base model (no LM head) at the positions that
    predict each response token, the prompt run once as in `shared_prompt_logprobs`.
    A value head on these gives V(state before response token j)."""
    n, length = response_ids.shape
    first, rest = _shared_prompt_forward(backbone, prompt_ids, response_ids, response_mask, "last_hidden_state")
    first = first.unsqueeze(0).expand(n, -1).unsqueeze(1)
    return first if rest is None else torch.cat([first, rest], dim=1)


def pad_token_id(model_dir: str) -> int:
    """The tokenizer's pad id, or its EOS id when it has no pad token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def resolve_dtype(name: str) -> str:
    """The dtype a role uses for config value `name`: "auto" is bfloat16 on a GPU and
    float32 on a CPU (CPUs without AVX512-BF16/AMX run bf16 matmuls on a slow
    reference kernel: a SmolLM2 train step took over 20x longer than in fp32 here)."""
    if name != "auto":
        return name
    return "bfloat16" if torch.cuda.is_available() else "float32"


def use_cores(num_threads: int | None = None, cores: list[int] | None = None) -> int:
    """Pin this process to `cores` (when given: roles on separate cores of one machine
    stop competing), then set torch's intra-op threads to `num_threads`, or to every core
    this process may run on. Ray sets OMP_NUM_THREADS=1 in actors that reserve no CPUs,
    which halved the trainer's speed on 2 cores. Returns the thread count."""
    import os

    if cores:
        os.sched_setaffinity(0, cores)
    threads = num_threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    return threads
