"""A run's checkpoints: save the state of every role at a step, register it, restore it
(the files themselves are written by `rlhf_platform/checkpoint_dir.py`).

A checkpoint directory holds
  policy/deepspeed/   the trainer ranks' DeepSpeed state (model, optimizer, scheduler, RNG)
  policy/hf/          the policy as an HF model directory (transformers and vLLM load it)
  critic/             the critic ranks' DeepSpeed state (PPO)
  prompt_queue.json   the prompt queue's position, ledger and RNG (in-flight prompts re-queued)
  advantage_builder.json  the adaptive KL coefficient and the running reward moments
                      (checkpoints written before it existed lack it: restore skips it)
  recipe_state.json   what a recipe needs to continue beyond the roles (DPO / RM: the
                      preference pairs, or the fingerprint of the pairs file they came from)
  run_state.json      step and weight version
  manifest.json       sha256 of every file above
It is registered in the model registry only once complete, and the retention policy
keeps the newest `checkpoint.keep_last`, every promoted version and the run's head.
The run is keyed in the registry by its run id (recorded in the run directory), so runs
with the same name sharing `checkpoint.registry_root` never touch each other's versions.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from rlhf_platform.checkpoint_dir import (
    PARTIAL_PREFIX, CheckpointError, read_state_file, remove_partial, verify_checkpoint, write_checkpoint,
)
from rlhf_platform.config import Config, config_hash
from rlhf_platform.registry import Registry, SQLiteRegistry, VersionRecord, record_run_id, recorded_run_id, version_id
from rlhf_platform.recipes.run_roles import RunRoles
from rlhf_platform.tracking import scrub_secrets

CHECKPOINTS = "checkpoints"
BUILDER_STATE = "advantage_builder.json"  # the Advantage Builder's KL coefficient and reward moments
RECIPE_STATE = "recipe_state.json"  # the recipe's own state (`RunCheckpoints.recipe_state`)


@dataclass
class RunState:
    step: int
    weight_version: int
    lr_scale: float = 1.0  # trainer.lr times this is the rate in force (rollbacks lower it)

    @classmethod
    def from_saved(cls, saved: dict[str, Any], path: Path) -> "RunState":
        """The state a checkpoint's run_state.json holds, each field checked."""
        unknown = sorted(set(saved) - {"step", "weight_version", "lr_scale"})
        step, version, lr_scale = saved.get("step"), saved.get("weight_version"), saved.get("lr_scale", 1.0)
        if unknown or type(step) is not int or type(version) is not int or step < 0 or version < 0:
            raise CheckpointError(f"{path}: not a run state (whole step and weight_version >= 0, lr_scale; got {saved!r:.200})")
        if type(lr_scale) not in (int, float) or not 0 < lr_scale <= 1:
            raise CheckpointError(f"{path}: lr_scale {lr_scale!r:.40} is not in (0, 1]")
        return cls(step, version, float(lr_scale))


# What decides the data a run trains on: a resume must keep these as the checkpoint's run
# had them (online RL: the prompts and their order; DPO / RM: also the pairs, their split
# and batches), or it would train some data twice and judge on data it trained on.
DATA_KEYS = ("run.seed", "task")
PAIR_DATA_KEYS = ("algo.preference",)
CHECKED_BY_CONTENT = {"task.pairs_path"}  # the pairs' fingerprint is compared instead: the file may move


def _config_value(config: dict[str, Any], key: str) -> Any:
    """`config[key]` (a dotted key of a config as a dict), without the keys checked by content."""
    value: Any = config
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if f"{key}.{k}" not in CHECKED_BY_CONTENT}
    return value


def open_registry(cfg: Config, run_dir: Path) -> SQLiteRegistry:
    """The run's registry: `checkpoint.registry_root`, or the run directory."""
    return SQLiteRegistry(Path(cfg.checkpoint.registry_root) if cfg.checkpoint.registry_root else run_dir)


def _changes(key: str, saved: Any, now: Any) -> list[str]:
    """'key: saved then, now now' for each leaf of `key` that differs."""
    if isinstance(saved, dict) and isinstance(now, dict):
        return [c for k in sorted(saved.keys() | now.keys()) for c in _changes(f"{key}.{k}", saved.get(k), now.get(k))]
    return [] if saved == now else [f"{key} was {saved!r:.60} and is now {now!r:.60}"]


