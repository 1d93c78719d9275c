"""Replay: re-run a recorded streaming run deterministically (`replay=RUN_DIR`, or
`rlhf replay RUN_DIR`).

An asynchronous run's samples depend on timing: which weights were served when a reply
started, and where weight updates cut it (partial rollout). The run records both in
`schedule.jsonl` (per trained reply: its lease seed, which of the group's replies it
is, the first token and weights version of every engine submission, the step that
trained it). Streamed replies are seeded per submission by (lease seed, reply, first
token), so a reply is a function of those records and the weights alone. The replay
trains step by step; whenever a version is published, every recorded submission that
version served is generated again, cut at its recorded end, and each step trains the
replies the original step trained, in the same order. On the same machine the losses
match the original's (`rlhf replay` compares them).
"""
from __future__ import annotations

import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf_platform.config import Config
from rlhf_platform.recipes.checkpointing import RunState
from rlhf_platform.recipes.guard import Guard
from rlhf_platform.recipes.online_rl import OnStep, ScheduleSink, finish_step, train_policy
from rlhf_platform.recipes.run_roles import RunRoles
from rlhf_platform.recipes.stats import TrainStats
from rlhf_platform.sampling import SamplingSpec
from rlhf_platform.streaming import PinnedSegment, ReplayError, sample_seed
from rlhf_platform.types import Prompt, Trajectory
from rlhf_platform.versions import WeightVersions

REPLY_FIELDS = ("step", "prompt_id", "group_id", "lease_id", "seed", "sample", "segments", "response_tokens")


def read_schedule(run_dir: Path) -> list[dict[str, Any]]:
    """The recorded replies of `run_dir`'s schedule.jsonl, checked: a streaming run
    without rollbacks or restarts (its summary says), every row complete, each reply
    once, its submissions starting at token 0 and ordered, steps 1..N each present."""
    path = Path(run_dir) / "schedule.jsonl"
    if not path.exists():
        raise ReplayError(f"{path}: no schedule to replay (is {run_dir} a run directory?)")
    summary = Path(run_dir) / "summary.json"
    if summary.exists():
        recorded = json.loads(summary.read_text())
        if recorded.get("rollbacks") or recorded.get("faults_survived"):
            raise ReplayError(f"{summary}: the run rolled back or restarted a role; its schedule mixes what it trained twice")
    rows, seen = [], set()
    for number, line in enumerate(path.read_text().splitlines(), 1):
        row = json.loads(line)
        missing = [k for k in REPLY_FIELDS if row.get(k) is None]
        if missing:
            raise ReplayError(
                f"{path} row {number}: no {', '.join(missing)}; only runs with rollout.streaming=true record "
                "their interruption points (a batch run is reproduced by resume with rollout.max_staleness=0)"
            )
        key = (row["step"], row["group_id"], row["sample"])
        if key in seen:
            raise ReplayError(f"{path} row {number}: step {key[0]} trains reply {key[2]} of {key[1]} twice (a resumed or restarted run)")
        seen.add(key)
        starts, versions = [s for s, _ in row["segments"]], [v for _, v in row["segments"]]
        if not starts or starts[0] != 0 or starts != sorted(set(starts)) or versions != sorted(versions) or starts[-1] > row["response_tokens"]:
            raise ReplayError(f"{path} row {number}: segments {row['segments']} are not submissions from token 0 on, in order")
        rows.append(row)
    steps = sorted({row["step"] for row in rows})
    if steps != list(range(1, len(steps) + 1)):
        raise ReplayError(f"{path}: steps {steps[:3]}...{steps[-3:]} are not 1..N (a run with a rollback or restart)")
    return rows


@dataclass
class RecordedReply:
    """One trained reply of the original run, being generated again."""

    row: dict[str, Any]
    prompt: Prompt
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    done_segments: int = 0
    finish_reason: str | None = None

    @property
    def finished(self) -> bool:
        return self.done_segments == len(self.row["segments"])

    def next_segment(self, max_new_tokens: int) -> tuple[int, PinnedSegment]:
        """(version, segment) of the next recorded submission."""
        segments = self.row["segments"]
        start, version = segments[self.done_segments]
        last = self.done_segments + 1 == len(segments)
        end = max_new_tokens if last else segments[self.done_segments + 1][0]
        request = f"replay:{self.row['group_id']}:{self.row['sample']}:{start}"
        context = list(self.prompt.token_ids) + self.token_ids
        return version, PinnedSegment(request, context, sample_seed(self.row["seed"], self.row["sample"], start), end - start)

    def add(self, version: int, tokens: list[int], logprobs: list[float], finish_reason: str, expected: int) -> None:
        if len(tokens) != expected:
            raise ReplayError(
                f"replay diverged: reply {self.row['sample']} of group {self.row['group_id']} (step {self.row['step']}) "
                f"sampled {len(tokens)} tokens where the original had {expected}"
            )
        self.token_ids += tokens
        self.logprobs += logprobs
        self.versions += [version] * len(tokens)
        self.done_segments += 1
        self.finish_reason = finish_reason

    def trajectory(self, text: str) -> Trajectory:
        row, prompt = self.row, self.prompt
        return Trajectory.answering(
            prompt, group_id=row["group_id"], response_token_ids=self.token_ids, behaviour_logprobs=self.logprobs,
            weight_version=min(self.versions), finish_reason=row.get("finish_reason") or self.finish_reason or "length",
            response_text=text, engine=row.get("engine", ""),
            sampling_seed=row["seed"], lease_id=row["lease_id"], sample_index=row["sample"],
            token_versions=list(self.versions) if len(set(self.versions)) > 1 else None,
            segments=[tuple(s) for s in row["segments"]],
        )


