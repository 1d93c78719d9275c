"""`rlhf-train`: compose the config with Hydra, validate it, run the recipe, print the summary."""
from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from rlhf_platform.checkpoint_dir import CheckpointError
from rlhf_platform.config import Config, ConfigError, to_config
from rlhf_platform.data import DataError
from rlhf_platform.registry import RegistryError

CONF_DIR = str(resources.files("rlhf_platform.conf"))
ConfigStore.instance().store(name="base_config", node=Config)


def summary_lines(summary: dict) -> list[str]:
    """The run's summary as the lines printed at its end."""
    from rlhf_platform.recipes.run import percent

    lines = [
        "",
        f"== {summary['recipe']} finished ==",
        f"held-out accuracy  {percent(summary['eval_accuracy_before'])} -> {percent(summary['eval_accuracy_after'])}"
        f"  ({summary['eval_prompts']} prompts, greedy)",
    ]
    if "pair_accuracy_after" in summary:
        lines.append(
            f"held-out pairs ranked right  {percent(summary['pair_accuracy_before'])} -> {percent(summary['pair_accuracy_after'])}"
            f"  ({summary['held_out_pairs']} pairs); reward model saved to {summary['reward_model_path']}"
        )
    lines.append(
        f"steps {summary['steps']}  samples {summary['samples']}  dropped as stale {summary['dropped_stale']}"
        f"  skipped rows {summary['skipped_rows']}"
    )
    lines += [f"rolled back at step {r['step']}: {r['reason']}" for r in summary.get("rollbacks", [])]
    lines += [f"survived at step {f['step']}: {f['fault']}" for f in summary.get("faults_survived", [])]
    if summary.get("stopped_early"):
        lines.append(f"stopped early: {summary['stopped_early']}")
    if summary.get("final_version") is not None:
        lines.append(
            f"final model: registry version {summary['final_version']} "
            f"(rlhf ckpt list --run {summary['run_dir']}; rlhf export latest --run {summary['run_dir']} --out DIR)"
        )
    lines += [f"wall time {summary['wall_time_s']} s", f"run directory {summary['run_dir']}"]
    return lines


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def _hydra_main(raw: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from rlhf_platform.recipes.run import run

    try:
        cfg = to_config(raw)
        summary = run(cfg, Path(HydraConfig.get().runtime.output_dir))
    except (ConfigError, DataError, CheckpointError, RegistryError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print("\n".join(summary_lines(summary)))


def train_main() -> None:
    """Entry point of `rlhf-train`."""
    _hydra_main()
