"""Hostile dataset rows (issue 17, "every bad input named"): rows that used to crash the
loader with a bare traceback, or were accepted and then broke training quietly, are bad
rows like any other: an error naming the file and its line, or with on_bad_row=skip
skipped and counted while the good rows are kept."""
from __future__ import annotations

import json
import re
import sys

import pytest

from rlhf_platform.config import TaskConfig
from rlhf_platform.data import DataError, load_rows, task_rows
from rlhf_platform.prompts import tokenize_rows

GOOD = [{"prompt": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(3)]

# (raw jsonl line, what the error says after "row 2: ")
HOSTILE = {
    "huge int": (b'{"prompt": "p", "answer": ' + b"9" * 5000 + b"}", "not valid JSON (Exceeds the limit (4300 digits)"),
    "deep nesting": (b'{"prompt": "p", "answer": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "not valid JSON (nested too deeply)"),
    "lone surrogate": (b'{"prompt": "p \\ud800", "answer": "1"}', "field 'prompt' is not valid Unicode (surrogates not allowed"),
    "lone surrogate id": (b'{"prompt_id": "\\udfff", "prompt": "p", "answer": "1"}', "field 'prompt_id' is not valid Unicode"),
    "invalid utf-8": (b'{"prompt": "\xc3\x28", "answer": "1"}', "not valid UTF-8 (invalid continuation byte at byte 12)"),
    "NaN answer": (b'{"prompt": "p", "answer": NaN}', "field 'answer' is nan, which no reply can be checked against"),
    "Infinity answer": (b'{"prompt": "p", "answer": Infinity}', "field 'answer' is inf, which no reply"),
    "-Infinity answer": (b'{"prompt": "p", "answer": -Infinity}', "field 'answer' is -inf, which no reply"),
    "overflowing float": (b'{"prompt": "p", "answer": 1e999}', "field 'answer' is inf, which no reply"),
    "true answer": (b'{"prompt": "p", "answer": true}', "field 'answer' must be a string or number, got bool"),
    "false answer": (b'{"prompt": "p", "answer": false}', "field 'answer' must be a string or number, got bool"),
    "null answer": (b'{"prompt": "p", "answer": null}', "missing field 'answer'"),
    "list answer": (b'{"prompt": "p", "answer": [1]}', "field 'answer' must be a string or number, got list"),
    "empty answer": (b'{"prompt": "p", "answer": ""}', "field 'answer' is empty"),
    "blank answer": (b'{"prompt": "p", "answer": " \\n\\t "}', "field 'answer' is empty"),
    "bool prompt_id": (b'{"prompt_id": true, "prompt": "p", "answer": "1"}', "field 'prompt_id' must be a string, got bool"),
    "blank prompt_id": (b'{"prompt_id": " ", "prompt": "p", "answer": "1"}', "field 'prompt_id' is empty"),
    "bool level": (b'{"prompt": "p", "answer": "1", "difficulty": true}', "field 'difficulty' is True; it must be an integer"),
    "string level": (b'{"prompt": "p", "answer": "1", "difficulty": "1"}', "field 'difficulty' is '1'; it must be an integer"),
    "negative level": (b'{"prompt": "p", "answer": "1", "difficulty": -1}', "field 'difficulty' is -1; it must be an integer"),
    "not an object": (b'[1, 2]', "expected an object"),
    # hostile review: string placeholders any reply can echo, keys given twice
    "'NaN' answer": (b'{"prompt": "p", "answer": "NaN"}', "field 'answer' is 'NaN', a placeholder no reply can be checked against"),
    "'None' answer": (b'{"prompt": "p", "answer": " None "}', "field 'answer' is 'None', a placeholder"),
    "'-' answer": (b'{"prompt": "p", "answer": "-"}', "field 'answer' is '-', a placeholder"),
    "'N/A' answer": (b'{"prompt": "p", "answer": "N/A"}', "field 'answer' is 'N/A', a placeholder"),
    "'true' answer": (b'{"prompt": "p", "answer": "true"}', "field 'answer' is 'true', a placeholder"),
    "answer twice": (b'{"prompt": "p", "answer": "1", "answer": "2"}', "the key 'answer' appears twice in one object"),
    "role twice in a turn": (b'{"prompt": [{"role": "user", "role": "system", "content": "c"}], "answer": "1"}', "the key 'role' appears twice"),
}


def write_jsonl(path, lines):
    path.write_bytes(b"\n".join(line if isinstance(line, bytes) else json.dumps(line).encode() for line in lines) + b"\n")
    return path


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_row_is_named_or_skipped_and_counted(tmp_path, name):
    line, message = HOSTILE[name]
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD[0], line, GOOD[1], GOOD[2]])
    with pytest.raises(DataError) as err:
        load_rows(path, "prompt", "answer")
    assert str(err.value).startswith(f"{path}: row 2: ") and message in str(err.value)
    loaded = load_rows(path, "prompt", "answer", on_bad_row="skip")
    assert loaded.skipped == 1 and [r.answer for r in loaded.rows] == ["1", "2", "3"]
    assert [r.line for r in loaded.rows] == [1, 3, 4]