def generate_served(roles: RunRoles, cfg: Config, replies: list[RecordedReply], version: int) -> None:
    """Generate every recorded submission weights `version` served (repeatedly: one
    reply may have been cut twice at one version), split over the engines."""
    spec = SamplingSpec.for_rollout(cfg.rollout, None)
    while True:
        ready = []
        for reply in replies:
            if reply.finished:
                continue
            needed, segment = reply.next_segment(cfg.rollout.max_new_tokens)
            if needed < version:
                raise ReplayError(f"replay: group {reply.row['group_id']} needs weights version {needed}, already replaced by {version}")
            if needed == version:
                ready.append((reply, segment))
        if not ready:
            return
        engines = roles.engines
        parts = [ready[i :: len(engines)] for i in range(len(engines))]
        futures = [engine.generate_pinned([s for _, s in part], spec, version) for engine, part in zip(engines, parts) if part]
        for part, outputs in zip([p for p in parts if p], roles.executor.get_all(futures)):
            for (reply, segment), out in zip(part, outputs):
                last = reply.done_segments + 1 == len(reply.row["segments"])
                expected = reply.row["response_tokens"] - len(reply.token_ids) if last else segment.max_tokens
                reply.add(version, out.token_ids, out.logprobs, out.finish_reason or "length", expected)


class Replay:
    """A recorded run being trained again (from its start, or from a checkpoint)."""

    def __init__(self, rows: list[dict[str, Any]], prompts: dict[str, Prompt]) -> None:
        missing = sorted({row["prompt_id"] for row in rows} - set(prompts))
        if missing:
            raise ReplayError(f"replay: the recorded prompts {missing[:5]} are not in this run's training data")
        self.by_step: OrderedDict[int, list[RecordedReply]] = OrderedDict()
        for row in rows:
            self.by_step.setdefault(row["step"], []).append(RecordedReply(row, prompts[row["prompt_id"]]))

    def replies_after(self, step: int) -> list[RecordedReply]:
        return [r for number, replies in self.by_step.items() if number > step for r in replies]

    def catch_up(self, roles: RunRoles, cfg: Config, checkpoints: Any, step: int, weight_version: int) -> None:
        """Before resuming at checkpoint `step` (weights `weight_version`): regenerate
        what older versions sampled of the replies trained after it, each version's
        weights loaded from its own checkpoint and published in turn."""
        later = self.replies_after(step)
        for version in sorted({v for r in later for _, v in r.row["segments"] if v < weight_version}):
            if version > 0 or roles.bus.latest_version().result() >= 0:
                checkpoints.publish_saved(roles, version)  # (nothing published yet: the engines serve the base model as 0)
            generate_served(roles, cfg, [r for r in later if not r.finished], version)

    def train(
        self, roles: RunRoles, cfg: Config, on_step: OnStep | None = None, guard: Guard | None = None,
        start: RunState | None = None, schedule_sink: ScheduleSink | None = None,
    ) -> tuple[TrainStats, WeightVersions]:
        """Train the recorded steps after `start` again, each on the replies the
        original step trained, in its order (the prompt queue counts them as trained)."""
        step = start.step if start else 0
        stats = TrainStats(steps=step, schedule_sink=schedule_sink)
        versions = WeightVersions.starting_at(start.weight_version if start else 0, cfg.trainer.sync_every, cfg.rollout.max_staleness)
        if guard is not None:
            guard.start(roles, step, versions.trained)
        later = self.replies_after(step)
        for number, step_replies in self.by_step.items():
            if number <= step:
                continue
            if step >= cfg.trainer.max_steps:
                break
            generate_served(roles, cfg, [r for r in later if not r.finished], versions.published)
            unready = [r for r in step_replies if not r.finished]
            if unready:
                raise ReplayError(f"replay: step {number} trained group {unready[0].row['group_id']}, whose weights were never published here")
            texts = roles.engines[0].decode([r.token_ids for r in step_replies]).result()
            trajectories = roles.score([r.trajectory(text) for r, text in zip(step_replies, texts)]).result()
            batch = roles.builder.build(trajectories, versions.trained).result()
            if len(batch) != len(step_replies):
                raise ReplayError(f"replay diverged at step {number}: {len(batch)} of {len(step_replies)} replies kept")
            groups = {r.row["group_id"]: r.row["prompt_id"] for r in step_replies}  # one prompt a group
            roles.queue.mark_trained(list(groups.values())).result()
            started = time.perf_counter()
            lr = guard.lr if guard else cfg.trainer.lr
            results = train_policy(roles, cfg, batch, lr_spike=cfg.faults.lr_spike_step == step + 1, lr=lr)
            step, stop = finish_step(roles, cfg, stats, guard, versions, step, batch, results, started, {}, lambda: None, on_step)
            if stats.rollbacks:
                raise ReplayError(f"replay: the guard rolled back step {step}, which the original run trained on")
            if stop:
                break
        return stats, versions


