"""Task data: the built-in arithmetic task, and user datasets from jsonl, parquet or
HF dataset directories, validated row by row."""
from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from rlhf_platform.config import TaskConfig


T = TypeVar("T")


class DataError(ValueError):
    """A dataset row or file that cannot be used; the message names file and row (in a
    jsonl file, row N is line N, blank lines counted)."""


@dataclass(frozen=True)
class TaskRow:
    """One prompt of a task before tokenisation."""

    prompt_id: str
    prompt: str
    answer: str
    difficulty: int = 0
    line: int = 0  # 1-based row of its file (jsonl: its line), for errors; 0 when made in code


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
    columns = ("prompt_id", "prompt", "answer", "difficulty")
    datasets.Dataset.from_list([{key: getattr(row, key) for key in columns} for row in rows]).to_parquet(str(tmp))
    tmp.replace(path)
    return path


# ---------------------------------------------------------------- user datasets


def raw_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(1-based row number, raw row) from jsonl, parquet or an HF dataset directory. In
    jsonl the number is the file line (blank lines count, and are not rows); a line that
    cannot be read comes as a DataError in place of its row."""
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
                if raw.strip():
                    yield i, _parse_line(path, i, raw)
    else:
        raise DataError(f"{path}: unsupported dataset format; use .jsonl, .parquet or an HF dataset directory")


def _parse_line(path: Path, number: int, raw: bytes) -> Any:
    """One jsonl line as JSON, or a DataError naming file and line: invalid UTF-8, bad
    syntax, an integer past Python's digit limit, nesting past the recursion limit."""
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        return DataError(f"{path}: row {number}: not valid UTF-8 ({err.reason} at byte {err.start})")
    except json.JSONDecodeError as err:
        return DataError(f"{path}: row {number}: not valid JSON ({err.msg})")
    except ValueError as err:  # "Exceeds the limit (4300 digits) for integer string conversion: ..."
        return DataError(f"{path}: row {number}: not valid JSON ({str(err).split(':')[0]})")
    except RecursionError:
        return DataError(f"{path}: row {number}: not valid JSON (nested too deeply)")


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
    """Field `key` of a row as a non-blank string of valid Unicode (JSON's "\\ud800"
    escape gives a lone surrogate, which no tokenizer or file can take), or a DataError
    naming file and row."""
    value = raw[key]
    if not isinstance(value, str):
        raise DataError(f"{path}: row {number}: field {key!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise DataError(f"{path}: row {number}: field {key!r} is empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise DataError(f"{path}: row {number}: field {key!r} is not valid Unicode ({err.reason} at character {err.start})") from None
    return value


def _answer(path: Path, number: int, raw: dict, key: str) -> str:
    """The answer a reply is verified against: non-blank text (code tests included) or a
    finite number. Booleans, NaN and infinities cannot be checked, so they are bad rows."""
    value = raw[key]
    if isinstance(value, str):
        return require_text(path, number, raw, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"{path}: row {number}: field {key!r} must be a string or number, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise DataError(f"{path}: row {number}: field {key!r} is {value}, which no reply can be checked against")
    return str(value)


def _prompt_id(path: Path, number: int, raw: dict) -> str:
    """The row's `prompt_id` (a string or integer), or `<file name>-<row>` without one."""
    value = raw.get("prompt_id")
    if value is None:
        return f"{path.name}-{number}"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return require_text(path, number, raw, "prompt_id")


def _level(path: Path, number: int, raw: dict, levels: int | None) -> int:
    """The row's `difficulty` (0 without one): an integer from 0 to levels - 1, since the
    prompt queue samples level i with task.weights[i] and never samples a level past them."""
    value = raw.get("difficulty")
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or (levels is not None and value >= levels):
        allowed = "an integer >= 0" if levels is None else f"an integer from 0 to {levels - 1} (one level per task.weights entry)"
        raise DataError(f"{path}: row {number}: field 'difficulty' is {value!r:.40}; it must be {allowed}")
    return value


def _check_row(path: Path, number: int, raw: Any, prompt_field: str, answer_field: str, levels: int | None) -> TaskRow:
    raw = require_fields(path, number, raw, (prompt_field, answer_field))
    return TaskRow(
        prompt_id=_prompt_id(path, number, raw),
        prompt=require_text(path, number, raw, prompt_field),
        answer=_answer(path, number, raw, answer_field),
        difficulty=_level(path, number, raw, levels),
        line=number,
    )


def load_rows(
    path: str | Path, prompt_field: str, answer_field: str, on_bad_row: str = "error", levels: int | None = None
) -> LoadedRows:
    """Load and validate a user dataset. Bad rows raise `DataError` naming file and row,
    or, with on_bad_row="skip", are skipped and counted. `levels`: how many difficulty
    levels the task samples (len(task.weights)); a row outside them is a bad row. A
    prompt_id seen on an earlier row is a bad row too: the prompt queue and its ledger
    (what a resumed run has trained) know a prompt by its id."""
    path = Path(path)
    first_row: dict[str, int] = {}

    def check(number: int, raw: Any) -> TaskRow:
        row = _check_row(path, number, raw, prompt_field, answer_field, levels)
        if row.prompt_id in first_row:
            raise DataError(f"{path}: row {number}: prompt_id {row.prompt_id!r:.80} repeats row {first_row[row.prompt_id]}")
        first_row[row.prompt_id] = number
        return row

    rows, skipped = load_checked(path, check, on_bad_row)
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
    same loader as user data, so both paths are the same code. Every row's level must be
    one task.weights samples. Train and eval are separate id spaces: eval rows never
    enter the prompt queue, so an id may appear in both.
    """
    levels = len(task.weights)
    if task.name in ("arithmetic", "count"):
        train, held_out = (arithmetic_rows if task.name == "arithmetic" else count_rows)(task, seed)
        train_path = write_parquet(train, data_dir / "train.parquet")
        eval_path = write_parquet(held_out, data_dir / "eval.parquet")
        return (
            load_rows(train_path, "prompt", "answer", levels=levels),
            load_rows(eval_path, "prompt", "answer", levels=levels),
        )
    train_rows = load_rows(task.train_path, task.prompt_field, task.answer_field, task.on_bad_row, levels)
    if task.eval_path:
        eval_rows = load_rows(task.eval_path, task.prompt_field, task.answer_field, task.on_bad_row, levels)
    else:
        eval_rows = LoadedRows(rows=[], skipped=0, source="")
    return train_rows, eval_rows