def test_numbers_are_answers_but_only_finite_ones(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "answer": 7}, {"prompt": "b", "answer": 2.5}, {"prompt": "c", "answer": 0}])
    assert [r.answer for r in load_rows(path, "prompt", "answer").rows] == ["7", "2.5", "0"]


def test_every_hostile_row_at_once_is_skipped_and_counted(tmp_path):
    lines = [GOOD[0], *(line for line, _ in HOSTILE.values()), GOOD[1], GOOD[2]]
    loaded = load_rows(write_jsonl(tmp_path / "d.jsonl", lines), "prompt", "answer", on_bad_row="skip")
    assert loaded.skipped == len(HOSTILE) and [r.prompt for r in loaded.rows] == [g["prompt"] for g in GOOD]


def test_parquet_rows_get_the_same_answer_checks(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"prompt": ["a", "b", "c", "d"], "answer": [1.0, float("nan"), float("inf"), 4.0]})
    pq.write_table(table, tmp_path / "d.parquet")
    with pytest.raises(DataError, match=r"d\.parquet: row 2: field 'answer' is nan"):
        load_rows(tmp_path / "d.parquet", "prompt", "answer")
    loaded = load_rows(tmp_path / "d.parquet", "prompt", "answer", on_bad_row="skip")
    assert loaded.skipped == 2 and [r.answer for r in loaded.rows] == ["1.0", "4.0"]


def test_blank_code_tests_are_refused(tmp_path):
    """An empty test block would let any program pass `code_tests`."""
    path = write_jsonl(tmp_path / "code.jsonl", [
        {"prompt": "Write f returning 1.", "answer": "assert f() == 1"},
        {"prompt": "Write g returning 2.", "answer": "\n\n   \n"},
    ])
    with pytest.raises(DataError, match=r"code\.jsonl: row 2: field 'answer' is empty"):
        load_rows(path, "prompt", "answer")
    assert load_rows(path, "prompt", "answer", on_bad_row="skip").skipped == 1


def test_duplicate_prompt_id_names_both_rows(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [
        {"prompt_id": "q1", "prompt": "a", "answer": "1"},
        {"prompt_id": "q2", "prompt": "b", "answer": "2"},
        {"prompt_id": "q1", "prompt": "c", "answer": "3"},
        {"prompt_id": 7, "prompt": "d", "answer": "4"},
        {"prompt_id": "7", "prompt": "e", "answer": "5"},  # the same id once read: ids are text
        {"prompt": "f", "answer": "6"},  # no id: "d.jsonl-6"
        {"prompt_id": "d.jsonl-6", "prompt": "g", "answer": "7"},
    ])
    with pytest.raises(DataError) as err:
        load_rows(path, "prompt", "answer")
    assert str(err.value) == f"{path}: row 3: prompt_id 'q1' repeats row 1"
    loaded = load_rows(path, "prompt", "answer", on_bad_row="skip")
    assert loaded.skipped == 3 and [r.prompt for r in loaded.rows] == ["a", "b", "d", "f"]
    assert [r.prompt_id for r in loaded.rows] == ["q1", "q2", "7", "d.jsonl-6"]


def test_a_bad_row_does_not_claim_its_id(tmp_path):
    """A skipped row's id stays free: the good row after it is kept."""
    path = write_jsonl(tmp_path / "d.jsonl", [
        {"prompt_id": "q1", "prompt": "a", "answer": ""},
        {"prompt_id": "q1", "prompt": "b", "answer": "2"},
    ])
    loaded = load_rows(path, "prompt", "answer", on_bad_row="skip")
    assert loaded.skipped == 1 and [r.prompt for r in loaded.rows] == ["b"]


