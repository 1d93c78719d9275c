import json

import pytest

from rlhf_platform.config import TaskConfig
from rlhf_platform.data import DataError, arithmetic_rows, load_rows, task_rows


def test_arithmetic_splits_are_deterministic_and_disjoint(tmp_path):
    task = TaskConfig(digits=[1, 2], weights=[1, 1], train_size=200, eval_size=30)
    train, held_out = arithmetic_rows(task, seed=0)
    again, _ = arithmetic_rows(task, seed=0)
    assert [r.prompt for r in train] == [r.prompt for r in again]
    assert not {r.prompt for r in train} & {r.prompt for r in held_out}
    assert {r.difficulty for r in held_out} == {0, 1}
    row = held_out[0]
    a, b = [int(x) for x in row.prompt.split("What is ")[1].split("?")[0].split(" + ")]
    assert int(row.answer) == a + b
    loaded_train, loaded_eval = task_rows(task, 0, tmp_path)
    assert (tmp_path / "train.parquet").exists() and len(loaded_eval.rows) == 60


def write_jsonl(path, rows):
    path.write_bytes(b"\n".join(r if isinstance(r, bytes) else json.dumps(r).encode() for r in rows))
    return path


@pytest.mark.parametrize(
    "bad,message",
    [
        ({"question": "x"}, "row 2: missing field 'answer'"),
        ({"question": "", "answer": "1"}, "row 2: field 'question' is empty"),
        ({"question": 3, "answer": "1"}, "row 2: field 'question' must be a string"),
        (b'{"question": "\xff", "answer": "1"}', "row 2: not valid UTF-8"),
        (b"{not json", "row 2: not valid JSON"),
    ],
)
def test_bad_rows_name_file_and_row(tmp_path, bad, message):
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "1+1", "answer": 2}, bad, {"question": "2+2", "answer": "4"}])
    with pytest.raises(DataError) as err:
        load_rows(path, "question", "answer")
    assert str(path) in str(err.value) and message in str(err.value)
    loaded = load_rows(path, "question", "answer", on_bad_row="skip")
    assert loaded.skipped == 1 and [r.answer for r in loaded.rows] == ["2", "4"]


def test_parquet_and_hf_directory(tmp_path):
    import datasets

    ds = datasets.Dataset.from_list([{"prompt": "1+1", "answer": "2"}, {"prompt": "2+3", "answer": "5"}])
    ds.to_parquet(str(tmp_path / "d.parquet"))
    ds.save_to_disk(str(tmp_path / "hf"))
    assert len(load_rows(tmp_path / "d.parquet", "prompt", "answer").rows) == 2
    assert len(load_rows(tmp_path / "hf", "prompt", "answer").rows) == 2
    with pytest.raises(DataError, match="does not exist"):
        load_rows(tmp_path / "missing.jsonl", "prompt", "answer")


def test_count_task_is_a_long_tail_deterministic_and_disjoint(tmp_path):
    from rlhf_platform.data import count_rows
    from rlhf_platform.rewards.listing import lists_match

    task = TaskConfig(name="count", count_lengths=[4, 16, 40], weights=[0.3, 0.3, 0.4], train_size=300, eval_size=20)
    train, held_out = count_rows(task, seed=0)
    assert (train, held_out) == count_rows(task, seed=0)
    assert len(train) == 900 and len(held_out) == 60
    assert not {r.prompt for r in train} & {r.prompt for r in held_out}
    lengths = {level: [len(r.answer.split()) for r in train if r.difficulty == level] for level in range(3)}
    assert (min(lengths[0]), max(lengths[0])) == (1, 4)
    assert (min(lengths[1]), max(lengths[1])) == (5, 16)
    assert (min(lengths[2]), max(lengths[2])) == (17, 40)
    row = train[0]
    a, b = (int(x) for x in row.prompt.split("from ")[1].split(",")[0].split(" to "))
    assert row.answer == " ".join(str(n) for n in range(a, b + 1)) and lists_match(row.answer, row.answer)
    loaded_train, loaded_eval = task_rows(task, 0, tmp_path)  # through the same loader as user data
    assert [r.answer for r in loaded_train.rows] == [r.answer for r in train]
