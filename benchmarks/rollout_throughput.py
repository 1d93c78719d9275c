"""Rollout throughput: the vLLM engine against HF `generate` on the same batch.

Prints tokens/s of each backend and their ratio, measured in this run, for the
arithmetic prompts of the default task. Run from the repository root:

    .venv/bin/python benchmarks/rollout_throughput.py --prompts 32 --samples 4 --max-new-tokens 24
"""
from __future__ import annotations

import argparse
import time


def measure(backend, prompts: list[list[int]], spec) -> tuple[int, float]:
    started = time.perf_counter()
    outputs = backend.generate(prompts, spec)
    seconds = time.perf_counter() - started
    return sum(len(s.token_ids) for group in outputs for s in group), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2_135m", help="smollm2_135m | tiny")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--backends", default="vllm,hf", help="comma-separated: vllm, hf")
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from rlhf_platform.config import ModelConfig, TaskConfig
    from rlhf_platform.data import arithmetic_rows
    from rlhf_platform.models import resolve_model_dir
    from rlhf_platform.prompts import render_prompt
    from rlhf_platform.roles.generation import SamplingSpec

    model_dir = str(resolve_model_dir(ModelConfig(name=args.model)))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    train, _ = arithmetic_rows(TaskConfig(), seed=0)
    prompts = [render_prompt(tokenizer, row.prompt) for row in train[: args.prompts]]
    spec = SamplingSpec(n=args.samples, temperature=1.0, max_new_tokens=args.max_new_tokens, seed=0)

    rates: dict[str, float] = {}
    for name in args.backends.split(","):
        started = time.perf_counter()
        if name == "vllm":
            from rlhf_platform.roles.vllm_backend import VLLMBackend

            backend = VLLMBackend(model_dir, dtype=args.dtype)
        else:
            from rlhf_platform.roles.hf_backend import HFBackend

            backend = HFBackend(model_dir, dtype=args.dtype)
        start_s = time.perf_counter() - started
        measure(backend, prompts[:2], spec)  # warm-up
        tokens, seconds = measure(backend, prompts, spec)
        rates[name] = tokens / seconds
        print(f"{name:5s} start {start_s:5.1f} s  {tokens} tokens in {seconds:6.1f} s  {rates[name]:7.1f} tokens/s", flush=True)
        del backend
    if "vllm" in rates and "hf" in rates:
        print(f"vllm / hf throughput ratio: {rates['vllm'] / rates['hf']:.2f}x")


if __name__ == "__main__":
    main()