def test_train_and_eval_are_separate_id_spaces(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "eval").mkdir()
    train = write_jsonl(tmp_path / "train" / "data.jsonl", GOOD)
    held_out_rows = [{**row, "prompt": row["prompt"].replace("+ 1", "+ 2")} for row in GOOD]  # other prompts
    held_out = write_jsonl(tmp_path / "eval" / "data.jsonl", held_out_rows)  # the same default ids, data.jsonl-1..3
    task = TaskConfig(name="dataset", train_path=str(train), eval_path=str(held_out))
    loaded_train, loaded_eval = task_rows(task, 0, tmp_path / "work")
    assert [r.prompt_id for r in loaded_train.rows] == [r.prompt_id for r in loaded_eval.rows]


@pytest.mark.parametrize("split", ["train", "eval"])
def test_level_without_a_weight_names_row_and_allowed_range(tmp_path, split):
    held_out = [{**row, "prompt": row["prompt"].replace("+ 1", "+ 2")} for row in GOOD]  # never a training prompt
    base = {"train": GOOD, "eval": held_out}[split]
    rows = [{**base[0], "difficulty": 0}, {**base[1], "difficulty": 2}, {**base[2], "difficulty": 1}]
    paths = {"train": write_jsonl(tmp_path / "train.jsonl", GOOD), "eval": write_jsonl(tmp_path / "eval.jsonl", held_out)}
    paths[split] = write_jsonl(tmp_path / f"{split}.jsonl", rows)
    task = TaskConfig(name="dataset", weights=[0.5, 0.5], train_path=str(paths["train"]), eval_path=str(paths["eval"]))
    with pytest.raises(DataError) as err:
        task_rows(task, 0, tmp_path / "work")
    assert str(err.value) == (
        f"{paths[split]}: row 2: field 'difficulty' is 2; it must be an integer from 0 to 1 (one level per task.weights entry)"
    )
    task.on_bad_row = "skip"
    loaded = dict(zip(["train", "eval"], task_rows(task, 0, tmp_path / "work")))[split]
    assert loaded.skipped == 1 and [r.difficulty for r in loaded.rows] == [0, 1]
    task.weights = [0.2, 0.3, 0.5]
    assert task_rows(task, 0, tmp_path / "work")[0].skipped == 0


def test_line_numbers_count_blank_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\n".join([
        json.dumps(GOOD[0]).encode(), b"", b"   ", json.dumps(GOOD[1]).encode(), b"",
        b'{"prompt": "p", "answer": NaN}', json.dumps({"prompt": "x " * 50, "answer": "1"}).encode(),
    ]) + b"\n")
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: row 6: field 'answer' is nan"):
        load_rows(path, "prompt", "answer")
    loaded = load_rows(path, "prompt", "answer", on_bad_row="skip")
    assert [r.line for r in loaded.rows] == [1, 4, 7] and loaded.skipped == 1

    class WordTokenizer:  # one token per word, no chat template
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": text.split()}

    # the prompt-length check after loading names the file line, not the count of loaded rows
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: row 7 \(d\.jsonl-7\): prompt is 50 tokens"):
        tokenize_rows(WordTokenizer(), loaded, max_prompt_tokens=10)
    prompts, skipped = tokenize_rows(WordTokenizer(), loaded, max_prompt_tokens=10, on_bad_row="skip")
    assert skipped == 1 and [p.prompt_id for p in prompts] == ["d.jsonl-1", "d.jsonl-4"]


@pytest.mark.e2e
def test_hostile_rows_through_the_cli_are_named_not_a_traceback(tmp_path):
    from support import SMALL, run_in_own_session

    path = write_jsonl(tmp_path / "train.jsonl", [*GOOD, b"", HOSTILE["huge int"][0]])
    cmd = [sys.executable, "-c", "from rlhf_platform.commands.train import train_main; train_main()", *SMALL,
           f"run.root={tmp_path}", "run.name=hostile", "task=dataset", f"task.train_path={path}"]
    code, _, err = run_in_own_session(cmd, tmp_path / "hostile", timeout_s=300)
    assert code == 2 and f"error: {path}: row 5: not valid JSON (Exceeds the limit (4300 digits)" in err
    assert "Traceback" not in err
