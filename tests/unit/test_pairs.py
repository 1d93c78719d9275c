"""Preference pairs: file errors name file, row and field; sampled pairs count what
they could not pair."""
from __future__ import annotations

import json

import pytest

from rlhf_platform.data import DataError
from rlhf_platform.pairs import load_pairs, pair_trajectories, pairs_from_scored_samples, tokenize_pairs
from rlhf_platform.types import Prompt, Trajectory


def _write(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_load_pairs_errors_name_file_row_and_field(tmp_path):
    path = _write(tmp_path / "pairs.jsonl", [{"prompt": "1+1?", "chosen": "2", "rejected": "3"}, {"prompt": "2+2?", "chosen": "4"}])
    with pytest.raises(DataError, match=r"pairs\.jsonl: row 2: missing field 'rejected'"):
        load_pairs(path)
    loaded = load_pairs(path, on_bad_row="skip")
    assert len(loaded.pairs) == 1 and loaded.skipped == 1
    same = _write(tmp_path / "same.jsonl", [{"q": "1+1?", "good": "2", "bad": "2"}])
    with pytest.raises(DataError, match=r"same\.jsonl: row 1: fields 'good' and 'bad' are identical"):
        load_pairs(same, "q", "good", "bad")


def test_tokenized_pairs_share_the_prompt_and_end_with_eos(tmp_path, tiny_tokenizer):
    loaded = load_pairs(_write(tmp_path / "p.jsonl", [{"prompt": "What is 1 + 1?", "chosen": "2", "rejected": "3"}]))
    trajs, skipped = tokenize_pairs(tiny_tokenizer, loaded, max_tokens=512)
    assert skipped == 0 and [t.reward for t in trajs] == [1.0, 0.0]
    assert trajs[0].prompt_token_ids == trajs[1].prompt_token_ids and trajs[0].group_id == trajs[1].group_id
    assert all(t.response_token_ids[-1] == tiny_tokenizer.eos_token_id for t in trajs)
    with pytest.raises(DataError, match=r"p\.jsonl: row 1 .*longer than 3 tokens"):
        tokenize_pairs(tiny_tokenizer, loaded, max_tokens=3)


def test_pairs_from_scored_samples_pairs_right_with_wrong_and_counts_the_rest():
    def sample(group, reply, reward):
        return Trajectory(group, group, [1, 2], reply, [0.0] * len(reply), 0, "stop", reward=reward)

    scored = [
        sample("mixed", [5], 1.0), sample("mixed", [6], 0.0), sample("mixed", [7], 0.0),
        sample("all-right", [5], 1.0), sample("all-right", [5], 1.0),
        sample("all-wrong", [6], 0.0),
    ]
    pairs, unpaired = pairs_from_scored_samples(scored)
    assert unpaired == 2 and len(pairs) == 2
    chosen, rejected = pairs
    assert chosen.response_token_ids == [5] and chosen.reward == 1.0
    assert rejected.response_token_ids in ([6], [7]) and rejected.reward == 0.0


def test_split_and_cycle_pairs_keep_pairs_whole():
    from rlhf_platform.pairs import pair_batches, split_pairs

    prompt = Prompt("p", "q", (1, 2), "", 0)
    pairs = [t for i in range(10) for t in pair_trajectories(f"pair{i}", prompt, [3], [4])]
    kept, held = split_pairs(pairs, 0.2, seed=0)
    assert len(held) == 4 and len(kept) == 16
    assert not {t.group_id for t in held} & {t.group_id for t in kept}
    batches = pair_batches(kept, per_step=3, seed=0)
    drawn = [[t.group_id for t in next(batches)] for _ in range(8)]
    seen = [g for batch in drawn for g in batch]
    assert len(seen) == 48 and all(seen.count(g) == 6 for g in set(seen))  # 3 epochs of 8 pairs, two replies each
    # epochs end mid-batch (8 pairs, 3 a batch) but no batch holds a pair twice
    for seed in range(20):
        batches = pair_batches(kept, per_step=3, seed=seed)
        assert all(len({t.group_id for t in next(batches)}) == 3 for _ in range(16)), seed
