"""One run of any recipe, start to end: inputs -> executor -> setup -> evaluate ->
train -> evaluate -> save the final model -> summary.

Every recipe has the same entry shape (`Recipe`): `setup(executor)`, `evaluate(when)`,
`train(on_step)`, `save_final(after)`, `summary()`, `shutdown()`. `run` drives it;
`rlhf-train` only composes the config and calls `run`.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from rlhf_platform.config import Config, ConfigError, max_sample_lag
from rlhf_platform.evaluation import EvalReport, EvalResult
from rlhf_platform.recipes.stats import TrainStats
from rlhf_platform.roles.executor import Executor
from rlhf_platform.tracking import MetricsLogger, scrub_secrets
from rlhf_platform.types import Prompt, Trajectory

OnStep = Callable[[int, dict[str, float]], None]


@dataclass
class RunInputs:
    """Everything a run reads before any role starts (bad input fails here)."""

    cfg: Config
    run_dir: Path
    model_dir: Path
    train_prompts: list[Prompt]
    eval_prompts: list[Prompt]  # the set the gate evaluates (gate.eval_set)
    eval_sets: dict[str, list[Prompt]]  # every held-out set by name: the task's held_out (if any), then eval.sets
    pairs: list[Trajectory] | None  # preference pairs from task.pairs_path (dpo, rm)
    skipped_rows: int


class Recipe(Protocol):
    start_step: int  # the step training starts after (a resumed run's checkpoint step, else 0)

    def setup(self, executor: Executor) -> None:
        """Start the roles (and restore a checkpoint when resuming)."""

    def evaluate(self, when: str) -> EvalReport | None:
        """Held-out evaluation of every set `before` or `after` training (None: this recipe has none)."""

    def train(self, on_step: OnStep) -> TrainStats:
        """The training loop."""

    def save_final(self, after: EvalReport | None) -> int | None:
        """Checkpoint the final model, register it with `after` as the run's head; its version."""

    def summary(self) -> dict[str, Any]:
        """Recipe-specific figures for summary.json."""

    def shutdown(self) -> None:
        """Stop every role the recipe started."""


def prepare_inputs(cfg: Config, run_dir: Path) -> RunInputs:
    """Model directory, tokenised train / held-out prompts (every eval set) and preference pairs."""
    from transformers import AutoTokenizer

    from rlhf_platform.data import DataError, check_apart, load_eval_rows, task_rows
    from rlhf_platform.model_store import resolve_model_dir
    from rlhf_platform.pairs import load_pairs, tokenize_pairs
    from rlhf_platform.prompts import tokenize_rows

    run_dir.mkdir(parents=True, exist_ok=True)
    model_dir = resolve_model_dir(cfg.model)
    task = cfg.task
    train_rows, eval_rows = task_rows(task, cfg.run.seed, run_dir / "data")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    max_prompt = cfg.model.max_model_len - cfg.rollout.max_new_tokens
    train_prompts, skipped = tokenize_rows(tokenizer, train_rows, max_prompt, task.on_bad_row)
    skipped += train_rows.skipped
    eval_budget = cfg.model.max_model_len - cfg.eval.max_new_tokens
    held_out, skipped_held_out = tokenize_rows(tokenizer, eval_rows, eval_budget, task.on_bad_row)
    skipped += eval_rows.skipped + skipped_held_out
    eval_sets: dict[str, list[Prompt]] = {"held_out": held_out} if held_out else {}
    for dataset in task.mixture:  # a mixture's held-out prompts are also a set per dataset
        own = [p for p in held_out if p.dataset == dataset.name]
        if own:
            eval_sets[dataset.name] = own
    for i, part in enumerate(cfg.eval.sets):
        key = f"eval.sets[{i}]"
        rows = load_eval_rows(
            part.path, part.split, part.dataset_config, part.prompt_field or task.prompt_field,
            part.answer_field or task.answer_field, task.on_bad_row,
            system_prompt=task.system_prompt, key=f"{key}.path", split_key=f"{key}.split",
        )
        check_apart(train_rows, rows, key, task.on_bad_row)  # (the task's own held-out rows were checked as they loaded)
        prompts, skipped_set = tokenize_rows(tokenizer, rows, eval_budget, task.on_bad_row)
        skipped += rows.skipped + skipped_set
        if not prompts:
            raise DataError(f"{key}: no usable prompt ({rows.skipped + skipped_set} skipped): every row was a bad row")
        eval_sets[part.name] = prompts[: part.max_prompts]
    pairs = None
    if cfg.algo.name in ("dpo", "rm") and task.pairs_path:
        loaded = load_pairs(task.pairs_path, task.prompt_field, task.chosen_field, task.rejected_field, task.on_bad_row)
        pairs, skipped_pairs = tokenize_pairs(tokenizer, loaded, cfg.model.max_model_len, task.on_bad_row)
        skipped += loaded.skipped + skipped_pairs
    eval_prompts = eval_sets.get(cfg.gate.eval_set, [])
    if cfg.gate.every and not eval_prompts and cfg.algo.name != "rm":  # a reward model is gated on held-out pairs
        raise ConfigError(
            f"gate.every needs held-out prompts in gate.eval_set={cfg.gate.eval_set!r}: "
            + ("set task.eval_size > 0, task.eval_path or task.eval_split" if cfg.gate.eval_set == "held_out" else "it has none")
        )
    return RunInputs(cfg, run_dir, model_dir, train_prompts, eval_prompts, eval_sets, pairs, skipped)


