"""The Prompt Queue role: leases prompts to rollout, takes them back on failure.

Prompts are drawn per pool with configured weights: a pool is a difficulty level, or
with a task mixture a (dataset, level), weighted by the dataset's probability times the
level's share of its weights. Each pool is a seeded shuffle, reshuffled when exhausted
(a new epoch). A lease is acked when its
samples were trained on and nacked when they failed or were dropped: nacked prompts
are leased again before any new draw. With `curriculum.enabled` the driver reports the
rewards of acked prompts (`record_outcomes`), and the queue filters and prioritizes
prompts by their pass rates (`rlhf_platform/curriculum.py`).
"""
from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from rlhf_platform.curriculum import Curriculum
from rlhf_platform.roles.metrics import RoleMetrics
from rlhf_platform.types import Prompt

if TYPE_CHECKING:
    from rlhf_platform.config import CurriculumConfig

T = TypeVar("T")


@dataclass
class Lease:
    lease_id: int
    prompts: list[Prompt]
    seed: int = 0  # sampling seed of this lease's rollout: a function of the run seed and lease id


def lease_seed(run_seed: int, lease_id: int) -> int:
    """The sampling seed of lease `lease_id`: the same in a resumed run as in an uninterrupted one."""
    return (run_seed * 1_000_003 + lease_id * 7_919 + 1) % (2**31 - 1)


@dataclass
class QueueStats:
    leased: int = 0
    acked: int = 0
    requeued: int = 0
    in_flight: int = 0
    epochs: dict[str, int] = field(default_factory=dict)  # by pool (`pool_of`)
    # the curriculum's counts (`Curriculum.counts`: filtered_easy, filtered_hard, refills, ...); empty when it is off
    curriculum: dict[str, float] = field(default_factory=dict)


def level_weights_of(levels: list[int], weights: list[float] | None, key: str = "task.weights") -> dict[int, float]:
    """Each level's sampling weight: level i gets `weights[i]` (the config key `key`);
    without weights every level weighs 1. A level present with no weight is an error,
    not a level never sampled."""
    if not weights:
        return {lvl: 1.0 for lvl in levels}
    beyond = [lvl for lvl in levels if not 0 <= lvl < len(weights)]
    if beyond:
        raise ValueError(
            f"prompts of difficulty level(s) {beyond} have no sampling weight: {key}={list(weights)} weighs "
            f"levels 0 to {len(weights) - 1}, and the levels present are {levels}; give {key} one entry per "
            "level (level i is sampled with its i-th weight), or relabel the prompts' difficulty"
        )
    return _scaled({lvl: weights[lvl] for lvl in levels})


def _scaled(weights: dict[T, float]) -> dict[T, float]:
    """`weights` divided by the largest where their total overflows (1e308 twice is inf), so
    that finite weights of any size sum to a finite total and keep their ratios (unchanged
    otherwise: the draws of a run are the same as before)."""
    largest = max(weights.values(), default=0.0)
    if math.isfinite(sum(weights.values())) or not 0 < largest < math.inf:
        return dict(weights)
    return {k: w / largest for k, w in weights.items()}


def pool_of(prompt: Prompt) -> str:
    """The pool a prompt is drawn from: its level ("1"), or in a mixture its dataset's ("gsm8k/1")."""
    return f"{prompt.dataset}/{prompt.difficulty}" if prompt.dataset else str(prompt.difficulty)


def _pool_order(pool: str) -> tuple[str, int]:
    dataset, _, level = pool.rpartition("/")
    return dataset, int(level)


MixtureWeights = dict[str, tuple[float, list[float] | None]]  # dataset -> (probability, its level weights)


