"""`rlhf-train`: compose the config with Hydra, validate it, run the recipe, print the summary.

The config is composed and validated once before Hydra starts the job, so a refused
config (a mistyped key, a value out of range) leaves no run directory behind: Hydra
creates `run.root/run.name` before it calls the job."""
from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from rlhf_platform.checkpoint_dir import CheckpointError
from rlhf_platform.config import Config, ConfigError, check_override_keys, to_config
from rlhf_platform.data import DataError
from rlhf_platform.registry import RegistryError

CONF_DIR = str(resources.files("rlhf_platform.conf"))
ConfigStore.instance().store(name="base_config", node=Config)
# config groups (`recipe=dpo`, `model=tiny`): the folders of conf/
CONF_GROUPS = tuple(sorted(p.name for p in Path(CONF_DIR).iterdir() if p.is_dir() and not p.name.startswith("_")))


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


def refuse_bad_config(argv: list[str]) -> None:
    """Exit with status 2 and `error: ...` if the run `argv` asks for has a config
    `to_config` refuses, or an override naming a key the schema lacks (Hydra's own
    message for `trainer.lrr=1` would tell the user to add `+`) - before Hydra creates
    the run directory. Modes that start no single run (--help, --cfg, --info,
    --multirun, another config) and what Hydra itself refuses (a bad group option, a
    sweep without --multirun) are left to Hydra; the job validates its config again."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.utils import get_args_parser

    try:
        args = get_args_parser().parse_args(argv)
    except SystemExit:  # Hydra's parser reports it again, in hydra.main
        return
    if (args.help or args.hydra_help or args.cfg or args.info or args.shell_completion or args.multirun
            or args.config_path or args.config_name or args.config_dir or args.experimental_rerun):
        return
    try:
        check_override_keys(args.overrides, CONF_GROUPS)
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            raw = compose("config", overrides=args.overrides)
        to_config(raw)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except Exception:  # Hydra's and OmegaConf's own errors, reported by hydra.main as it composes again
        return


def train_main() -> None:
    """Entry point of `rlhf-train`."""
    refuse_bad_config(sys.argv[1:])
    _hydra_main()