class RunCheckpoints:
    """Saves, registers and restores the checkpoints of one run."""

    def __init__(self, cfg: Config, run_dir: Path, registry: Registry) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.registry = registry
        self.run = self._open_run()  # the run's id in the registry
        self.config = scrub_secrets(asdict(cfg))  # registry rows never hold a secret
        self.config_hash = config_hash(cfg)
        self.parent: int | None = None  # lineage: the version training continues from
        self.last_saved: VersionRecord | None = None  # the newest checkpoint this process saved
        self.lr_scale = 1.0  # of trainer.lr, saved with each checkpoint (the guard lowers it at a rollback)
        # the recipe's own state, written as recipe_state.json with every checkpoint (None: none)
        self.recipe_state: Callable[[], dict[str, Any]] | None = None
        remove_partial(self.run_dir / CHECKPOINTS)

    def _open_run(self) -> str:
        """The run id recorded in the run directory, or a new one from the registry, then
        recorded there. A run directory with checkpoints but no id was written before run
        ids: its versions are registered under its name, which stays its id."""
        recorded = recorded_run_id(self.run_dir)
        legacy = self.run_dir.name if (self.run_dir / CHECKPOINTS).is_dir() else None
        run_id = self.registry.open_run(self.run_dir.name, recorded or legacy, self.run_dir)
        if recorded is None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            record_run_id(self.run_dir, run_id)
        return run_id

    def resume_version(self, resume: str) -> int:
        """The registry version `resume` (latest | an id) names, checked and verified
        before any actor starts."""
        if resume == "latest":
            version = self.registry.head(self.run)
            if version is None:
                raise CheckpointError(
                    f"resume=latest: run {self.run!r} has no checkpoint in {self.registry.path} "
                    "(set checkpoint.every to save some, and run.name to the run to resume)"
                )
        else:
            version = version_id(resume)
        record = self.registry.get(version)
        if record.run != self.run:
            raise CheckpointError(f"resume={resume}: version {version} belongs to run {record.run!r}, not {self.run!r}")
        if record.deleted:
            raise CheckpointError(f"resume={resume}: version {version}'s checkpoint was removed by the retention policy")
        if record.recipe != self.cfg.algo.name:
            raise CheckpointError(
                f"resume={resume}: version {version} was saved by a recipe={record.recipe} run; this run is "
                f"recipe={self.cfg.algo.name} (resume it with the recipe that saved it, or start a new run.name)"
            )
        keys = DATA_KEYS + (PAIR_DATA_KEYS if self.cfg.algo.name in ("dpo", "rm") else ())
        changed = [change for key in keys for change in _changes(key, _config_value(record.config, key), _config_value(self.config, key))]
        if record.config and changed:
            raise CheckpointError(
                f"resume={resume}: {'; '.join(changed[:5])}. These keys decide which data the run trains on and holds "
                f"out, so a resume keeps them as the run that saved version {version} had them"
            )
        verify_checkpoint(Path(record.path), record.checksum)
        return version

    def due(self, step: int) -> bool:
        return self.cfg.checkpoint.every > 0 and step % self.cfg.checkpoint.every == 0

    def save(self, roles: RunRoles, step: int, weight_version: int, metrics: dict[str, float]) -> VersionRecord:
        """Checkpoint every role at `step` (all ranks write, then the directory is sealed
        and renamed), register it as a candidate, and apply the retention policy."""
        started = time.perf_counter()
        target = self._new_path(step, weight_version)
        queue_state: dict[str, Any] = {}

        def fill(directory: Path) -> None:
            saves = roles.policy.start("save_state", str(directory / "policy"))
            if roles.critic is not None:
                saves += roles.critic.start("save_state", str(directory / "critic"))
            roles.executor.get_all(saves)
            if roles.queue is not None:  # a reward model trained on a pairs file has none
                queue_state.update(roles.queue.get_state().result())
                (directory / "prompt_queue.json").write_text(json.dumps(queue_state))
            if roles.builder is not None:
                (directory / BUILDER_STATE).write_text(json.dumps(roles.builder.get_state().result()))
            if self.recipe_state is not None:
                (directory / RECIPE_STATE).write_text(json.dumps(self.recipe_state()))
            (directory / "run_state.json").write_text(json.dumps(asdict(RunState(step, weight_version, self.lr_scale))))

        manifest = write_checkpoint(target, fill)
        record = VersionRecord(
            run=self.run,
            step=step,
            weight_version=weight_version,
            recipe=self.cfg.algo.name,
            path=str(target),
            checksum=manifest.checksum,
            config_hash=self.config_hash,
            config=self.config,
            data_position={"prompts_acked": queue_state.get("acked", 0), "leases": queue_state.get("next_lease", 0)},
            metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float))},
            parent=self.parent,
        )
        try:
            self.registry.add(record)
        except BaseException:  # never registered: back to a partial directory, which the next run removes
            os.rename(target, target.with_name(f"{PARTIAL_PREFIX}{target.name}-unregistered"))
            raise
        self.parent = record.id
        self.last_saved = record
        self.apply_retention()
        metrics["time/checkpoint_seconds"] = time.perf_counter() - started  # logged with the step
        return record

    def restore(self, roles: RunRoles, version: int, publish_as: int | None = None) -> RunState:
        """Load checkpoint `version` into every role (verified first) and publish its
        weights to the engines as `publish_as` (the next version, when engines already
        serve newer weights) or as the saved version; training continues after its step."""
        state = self.load(roles, version)
        if publish_as is not None:
            state.weight_version = publish_as
        roles.policy.publish(state.weight_version)
        return state

    def load(self, roles: RunRoles, version: int) -> RunState:
        """Load checkpoint `version` (verified first) into the trainer and critic ranks,
        the prompt queue and the Advantage Builder (those the run has); publishes nothing
        (a reward model has no engines to publish to). Its step, version and lr scale."""
        directory = self._load_models(roles, version)
        state = RunState.from_saved(read_state_file(directory, "run_state.json"), directory / "run_state.json")
        if roles.queue is not None:
            roles.queue.load_state(read_state_file(directory, "prompt_queue.json")).result()
        if roles.builder is not None and (directory / BUILDER_STATE).is_file():  # older checkpoints lack it
            roles.builder.load_state(read_state_file(directory, BUILDER_STATE)).result()
        self.parent = version
        return state

    def saved_recipe_state(self, version: int) -> dict[str, Any]:
        """The recipe state checkpoint `version` holds (CheckpointError if it has none)."""
        return read_state_file(Path(self.registry.get(version).path), RECIPE_STATE)

    def publish_saved(self, roles: RunRoles, weight_version: int) -> None:
        """Load the newest kept checkpoint of this run at `weight_version` into the
        trainer ranks and publish those weights as that version (a replay from a
        checkpoint regenerates what older versions sampled; `restore` comes after)."""
        saved = [r for r in self.registry.versions(self.run) if r.weight_version == weight_version and not r.deleted]
        if not saved:
            raise CheckpointError(
                f"run {self.run!r} kept no checkpoint of weight version {weight_version}, which sampled replies the "
                "replay trains after the resumed step (run with checkpoint.every=1 and keep the last max_staleness + 2)"
            )
        self._load_models(roles, max(saved, key=lambda r: r.id).id)
        roles.policy.publish(weight_version)

    def restart_training(self, roles: RunRoles, publish_as: int) -> RunState:
        """After a trainer or critic rank died: new rank groups, loaded with the run's
        head checkpoint (weights, optimizer, prompt queue), its weights published as
        `publish_as`. Steps after that checkpoint are trained again on the same
        prompts, so the ledger holds each prompt once."""
        head = self.registry.head(self.run)
        if head is None:
            raise CheckpointError(
                f"a trainer rank died and run {self.run!r} has no checkpoint to restart from (set checkpoint.every)"
            )
        roles.restart_training()
        return self.restore(roles, head, publish_as)

    def roll_back(self, roles: RunRoles, version: int, publish_as: int | None) -> None:
        """Restore the trainer and critic ranks to checkpoint `version` (weights and
        optimizer; the prompt queue keeps its position), publish those weights as
        `publish_as` (None: a reward model, nothing to publish to), and make `version`
        the head."""
        self._load_models(roles, version)
        if publish_as is not None:
            roles.policy.publish(publish_as)
        self.registry.set_head(self.run, version)
        self.parent = version

    def _load_models(self, roles: RunRoles, version: int) -> Path:
        """Verify checkpoint `version` and load it into every trainer and critic rank."""
        record = self.registry.get(version)
        directory = Path(record.path)
        verify_checkpoint(directory, record.checksum)
        loads = roles.policy.start("load_state", str(directory / "policy"))
        if roles.critic is not None:
            loads += roles.critic.start("load_state", str(directory / "critic"))
        roles.executor.get_all(loads)
        return directory

    def apply_retention(self) -> list[int]:
        """Remove the directories of this run's versions beyond the newest `keep_last`,
        except promoted ones and the head; returns the versions removed. Only directories
        inside this run's checkpoints folder are ever removed (a copied run directory's
        registry still names the original's)."""
        records = [r for r in self.registry.versions(self.run) if not r.deleted]
        keep = {r.id for r in records[-self.cfg.checkpoint.keep_last :]}
        keep |= {r.id for r in records if r.status == "promoted"}
        keep.add(self.registry.head(self.run))
        own = (self.run_dir / CHECKPOINTS).resolve()
        removed = []
        for record in records:
            if record.id not in keep and own in Path(record.path).resolve().parents:
                shutil.rmtree(record.path, ignore_errors=True)
                self.registry.mark_deleted(record.id)
                removed.append(record.id)
        return removed

    def _new_path(self, step: int, weight_version: int) -> Path:
        base = self.run_dir / CHECKPOINTS / f"step{step:06d}-w{weight_version:06d}"
        path, n = base, 1
        while path.exists():  # the same step again after a rollback
            path, n = base.with_name(f"{base.name}-{n}"), n + 1
        return path
