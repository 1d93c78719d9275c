"""Preference pairs (prompt, chosen reply, rejected reply) for DPO and reward models:
loaded from jsonl/parquet/HF dataset directories, or built from a verifiable task by
sampling the policy and pairing a verified-correct reply with a wrong one."""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from rlhf_platform.data import DataError, load_checked, require_fields, require_text
from rlhf_platform.prompts import render_prompt
from rlhf_platform.types import Prompt, Trajectory, by_group_id


@dataclass(frozen=True)
class PreferencePair:
    prompt_id: str
    prompt: str
    chosen: str
    rejected: str


@dataclass
class LoadedPairs:
    pairs: list[PreferencePair]
    skipped: int  # bad rows skipped under on_bad_row=skip
    source: str


def load_pairs(
    path: str | Path,
    prompt_field: str = "prompt",
    chosen_field: str = "chosen",
    rejected_field: str = "rejected",
    on_bad_row: str = "error",
) -> LoadedPairs:
    """Load and validate preference pairs; errors name file, row and field."""
    path = Path(path)
    fields = (prompt_field, chosen_field, rejected_field)

    def check(number: int, raw: Any) -> PreferencePair:
        raw = require_fields(path, number, raw, fields)
        prompt, chosen, rejected = (require_text(path, number, raw, key) for key in fields)
        if chosen == rejected:
            raise DataError(f"{path}: row {number}: fields {chosen_field!r} and {rejected_field!r} are identical")
        return PreferencePair(str(raw.get("prompt_id", f"{path.name}-{number}")), prompt, chosen, rejected)

    pairs, skipped = load_checked(path, check, on_bad_row)
    return LoadedPairs(pairs, skipped, str(path))


def pair_trajectories(pair_id: str, prompt: Prompt, chosen_ids: list[int], rejected_ids: list[int]) -> list[Trajectory]:
    """A pair as the trainer takes it: two trajectories of one group sharing the prompt,
    reward 1 on the chosen reply and 0 on the rejected one."""
    return [
        Trajectory(
            prompt_id=prompt.prompt_id,
            group_id=pair_id,
            prompt_token_ids=list(prompt.token_ids),
            response_token_ids=list(ids),
            behaviour_logprobs=[0.0] * len(ids),
            weight_version=0,
            finish_reason="stop",
            prompt_text=prompt.text,
            answer=prompt.answer,
            difficulty=prompt.difficulty,
            reward=reward,
        )
        for ids, reward in ((chosen_ids, 1.0), (rejected_ids, 0.0))
    ]