def make_recipe(inputs: RunInputs) -> Recipe:
    """The recipe `algo.name` names (grpo, dapo, gspo and ppo are one online-RL loop)."""
    from rlhf_platform.recipes.dpo import DPORecipe
    from rlhf_platform.recipes.online_rl import OnlineRLRecipe
    from rlhf_platform.recipes.rm import RewardModelRecipe

    if inputs.cfg.algo.name == "dpo":
        return DPORecipe(inputs)
    if inputs.cfg.algo.name == "rm":
        return RewardModelRecipe(inputs)
    return OnlineRLRecipe(inputs)


def make_executor(cfg: Config) -> Executor:
    """`executor=ray` (actors on the cluster `ray.*` names) or `executor=inprocess`."""
    if cfg.executor == "inprocess":
        from rlhf_platform.roles.inprocess import InProcessExecutor

        return InProcessExecutor()
    from rlhf_platform.roles.ray_executor import RayExecutor

    return RayExecutor(cfg.ray)


def run(cfg: Config, run_dir: Path, executor: Executor | None = None) -> dict[str, Any]:
    """Run the configured recipe end to end; write and return its summary."""
    started = time.time()
    inputs = prepare_inputs(cfg, run_dir)
    # what `rlhf replay` re-runs this run with (secret-looking values scrubbed)
    (run_dir / "config.json").write_text(json.dumps(scrub_secrets(asdict(cfg)), indent=1) + "\n")
    recipe = make_recipe(inputs)  # checks what it needs (a checkpoint to resume) before any role starts
    logger = MetricsLogger(run_dir, cfg.logger.backend, cfg.logger.project, cfg.logger.mode, run_dir.name, asdict(cfg))
    try:
        recipe.setup(executor or make_executor(cfg))
        before = recipe.evaluate("before")
        if before:
            primary = primary_result(cfg, before)
            print(f"held-out accuracy before training: {percent(primary.accuracy)} ({primary.num_prompts} prompts, greedy)", file=sys.stderr)
            log_eval(logger, cfg, before, recipe.start_step)
        with Progress(cfg, logger, recipe.start_step) as progress:
            stats = recipe.train(progress.on_step)
        after = recipe.evaluate("after")
        if after:
            log_eval(logger, cfg, after, stats.steps)
        final_version = recipe.save_final(after)
        summary = run_summary(inputs, stats, before, after, final_version, started) | recipe.summary()
    finally:
        logger.close()
        recipe.shutdown()
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def percent(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}%"


