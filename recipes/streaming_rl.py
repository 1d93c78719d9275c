"""Streaming online RL (`rollout.streaming=true`): the same algorithm as
`online_rl.train`, with rollout and training decoupled per group.

  engines (continuously) -> finished group -> reward -> (reference) -> (critic) -> buffer
  buffer -> the next prompts_per_step fresh groups -> advantages -> train -> publish

Each group is leased on its own and handed to the least loaded engine; engines return
groups as they finish (a short one does not wait for a long one) and keep generating
while the trainer trains. Backpressure (`can_admit`): a group is leased only when a
version fresh enough for it is published and fewer than `rollout.buffer_groups` groups
are outstanding. A group older than the bound when a step would take it is dropped and
its prompt leased again (or, `rollout.stale_tokens=mask`, its old tokens are masked).
Every lease is acked once trained or nacked when dropped, so the prompt ledger and the
fault recovery of the batch loop hold here too.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from rlhf_platform.config import Config
from rlhf_platform.freshness import split_by_freshness
from rlhf_platform.recipes.checkpointing import RunState
from rlhf_platform.recipes.guard import Guard
from rlhf_platform.recipes.online_rl import (
    MAX_EMPTY_BATCHES, OnStep, ScheduleSink, finish_step, recover_services, report_outcomes, restart_training, run_bounds,
    train_policy,
)
from rlhf_platform.recipes.run_roles import RunRoles
from rlhf_platform.recipes.stats import TrainStats
from rlhf_platform.roles.executor import Future, RoleDied
from rlhf_platform.roles.inprocess import Done
from rlhf_platform.sampling import SamplingSpec
from rlhf_platform.streaming import GroupBuffer, GroupRequest, can_admit
from rlhf_platform.types import TrainBatch, Trajectory, by_group_id
from rlhf_platform.versions import WeightVersions

POLL_SECONDS = 0.005  # how often the driver looks at its calls in flight
STREAM_CALL_SECONDS = 2.0  # an engine's stream call returns after its first finished group, or this long
IDLE_RETRY_SECONDS = 0.05


@dataclass
class EngineSlot:
    """The driver's view of one engine: what it was given and its call in flight."""

    handle: Any
    pending: list[GroupRequest] = field(default_factory=list)  # to hand over with the next call
    leases: set[int] = field(default_factory=set)  # given and not returned
    call: Future | None = None
    in_flight: int = 0  # unfinished groups, as the engine last reported
    busy_seconds: float = 0.0
    sync_seconds: float = 0.0
    interruptions: int = 0
    retry_at: float = 0.0  # after a call that could start nothing: when to call again


@dataclass
class Scoring:
    future: Future
    lease_ids: list[int]


