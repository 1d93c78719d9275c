"""What every recipe shares (online RL, DPO, RM): its roles, its checkpoints and
registry, its guard (periodic checkpoints, eval gate, rollback), resume, held-out
evaluation of the policy through the engines, and the final save that registers the
trained model as the run's head."""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from rlhf_platform.evaluation import EvalReport
from rlhf_platform.gate import GateMetrics
from rlhf_platform.recipes.checkpointing import RunCheckpoints, RunState, open_registry
from rlhf_platform.recipes.evaluate import evaluate_sets
from rlhf_platform.recipes.guard import Guard
from rlhf_platform.recipes.run_roles import RunRoles, start_roles
from rlhf_platform.recipes.stats import TrainStats
from rlhf_platform.roles.executor import Executor

if TYPE_CHECKING:
    from rlhf_platform.recipes.run import RunInputs


class PolicyRun:
    def __init__(self, inputs: "RunInputs") -> None:
        self.inputs = inputs
        self.cfg = inputs.cfg
        self.checkpoints = RunCheckpoints(self.cfg, inputs.run_dir, open_registry(self.cfg, inputs.run_dir))
        self.roles: RunRoles | None = None
        self.stats = TrainStats()
        self.version = 0  # the weight version the engines serve (set by the recipe's loop)
        self.start_step = 0  # where training starts (a resumed run's checkpoint step)
        self.guard = Guard(self.cfg, self.checkpoints, inputs.eval_prompts)
        # A resume names a verified checkpoint before any role starts.
        self.resume_version = self.checkpoints.resume_version(self.cfg.resume) if self.cfg.resume else None
        self.start: RunState | None = None  # the checkpoint's state when resuming

    def setup(self, executor: Executor) -> None:
        self.roles = start_roles(executor, self.cfg, self.inputs.model_dir, self.inputs.train_prompts)

    def resumed(self, state: RunState) -> None:
        """Continue after checkpoint `state`: its step, its weight version and the
        learning rate rollbacks before it lowered (of whatever rate this run configures)."""
        self.start = state
        self.version, self.start_step = state.weight_version, state.step
        if state.lr_scale != 1.0:
            self.guard.scale_lr(self.roles, state.lr_scale)
        print(f"resumed from version {self.resume_version} (step {state.step}, weights v{self.version})", file=sys.stderr)

    def evaluate(self, when: str) -> EvalReport | None:
        """Every eval set at the served weights, if `eval.<when>` asks for it."""
        if not getattr(self.cfg.eval, when):
            return None
        return evaluate_sets(self.roles, self.cfg, self.inputs.eval_sets, self.version)

    def save_final(self, after: EvalReport | None) -> int | None:
        """Checkpoint the trained model (manifest, DeepSpeed state, HF export) and
        register it, with its held-out result, as the run's head; its registry version.
        A checkpoint this run saved at the same step and weight version is reused (what
        the gate recorded of it is kept)."""
        registry, run = self.checkpoints.registry, self.checkpoints.run
        record = self.checkpoints.last_saved
        if record is None or (record.step, record.weight_version) != (self.stats.steps, self.version):
            last_metrics = dict(self.stats.history[-1]) if self.stats.history else {}
            record = self.checkpoints.save(self.roles, self.stats.steps, self.version, last_metrics)
        results = self.final_eval(after)
        if results:
            registry.set_eval(record.id, {**results, **registry.get(record.id).eval})
        registry.set_head(run, record.id)
        return record.id

    def final_eval(self, after: EvalReport | None) -> dict[str, Any]:
        """What the registry records of the final model's held-out results: the gate's
        figures of the set it judges (gate.eval_set, gate.metric), and every set's."""
        if not after:
            return {}
        results: dict[str, Any] = {"sets": {name: r.figures() for name, r in after.items()}}
        gated = after.get(self.cfg.gate.eval_set)
        if gated is not None and gated.num_prompts:
            results.update(GateMetrics(gated.metric(self.cfg.gate.metric), gated.response_length_mean, gated.reward_mean).as_dict())
        return results

    def summary(self) -> dict[str, Any]:
        return {"weight_version": self.version, "resumed_from": self.resume_version}

    def shutdown(self) -> None:
        if self.roles is not None:
            self.roles.shutdown()
