"""The prompt queue's adaptive curriculum (`curriculum.*`): per-prompt pass rates from
the rewards the driver reports, online filtering, and priority sampling.

- A sample is *solved* when its reward >= `solved_threshold`. A *visit* is one report of
  a prompt's samples (its group, once its lease was acked); a prompt keeps its last
  `history` visits, and its pass rate p is solved / samples over them.
- Filtering (`filter`: none | easy | hard | both): a prompt whose last `filter_visits`
  visits were all solved (too easy) or all unsolved (too hard) is no longer drawn; it is
  counted, and a later visit (it was in flight) that is mixed lets it back in. A level
  left with too few unfiltered prompts for a draw is *refilled*: its filtered prompts
  come back with their histories cleared, and the refill is counted. The level weights
  (`task.weights`) are therefore always honoured; nothing is dropped silently.
- Prioritized sampling (`sampling=prioritized`): within a level, a lease draws prompts
  without replacement with weight p(1 - p) + `epsilon` (the variance of a prompt's
  reward: most learning signal at p = 1/2); a prompt never visited weighs
  0.25 + epsilon, the most, so every prompt is tried. Across leases prompts are drawn
  with replacement (no epochs). `uniform` keeps the levels' seeded shuffles.

All randomness is the queue's seeded RNG, and the state is JSON-ready (checkpoints).
"""
from __future__ import annotations

import random
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Iterable

from rlhf_platform.types import Prompt, Trajectory

if TYPE_CHECKING:
    from rlhf_platform.config import CurriculumConfig

UNSEEN_PRIORITY = 0.25  # p(1 - p) at its maximum (p = 1/2): a prompt never visited is tried first


def outcomes(trajectories: Iterable[Trajectory]) -> dict[str, list[float]]:
    """The rewards of scored trajectories by prompt id (what `PromptQueue.record_outcomes` takes)."""
    by_prompt: dict[str, list[float]] = defaultdict(list)
    for traj in trajectories:
        if traj.reward is not None:
            by_prompt[traj.prompt_id].append(float(traj.reward))
    return dict(by_prompt)


