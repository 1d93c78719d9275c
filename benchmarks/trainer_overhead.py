"""Trainer overhead: our DeepSpeed ZeRO Trainer role vs a plain torch training loop.

Both train the same model on the same GRPO batch (arithmetic prompts, n responses
each, the same micro-batches): the plain loop runs the same shared-prompt forward and
clipped policy loss, backward, gradient clipping and torch AdamW, without DeepSpeed
or the role. Alternating steps, medians of tokens/s; target: the Trainer at least
0.9x the plain loop. One rank, in this process. Run from the repository root:

    .venv/bin/python benchmarks/trainer_overhead.py            # SmolLM2-135M, 8 prompts x 8
    .venv/bin/python benchmarks/trainer_overhead.py --smoke    # tiny model
"""
from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import alternate, median, ratio_line  # noqa: E402


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2_135m", help="smollm2_135m | tiny")
    parser.add_argument("--model-dir", default=None, help="an HF model directory instead of --model")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--response-len", type=int, default=24)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--zero-stage", type=int, default=0, help="the trainer's ZeRO stage (cluster=local uses 0)")
    parser.add_argument("--smoke", action="store_true", help="tiny model, 1 repeat: checks it runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.model, args.prompts, args.samples, args.response_len, args.repeats = "tiny", 2, 4, 8, 1

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from rlhf_platform.algos.importance import importance_weights
    from rlhf_platform.algos.losses import clipped_policy_loss
    from rlhf_platform.batching import collate_group, prompt_groups
    from rlhf_platform.config import AlgoConfig, ModelConfig, TaskConfig, TrainerConfig
    from rlhf_platform.data import arithmetic_rows
    from rlhf_platform.devices import role_device
    from rlhf_platform.modeling import pad_token_id, shared_prompt_logprobs, use_cores
    from rlhf_platform.model_store import resolve_model_dir
    from rlhf_platform.prompts import render_prompt
    from rlhf_platform.roles.executor import free_port
    from rlhf_platform.roles.trainer import Trainer
    from rlhf_platform.types import TrainBatch, Trajectory, UpdatePlan

    threads = use_cores()
    model_dir = args.model_dir or str(resolve_model_dir(ModelConfig(name=args.model)))
    device = role_device()  # a GPU when there is one: both variants train there (bf16 autocast, fp32 weights)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows, _ = arithmetic_rows(TaskConfig(), seed=0)
    rng = random.Random(0)
    vocab = AutoConfig.from_pretrained(model_dir).vocab_size  # the tiny model's is small
    trajectories = [
        Trajectory(
            f"p{i}", f"g{i}", render_prompt(tokenizer, row.prompt),
            [rng.randrange(100, min(vocab, 20000)) for _ in range(args.response_len)], [-2.0] * args.response_len, 0, "length",
            advantage=rng.gauss(0.0, 1.0),
        )
        for i, row in enumerate(rows[: args.prompts])
        for _ in range(args.samples)
    ]
    tokens = sum(len(t.prompt_token_ids) + t.response_length for t in trajectories)
    denominator = float(sum(t.response_length for t in trajectories))
    cfg = TrainerConfig(lr=1e-6, micro_batch_size=args.micro_batch, zero_stage=args.zero_stage)

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    trainer = Trainer(model_dir, cfg, AlgoConfig())
    trainer.setup()

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    pad = pad_token_id(model_dir)

    def plain_step() -> None:
        model.train()
        for chunk in prompt_groups(trajectories, cfg.micro_batch_size):
            batch = collate_group(chunk, pad).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logprobs = shared_prompt_logprobs(model, batch.prompt_ids, batch.response_ids, batch.response_mask, 1.0)
            weights = importance_weights(logprobs, batch.behaviour_logprobs, batch.response_mask, "token", "truncate", 2.0)
            out = clipped_policy_loss(
                logprobs, logprobs.detach(), batch.advantages, batch.response_mask,
                is_weights=weights.weights, denominator=denominator,
            )
            out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def trainer_step() -> None:
        trainer.train_step(UpdatePlan([TrainBatch(trajectories, 0, 0)], [denominator]))

    peak_gib: dict[str, float] = {}

    def measured(name, step):
        """`step`, recording its peak GPU memory (on a GPU)."""
        def run() -> None:
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
                peak_gib[name] = max(peak_gib.get(name, 0.0), torch.cuda.max_memory_allocated() / 2**30)
        return run

    seconds = alternate({"deepspeed trainer": measured("deepspeed trainer", trainer_step), "plain torch": measured("plain torch", plain_step)}, args.repeats)
    rates = {name: tokens / median(values) for name, values in seconds.items()}
    print(
        f"model {args.model_dir or args.model}, {len(trajectories)} sequences ({args.prompts} prompts x {args.samples}), {tokens} tokens a step, "
        f"micro-batches of {args.micro_batch}, ZeRO stage {args.zero_stage}, {threads} threads, on {device}"
    )
    for name, rate in rates.items():
        memory = f"  peak {peak_gib[name]:.2f} GiB" if name in peak_gib else ""
        print(f"{name:18s} {median(seconds[name]):7.2f} s/step (median of {args.repeats})  {rate:8.1f} tokens/s{memory}")
    ratio = rates["deepspeed trainer"] / rates["plain torch"]
    print(ratio_line("deepspeed trainer / plain torch tokens/s", ratio, ">= 0.9x", ratio >= 0.9))
    torch.distributed.destroy_process_group()
    return ratio


if __name__ == "__main__":
    main()