class StreamingRollout:
    """Leases groups, keeps every engine busy, scores what they finish into the buffer."""

    def __init__(self, roles: RunRoles, cfg: Config, max_lag: int) -> None:
        self.roles, self.cfg = roles, cfg
        self.per_step = cfg.rollout.prompts_per_step
        self.max_lag = max_lag
        self.capacity = cfg.rollout.buffer_groups or (max_lag + 1) * self.per_step
        self.spec = SamplingSpec.for_rollout(cfg.rollout, None)
        self.slots = [EngineSlot(engine) for engine in roles.engines]
        self.scoring: list[Scoring] = []
        self.buffer = GroupBuffer()
        self.outstanding = 0  # leased, not yet trained or given back
        self.dropped_stale = 0
        self.dropped_uniform = 0
        self.uniform_in_a_row = 0

    # -- leasing and engines -------------------------------------------------------
    def admit(self, versions: WeightVersions, groups_needed: int, updating: bool) -> None:
        """Lease groups while the bound allows and the run still needs them. While an
        update is `updating` the next steps train at versions one higher."""
        trained = versions.trained + (1 if updating else 0)
        while self.outstanding < groups_needed:
            min_version = can_admit(self.outstanding, self.capacity, trained, versions.published, self.max_lag, self.per_step)
            if min_version is None:
                return
            lease = self.roles.queue.lease(1).result()
            slot = min(self.slots, key=lambda s: len(s.leases) + len(s.pending))
            slot.pending.append(GroupRequest(lease.lease_id, lease.prompts[0], lease.seed, min_version))
            self.outstanding += 1

    def pump(self) -> None:
        """Give every engine with work a stream call (it returns after its first
        finished group, so finished groups reach the trainer as they come)."""
        for slot in self.slots:
            if slot.call is None and (slot.pending or (slot.in_flight and time.monotonic() >= slot.retry_at)):
                slot.leases.update(r.lease_id for r in slot.pending)
                slot.call = slot.handle.stream(slot.pending, self.spec, self.cfg.rollout.partial, 1, STREAM_CALL_SECONDS)
                slot.pending = []

    def calls(self) -> list[Future]:
        return [s.call for s in self.slots if s.call is not None] + [s.future for s in self.scoring]

    def collect(self) -> bool:
        """Take in finished stream calls (their groups go to scoring) and finished
        scoring (groups go to the buffer); whether any of them succeeded. A role that
        died raises `RoleDied` once, after every group it held went back to the queue:
        an engine's (what it may still return later is ignored), or, when a scoring
        service died, every scoring in flight (they share its fate)."""
        progressed, died, scorer_died = False, None, False
        for slot in self.slots:
            if slot.call is None or not slot.call.done():
                continue
            call, slot.call = slot.call, None
            try:
                batch = call.result()
            except RoleDied as err:
                died = died or err
                self._give_back(sorted(slot.leases))
                slot.leases.clear()
                slot.in_flight = 0
                slot.handle.drop_stream()  # an actor that survived forgets them too
                continue
            progressed = True
            slot.interruptions = batch.interruptions
            slot.busy_seconds += batch.busy_seconds
            slot.sync_seconds += batch.sync_seconds
            if not batch.groups and not batch.busy_seconds and not batch.sync_seconds:
                slot.retry_at = time.monotonic() + IDLE_RETRY_SECONDS  # nothing could start yet: no busy loop
            returned = [group for group in batch.groups if group[0].lease_id in slot.leases]
            returned_ids = {group[0].lease_id for group in returned}
            lost = slot.leases - returned_ids - set(batch.holding)  # the engine restarted between calls
            self._give_back(sorted(lost))
            slot.leases -= returned_ids | lost
            slot.in_flight = len(batch.holding)
            if returned:
                self.scoring.append(Scoring(self.roles.score([t for group in returned for t in group]), sorted(returned_ids)))
        for scoring in [s for s in self.scoring if s.future.done()]:
            self.scoring.remove(scoring)
            try:
                scored = scoring.future.result()
            except RoleDied as err:
                died, scorer_died = died or err, True
                self._give_back(scoring.lease_ids)
                continue
            progressed = True
            for group in by_group_id(scored):
                self._buffer(group)
        if scorer_died:
            for scoring in self.scoring:
                scoring.future.wait()
                self._give_back(scoring.lease_ids)
            self.scoring.clear()
        if died is not None:
            raise died
        return progressed

    def waiting_to_retry(self) -> bool:
        """Whether an engine holds groups it could not start yet (polled again shortly)."""
        return any(s.call is None and s.in_flight and time.monotonic() < s.retry_at for s in self.slots)

    def _buffer(self, group: list[Trajectory]) -> None:
        """A scored group joins the buffer; with DAPO's dynamic sampling a group whose
        rewards are all equal is dropped here (its prompt was used) and another leased."""
        if self.cfg.algo.dapo.dynamic_sampling and len({t.reward for t in group}) == 1:
            self.roles.queue.ack(group[0].lease_id)
            report_outcomes(self.roles, self.cfg, group)
            self.outstanding -= 1
            self.dropped_uniform += 1
            self.uniform_in_a_row += 1
            if self.uniform_in_a_row > MAX_EMPTY_BATCHES * self.per_step:
                raise RuntimeError(
                    f"dynamic sampling found no prompt with both right and wrong samples in {self.uniform_in_a_row} "
                    "groups in a row: the task is too easy or too hard for this model (set "
                    "algo.dapo.dynamic_sampling=false or change the task)"
                )
            return
        self.uniform_in_a_row = 0
        self.buffer.put(group)

    # -- the trainer's side ----------------------------------------------------------
    def take_step(self, trained: int) -> list[Trajectory] | None:
        """The first `prompts_per_step` groups to finish, for an update at version
        `trained`, in lease order (a step's batch does not depend on which engine
        answered first); groups that are stale by now are dropped first (counted, their
        prompts leased again). None until enough fresh groups are here."""
        for group in list(self.buffer.groups):
            fresh, _ = split_by_freshness(group, trained, self.max_lag, self.cfg.rollout.stale_tokens)
            if not fresh:
                self.buffer.groups.remove(group)
                self.dropped_stale += len(group)
                self._give_back([group[0].lease_id])
        if len(self.buffer) < self.per_step:
            return None
        groups = sorted(self.buffer.take(self.per_step), key=lambda group: group[0].lease_id)
        self.outstanding -= len(groups)
        return [t for group in groups for t in group]

    def _give_back(self, lease_ids: list[int]) -> None:
        for lease_id in lease_ids:
            self.roles.queue.nack(lease_id)
        self.outstanding -= len(lease_ids)

    def drain(self) -> None:
        """Give every group not trained back to the queue: engines forget theirs, scoring
        in flight is waited for, the buffer is emptied (a rollback, a restart, the end)."""
        for slot in self.slots:
            if slot.call is not None:
                slot.call.wait()
                slot.call = None
        for scoring in self.scoring:
            scoring.future.wait()
        lease_ids = [lease_id for s in self.scoring for lease_id in s.lease_ids] + [g[0].lease_id for g in self.buffer.take_all()]
        self.scoring.clear()
        for slot in self.slots:
            try:
                slot.handle.drop_stream().result()
            except RoleDied:
                pass  # it restarts empty
            lease_ids += list(slot.leases) + [r.lease_id for r in slot.pending]
            slot.leases.clear()
            slot.pending.clear()
            slot.in_flight = 0
        self._give_back(lease_ids)

    def metrics(self, wall: float) -> dict[str, float]:
        """Where the rollout side stands, and how busy the engines were over `wall` seconds."""
        engines = max(1, len(self.slots))
        busy = sum(s.busy_seconds for s in self.slots)
        out = {
            "stream/buffer_groups": float(len(self.buffer)),
            "stream/outstanding_groups": float(self.outstanding),
            "stream/dropped_stale_samples": float(self.dropped_stale),
            "stream/dropped_uniform_groups": float(self.dropped_uniform),
            "stream/interrupted_replies": float(sum(s.interruptions for s in self.slots)),
            "stream/engine_busy_share": busy / max(wall * engines, 1e-9),
            "stream/engine_sync_seconds": sum(s.sync_seconds for s in self.slots),
        }
        for slot in self.slots:
            slot.busy_seconds = slot.sync_seconds = 0.0
        return out