def tokenize_pairs(tokenizer, loaded: LoadedPairs, max_tokens: int, on_bad_row: str = "error") -> tuple[list[Trajectory], int]:
    """Trajectories (two per pair) for text pairs: the prompt through the chat template,
    each reply followed by the end-of-turn token. A pair longer than `max_tokens` is an
    error naming its row, or skipped and counted. Returns (trajectories, skipped)."""
    out: list[Trajectory] = []
    skipped = 0
    for number, pair in enumerate(loaded.pairs, start=1):
        prompt_ids = render_prompt(tokenizer, pair.prompt)
        replies = [tokenizer(r, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for r in (pair.chosen, pair.rejected)]
        if len(prompt_ids) + max(map(len, replies)) > max_tokens:
            if on_bad_row == "skip":
                skipped += 1
                continue
            raise DataError(f"{loaded.source}: row {number} ({pair.prompt_id}): longer than {max_tokens} tokens (model.max_model_len)")
        prompt = Prompt(pair.prompt_id, pair.prompt, tuple(prompt_ids), "", 0)
        out.extend(pair_trajectories(f"{pair.prompt_id}#pair{number}", prompt, *replies))
    return out, skipped


def pairs_from_scored_samples(trajectories: list[Trajectory], seed: int = 0) -> tuple[list[Trajectory], int]:
    """One pair per group of scored samples with both a correct (reward 1) and a wrong
    reply: a random correct one is chosen, a random wrong one rejected. Returns (pair
    trajectories, groups without a mixed pair) so nothing is dropped uncounted."""
    rng = random.Random(seed)
    out: list[Trajectory] = []
    unpaired = 0
    for samples in by_group_id(trajectories):
        group_id = samples[0].group_id
        right = [t for t in samples if t.reward == 1.0]
        wrong = [t for t in samples if t.reward != 1.0]
        if not right or not wrong:
            unpaired += 1
            continue
        chosen, rejected = rng.choice(right), rng.choice(wrong)
        prompt = Prompt(chosen.prompt_id, chosen.prompt_text, tuple(chosen.prompt_token_ids), chosen.answer, chosen.difficulty)
        out.extend(pair_trajectories(group_id, prompt, chosen.response_token_ids, rejected.response_token_ids))
    return out, unpaired


def pair_rows(pairs: list[Trajectory]) -> list[dict[str, Any]]:
    """Pairs as JSON rows (one per pair: the prompt and both replies' token ids), what a
    checkpoint keeps of the pairs a run sampled; `pairs_from_rows` reads them back."""
    rows = []
    for pair in by_group_id(pairs):
        chosen, rejected = chosen_and_rejected([pair])
        rows.append({
            "pair_id": chosen.group_id, "prompt_id": chosen.prompt_id, "prompt_text": chosen.prompt_text,
            "prompt_token_ids": list(chosen.prompt_token_ids), "answer": chosen.answer, "difficulty": chosen.difficulty,
            "chosen": list(chosen.response_token_ids), "rejected": list(rejected.response_token_ids),
        })
    return rows


def pairs_from_rows(rows: list[dict[str, Any]]) -> list[Trajectory]:
    """The pairs `pair_rows` wrote, as the trainer takes them (two trajectories each)."""
    out: list[Trajectory] = []
    for row in rows:
        prompt = Prompt(row["prompt_id"], row["prompt_text"], tuple(row["prompt_token_ids"]), row["answer"], row["difficulty"])
        out.extend(pair_trajectories(row["pair_id"], prompt, row["chosen"], row["rejected"]))
    return out


def pairs_fingerprint(pairs: list[Trajectory]) -> str:
    """sha256 of the pairs' tokens in order: whether a resumed run trains on the same pairs."""
    return hashlib.sha256(json.dumps(pair_rows(pairs), sort_keys=True).encode()).hexdigest()


def chosen_and_rejected(pairs: list[list[Trajectory]]) -> list[Trajectory]:
    """[chosen_1, .., chosen_k, rejected_1, .., rejected_k] of k pairs, checking each."""
    chosen, rejected = [], []
    for pair in pairs:
        c = [t for t in pair if t.reward == 1.0]
        r = [t for t in pair if t.reward != 1.0]
        if len(c) != 1 or len(r) != 1:
            raise ValueError(f"pair {pair[0].group_id}: expected one chosen and one rejected reply, got {len(pair)} replies")
        chosen.append(c[0])
        rejected.append(r[0])
    return chosen + rejected


def pair_micro_batches(trajectories: list[Trajectory], sequences_per_micro_batch: int) -> list[list[list[Trajectory]]]:
    """Whole pairs in micro-batches of at most `sequences_per_micro_batch` sequences
    (at least one pair each): the unit of one forward/backward in DPO and RM training."""
    pairs = by_group_id(trajectories)
    size = max(1, sequences_per_micro_batch // 2)
    return [pairs[i : i + size] for i in range(0, len(pairs), size)]


def pair_batches(pairs: list[Trajectory], per_step: int, seed: int) -> Iterator[list[Trajectory]]:
    """Endless batches of `per_step` distinct whole pairs (fewer if there are fewer
    pairs), cycling through the pairs in an order reshuffled every epoch. When an epoch
    ends mid-batch, the next epoch puts the pairs already in the batch last, so a batch
    never holds a pair twice and every epoch still visits every pair once."""
    by_pair = by_group_id(pairs)
    rng = random.Random(seed)
    order = list(range(len(by_pair)))
    rng.shuffle(order)
    cursor = 0
    while True:
        chosen: list[int] = []
        while len(chosen) < min(per_step, len(order)):
            if cursor == len(order):  # next epoch
                rng.shuffle(order)
                order = [i for i in order if i not in chosen] + [i for i in order if i in chosen]
                cursor = 0
            chosen.append(order[cursor])
            cursor += 1
        yield [t for i in chosen for t in by_pair[i]]


def split_pairs(pairs: list[Trajectory], held_out_fraction: float, seed: int) -> tuple[list[Trajectory], list[Trajectory]]:
    """(train, held-out) pairs, whole pairs each, a seeded shuffle; at least one pair is
    held out and one kept when there are two or more."""
    by_pair = by_group_id(pairs)
    order = list(range(len(by_pair)))
    random.Random(seed).shuffle(order)
    n_held = min(max(1, round(held_out_fraction * len(order))), len(order) - 1) if len(order) > 1 else 0
    held = [t for i in order[:n_held] for t in by_pair[i]]
    kept = [t for i in order[n_held:] for t in by_pair[i]]
    return kept, held