def primary_result(cfg: Config, report: EvalReport) -> EvalResult:
    """The set a run is judged by: the gate's (gate.eval_set), else the first."""
    return report.get(cfg.gate.eval_set) or next(iter(report.values()))


def log_eval(logger: MetricsLogger, cfg: Config, report: EvalReport, step: int) -> None:
    """`eval/<set>/<figure>` for every set (NaN figures left out: no answer check), and
    `eval/accuracy` for the set the run is judged by."""
    metrics = {
        f"eval/{name}/{key}": value
        for name, result in report.items()
        for key, value in result.figures().items()
        if value is not None and not math.isnan(value)
    }
    primary = primary_result(cfg, report)
    if not math.isnan(primary.accuracy):
        metrics["eval/accuracy"] = primary.accuracy
    if metrics:
        logger.log(metrics, step)


def eval_summary(report: EvalReport | None) -> dict[str, dict[str, Any]] | None:
    """Every set's figures and prompt count, by name (summary.json)."""
    if not report:
        return None
    return {
        name: {"num_prompts": r.num_prompts, **{k: (None if v is None or math.isnan(v) else v) for k, v in r.figures().items()}}
        for name, r in report.items()
    }


class Progress:
    """Logs each step's metrics and moves a progress bar on stderr (closed on exit)."""

    def __init__(self, cfg: Config, logger: MetricsLogger, start_step: int = 0) -> None:
        from tqdm import tqdm

        self.logger = logger
        self.bar = tqdm(
            total=cfg.trainer.max_steps, initial=start_step, desc=cfg.algo.name, disable=not cfg.logger.progress, file=sys.stderr
        )

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        self.logger.log(metrics, step)
        self.bar.n = step
        self.bar.set_postfix(
            reward=f"{metrics.get('rollout/reward_mean', metrics.get('train/reward_accuracy', float('nan'))):.3f}",
            loss=f"{metrics['train/loss']:.4f}",
            v=int(metrics["weight_version"]),
            stale=int(metrics.get("rollout/dropped_stale", 0)),
        )

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()


def run_summary(
    inputs: RunInputs, stats: TrainStats, before_sets: EvalReport | None, after_sets: EvalReport | None,
    final_version: int | None, started: float,
) -> dict[str, Any]:
    """The figures every recipe reports in summary.json (the `eval_*` ones of the set the
    run is judged by; `eval_sets_*` of every set)."""
    cfg = inputs.cfg
    before = primary_result(cfg, before_sets) if before_sets else None
    after = primary_result(cfg, after_sets) if after_sets else None

    def accuracy(result: EvalResult | None) -> float | None:
        return None if result is None or math.isnan(result.accuracy) else result.accuracy

    return {
        "recipe": cfg.algo.name,
        "executor": cfg.executor,
        "model": str(inputs.model_dir),
        "eval_accuracy_before": accuracy(before),
        "eval_accuracy_after": accuracy(after),
        "eval_accuracy_by_level_before": before.accuracy_by_level if before else None,
        "eval_accuracy_by_level_after": after.accuracy_by_level if after else None,
        "eval_reward_before": before.reward_mean if before else None,
        "eval_reward_after": after.reward_mean if after else None,
        "eval_prompts": len(inputs.eval_prompts),
        "eval_sets_before": eval_summary(before_sets),
        "eval_sets_after": eval_summary(after_sets),
        "steps": stats.steps,
        "samples": stats.samples,
        "dropped_stale": stats.dropped_stale,
        "skipped_rows": inputs.skipped_rows,
        "max_staleness": cfg.rollout.max_staleness,
        "sync_every": cfg.trainer.sync_every,
        "max_sample_lag": max_sample_lag(cfg.rollout.max_staleness, cfg.trainer.sync_every),  # optimizer steps
        "resumed_from": None,
        "final_version": final_version,
        "wall_time_s": round(time.time() - started, 1),
        "run_dir": str(inputs.run_dir),
        "rollbacks": stats.rollbacks,
        "faults_survived": stats.faults,
        "stopped_early": stats.stopped,
        **stats.extra,
    }
