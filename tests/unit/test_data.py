import json
import re

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


@pytest.mark.parametrize(
    "value,written",
    [(0.00001, "0.00001"), (1e21, "1000000000000000000000"), (1.5e-7, "0.00000015"), (2.5, "2.5"), (3.0, "3.0"), (-4e-6, "-0.000004")],
)
def test_float_golds_are_written_without_an_exponent(tmp_path, value, written):
    """Hostile-review finding D1: str(1e-05) is '1e-05', which math checks read as e - 5, so the
    right answer 0.00001 scored 0 and the reply `e-05` scored 1."""
    from rlhf_platform.rewards.math import is_correct

    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"prompt": "p", "answer": value}) + "\n")
    (row,) = load_rows(path, "prompt", "answer").rows
    assert row.answer == written
    assert is_correct(rf"\boxed{{{written}}}", row.answer) and not is_correct(r"\boxed{e-05}", row.answer)


@pytest.mark.parametrize("gold", ["NaN", "nan", "Infinity", "-inf", "true", "FALSE", "None", "null", "-", "N/A", "?"])
def test_placeholder_answers_are_bad_rows(tmp_path, gold):
    """Hostile-review finding M5: string golds standing for no answer were accepted, and any reply
    echoing them scored 1."""
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "answer": "1"}, {"prompt": "b", "answer": gold}])
    with pytest.raises(DataError, match=re.escape(f"d.jsonl: row 2: field 'answer' is '{gold}', a placeholder")):
        load_rows(path, "prompt", "answer")
    loaded = load_rows(path, "prompt", "answer", on_bad_row="skip")
    assert loaded.skipped == 1 and [r.answer for r in loaded.rows] == ["1"]


def test_placeholder_answers_in_a_csv_are_bad_rows(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("prompt,answer\na,nan\nb,inf\nc,false\nd,4\n")
    with pytest.raises(DataError, match="d.csv: row 2: field 'answer' is 'nan'"):
        load_rows(path, "prompt", "answer")
    loaded = load_rows(path, "prompt", "answer", on_bad_row="skip")
    assert loaded.skipped == 3 and [r.answer for r in loaded.rows] == ["4"]


def test_held_out_files_are_compared_by_identity_not_spelling(tmp_path, monkeypatch):
    """Hostile-review finding D4: the held-out file was trained on when its path was spelled
    another way (relative, `..`, a symlink, a hard link)."""
    import os

    data = tmp_path / "d"
    data.mkdir()
    write_jsonl(data / "train.jsonl", [{"prompt": "a", "answer": "1"}])
    write_jsonl(data / "test.jsonl", [{"prompt": "b", "answer": "2"}])
    os.symlink(data / "test.jsonl", tmp_path / "alias.jsonl")
    os.link(data / "test.jsonl", tmp_path / "hard.jsonl")
    monkeypatch.chdir(tmp_path)
    spellings = [
        ("d/*.jsonl", str(data / "test.jsonl")),
        (str(data / "test.jsonl"), str(data / ".." / "d" / "test.jsonl")),
        (str(data / "test.jsonl"), str(tmp_path / "alias.jsonl")),
        (str(data / "*.jsonl"), "hard.jsonl"),
    ]
    for train, held_out in spellings:
        task = TaskConfig(name="dataset", train_path=train, eval_path=held_out)
        with pytest.raises(DataError, match="held-out prompts must not be trained on"):
            task_rows(task, 0, tmp_path / "work")


def test_a_held_out_prompt_that_is_a_training_prompt_is_a_bad_row(tmp_path):
    """Hostile-review finding D4: identical prompts in train and held-out were not caught."""
    train = write_jsonl(tmp_path / "train.jsonl", [{"prompt": f"q{i}", "answer": str(i)} for i in range(4)])
    held = write_jsonl(tmp_path / "test.jsonl", [{"prompt": "q9", "answer": "9"}, {"prompt": " q2 ", "answer": "2"}])
    task = TaskConfig(name="dataset", train_path=str(train), eval_path=str(held))
    with pytest.raises(DataError, match=r"1 held-out prompt\(s\) of .*test.jsonl are training prompts too \(the first: "
                       r".*test.jsonl row 2 is .*train.jsonl row 3\)"):
        task_rows(task, 0, tmp_path / "work")
    task.on_bad_row = "skip"
    _, loaded = task_rows(task, 0, tmp_path / "work")
    assert [r.prompt for r in loaded.rows] == ["q9"] and loaded.skipped == 1
