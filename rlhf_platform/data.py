"""Task data: the built-in arithmetic task, and user datasets from jsonl, parquet or
HF dataset directories, validated row by row."""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from rlhf_platform.config import TaskConfig


T = TypeVar("T")


class DataError(ValueError):
    """A dataset row or file that cannot be used; the message names file and row."""


@dataclass(frozen=True)
class TaskRow:
    """One prompt of a task before tokenisation."""

    prompt_id: str
    prompt: str
    answer: str
    difficulty: int = 0


@dataclass
class LoadedRows:
    rows: list[TaskRow]
    skipped: int  # bad rows skipped under on_bad_row=skip
    source: str


# ---------------------------------------------------------------- arithmetic task


def _operand(rng: random.Random, digits: int) -> int:
    return rng.randint(10 ** (digits - 1) if digits > 1 else 0, 10**digits - 1)


def arithmetic_rows(task: TaskConfig, seed: int) -> tuple[list[TaskRow], list[TaskRow]]:
    """Deterministic (train, held-out) additions, one block per difficulty level.

    Held-out pairs never appear in train. A level too small to fill both splits
    (one-digit operands have 100 pairs) repeats train pairs, never held-out ones.
    """
    train: list[TaskRow] = []
    held_out: list[TaskRow] = []
    for level, digits in enumerate(task.digits):
        rng = random.Random(f"{seed}-{digits}")
        space = (10**digits - (10 ** (digits - 1) if digits > 1 else 0)) ** 2
        wanted_eval = min(task.eval_size, space // 2)
        eval_pairs: list[tuple[int, int]] = []
        seen: set[tuple[int, int]] = set()
        while len(eval_pairs) < wanted_eval:
            pair = (_operand(rng, digits), _operand(rng, digits))
            if pair not in seen:
                seen.add(pair)
                eval_pairs.append(pair)
        train_pairs: list[tuple[int, int]] = []
        while len(train_pairs) < task.train_size:
            pair = (_operand(rng, digits), _operand(rng, digits))
            if pair not in seen:
                train_pairs.append(pair)
        for split, pairs, out in (("train", train_pairs, train), ("eval", eval_pairs, held_out)):
            for i, (a, b) in enumerate(pairs):
                out.append(
                    TaskRow(
                        prompt_id=f"add{digits}-{split}-{i}",
                        prompt=task.template.format(a=a, b=b),
                        answer=str(a + b),
                        difficulty=level,
                    )
                )
    return train, held_out


COUNT_TEMPLATE = "List the integers from {a} to {b}, separated by spaces. Reply with only the numbers."


def count_rows(task: TaskConfig, seed: int) -> tuple[list[TaskRow], list[TaskRow]]:
    """Deterministic (train, held-out) "list the integers from a to b" prompts: a long-
    tail task whose correct replies range from a few tokens to over a hundred. Level i
    asks for lists of (count_lengths[i-1], count_lengths[i]] numbers starting below 100.
    Held-out (a, b) pairs never appear in train."""
    train: list[TaskRow] = []
    held_out: list[TaskRow] = []
    for level, (shortest, longest) in enumerate(zip([1, *[n + 1 for n in task.count_lengths]], task.count_lengths)):
        rng = random.Random(f"{seed}-count-{longest}")
        space = 100 * (longest - shortest + 1)
        eval_pairs: list[tuple[int, int]] = []
        seen: set[tuple[int, int]] = set()
        while len(eval_pairs) < min(task.eval_size, space // 2):
            start = rng.randrange(100)
            pair = (start, start + rng.randint(shortest, longest) - 1)
            if pair not in seen:
                seen.add(pair)
                eval_pairs.append(pair)
        train_pairs: list[tuple[int, int]] = []
        while len(train_pairs) < task.train_size:
            start = rng.randrange(100)
            pair = (start, start + rng.randint(shortest, longest) - 1)
            if pair not in seen:
                train_pairs.append(pair)
        for split, pairs, out in (("train", train_pairs, train), ("eval", eval_pairs, held_out)):
            for i, (a, b) in enumerate(pairs):
                answer = " ".join(str(n) for n in range(a, b + 1))
                out.append(TaskRow(f"count{longest}-{split}-{i}", COUNT_TEMPLATE.format(a=a, b=b), answer, level))
    return train, held_out


def write_parquet(rows: list[TaskRow], path: Path) -> Path:
    """Write rows as an HF `datasets` parquet file (temp file, then rename)."""
    import datasets

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.parquet")
    datasets.Dataset.from_list([row.__dict__ for row in rows]).to_parquet(str(tmp))
    tmp.replace(path)
    return path


# ---------------------------------------------------------------- user datasets


def raw_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(1-based row number, raw row) from jsonl, parquet or an HF dataset directory."""
    if path.is_dir():
        import datasets

        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            raise DataError(f"{path}: is a DatasetDict with splits {list(ds)}; point at one split's directory")
        for i, row in enumerate(ds, start=1):
            yield i, row
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for i, row in enumerate(pq.read_table(path).to_pylist(), start=1):
            yield i, row
    elif path.suffix in (".jsonl", ".json"):
        with open(path, "rb") as fh:
            for i, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                try:
                    yield i, json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError as err:
                    yield i, DataError(f"{path}: row {i}: not valid UTF-8 ({err.reason} at byte {err.start})")
                except json.JSONDecodeError as err:
                    yield i, DataError(f"{path}: row {i}: not valid JSON ({err.msg})")
    else:
        raise DataError(f"{path}: unsupported dataset format; use .jsonl, .parquet or an HF dataset directory")


def require_fields(path: Path, number: int, raw: Any, fields: tuple[str, ...]) -> dict:
    """The raw row as a dict holding every field in `fields`, or a DataError naming
    file, row and the missing field."""
    if isinstance(raw, DataError):
        raise raw
    if not isinstance(raw, dict):
        raise DataError(f"{path}: row {number}: expected an object with fields {', '.join(map(repr, fields))}")
    for key in fields:
        if key not in raw or raw[key] is None:
            raise DataError(f"{path}: row {number}: missing field {key!r}")
    return raw


def require_text(path: Path, number: int, raw: dict, key: str) -> str:
    """Field `key` of a row as a non-empty string, or a DataError naming file and row."""
    value = raw[key]
    if not isinstance(value, str):
        raise DataError(f"{path}: row {number}: field {key!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise DataError(f"{path}: row {number}: field {key!r} is empty")
    return value


def _check_row(path: Path, number: int, raw: Any, prompt_field: str, answer_field: str) -> TaskRow:
    raw = require_fields(path, number, raw, (prompt_field, answer_field))
    prompt, answer = require_text(path, number, raw, prompt_field), raw[answer_field]
    if not isinstance(answer, (str, int, float)):
        raise DataError(f"{path}: row {number}: field {answer_field!r} must be a string or number, got {type(answer).__name__}")
    difficulty = raw.get("difficulty", 0)
    return TaskRow(
        prompt_id=str(raw.get("prompt_id", f"{path.name}-{number}")),
        prompt=prompt,
        answer=str(answer),
        difficulty=int(difficulty) if isinstance(difficulty, int) else 0,
    )


def load_rows(path: str | Path, prompt_field: str, answer_field: str, on_bad_row: str = "error") -> LoadedRows:
    """Load and validate a user dataset. Bad rows raise `DataError` naming file and row,
    or, with on_bad_row="skip", are skipped and counted."""
    path = Path(path)
    rows, skipped = load_checked(path, lambda n, raw: _check_row(path, n, raw, prompt_field, answer_field), on_bad_row)
    return LoadedRows(rows=rows, skipped=skipped, source=str(path))


def load_checked(path: Path, check: Callable[[int, Any], T], on_bad_row: str = "error") -> tuple[list[T], int]:
    """Every row of a dataset file through `check(row_number, raw_row)`. A DataError
    is raised, or with on_bad_row="skip" the row is skipped and counted. Returns
    (rows, skipped); a file with no usable row is an error."""
    if not path.exists():
        raise DataError(f"{path}: dataset does not exist")
    rows: list[T] = []
    skipped = 0
    for number, raw in raw_rows(path):
        try:
            rows.append(check(number, raw))
        except DataError:
            if on_bad_row != "skip":
                raise
            skipped += 1
    if not rows:
        raise DataError(f"{path}: no usable rows ({skipped} skipped)")
    return rows, skipped


def task_rows(task: TaskConfig, seed: int, data_dir: Path) -> tuple[LoadedRows, LoadedRows]:
    """The (train, held-out) rows of the configured task.

    The arithmetic task is written to `data_dir` as parquet and read back through the
    same loader as user data, so both paths are the same code.
    """
    if task.name in ("arithmetic", "count"):
        train, held_out = (arithmetic_rows if task.name == "arithmetic" else count_rows)(task, seed)
        train_path = write_parquet(train, data_dir / "train.parquet")
        eval_path = write_parquet(held_out, data_dir / "eval.parquet")
        return (
            load_rows(train_path, "prompt", "answer"),
            load_rows(eval_path, "prompt", "answer"),
        )
    train_rows = load_rows(task.train_path, task.prompt_field, task.answer_field, task.on_bad_row)
    if task.eval_path:
        eval_rows = load_rows(task.eval_path, task.prompt_field, task.answer_field, task.on_bad_row)
    else:
        eval_rows = LoadedRows(rows=[], skipped=0, source="")
    return train_rows, eval_rows
