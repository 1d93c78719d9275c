"""`rlhf-train`: compose the config with Hydra, validate it, run the recipe, summarise."""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from importlib import resources
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from rlhf_platform.checkpoint import CheckpointError
from rlhf_platform.config import Config, ConfigError, to_config
from rlhf_platform.data import DataError
from rlhf_platform.registry import RegistryError

CONF_DIR = str(resources.files("rlhf_platform.conf"))
ConfigStore.instance().store(name="base_config", node=Config)


def run(cfg: Config, run_dir: Path) -> dict:
    """Prepare model and data, start the roles, evaluate, train, evaluate; return the summary."""
    import ray
    from tqdm import tqdm
    from transformers import AutoTokenizer

    from rlhf_platform.cluster import connect_ray
    from rlhf_platform.data import task_rows
    from rlhf_platform.evaluation import evaluate
    from rlhf_platform.models import resolve_model_dir
    from rlhf_platform.pipeline import start_pipeline
    from rlhf_platform.prompts import tokenize_rows
    from rlhf_platform.preferences import load_pairs, tokenize_pairs
    from rlhf_platform.recipes import dpo, grpo, rm
    from rlhf_platform.guard import Guard
    from rlhf_platform.run_checkpoints import RunCheckpoints, open_registry
    from rlhf_platform.tracking import MetricsLogger

    started = time.time()
    run_dir.mkdir(parents=True, exist_ok=True)
    # Everything that can fail on bad input fails here, before any actor starts.
    model_dir = resolve_model_dir(cfg.model)
    train_rows, eval_rows = task_rows(cfg.task, cfg.run.seed, run_dir / "data")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    max_prompt = cfg.model.max_model_len - cfg.rollout.max_new_tokens
    train_prompts, skipped_train = tokenize_rows(tokenizer, train_rows, max_prompt, cfg.task.on_bad_row)
    eval_prompts, skipped_eval = tokenize_rows(tokenizer, eval_rows, max_prompt, cfg.task.on_bad_row)
    skipped = train_rows.skipped + eval_rows.skipped + skipped_train + skipped_eval
    pairs = None
    if cfg.algo.name in ("dpo", "rm") and cfg.task.pairs_path:
        loaded = load_pairs(
            cfg.task.pairs_path, cfg.task.prompt_field, cfg.task.chosen_field, cfg.task.rejected_field, cfg.task.on_bad_row
        )
        pairs, skipped_pairs = tokenize_pairs(tokenizer, loaded, cfg.model.max_model_len, cfg.task.on_bad_row)
        skipped += loaded.skipped + skipped_pairs

    checkpoints = guard = None
    resume_version = None
    if cfg.algo.name not in ("dpo", "rm"):
        if cfg.gate.every and not eval_prompts:
            raise ConfigError("gate.every needs held-out prompts: set task.eval_size > 0 or task.eval_path")
        checkpoints = RunCheckpoints(cfg, run_dir, open_registry(cfg, run_dir))
        guard = Guard(cfg, checkpoints, eval_prompts)
        if cfg.resume:
            resume_version = checkpoints.resume_version(cfg.resume)

    logger = MetricsLogger(run_dir, cfg.logger.backend, cfg.logger.project, cfg.logger.mode, run_dir.name, asdict(cfg))
    connect_ray(cfg.ray)
    # A reward model trained on a pairs file needs no rollout; one that samples its
    # pairs needs the engines but no policy trainer. Neither is evaluated by generation.
    policy = cfg.algo.name != "rm"
    pipe = start_pipeline(cfg, model_dir, train_prompts, train_policy=policy) if policy or pairs is None else None
    try:
        start = None
        if resume_version is not None:
            start = checkpoints.restore(pipe, resume_version)
            print(f"resumed from version {resume_version} (step {start.step}, weights v{start.weight_version})", file=sys.stderr)
        start_version = start.weight_version if start else 0
        before = None
        if cfg.eval.before and policy:
            before = evaluate(pipe.engines, eval_prompts, start_version, cfg.eval.max_new_tokens)
            print(f"held-out accuracy before training: {100 * before.accuracy:.1f}% ({len(eval_prompts)} prompts, greedy)", file=sys.stderr)
            logger.log({"eval/accuracy": before.accuracy}, start.step if start else 0)
        bar = tqdm(
            total=cfg.trainer.max_steps,
            initial=start.step if start else 0,
            desc=cfg.algo.name,
            disable=not cfg.logger.progress,
            file=sys.stderr,
        )

        def on_step(step: int, metrics: dict[str, float]) -> None:
            logger.log(metrics, step)
            bar.update(1)
            bar.set_postfix(
                reward=f"{metrics.get('rollout/reward_mean', metrics.get('train/reward_accuracy', float('nan'))):.3f}",
                loss=f"{metrics['train/loss']:.4f}",
                v=int(metrics["weight_version"]),
                stale=int(metrics.get("rollout/dropped_stale", 0)),
            )

        if cfg.algo.name == "rm":
            stats = rm.train(cfg, model_dir, run_dir, pipe, on_step, pairs)
        elif cfg.algo.name == "dpo":
            stats = dpo.train(pipe, cfg, on_step, pairs)
        else:  # grpo, dapo, gspo and ppo: settings of one driver
            stats = grpo.train(pipe, cfg, on_step, guard, start)
            ledger = ray.get(pipe.queue.get_ledger.remote())
            (run_dir / "prompt_ledger.json").write_text(json.dumps(ledger) + "\n")
        bar.close()
        after = None
        if cfg.eval.after and policy:
            after = evaluate(pipe.engines, eval_prompts, stats.version, cfg.eval.max_new_tokens)
        summary = {
            "recipe": cfg.algo.name,
            "model": str(model_dir),
            "eval_accuracy_before": before.accuracy if before else None,
            "eval_accuracy_after": after.accuracy if after else None,
            "eval_accuracy_by_level_before": before.accuracy_by_level if before else None,
            "eval_accuracy_by_level_after": after.accuracy_by_level if after else None,
            "eval_prompts": len(eval_prompts),
            "steps": stats.steps,
            "samples": stats.samples,
            "dropped_stale": stats.dropped_stale,
            "skipped_rows": skipped,
            "weight_version": stats.version,
            "max_staleness": cfg.rollout.max_staleness,
            "wall_time_s": round(time.time() - started, 1),
            "run_dir": str(run_dir),
            "resumed_from": resume_version,
            "rollbacks": stats.rollbacks,
            "faults_survived": stats.faults,
            "stopped_early": stats.stopped,
            **stats.extra,
        }
        if after is not None:
            logger.log({"eval/accuracy": after.accuracy}, stats.steps)
    finally:
        logger.close()
        if pipe is not None:
            pipe.shutdown()
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def print_summary(summary: dict) -> None:
    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f}%"

    print(
        "\n".join(
            [
                "",
                f"== {summary['recipe']} finished ==",
                f"held-out accuracy  {pct(summary['eval_accuracy_before'])} -> {pct(summary['eval_accuracy_after'])}"
                f"  ({summary['eval_prompts']} prompts, greedy)",
                *(
                    [f"held-out pairs ranked right  {pct(summary['pair_accuracy_before'])} -> {pct(summary['pair_accuracy_after'])}"
                     f"  ({summary['held_out_pairs']} pairs); reward model saved to {summary['reward_model_path']}"]
                    if "pair_accuracy_after" in summary else []
                ),
                f"steps {summary['steps']}  samples {summary['samples']}  dropped as stale {summary['dropped_stale']}"
                f"  skipped rows {summary['skipped_rows']}",
                *(f"rolled back at step {r['step']}: {r['reason']}" for r in summary.get("rollbacks", [])),
                *(f"survived at step {f['step']}: {f['fault']}" for f in summary.get("faults_survived", [])),
                *([f"stopped early: {summary['stopped_early']}"] if summary.get("stopped_early") else []),
                f"wall time {summary['wall_time_s']} s",
                f"run directory {summary['run_dir']}",
            ]
        )
    )


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def _hydra_main(raw: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    try:
        cfg = to_config(raw)
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        summary = run(cfg, run_dir)
    except (ConfigError, DataError, CheckpointError, RegistryError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print_summary(summary)


def train_main() -> None:
    """Entry point of `rlhf-train`."""
    _hydra_main()
