"""Time to accuracy: our GRPO recipe vs TRL's GRPOTrainer on the same machine.

Both train SmolLM2-135M-Instruct on the arithmetic task's training prompts with the
same settings: 8 prompts x 8 samples a step, learning rate 2e-5 (constant), AdamW
without weight decay, gradient norm clipped at 1, clip epsilon 0.2, no KL, group
mean/std advantages, token-mean loss over the batch (TRL `loss_type="dapo"`), at
most 24 new tokens at temperature 0.7, fp32, the same reward (`math_answer`). TRL
runs with its defaults otherwise (HF `generate`), gradient checkpointing off; ours
runs the main job's `cluster=local` (vLLM engine, one DeepSpeed rank, synchronous).

After every step each run's weights are scored by the same evaluator: greedy replies
through a vLLM engine on the 100 held-out prompts. Evaluating (and, for TRL, saving
the weights to evaluate later) is not on the training clock, which starts at the
first step; start-up (model load, Ray, vLLM, DeepSpeed) is reported separately.
Each run trains until its clock passes the budget. Printed: accuracy per step with
its clock, the time each reached the target accuracy, the accuracy each had when
the budget ran out, and last the speed-up to the target (TRL's time / ours).

    .venv/bin/python benchmarks/vs_trl.py                    # SmolLM2-135M, target 60%, budget 600 s each
    .venv/bin/python benchmarks/vs_trl.py --smoke            # tiny model, 2 steps each, 8 eval prompts
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import ratio_line  # noqa: E402

SETTINGS = {"prompts_per_step": 8, "samples_per_prompt": 8, "lr": 2.0e-5, "max_new_tokens": 24, "temperature": 0.7}


class BudgetSpent(Exception):
    """Raised from our step callback once the training clock passes the budget."""


def load_task(model: str, smoke: bool, workdir: Path, max_steps: int):
    """The run's config (the main job's, with `model`) and its tokenised train/eval prompts."""
    from hydra import compose, initialize_config_dir
    from transformers import AutoTokenizer

    from rlhf_platform.commands.train import CONF_DIR
    from rlhf_platform.config import to_config
    from rlhf_platform.data import task_rows
    from rlhf_platform.model_store import resolve_model_dir
    from rlhf_platform.prompts import tokenize_rows

    overrides = [
        f"model={model}",
        f"rollout.prompts_per_step={SETTINGS['prompts_per_step']}",
        f"rollout.samples_per_prompt={SETTINGS['samples_per_prompt']}",
        f"rollout.max_new_tokens={SETTINGS['max_new_tokens']}",
        f"rollout.temperature={SETTINGS['temperature']}",
        f"trainer.lr={SETTINGS['lr']}",
        f"trainer.max_steps={max_steps}",  # unless the budget stops it first
        "logger.backend=none",
        "ray.include_dashboard=false",
    ]
    if smoke:
        overrides += ["rollout.prompts_per_step=2", "rollout.samples_per_prompt=4", "rollout.max_new_tokens=8"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = to_config(compose("config", overrides=overrides))
    model_dir = resolve_model_dir(cfg.model)
    train_rows, eval_rows = task_rows(cfg.task, cfg.run.seed, workdir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    max_prompt = cfg.model.max_model_len - cfg.rollout.max_new_tokens
    train_prompts, _ = tokenize_rows(tokenizer, train_rows, max_prompt)
    eval_prompts, _ = tokenize_rows(tokenizer, eval_rows, max_prompt)
    if smoke:
        eval_prompts = eval_prompts[:8]
    return cfg, model_dir, train_prompts, eval_prompts


def trl_worker(cfg, model_dir: Path, train_prompts, out: Path, budget_s: float) -> None:
    """Train with TRL's GRPOTrainer in this process; after each step save the weights
    (off the clock) and the step's clock to `out`."""
    import torch
    from datasets import Dataset
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rlhf_platform.modeling import use_cores
    from rlhf_platform.prompts import render_text
    from rlhf_platform.rewards.math import math_answer
    from rlhf_platform.weight_sync import engine_weights

    use_cores()
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    # The prompts as our engine sees them (chat template applied, as text TRL tokenises
    # without adding special tokens).
    dataset = Dataset.from_list([{"prompt": render_text(tokenizer, p.text), "answer": p.answer} for p in train_prompts])
    n = cfg.rollout.samples_per_prompt
    batch = cfg.rollout.prompts_per_step * n
    micro = min(cfg.trainer.micro_batch_size, batch)
    args = GRPOConfig(
        output_dir=str(out / "trl"),
        use_cpu=True,
        bf16=False,
        seed=cfg.run.seed,
        max_steps=cfg.trainer.max_steps,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=batch // micro,  # one optimizer step per 8 x 8 generation batch
        num_generations=n,
        max_completion_length=cfg.rollout.max_new_tokens,
        temperature=cfg.rollout.temperature,
        learning_rate=cfg.trainer.lr,
        lr_scheduler_type="constant",
        weight_decay=cfg.trainer.weight_decay,
        max_grad_norm=cfg.trainer.grad_clip,
        epsilon=cfg.algo.policy.clip_eps_low,
        epsilon_high=cfg.algo.policy.clip_eps_high,
        beta=cfg.algo.kl.coef,
        loss_type="dapo",
        scale_rewards="group",
        gradient_checkpointing=False,
        save_strategy="no",
        report_to="none",
        logging_steps=1,
        dataloader_num_workers=0,
    )
    clock = {"train": 0.0, "mark": 0.0}
    steps: list[dict] = []

    class SaveEachStep(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            clock["mark"] = time.perf_counter()
            steps.append({"step": 0, "clock_s": 0.0, "startup_s": clock["mark"] - started})

        def on_step_end(self, args, state, control, model=None, **kwargs):
            clock["train"] += time.perf_counter() - clock["mark"]
            path = out / f"step{state.global_step}.safetensors"
            weights = engine_weights(model.state_dict(), bool(getattr(model.config, "tie_word_embeddings", False)))
            save_file({k: v.detach().contiguous() for k, v in weights.items()}, str(path))
            steps.append({"step": state.global_step, "clock_s": clock["train"], "weights": str(path)})
            (out / "trl_steps.json").write_text(json.dumps(steps))
            if clock["train"] >= budget_s:
                control.should_training_stop = True
            clock["mark"] = time.perf_counter()

    trainer = GRPOTrainer(
        model=model, reward_funcs=math_answer, args=args, train_dataset=dataset,
        processing_class=tokenizer, callbacks=[SaveEachStep()],
    )
    trainer.train()


def evaluate_saved(executor, cfg, model_dir: Path, eval_prompts, saved: list[dict]) -> list[float]:
    """Greedy held-out accuracy of each saved weights file (None: the base model) through
    one vLLM Rollout Engine, loading each through the weight-sync bus; the answers are
    scored like our run's (the Reward service and the task's check)."""
    from safetensors.torch import load_file

    from rlhf_platform.recipes.evaluate import evaluate
    from rlhf_platform.recipes.run_roles import RunRoles
    from rlhf_platform.roles.reward import RewardService
    from rlhf_platform.roles.rollout_engine import RolloutEngine
    from rlhf_platform.weight_sync import WeightSyncBus, snapshot_of

    transport = executor.transport()
    bus = executor.start_role(WeightSyncBus, "eval-bus")
    engine = executor.start_role(
        RolloutEngine, "eval-engine", "eval-engine", "vllm", str(model_dir), bus, transport,
        dtype=cfg.rollout.dtype, max_model_len=cfg.model.max_model_len, seed=cfg.run.seed,
        kv_cache_gib=cfg.rollout.kv_cache_gib,
    )
    reward = executor.start_role(RewardService, "eval-reward", cfg.reward.functions, cfg.reward)
    roles = RunRoles(executor, bus, None, [engine], reward, None, None, None)
    accuracies = []
    for version, row in enumerate(saved):
        if row.get("weights"):
            weights = load_file(row["weights"])
            bus.publish(snapshot_of(weights, version, transport)).result()
            del weights
        result = evaluate(roles, cfg, eval_prompts, version)
        accuracies.append(result.accuracy)
        print(f"  TRL step {row['step']:3d}  clock {row['clock_s']:7.1f} s  held-out accuracy {100 * result.accuracy:5.1f}%", flush=True)
    roles.shutdown()
    return accuracies


def run_ours(executor, cfg, model_dir: Path, train_prompts, eval_prompts, budget_s: float) -> list[dict]:
    """Our GRPO recipe (the main job's roles); after each step the engine, which
    already serves the new weights, is evaluated off the clock."""
    from rlhf_platform.recipes import online_rl
    from rlhf_platform.recipes.evaluate import evaluate
    from rlhf_platform.recipes.run_roles import start_roles

    started = time.perf_counter()
    roles = start_roles(executor, cfg, model_dir, train_prompts)
    before = evaluate(roles, cfg, eval_prompts, 0)
    rows = [{"step": 0, "clock_s": 0.0, "accuracy": before.accuracy, "startup_s": time.perf_counter() - started}]
    print(f"  ours step   0  clock     0.0 s  held-out accuracy {100 * before.accuracy:5.1f}%", flush=True)
    clock = {"train": 0.0, "mark": time.perf_counter()}

    def on_step(step: int, metrics: dict[str, float]) -> None:
        clock["train"] += time.perf_counter() - clock["mark"]
        result = evaluate(roles, cfg, eval_prompts, int(metrics["weight_version"]))
        rows.append({"step": step, "clock_s": clock["train"], "accuracy": result.accuracy})
        print(f"  ours step {step:3d}  clock {clock['train']:7.1f} s  held-out accuracy {100 * result.accuracy:5.1f}%", flush=True)
        if clock["train"] >= budget_s:
            raise BudgetSpent
        clock["mark"] = time.perf_counter()

    try:
        online_rl.train(roles, cfg, on_step)
    except BudgetSpent:
        pass
    roles.shutdown()
    return rows


def time_to(rows: list[dict], target: float) -> float | None:
    """The training clock at the first step whose evaluation is at or above `target`."""
    return next((r["clock_s"] for r in rows if r["step"] > 0 and r["accuracy"] >= target), None)


def within_budget(rows: list[dict], budget_s: float) -> dict:
    """The last evaluated step whose clock is within the budget."""
    return [r for r in rows if r["clock_s"] <= budget_s][-1]


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2_135m", help="smollm2_135m | tiny")
    parser.add_argument("--target", type=float, default=0.6, help="held-out accuracy to reach")
    parser.add_argument("--budget-s", type=float, default=600.0, help="training-clock budget of each run")
    parser.add_argument("--max-steps", type=int, default=40, help="steps at most, whatever the budget")
    parser.add_argument("--smoke", action="store_true", help="tiny model, 2 steps each: checks it runs")
    parser.add_argument("--trl-worker", help=argparse.SUPPRESS)  # internal: the TRL run's output folder
    args = parser.parse_args(argv)
    if args.smoke:
        args.model, args.max_steps, args.budget_s, args.target = "tiny", 2, 1e9, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        cfg, model_dir, train_prompts, eval_prompts = load_task(args.model, args.smoke, Path(tmp), args.max_steps)
        if args.trl_worker:
            trl_worker(cfg, model_dir, train_prompts, Path(args.trl_worker), args.budget_s)
            return 0.0
        # TRL first, in its own process (its threads and memory gone before ours start).
        out = Path(tmp) / "trl-run"
        out.mkdir()
        print(f"TRL GRPOTrainer: {args.model}, budget {args.budget_s:.0f} s", flush=True)
        own = [sys.executable, __file__, "--model", args.model, "--budget-s", str(args.budget_s),
               "--max-steps", str(args.max_steps), "--trl-worker", str(out)] + (["--smoke"] if args.smoke else [])
        subprocess.run(own, check=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        trl_rows = json.loads((out / "trl_steps.json").read_text())

        import ray

        from rlhf_platform.roles.ray_executor import RayExecutor

        executor = RayExecutor(cfg.ray)  # connects Ray
        try:
            for row, accuracy in zip(trl_rows, evaluate_saved(executor, cfg, model_dir, eval_prompts, trl_rows)):
                row["accuracy"] = accuracy
            print(f"ours (recipe=grpo, cluster=local): {args.model}, budget {args.budget_s:.0f} s", flush=True)
            our_rows = run_ours(executor, cfg, model_dir, train_prompts, eval_prompts, args.budget_s)
        finally:
            ray.shutdown()

    print(f"settings: {cfg.rollout.prompts_per_step} prompts x {cfg.rollout.samples_per_prompt} samples a step, "
          f"lr {cfg.trainer.lr:g}, <= {cfg.rollout.max_new_tokens} new tokens at T={cfg.rollout.temperature}; "
          f"{len(eval_prompts)} held-out prompts, greedy")
    results = {}
    for name, rows in (("TRL", trl_rows), ("ours", our_rows)):
        steps = rows[-1]["step"]
        per_step = rows[-1]["clock_s"] / max(steps, 1)
        reached = time_to(rows, args.target)
        last = within_budget(rows, args.budget_s)
        results[name] = reached
        print(f"{name:5s} start-up {rows[0]['startup_s']:6.1f} s, {steps} steps, {per_step:6.1f} s/step; "
              f"reached {100 * args.target:.0f}% at {'never' if reached is None else f'{reached:.1f} s'}; "
              f"accuracy {100 * rows[0]['accuracy']:.1f}% -> {100 * last['accuracy']:.1f}% within the budget (step {last['step']})")
    ours, trl = results["ours"], results["TRL"]
    if ours is None:
        print(ratio_line("TRL time / our time to the target accuracy", 0.0, ">= 2x", False))
        return 0.0
    if trl is None:  # TRL never got there: its whole clock is a lower bound
        bound = max(trl_rows[-1]["clock_s"], 1e-9) / max(ours, 1e-9)
        print(ratio_line("TRL time / our time to the target accuracy (TRL never reached it: a lower bound)", bound, ">= 2x", bound >= 2.0))
        return bound
    ratio = trl / max(ours, 1e-9)
    print(ratio_line("TRL time / our time to the target accuracy", ratio, ">= 2x", ratio >= 2.0))
    return ratio


if __name__ == "__main__":
    main()
