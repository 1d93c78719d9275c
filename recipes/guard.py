"""The run's guard: periodic checkpoints, the eval gate, the divergence watch, rollback.

A recipe calls `start` once and `after_step` after every optimizer step. With the gate
on (`gate.every > 0`), the weights training starts from are checkpointed, evaluated and
promoted as the first champion; every `gate.every` steps the candidate is checkpointed,
evaluated greedily on held-out prompts and promoted if it passes the gates against the
champion, else rejected. A failed gate or a diverged step (non-finite loss, KL
explosion, reward or entropy collapse) answers "rollback" (restore the champion and
continue), "stop", or, with `gate.on_fail=reject`, only records it. Every decision and
its reason is in the registry.

What "evaluated" means is the recipe's: by default greedy generation on held-out prompts
(the policy recipes); a reward model passes an evaluator scoring held-out pairs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from rlhf_platform.config import Config
from rlhf_platform.divergence import DivergenceWatch
from rlhf_platform.gate import GateMetrics, gate_failures
from rlhf_platform.recipes.checkpointing import RunCheckpoints
from rlhf_platform.recipes.evaluate import evaluate
from rlhf_platform.recipes.run_roles import RunRoles
from rlhf_platform.registry import Event, VersionRecord, champion
from rlhf_platform.types import Prompt


Evaluator = Callable[[RunRoles, int], GateMetrics]  # (roles, weight version) -> the held-out figures the gate compares


@dataclass
class Verdict:
    action: str = "continue"  # continue | rollback | stop
    reason: str = ""


class Guard:
    def __init__(
        self, cfg: Config, checkpoints: RunCheckpoints, eval_prompts: list[Prompt], evaluator: Evaluator | None = None
    ) -> None:
        self.cfg = cfg
        self.gate = cfg.gate
        self.checkpoints = checkpoints
        self.registry = checkpoints.registry
        self.run = checkpoints.run
        self.prompts = eval_prompts[: self.gate.eval_prompts] if self.gate.eval_prompts else eval_prompts
        self.watch = DivergenceWatch(cfg.gate)
        self.lr = cfg.trainer.lr
        self.rollbacks = 0
        self.evaluator = evaluator or self._generate

    def scale_lr(self, roles: RunRoles, scale: float) -> None:
        """Train at `trainer.lr` x `scale` from now on; checkpoints record the scale, so a
        resumed run keeps what rollbacks did to the rate (of whatever rate it configures)."""
        self.checkpoints.lr_scale = scale
        self.lr = self.cfg.trainer.lr * scale
        roles.policy.set_lr(self.lr)

    @property
    def enabled(self) -> bool:
        return self.gate.every > 0

    def start(self, roles: RunRoles, step: int, weight_version: int) -> None:
        """Make the weights training starts from the first champion, unless the run
        (resumed) already has one."""
        if not self.enabled or champion(self.registry, self.run) is not None:
            return
        record = self.checkpoints.save(roles, step, weight_version, {})
        result = self._evaluate(roles, weight_version)
        self.registry.set_eval(record.id, result.as_dict())
        self.registry.set_status(record.id, "promoted", "the weights training starts from")

    def judges_at(self, step: int) -> bool:
        """Whether the gate evaluates the weights of `step` (they must be published then)."""
        return self.enabled and step % self.gate.every == 0

    def after_step(self, roles: RunRoles, step: int, weight_version: int, metrics: dict[str, float]) -> Verdict:
        """Watch this step, and at gate steps judge the candidate; checkpoint when due."""
        if not self.enabled:
            if self.checkpoints.due(step):
                self.checkpoints.save(roles, step, weight_version, metrics)
            return Verdict()
        reason = self.watch.check(metrics)
        if reason is not None:
            return self._failed(step, f"diverged at step {step}: {reason}", None)
        if step % self.gate.every and not self.checkpoints.due(step):
            return Verdict()
        record = self.checkpoints.save(roles, step, weight_version, metrics)
        if step % self.gate.every:
            return Verdict()
        return self._judge(roles, step, record, metrics)

    def roll_back(self, roles: RunRoles, step: int, publish_as: int | None, reason: str) -> None:
        """Restore the champion into the trainers (its weights published as
        `publish_as`; None: nothing serves them), mark what it replaces rolled back,
        lower the learning rate if configured."""
        best = champion(self.registry, self.run)
        for record in self.registry.versions(self.run):
            if record.id > best.id and record.status == "candidate":
                self.registry.set_status(record.id, "rolled_back", reason)
        self.checkpoints.roll_back(roles, best.id, publish_as)
        self.rollbacks += 1
        if self.gate.rollback_lr_factor < 1.0:
            self.scale_lr(roles, self.checkpoints.lr_scale * self.gate.rollback_lr_factor)
        self.registry.log_event(Event(self.run, step, "rollback", f"{reason}; restored version {best.id}", best.id))
        self.watch.reset()

    def _judge(self, roles: RunRoles, step: int, record: VersionRecord, metrics: dict[str, float]) -> Verdict:
        kl, entropy = self.watch.recent()
        result = self._evaluate(roles, record.weight_version, kl, entropy)
        self.registry.set_eval(record.id, result.as_dict())
        best = champion(self.registry, self.run)
        failures = gate_failures(result, GateMetrics.from_eval(best.eval), self.gate)
        metrics.update({"gate/accuracy": result.accuracy, "gate/champion_accuracy": best.eval["accuracy"]})
        metrics["gate/passed"] = float(not failures)
        if not failures:
            self.registry.set_status(
                record.id, "promoted", f"passed the gate: accuracy {result.accuracy:.3f} vs champion {best.eval['accuracy']:.3f}"
            )
            return Verdict()
        reason = "; ".join(failures)
        self.registry.set_status(record.id, "rejected", reason)
        return self._failed(step, f"gate failed at step {step}: {reason}", record.id)

    def _failed(self, step: int, reason: str, version: int | None) -> Verdict:
        if self.gate.on_fail == "reject":
            self.registry.log_event(Event(self.run, step, "reject", reason, version))
            return Verdict()
        if self.gate.on_fail == "stop":
            self.registry.log_event(Event(self.run, step, "stop", reason, version))
            return Verdict("stop", reason)
        return Verdict("rollback", reason)

    def _evaluate(self, roles: RunRoles, weight_version: int, kl: float | None = None, entropy: float | None = None) -> GateMetrics:
        result = self.evaluator(roles, weight_version)
        result.kl, result.entropy = kl, entropy
        return result

    def _generate(self, roles: RunRoles, weight_version: int) -> GateMetrics:
        """Replies to gate.eval_set's prompts at `weight_version`, scored; `accuracy` is
        gate.metric (greedy accuracy, pass@n or mean@n)."""
        result = evaluate(roles, self.cfg, self.prompts, weight_version, self.gate.eval_set)
        return GateMetrics(result.metric(self.gate.metric), result.response_length_mean, result.reward_mean)