COMPARED = ("train/loss", "train/grad_norm", "train/entropy", "rollout/reward_mean")


def step_metrics(run_dir: Path) -> dict[int, dict[str, float]]:
    """The compared metrics of each trained step of a run (a resumed run's last record of a step)."""
    steps: dict[int, dict[str, float]] = {}
    for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "train/loss" in record:
            steps[int(record["step"])] = {k: float(record[k]) for k in COMPARED if k in record}
    return steps


def replay_run(run_dir: Path, tolerance: float = 1e-4, name: str | None = None) -> str:
    """`rlhf replay RUN_DIR`: re-run a recorded streaming run with its own config
    (`config.json`) into RUN_DIR's sibling `name` (default RUN-replay), then compare
    both schedules and each step's loss, gradient norm, entropy and reward; raises
    `ReplayError` if a figure differs by more than `tolerance`."""
    from omegaconf import OmegaConf

    from rlhf_platform.config import to_config
    from rlhf_platform.recipes.run import run

    run_dir = Path(run_dir).resolve()
    recorded = run_dir / "config.json"
    if not recorded.is_file():
        raise ReplayError(f"{recorded}: no recorded config (run directories written before replay existed have none)")
    name = name or f"{run_dir.name}-replay"
    if Path(name).name != name or name in ("", ".", "..", run_dir.name):
        raise ReplayError(f"--name {name!r}: give a plain directory name, other than the replayed run's")
    if not tolerance >= 0:
        raise ReplayError(f"--tolerance {tolerance}: give a number >= 0")
    cfg = to_config(OmegaConf.create(json.loads(recorded.read_text())))
    cfg.run.name, cfg.run.root = name, str(run_dir.parent)
    cfg.replay, cfg.resume, cfg.logger.backend = str(run_dir), None, "none"
    cfg = to_config(cfg)
    out_dir = run_dir.parent / cfg.run.name
    run(cfg, out_dir)
    original, replayed = step_metrics(run_dir), step_metrics(out_dir)
    if not original or original.keys() != replayed.keys():
        raise ReplayError(f"{out_dir} trained steps {sorted(replayed)}, {run_dir} steps {sorted(original)}")
    lines, failed = [], False
    for step in sorted(original):
        diffs = {k: abs(original[step][k] - replayed[step].get(k, float("nan"))) for k in original[step]}
        failed = failed or not all(d <= tolerance for d in diffs.values())  # a NaN on one side fails too
        loss = f"loss {original[step]['train/loss']: .6f} -> {replayed[step]['train/loss']: .6f}"
        lines.append(f"step {step:4d}  {loss}  max |diff| {max(diffs.values()):.2e} ({', '.join(diffs)})")
    key = ("group_id", "sample", "segments", "response_tokens", "step")
    same = [[r[k] for k in key] for r in read_schedule(run_dir)] == [[r[k] for k in key] for r in read_schedule(out_dir)]
    lines.append(f"schedule: {'identical' if same else 'DIFFERENT'} (replies, interruption points, steps)")
    worst = max(abs(original[s][k] - replayed[s].get(k, float("nan"))) for s in original for k in original[s])
    lines.append(f"replayed {len(original)} steps into {out_dir}: max |diff| {worst:.2e} (tolerance {tolerance:g})")
    if failed or not same:
        raise ReplayError("\n".join(lines + ["the replay does not match the original run"]))
    return "\n".join(lines)