def train_streaming(
    roles: RunRoles, cfg: Config, on_step: OnStep | None = None, guard: Guard | None = None, start: RunState | None = None,
    schedule_sink: ScheduleSink | None = None,
) -> tuple[TrainStats, WeightVersions]:
    """`online_rl.train` with streaming rollout (see the module docstring)."""
    step = start.step if start else 0
    stats = TrainStats(steps=step, schedule_sink=schedule_sink)
    versions = WeightVersions.starting_at(start.weight_version if start else 0, cfg.trainer.sync_every, cfg.rollout.max_staleness)
    rollout = StreamingRollout(roles, cfg, versions.max_lag)
    background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="train-step") if roles.executor.name != "inprocess" else None
    failures_in_a_row = 0
    if guard is not None:
        guard.start(roles, step, versions.trained)
    training: tuple[Future, TrainBatch, float] | None = None  # the update in flight: (future, batch, started)
    waited_since = time.perf_counter()
    step_started = time.perf_counter()
    try:
        while step < cfg.trainer.max_steps:
            steps_left = cfg.trainer.max_steps - step - (1 if training else 0)
            rollout.admit(versions, steps_left * rollout.per_step, updating=training is not None)
            rollout.pump()
            if training is None:
                trajectories = rollout.take_step(versions.trained)
                if trajectories is not None:
                    training = start_update(roles, cfg, guard, background, trajectories, versions, step, stats)
                    if training is None:
                        continue
            pending = rollout.calls() + ([training[0]] if training else [])
            if not pending and rollout.waiting_to_retry():
                time.sleep(IDLE_RETRY_SECONDS)
                continue
            if not pending:
                raise RuntimeError(
                    f"streaming stalled at step {step + 1}: nothing in flight, {len(rollout.buffer)} groups buffered, "
                    f"{rollout.outstanding} outstanding (rollout.buffer_groups={rollout.capacity})"
                )
            while not any(f.done() for f in pending):
                time.sleep(POLL_SECONDS)
            try:
                if rollout.collect():
                    failures_in_a_row = 0
            except RoleDied as err:
                failures_in_a_row += 1
                recover_services(roles, cfg, stats, versions, step, err, failures_in_a_row, republish=training is None)
            if training is None or not training[0].done():
                continue
            future, batch, train_started = training
            training = None
            try:
                results = future.result()
            except RoleDied as err:
                step = restart_training(roles, cfg, stats, guard, rollout.drain, versions, step, err)
                continue
            wall = time.perf_counter() - step_started
            extra = {
                "time/rollout_wait_seconds": train_started - waited_since,
                "time/step_seconds": wall,
                **rollout.metrics(wall),
                **run_bounds(roles, sum(s.in_flight for s in rollout.slots)),
            }
            step, stop = finish_step(roles, cfg, stats, guard, versions, step, batch, results, train_started, extra, rollout.drain, on_step)
            waited_since = step_started = time.perf_counter()
            if stop:
                break
    finally:
        if background is not None:
            background.shutdown(wait=True)
    stats.dropped_stale += rollout.dropped_stale
    stats.extra["dropped_uniform_groups"] = rollout.dropped_uniform
    rollout.drain()
    return stats, versions