def pool_weights(
    pools: dict[str, list[Prompt]], level_weights: list[float] | None, mixture: MixtureWeights | None
) -> dict[str, float]:
    """Each pool's sampling weight: its level's weight; in a mixture, the dataset's share
    of the probabilities times the level's share of the dataset's weights (so each
    dataset is drawn with its probability whatever its levels). Weights and probabilities
    are scaled by their largest first, so finite ones of any size give finite weights."""
    by_dataset: dict[str, list[int]] = {}
    for pool in pools:
        dataset, level = _pool_order(pool)
        by_dataset.setdefault(dataset, []).append(level)
    if mixture is None:
        if set(by_dataset) != {""}:
            raise ValueError(f"prompts of datasets {sorted(by_dataset)} but no mixture weights for them")
        return {str(lvl): w for lvl, w in level_weights_of(by_dataset[""], level_weights).items()}
    missing = set(by_dataset) - set(mixture)
    if missing:
        raise ValueError(f"prompts of dataset(s) {sorted(missing)} are not in task.mixture ({sorted(mixture)})")
    empty = set(mixture) - set(by_dataset)
    if empty:  # its probability would silently go to the others
        raise ValueError(
            f"task.mixture dataset(s) {sorted(empty)} have no training prompt left (every row skipped as too long or "
            "bad?): fix their rows, or leave them out of task.mixture"
        )
    probabilities = _scaled({d: mixture[d][0] for d in by_dataset})  # 1e308 twice: 1 and 1, not a total of inf
    total = sum(probabilities.values())
    weights: dict[str, float] = {}
    for dataset, levels in by_dataset.items():
        probability, own = probabilities[dataset], mixture[dataset][1]
        key = f"task.mixture[{dataset}].weights" if own is not None else "task.weights"
        per_level = level_weights_of(levels, own if own is not None else level_weights, key)
        level_total = sum(per_level.values())
        if level_total <= 0:
            raise ValueError(f"{key} gives no weight to the levels {levels} of dataset {dataset!r}")
        for lvl, w in per_level.items():
            weights[f"{dataset}/{lvl}"] = probability / total * w / level_total
    return weights


