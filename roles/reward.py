"""The Reward / Verifier service: scores trajectories with weighted reward functions
(verifiers from `rewards/`) and trained reward models, mixed by weight.

Reward functions run in worker processes (`RewardWorkers`): a call that outlives
`reward.timeout_s` is ended by killing its worker, so hangs never use up the service. A
function that raises or times out never stops the run: the batch is retried one sample
at a time (in parallel, each under the same deadline), and each sample that still fails
is scored `reward.fallback` with the error kept in its `reward_info["<name>.error"]`. Errors and timeouts are counted per function. Scores are
cached by a hash of (prompt, reply, function), so a prompt re-leased after a fault or
a repeated reply is not scored twice.
"""
from __future__ import annotations

import hashlib
import math
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable

from rlhf_platform.config import RewardConfig, RewardFunctionConfig
from rlhf_platform.modeling import use_cores
from rlhf_platform.roles.metrics import RoleMetrics
from rlhf_platform.roles.reward_workers import RewardWorkers
from rlhf_platform.reward_model import RewardModelScorer
from rlhf_platform.rewards import REWARD_FUNCTIONS
from rlhf_platform.types import Trajectory

Scorer = Callable[[list[Trajectory]], list[float]]


WAIT_GRACE_S = 10.0  # beyond a worker's deadline: time to start a worker and load the call


def _in_workers(fn, workers: RewardWorkers, deadline_s: float) -> Scorer:
    """A scorer calling the reward function `fn` in a killable worker process."""
    def score(trajectories: list[Trajectory]) -> list[float]:
        prompts = [t.prompt_text for t in trajectories]
        completions = [t.response_text for t in trajectories]
        return workers.call(fn, deadline_s, prompts, completions, answer=[t.answer for t in trajectories])

    return score


@dataclass
class RewardStats:
    calls: int = 0
    cache_hits: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # per function: samples scored by fallback after an exception
    timeouts: dict[str, int] = field(default_factory=dict)  # per function: samples scored by fallback after a timeout


