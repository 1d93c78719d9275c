"""Asynchrony modes on a long-tail task: synchronous, one-step-off, streaming, and
streaming + partial rollout, each from the same base weights for the same number of
trained samples.

One pipeline per mode (real Ray, vLLM engine, DeepSpeed trainer), the rollout engine
pinned to one set of cores and the trainer to another (as `overlap.py`), on
`task=count` (list the integers from a to b: correct replies from a few tokens to 100+,
so a batch waits for its longest reply). Per mode: trained samples per second (from the
end of the first step, which fills the pipeline, to the end of the last), the median
step time, the trainer's idle share (waiting for samples), the engine's busy share
(streaming modes: generating; batch modes: the span of each step's rollout), and
held-out accuracy after the run (greedy, `eval_prompts` prompts). Target: streaming +
partial rollout >= 1.3x the one-step-off throughput with no loss of accuracy. Run from
the repository root:

    .venv/bin/python benchmarks/async_modes.py              # SmolLM2-135M, 2 cores: rollout on 0, trainer on 1
    .venv/bin/python benchmarks/async_modes.py --smoke      # tiny model, 2 steps a mode
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

# name: (streaming, partial, max_staleness)
MODES = {
    "synchronous": (False, False, 0),
    "one-step-off": (False, False, 1),
    "streaming": (True, False, 1),
    "streaming+partial": (True, True, 1),
}


def run_mode(cfg, name: str, model_dir: str, prompts, eval_prompts) -> dict[str, float]:
    """One fresh pipeline in `name`'s mode: its figures."""
    from rlhf_platform.recipes import online_rl
    from rlhf_platform.recipes.evaluate import evaluate
    from rlhf_platform.recipes.run_roles import start_roles
    from rlhf_platform.roles.ray_executor import RayExecutor

    streaming, partial, staleness = MODES[name]
    cfg = dataclasses.replace(
        cfg, rollout=dataclasses.replace(cfg.rollout, streaming=streaming, partial=partial, max_staleness=staleness)
    )
    roles = start_roles(RayExecutor(cfg.ray), cfg, model_dir, prompts)
    try:
        evaluate(roles, cfg, eval_prompts[:4], 0)  # warm the engine (first batches run slower)
        marks: list[float] = []
        history: list[dict] = []

        def on_step(step: int, metrics: dict) -> None:
            marks.append(time.perf_counter())
            history.append(metrics)

        started = time.perf_counter()
        stats, versions = online_rl.train(roles, cfg, on_step)
        accuracy = evaluate(roles, cfg, eval_prompts, versions.trained).accuracy
    finally:
        roles.shutdown()
    steps = [b - a for a, b in zip([started] + marks, marks)]
    per_step = stats.samples / max(1, stats.steps)
    counted = per_step * (len(marks) - 1)
    timed = list(zip(history, steps))[1:]
    wall = sum(s for _, s in timed)
    busy_seconds = sum(
        m["stream/engine_busy_share"] * s if "stream/engine_busy_share" in m
        else min(s, m.get("timeline/rollout_end", 0.0) - m.get("timeline/rollout_start", 0.0))
        for m, s in timed
    )
    return {
        "samples_per_second": counted / max(marks[-1] - marks[0], 1e-9),
        "step_seconds": median(steps[1:]),
        # the trainer is idle outside its update (waiting for samples, advantages, publishing)
        "trainer_idle_share": sum(max(0.0, s - m["time/train_seconds"]) for m, s in timed) / max(wall, 1e-9),
        "engine_busy_share": busy_seconds / max(wall, 1e-9),
        "accuracy": accuracy,
        "multi_version_fraction": median([m.get("rollout/multi_version_fraction", 0.0) for m in history]),
        "dropped_stale": float(stats.dropped_stale),
    }


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2_135m", help="smollm2_135m | tiny")
    parser.add_argument("--steps", type=int, default=6, help="steps a mode (the first fills the pipeline, not timed)")
    parser.add_argument("--eval-prompts", type=int, default=60)
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated, of: " + ", ".join(MODES))
    parser.add_argument("--rollout-cores", default="0")
    parser.add_argument("--trainer-cores", default="1")
    parser.add_argument("overrides", nargs="*", help="more rlhf-train overrides")
    parser.add_argument("--smoke", action="store_true", help="tiny model, 2 steps a mode: checks it runs")
    args = parser.parse_args(argv)
    smoke = ["rollout.prompts_per_step=4", "rollout.samples_per_prompt=4", "task.count_lengths=[4,8]", "task.weights=[0.5,0.5]"] if args.smoke else []
    if args.smoke:
        args.model, args.steps, args.eval_prompts = "tiny", 2, 8
    modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in modes if m not in MODES]
    if unknown or "one-step-off" not in modes or "streaming+partial" not in modes:
        parser.error(f"--modes must name one-step-off and streaming+partial, of {list(MODES)}; got {modes}")

    import ray
    from hydra import compose, initialize_config_dir
    from transformers import AutoTokenizer

    from rlhf_platform.commands.train import CONF_DIR
    from rlhf_platform.config import to_config
    from rlhf_platform.data import task_rows
    from rlhf_platform.model_store import resolve_model_dir
    from rlhf_platform.prompts import tokenize_rows

    overrides = [
        f"model={'tiny' if args.model == 'tiny' else 'smollm2_135m'}",
        "task=count",
        f"rollout.cpu_cores=[{args.rollout_cores}]",
        f"trainer.cpu_cores=[{args.trainer_cores}]",
        f"trainer.max_steps={args.steps}",
        "rollout.streaming=true",  # engines built for streaming (seeded per request) in every mode
        "logger.backend=none",
        "ray.include_dashboard=false",
        *smoke,
        *args.overrides,
    ]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = to_config(compose("config", overrides=overrides))
    model_dir = str(resolve_model_dir(cfg.model))
    with tempfile.TemporaryDirectory() as workdir:
        train_rows, eval_rows = task_rows(cfg.task, cfg.run.seed, Path(workdir))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompts, _ = tokenize_rows(tokenizer, train_rows, cfg.model.max_model_len)
    eval_prompts, _ = tokenize_rows(tokenizer, eval_rows, cfg.model.max_model_len)
    eval_prompts = eval_prompts[:: max(1, len(eval_prompts) // args.eval_prompts)][: args.eval_prompts]
    from rlhf_platform.roles.ray_executor import connect_ray

    connect_ray(cfg.ray)
    results = {}
    try:
        for name in modes:
            results[name] = run_mode(cfg, name, model_dir, prompts, eval_prompts)
            print(f"{name:18s} " + "  ".join(f"{k} {v:.3f}" for k, v in results[name].items()), flush=True)
    finally:
        ray.shutdown()
    print(f"model {args.model}, task=count (levels {cfg.task.count_lengths}): {cfg.rollout.prompts_per_step} prompts x "
          f"{cfg.rollout.samples_per_prompt} samples, <= {cfg.rollout.max_new_tokens} new tokens, {args.steps} steps a mode; "
          f"rollout on cores [{args.rollout_cores}], trainer on [{args.trainer_cores}]")
    base = results["one-step-off"]
    for name, r in results.items():
        print(f"{name:18s} {r['samples_per_second']:7.2f} samples/s ({r['samples_per_second'] / base['samples_per_second']:.2f}x "
              f"one-step-off)  step {r['step_seconds']:6.1f} s  trainer idle {100 * r['trainer_idle_share']:3.0f}%  "
              f"engine busy {100 * r['engine_busy_share']:3.0f}%  accuracy {100 * r['accuracy']:5.1f}%")
    best = results["streaming+partial"]
    ratio = best["samples_per_second"] / base["samples_per_second"]
    met = ratio >= 1.3 and best["accuracy"] >= base["accuracy"] - 0.05
    print(ratio_line("streaming+partial / one-step-off samples/s", ratio, ">= 1.3x, accuracy within 5 points", met))
    return ratio


if __name__ == "__main__":
    main()
