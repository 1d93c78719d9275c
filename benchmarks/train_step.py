"""Trainer forward+backward speed on one GRPO group (n samples of one prompt):
full sequences through the model, the LM head over the response window only, and
the shared-prompt path the trainer uses (prompt run once, its KV cache repeated).

    .venv/bin/python benchmarks/train_step.py --samples 8 --prompt-len 45 --response-len 20

Prints seconds per group for each variant and the speed-up over full sequences,
measured in this run. `--dtypes float32,bfloat16` adds bf16 (very slow on CPUs
without AVX512-BF16/AMX).
"""
from __future__ import annotations

import argparse
import time

import torch


def best_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats + 1):  # the first is a warm-up
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return min(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2_135m")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, default=45)
    parser.add_argument("--response-len", type=int, default=20)
    parser.add_argument("--dtypes", default="float32")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM

    from rlhf_platform.config import ModelConfig
    from rlhf_platform.model_store import resolve_model_dir
    from rlhf_platform.modeling import shared_prompt_logprobs, token_logprobs, use_cores

    print(f"torch threads: {use_cores()}")
    model_dir = resolve_model_dir(ModelConfig(name=args.model))
    n, p, r = args.samples, args.prompt_len, args.response_len
    for dtype in args.dtypes.split(","):
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype))
        generator = torch.Generator().manual_seed(0)
        prompt = torch.randint(0, model.config.vocab_size, (p,), generator=generator)
        responses = torch.randint(0, model.config.vocab_size, (n, r), generator=generator)
        full_ids = torch.cat([prompt.expand(n, p), responses], dim=1)
        ones = torch.ones_like(full_ids)

        def run(start: int | None) -> None:
            if start is None:
                out = shared_prompt_logprobs(model, prompt, responses, torch.ones(n, r))
            else:
                out = token_logprobs(model, full_ids, ones, 1.0, start)[:, p - 1 :]
            out.sum().backward()
            model.zero_grad(set_to_none=True)

        variants = (("full sequences", 0), ("response window", p - 1), ("shared prompt", None))
        baseline = None
        for label, start in variants:
            seconds = best_seconds(lambda: run(start), args.repeats)
            baseline = baseline or seconds
            print(
                f"{dtype:8s} {label:16s} {seconds:7.2f} s / group of {n} x ({p}+{r}) tokens"
                f"  {baseline / seconds:5.2f}x vs full sequences",
                flush=True,
            )


if __name__ == "__main__":
    main()