class RewardService:
    def __init__(
        self, functions: list[RewardFunctionConfig], cfg: RewardConfig | None = None,
        by_dataset: dict[str, list[RewardFunctionConfig]] | None = None,
    ) -> None:
        """Score with `functions`; a trajectory of a task.mixture dataset named in
        `by_dataset` with that dataset's functions instead."""
        self.cfg = cfg or RewardConfig(functions=functions)
        self.workers = RewardWorkers(processes=max(4, min(8, os.cpu_count() or 4)))
        self._made: dict[tuple[str, str | None], Scorer] = {}  # one scorer (one reward model load) per function
        self.functions = self._scorers(functions)
        self.by_dataset = {dataset: self._scorers(fns) for dataset, fns in (by_dataset or {}).items()}
        self.stats = RewardStats()
        self.metrics = RoleMetrics("reward")
        self._cache: OrderedDict[str, float] = OrderedDict()
        # Threads only wait: the work happens in worker processes, killed at their deadline.
        self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="reward")

    def _scorers(self, functions: list[RewardFunctionConfig]) -> list[tuple[str, Scorer, float]]:
        """(name, scorer, weight) of each function config; a reward model is loaded once."""
        out = []
        for f in functions:
            if f.name == "reward_model":
                if (f.name, f.path) not in self._made:
                    use_cores()
                    self._made[(f.name, f.path)] = RewardModelScorer(f.path).score
                out.append((f"reward_model:{f.path}", self._made[(f.name, f.path)], f.weight))
            else:
                if (f.name, None) not in self._made:
                    self._made[(f.name, None)] = _in_workers(REWARD_FUNCTIONS[f.name], self.workers, self.cfg.timeout_s)
                out.append((f.name, self._made[(f.name, None)], f.weight))
        return out

    def score(self, *parts: list[Trajectory]) -> list[Trajectory]:
        """Set `reward` (the weighted sum) and `reward_info` (each function's score) on
        the trajectories of every part (the engines' shares of a step), each by its
        dataset's functions; returns them all, in the parts' order."""
        trajectories = [t for part in parts for t in part]
        totals = [0.0] * len(trajectories)
        groups: dict[str, list[int]] = {}
        for i, traj in enumerate(trajectories):
            groups.setdefault(traj.dataset if traj.dataset in self.by_dataset else "", []).append(i)
        for dataset, indices in groups.items():
            subset = [trajectories[i] for i in indices]
            for name, scorer, weight in self.by_dataset.get(dataset, self.functions):
                for i, s in zip(indices, self._scores(name, scorer, subset)):
                    trajectories[i].reward_info[_short(name)] = float(s)
                    totals[i] += weight * float(s)
        for traj, total in zip(trajectories, totals):
            traj.reward = total
        if trajectories:
            self.metrics.set("reward_mean", sum(totals) / len(totals))
        return trajectories

    def get_stats(self) -> RewardStats:
        return self.stats

    def _scores(self, name: str, scorer: Scorer, trajectories: list[Trajectory]) -> list[float]:
        keys = [_key(name, t) for t in trajectories]
        scores: list[float | None] = [self._cache.get(k) for k in keys]
        self.stats.cache_hits += sum(s is not None for s in scores)
        todo = [i for i, s in enumerate(scores) if s is None]
        if todo:
            for i, value in zip(todo, self._call(name, scorer, [trajectories[i] for i in todo])):
                scores[i] = value
        return scores  # type: ignore[return-value]

    def _call(self, name: str, scorer: Scorer, batch: list[Trajectory]) -> list[float]:
        """Scores of `batch`: one call, or after a failure one guarded call per sample."""
        self.stats.calls += 1
        future = self._pool.submit(scorer, batch)
        done, _ = wait([future], timeout=self.cfg.timeout_s + WAIT_GRACE_S)
        if done and future.exception() is None:
            values = [float(v) for v in future.result()]
            if len(values) == len(batch):
                for traj, value in zip(batch, values):
                    self._remember(_key(name, traj), value)
                return values
        if len(batch) == 1:
            return [self._fallback(name, batch[0], future if done else None)]
        futures = [self._pool.submit(scorer, [traj]) for traj in batch]
        rounds = math.ceil(len(batch) / self.workers.processes)  # the workers take the samples in turns
        wait(futures, timeout=min(rounds * self.cfg.timeout_s + WAIT_GRACE_S, threading.TIMEOUT_MAX))
        out = []
        for traj, f in zip(batch, futures):
            if f.done() and f.exception() is None and len(f.result()) == 1:
                value = float(f.result()[0])
                self._remember(_key(name, traj), value)
                out.append(value)
            else:
                out.append(self._fallback(name, traj, f if f.done() else None))
        return out

    def _fallback(self, name: str, traj: Trajectory, finished) -> float:
        """Record why `traj` could not be scored by `name` and return the fallback score."""
        short = _short(name)
        if finished is None or isinstance(finished.exception(), TimeoutError):
            self.stats.timeouts[short] = self.stats.timeouts.get(short, 0) + 1
            self.metrics.add("reward_failures", 1, kind="timeout")
            traj.reward_info[f"{short}.error"] = f"timed out after {self.cfg.timeout_s} s"
        else:
            err = finished.exception() or ValueError("returned the wrong number of scores")
            self.stats.errors[short] = self.stats.errors.get(short, 0) + 1
            self.metrics.add("reward_failures", 1, kind="error")
            traj.reward_info[f"{short}.error"] = f"{type(err).__name__}: {err}"[:500]
        return self.cfg.fallback

    def _remember(self, key: str, value: float) -> None:
        if self.cfg.cache_size <= 0:
            return
        self._cache[key] = value
        if len(self._cache) > self.cfg.cache_size:
            self._cache.popitem(last=False)


def _short(name: str) -> str:
    return "reward_model" if name.startswith("reward_model:") else name


def _key(name: str, traj: Trajectory) -> str:
    """Cache key: the function and the exact prompt and reply token ids (and the answer
    the verifier checks against)."""
    digest = hashlib.sha256()
    for part in (name, str(traj.answer), ",".join(map(str, traj.prompt_token_ids)), ",".join(map(str, traj.response_token_ids))):
        digest.update(part.encode())
        digest.update(b"\x00")
    return digest.hexdigest()
