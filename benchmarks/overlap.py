"""Overlap: the pipeline's step time, synchronous vs asynchronous, against the ideal.

One pipeline (real Ray, vLLM engine, DeepSpeed trainer) with the rollout engine pinned
to one set of cores and the trainer to another. Rounds of GRPO steps alternate between
synchronous (`max_staleness=0`: sample, then train) and asynchronous
(`max_staleness=1`: the next batch samples while this one trains). From the
synchronous rounds: T_rollout (sampling + scoring of a batch) and T_train (everything
else in a step: advantages, the optimizer step, publishing weights). The ideal step
is max(T_rollout, T_train); target: asynchronous steps within 1.15x of it. A warm-up
round comes first and is not counted, nor is the first step of each round (filling
the pipeline); medians. Run from the
repository root:

    .venv/bin/python benchmarks/overlap.py                  # SmolLM2-135M, 2 cores: rollout on 0, trainer on 1
    .venv/bin/python benchmarks/overlap.py --smoke          # tiny model
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import median, ratio_line  # noqa: E402


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2_135m", help="smollm2_135m | tiny")
    parser.add_argument("--steps", type=int, default=4, help="steps per round (the first is not counted)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each mode, alternating")
    parser.add_argument("--warmup-steps", type=int, default=3, help="synchronous steps first, not counted")
    parser.add_argument("--rollout-cores", default="0")
    parser.add_argument("--trainer-cores", default="1")
    parser.add_argument("overrides", nargs="*", help="more rlhf-train overrides, e.g. rollout.prompts_per_step=8")
    parser.add_argument("--smoke", action="store_true", help="tiny model, 1 round of 2 steps: checks it runs")
    args = parser.parse_args(argv)
    smoke = ["rollout.prompts_per_step=4", "rollout.samples_per_prompt=4", "rollout.max_new_tokens=8"] if args.smoke else []
    if args.smoke:
        args.model, args.steps, args.rounds, args.warmup_steps = "tiny", 2, 1, 1

    import ray
    from hydra import compose, initialize_config_dir

    from rlhf_platform.commands.train import CONF_DIR
    from rlhf_platform.config import to_config
    from rlhf_platform.data import task_rows
    from rlhf_platform.model_store import resolve_model_dir
    from rlhf_platform.prompts import tokenize_rows
    from rlhf_platform.recipes import online_rl
    from rlhf_platform.recipes.checkpointing import RunState
    from rlhf_platform.recipes.run_roles import start_roles
    from rlhf_platform.roles.ray_executor import RayExecutor
    from transformers import AutoTokenizer

    overrides = [
        f"model={'tiny' if args.model == 'tiny' else 'smollm2_135m'}",
        f"rollout.cpu_cores=[{args.rollout_cores}]",
        f"trainer.cpu_cores=[{args.trainer_cores}]",
        "rollout.max_staleness=1",  # the freshness filter admits one version behind; rounds set the mode
        "logger.backend=none",
        "ray.include_dashboard=false",
        *smoke,
        *args.overrides,
    ]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = to_config(compose("config", overrides=overrides))
    model_dir = resolve_model_dir(cfg.model)
    with tempfile.TemporaryDirectory() as workdir:  # the task's parquet files
        train_rows, _ = task_rows(cfg.task, cfg.run.seed, Path(workdir))
    prompts, _ = tokenize_rows(AutoTokenizer.from_pretrained(model_dir), train_rows, cfg.model.max_model_len)
    executor = RayExecutor(cfg.ray)  # connects Ray
    steps: dict[str, list[tuple[float, dict]]] = {"sync": [], "async": []}
    try:
        roles = start_roles(executor, cfg, model_dir, prompts)
        version = 0
        # The first steps after start-up ran slower here (28, 24, 20 s, then 17-19 s
        # synchronous): a warm-up round, not counted, then ABBA-ordered rounds.
        modes = ["warm-up"] + [("sync", "async", "async", "sync")[r % 4] for r in range(2 * args.rounds)]
        for round_, mode in enumerate(modes):
            staleness = 1 if mode == "async" else 0
            run_cfg = dataclasses.replace(
                cfg,
                rollout=dataclasses.replace(cfg.rollout, max_staleness=staleness),
                trainer=dataclasses.replace(cfg.trainer, max_steps=args.warmup_steps if mode == "warm-up" else args.steps),
            )
            marks = [time.perf_counter()]
            timed: list[tuple[float, dict]] = []

            def on_step(step: int, metrics: dict) -> None:
                now = time.perf_counter()
                timed.append((now - marks[-1], metrics))
                marks.append(now)

            _, versions = online_rl.train(roles, run_cfg, on_step, start=RunState(step=0, weight_version=version))
            version = versions.trained
            if mode != "warm-up":
                steps[mode].extend(timed[1:])  # the first step fills the pipeline
            print(f"round {round_} {mode:7s}: " + "  ".join(f"{s:6.1f}" for s, _ in timed) + "  s/step", flush=True)
        roles.shutdown()
    finally:
        ray.shutdown()
    sync_step = median([s for s, _ in steps["sync"]])
    t_rollout = median([m["time/rollout_wait_seconds"] for _, m in steps["sync"]])
    t_train = median([s - m["time/rollout_wait_seconds"] for s, m in steps["sync"]])
    async_step = median([s for s, _ in steps["async"]])
    ideal = max(t_rollout, t_train)
    print(f"model {args.model}: {cfg.rollout.prompts_per_step} prompts x {cfg.rollout.samples_per_prompt} samples, "
          f"<= {cfg.rollout.max_new_tokens} new tokens; rollout on cores [{args.rollout_cores}], trainer on [{args.trainer_cores}]")
    print(f"T_rollout {t_rollout:6.1f} s   T_train {t_train:6.1f} s   ideal max() {ideal:6.1f} s")
    print(f"synchronous step  {sync_step:6.1f} s  ({sync_step / ideal:.2f}x ideal)")
    print(f"asynchronous step {async_step:6.1f} s  ({async_step / ideal:.2f}x ideal, {sync_step / async_step:.2f}x faster than synchronous)")
    ratio = async_step / ideal
    print(ratio_line("asynchronous step / ideal max(T_rollout, T_train)", ratio, "<= 1.15x", ratio <= 1.15))
    return ratio


if __name__ == "__main__":
    main()