class PromptQueue:
    def __init__(
        self, prompts: list[Prompt], level_weights: list[float] | None = None, seed: int = 0,
        curriculum: "CurriculumConfig | None" = None, mixture: MixtureWeights | None = None,
    ) -> None:
        if not prompts:
            raise ValueError("the prompt queue needs at least one prompt")
        self._seed = seed
        self._rng = random.Random(seed)
        grouped: dict[str, list[Prompt]] = {}
        for p in prompts:
            grouped.setdefault(pool_of(p), []).append(p)
        pools = sorted(grouped, key=_pool_order)
        self._by_pool = {pool: grouped[pool] for pool in pools}
        self._weights = pool_weights(self._by_pool, level_weights, mixture)
        if sum(self._weights.values()) <= 0:
            raise ValueError(f"task.weights={level_weights} give no weight to the levels present {pools}")
        self._curriculum = Curriculum(curriculum) if curriculum is not None and curriculum.enabled else None
        self._pending: dict[str, deque[Prompt]] = {pool: deque() for pool in pools}
        self._retry: deque[Prompt] = deque()
        self._reissue: deque[Lease] = deque()  # leases in flight at a checkpoint, leased again as they were
        self._leases: dict[int, Lease] = {}
        self._next_lease = 0
        self.stats = QueueStats(epochs={pool: 0 for pool in pools})
        self.ledger: list[str] = []  # prompt ids acked, in order
        self._by_id = {p.prompt_id: p for p in prompts}
        self.metrics = RoleMetrics("prompt-queue")

    def _draw(self, pool: str) -> Prompt:
        """The pool's next prompt in its seeded shuffle (a new epoch when exhausted),
        passing over prompts the curriculum filtered."""
        pending = self._pending[pool]
        while True:
            if not pending:
                order = list(self._by_pool[pool])
                if self._curriculum is not None:
                    order = self._curriculum.unfiltered(order)
                self._rng.shuffle(order)
                pending.extend(order)
                self.stats.epochs[pool] += 1
            prompt = pending.popleft()
            if self._curriculum is None or not self._curriculum.is_filtered(prompt.prompt_id):
                return prompt

    def _draw_prioritized(self, count: int, pools: list[str], weights: list[float], taken: list[Prompt]) -> list[Prompt]:
        """`count` prompts, each pool drawn with its weight, then the pool's prompts by
        curriculum priority (none twice in a lease, nor one of `taken`, while it can)."""
        assert self._curriculum is not None
        chosen = self._rng.choices(pools, weights, k=count)
        exclude = frozenset(p.prompt_id for p in taken)
        drawn = {
            pool: iter(self._curriculum.sample(self._by_pool[pool], chosen.count(pool), self._rng, exclude))
            for pool in sorted(set(chosen), key=_pool_order)
        }
        return [next(drawn[pool]) for pool in chosen]

    def lease(self, count: int) -> Lease:
        """Lease `count` prompts, each level drawn with its weight. A lease that was in
        flight when the checkpoint this queue was restored from was taken comes back
        first, under its id and seed (a resumed run samples those prompts as the run
        would have), when it has `count` prompts; otherwise its prompts are retried."""
        while self._reissue:
            lease = self._reissue.popleft()
            if len(lease.prompts) == count:
                self._leases[lease.lease_id] = lease
                self.stats.leased += count
                self.stats.in_flight += count
                self._record_depth()
                return lease
            self._retry.extend(lease.prompts)
        pools = [pool for pool, w in self._weights.items() if w > 0]
        weights = [self._weights[pool] for pool in pools]
        prompts = []
        while len(prompts) < count and self._retry:
            prompts.append(self._retry.popleft())
        if self._curriculum is not None and self._curriculum.cfg.sampling == "prioritized" and len(prompts) < count:
            prompts += self._draw_prioritized(count - len(prompts), pools, weights, prompts)
        while len(prompts) < count:
            prompts.append(self._draw(self._rng.choices(pools, weights)[0]))
        lease = Lease(self._next_lease, prompts, lease_seed(self._seed, self._next_lease))
        self._next_lease += 1
        self._leases[lease.lease_id] = lease
        self.stats.leased += count
        self.stats.in_flight += count
        self._record_depth()
        return lease

    def ack(self, lease_id: int) -> None:
        """The lease's prompts were used: record them in the ledger."""
        lease = self._leases.pop(lease_id)
        self.ledger.extend(p.prompt_id for p in lease.prompts)
        self.stats.acked += len(lease.prompts)
        self.stats.in_flight -= len(lease.prompts)
        self._record_depth()

    def nack(self, lease_id: int) -> None:
        """The lease failed or was dropped: its prompts are the next ones leased."""
        lease = self._leases.pop(lease_id)
        self._retry.extend(lease.prompts)
        self.stats.requeued += len(lease.prompts)
        self.stats.in_flight -= len(lease.prompts)
        self._record_depth()

    def mark_trained(self, prompt_ids: list[str]) -> None:
        """A replay trained these prompts without leasing them: take each out of what
        is waiting (a reissued lease, the retries, the pending draws), and count and
        ledger it as leased and acked, so the queue goes on without repeating them."""
        for prompt_id in prompt_ids:
            for lease in list(self._reissue):
                found = next((p for p in lease.prompts if p.prompt_id == prompt_id), None)
                if found is not None:
                    lease.prompts.remove(found)
                    if not lease.prompts:
                        self._reissue.remove(lease)
                    break
            else:
                waiting = [self._retry, *self._pending.values()]
                queue = next((q for q in waiting if any(p.prompt_id == prompt_id for p in q)), None)
                if queue is not None:
                    queue.remove(next(p for p in queue if p.prompt_id == prompt_id))
            self.ledger.append(prompt_id)
            self.stats.leased += 1
            self.stats.acked += 1
        self._record_depth()

    def record_outcomes(self, outcomes: dict[str, list[float]]) -> None:
        """The rewards of trained (or used) prompts' samples, one visit per prompt id
        (`curriculum.outcomes`): the curriculum's pass rates. Nothing when it is off."""
        if self._curriculum is None:
            return
        for prompt_id, rewards in outcomes.items():
            if prompt_id not in self._by_id:
                raise ValueError(f"outcomes reported for prompt {prompt_id!r}, which is not in this queue")
            self._curriculum.record(prompt_id, list(rewards))

    def _record_depth(self) -> None:
        """Queue depth for the dashboard: prompts waiting in this epoch (and returned
        ones), and prompts leased to rollouts not yet acked."""
        pending = sum(map(len, self._pending.values())) + len(self._retry) + sum(len(l.prompts) for l in self._reissue)
        self.metrics.set("queue_depth", pending, state="pending")
        self.metrics.set("queue_depth", self.stats.in_flight, state="in_flight")

    def get_stats(self) -> QueueStats:
        if self._curriculum is not None:
            self.stats.curriculum = self._curriculum.counts()
        return self.stats

    def get_ledger(self) -> list[str]:
        return list(self.ledger)

    def get_state(self) -> dict:
        """The queue's position as JSON-ready data, for a checkpoint.

        Prompts leased but not yet acked were not trained on, so they are saved as if
        nacked: a queue restored from this state leases them first, as the same leases
        (ids and seeds).
        """
        leases = sorted([*self._reissue, *self._leases.values()], key=lambda l: l.lease_id)
        leased_out = sum(len(lease.prompts) for lease in self._leases.values())  # reissues are not counted leased yet
        version, internal, gauss = self._rng.getstate()
        return {
            "rng": [version, list(internal), gauss],
            "pending": {pool: [p.prompt_id for p in q] for pool, q in self._pending.items()},
            "retry": [p.prompt_id for p in self._retry],
            "reissue": [{"lease_id": l.lease_id, "seed": l.seed, "prompts": [p.prompt_id for p in l.prompts]} for l in leases],
            "next_lease": self._next_lease,
            "epochs": dict(self.stats.epochs),
            "leased": self.stats.leased - leased_out,
            "acked": self.stats.acked,
            "requeued": self.stats.requeued,
            "ledger": list(self.ledger),
            **({"curriculum": self._curriculum.get_state()} if self._curriculum is not None else {}),
        }

    def live_state(self) -> dict:
        """`get_state` as the driver keeps it while the run goes on: the leases in flight
        stay leases, held by the same rollouts (`load_live_state`)."""
        return {**self.get_state(), "held": sorted(self._leases), "leased_live": self.stats.leased}

    def load_live_state(self, state: dict) -> None:
        """Continue from `live_state`'s data in a queue started again mid-run: the leases
        in flight are held again (to be acked or nacked by the rollouts that hold them)."""
        self.load_state(state)
        held = set(state["held"])
        for lease in [lease for lease in self._reissue if lease.lease_id in held]:
            self._reissue.remove(lease)
            self._leases[lease.lease_id] = lease
        self.stats.leased = int(state["leased_live"])
        self.stats.in_flight = sum(len(lease.prompts) for lease in self._leases.values())

    def load_state(self, state: dict) -> None:
        """Continue from `get_state`'s data; every prompt it names must be in this queue."""

        def prompt(prompt_id: str) -> Prompt:
            if prompt_id not in self._by_id:
                raise ValueError(f"the checkpoint's prompt queue names prompt {prompt_id!r}, which is not in the training data")
            return self._by_id[prompt_id]

        version, internal, gauss = state["rng"]
        self._rng.setstate((version, tuple(internal), gauss))
        self._pending = {pool: deque(prompt(i) for i in state["pending"].get(pool, [])) for pool in self._pending}
        self._retry = deque(prompt(i) for i in state["retry"])
        self._reissue = deque(
            Lease(int(l["lease_id"]), [prompt(i) for i in l["prompts"]], int(l["seed"])) for l in state.get("reissue", [])
        )
        self._leases = {}
        self._next_lease = int(state["next_lease"])
        self.stats = QueueStats(
            leased=int(state["leased"]),
            acked=int(state["acked"]),
            requeued=int(state["requeued"]),
            epochs={pool: int(state["epochs"].get(pool, 0)) for pool in self._pending},
        )
        self.ledger = list(state["ledger"])
        if self._curriculum is not None:  # a state without one (the curriculum was off) starts it fresh
            curriculum = state.get("curriculum") or {}
            for prompt_id in curriculum.get("history", {}):
                prompt(prompt_id)
            self._curriculum.load_state(curriculum)