class Curriculum:
    """Pass-rate history, filtered prompts and their counts; draws for prioritized sampling."""

    def __init__(self, cfg: "CurriculumConfig") -> None:
        self.cfg = cfg
        self.history: dict[str, list[tuple[int, int]]] = {}  # prompt id -> last visits as (solved, samples)
        self.filtered: dict[str, str] = {}  # prompt id -> "easy" | "hard"
        self.refills = 0  # times a level ran out of unfiltered prompts and got its filtered ones back
        self.refilled = 0  # prompts brought back by those refills
        self.visits = 0  # visits recorded

    def record(self, prompt_id: str, rewards: list[float]) -> None:
        """One visit of `prompt_id` with its samples' rewards; (un)filter it by its last visits."""
        if not rewards:
            return
        solved = sum(1 for r in rewards if r >= self.cfg.solved_threshold)
        visits = self.history.setdefault(prompt_id, [])
        visits.append((solved, len(rewards)))
        del visits[: -self.cfg.history]
        self.visits += 1
        self._judge(prompt_id)

    def _judge(self, prompt_id: str) -> None:
        """Filter the prompt when its last `filter_visits` visits were all solved (easy) or
        all unsolved (hard), as `filter` allows; otherwise let it back in."""
        last = self.history.get(prompt_id, [])[-self.cfg.filter_visits :]
        verdict = None
        if len(last) == self.cfg.filter_visits:
            if self.cfg.filter in ("easy", "both") and all(s == n for s, n in last):
                verdict = "easy"
            elif self.cfg.filter in ("hard", "both") and all(s == 0 for s, _ in last):
                verdict = "hard"
        if verdict is None:
            self.filtered.pop(prompt_id, None)
        else:
            self.filtered[prompt_id] = verdict

    def pass_rate(self, prompt_id: str) -> float | None:
        """Solved / samples over the prompt's kept visits; None before its first visit."""
        visits = self.history.get(prompt_id)
        if not visits:
            return None
        return sum(s for s, _ in visits) / sum(n for _, n in visits)

    def priority(self, prompt_id: str) -> float:
        p = self.pass_rate(prompt_id)
        return (UNSEEN_PRIORITY if p is None else p * (1.0 - p)) + self.cfg.epsilon

    def is_filtered(self, prompt_id: str) -> bool:
        return prompt_id in self.filtered

    def unfiltered(self, level: list[Prompt], needed: int = 1, exclude: frozenset[str] = frozenset()) -> list[Prompt]:
        """The level's prompts not filtered (nor in `exclude`); when fewer than `needed`
        are left, the level is refilled first (counted)."""
        left = [p for p in level if p.prompt_id not in self.filtered and p.prompt_id not in exclude]
        if len(left) >= needed or not any(p.prompt_id in self.filtered for p in level):
            return left
        self.refills += 1
        for p in level:
            if self.filtered.pop(p.prompt_id, None) is not None:
                self.history.pop(p.prompt_id, None)
                self.refilled += 1
        return [p for p in level if p.prompt_id not in exclude]

    def sample(self, level: list[Prompt], count: int, rng: random.Random, exclude: frozenset[str]) -> list[Prompt]:
        """`count` prompts of a level, weighted by priority, without replacement (and none
        in `exclude`) while the level has enough; a level smaller than that repeats some."""
        candidates = self.unfiltered(level, count, exclude) or self.unfiltered(level, count)
        weights = [self.priority(p.prompt_id) for p in candidates]
        drawn: list[Prompt] = []
        for _ in range(count):
            if not candidates:  # fewer prompts than the draw: start over (as an epoch would)
                candidates = self.unfiltered(level, 1)
                weights = [self.priority(p.prompt_id) for p in candidates]
            i = rng.choices(range(len(candidates)), weights)[0]
            drawn.append(candidates.pop(i))
            weights.pop(i)
        return drawn

    def counts(self) -> dict[str, float]:
        """What the run reports (`curriculum/*` metrics)."""
        rates = [r for r in map(self.pass_rate, self.history) if r is not None]
        easy = sum(1 for v in self.filtered.values() if v == "easy")
        return {
            "filtered_easy": easy,
            "filtered_hard": len(self.filtered) - easy,
            "refills": self.refills,
            "refilled_prompts": self.refilled,
            "prompts_seen": len(self.history),
            "visits": self.visits,
            "pass_rate_mean": sum(rates) / len(rates) if rates else 0.0,
        }

    def get_state(self) -> dict[str, Any]:
        """JSON-ready; the filtered set is not stored: it follows from the histories."""
        return {
            "history": {pid: [list(v) for v in visits] for pid, visits in self.history.items()},
            "refills": self.refills,
            "refilled": self.refilled,
            "visits": self.visits,
        }

    def load_state(self, state: dict[str, Any] | None) -> None:
        """Continue from `get_state`'s data (None: a checkpoint taken without the
        curriculum: start fresh); prompts are filtered again by this config's rules."""
        state = state or {}
        history = state.get("history", {})
        if not isinstance(history, dict):
            raise ValueError(f"the checkpoint's curriculum history is a {type(history).__name__}, not prompt ids and their visits")
        self.history = {str(pid): _checked_visits(str(pid), visits)[-self.cfg.history :] for pid, visits in history.items()}
        self.filtered = {}
        for prompt_id in self.history:
            self._judge(prompt_id)
        self.refills = _count(state, "refills")
        self.refilled = _count(state, "refilled")
        self.visits = _count(state, "visits")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _checked_visits(prompt_id: str, visits: Any) -> list[tuple[int, int]]:
    """A checkpoint's visits of one prompt as (solved, samples) pairs: integers with samples >= 1
    and 0 <= solved <= samples (what `record` writes), or a ValueError naming the prompt and visit."""
    if not isinstance(visits, list):
        raise ValueError(
            f"the checkpoint's curriculum history of prompt {prompt_id!r}: {visits!r:.80} is not a list of visits; "
            "a visit is [solved, samples], integers with samples >= 1 and 0 <= solved <= samples"
        )
    checked = []
    for i, visit in enumerate(visits, start=1):
        pair = visit if isinstance(visit, (list, tuple)) and len(visit) == 2 else None
        if pair is None or not all(map(_is_int, pair)) or not (pair[1] >= 1 and 0 <= pair[0] <= pair[1]):
            raise ValueError(
                f"the checkpoint's curriculum history of prompt {prompt_id!r}: visit {i} is {visit!r:.80}; a visit is "
                "[solved, samples], integers with samples >= 1 and 0 <= solved <= samples"
            )
        checked.append((pair[0], pair[1]))
    return checked


def _count(state: dict[str, Any], key: str) -> int:
    value = state.get(key, 0)
    if not _is_int(value) or value < 0:
        raise ValueError(f"the checkpoint's curriculum {key} is {value!r:.80}; it must be an integer >= 0")
    return value