def start_update(
    roles: RunRoles, cfg: Config, guard: Guard | None, background: ThreadPoolExecutor | None,
    trajectories: list[Trajectory], versions: WeightVersions, step: int, stats: TrainStats,
) -> tuple[Future, TrainBatch, float] | None:
    """Build the step's batch (advantages) and start its update: in a driver thread
    under Ray (the loop goes on feeding the engines), inline in process. None if the
    freshness rule left nothing to train (the prompts went back)."""
    batch = roles.builder.build(trajectories, versions.trained).result()
    stats.dropped_stale += batch.dropped_stale
    kept = {t.lease_id for t in batch.trajectories}
    for lease_id in dict.fromkeys(t.lease_id for t in trajectories):
        (roles.queue.ack if lease_id in kept else roles.queue.nack)(lease_id)
    report_outcomes(roles, cfg, [t for t in trajectories if t.lease_id in kept])
    if not batch.trajectories:
        return None
    update: Callable[[], list[dict[str, float]]] = lambda: train_policy(
        roles, cfg, batch, lr_spike=cfg.faults.lr_spike_step == step + 1, lr=guard.lr if guard else cfg.trainer.lr
    )
    started = time.perf_counter()
    future = _ThreadFuture(background.submit(update)) if background is not None else Done(update)
    return future, batch, started


class _ThreadFuture:
    """A driver-thread update as the loop's futures look (`done`, `result`, `wait`)."""

    def __init__(self, future: Any) -> None:
        self._future = future

    def result(self, timeout: float | None = None) -> Any:
        return self._future.result(timeout)

    def done(self) -> bool:
        return self._future.done()

    def wait(self) -> None:
        self._future.exception()
