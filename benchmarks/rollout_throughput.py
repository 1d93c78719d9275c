"""Rollout throughput: the vLLM engine against HF `generate` on the same batch.

Both backends are loaded once, then generate the same arithmetic prompts (n samples
each) in alternating repetitions; prints tokens/s of each (medians) and their ratio.
Target: vLLM at least 3x HF. Run from the repository root:

    .venv/bin/python benchmarks/rollout_throughput.py                 # SmolLM2, the main job's batch: 8 prompts x 8
    .venv/bin/python benchmarks/rollout_throughput.py --smoke         # tiny model, seconds
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import alternate, median, ratio_line  # noqa: E402


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2_135m", help="smollm2_135m | tiny")
    # Defaults: the batch the main job (recipe=grpo) samples each step.
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny model, 4 prompts, 1 repeat: checks it runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.model, args.prompts, args.samples, args.max_new_tokens, args.repeats = "tiny", 4, 2, 8, 1

    from transformers import AutoTokenizer

    from rlhf_platform.config import ModelConfig, TaskConfig
    from rlhf_platform.data import arithmetic_rows
    from rlhf_platform.model_store import resolve_model_dir
    from rlhf_platform.prompts import render_prompt
    from rlhf_platform.sampling import SamplingSpec
    from rlhf_platform.roles.hf_backend import HFBackend
    from rlhf_platform.roles.vllm_backend import VLLMBackend

    model_dir = str(resolve_model_dir(ModelConfig(name=args.model)))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    train, _ = arithmetic_rows(TaskConfig(), seed=0)
    prompts = [render_prompt(tokenizer, row.prompt) for row in train[: args.prompts]]
    spec = SamplingSpec(n=args.samples, temperature=args.temperature, max_new_tokens=args.max_new_tokens, seed=0)
    backends = {"vllm": VLLMBackend(model_dir), "hf": HFBackend(model_dir)}
    tokens: dict[str, int] = {}

    def run(name: str):
        def generate() -> None:
            outputs = backends[name].generate(prompts, spec)
            tokens[name] = sum(len(s.token_ids) for group in outputs for s in group)
        return generate

    seconds = alternate({name: run(name) for name in backends}, args.repeats)
    rates = {}
    for name in backends:
        rates[name] = tokens[name] / median(seconds[name])
        print(f"{name:5s} {tokens[name]:5d} tokens in {median(seconds[name]):7.2f} s (median of {args.repeats})  {rates[name]:8.1f} tokens/s")
    ratio = rates["vllm"] / rates["hf"]
    print(f"model {args.model}, {len(prompts)} prompts x {args.samples} samples, <= {args.max_new_tokens} new tokens, T={args.temperature}")
    print(ratio_line("vllm / hf rollout tokens/s", ratio, ">= 3x", ratio >= 3.0))
    return ratio


if __name__ == "__main__":
    main()
