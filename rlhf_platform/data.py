"""Task data: the built-in arithmetic and count tasks, and user datasets (files, folders,
globs, hub names from the local cache: see `datasets_io`), validated row by row."""
from __future__ import annotations

import math
import os
import random
from collections import Counter
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from rlhf_platform.config import TaskConfig
from rlhf_platform.datasets_io import DataError, Part, Source, choose_split, file_rows, open_source


T = TypeVar("T")


@dataclass(frozen=True)
class TaskRow:
    """One prompt of a task before tokenisation."""

    prompt_id: str
    prompt: str  # the user's text (with chat turns: the last user turn); what rewards and logs see
    answer: str
    difficulty: int = 0
    line: int = 0  # 1-based row of its file (jsonl, csv: its line), for errors; 0 when made in code
    source: str = ""  # the file (or dataset split) the row came from, for errors; "" when made in code
    # chat turns (role, content) to render with the chat template: a messages field, or the
    # prompt after task.system_prompt; () renders `prompt` as a single user turn
    messages: tuple[tuple[str, str], ...] = ()
    dataset: str = ""  # the task.mixture dataset it belongs to ("" without a mixture)


@dataclass
class LoadedRows:
    rows: list[TaskRow]
    skipped: int  # bad rows skipped under on_bad_row=skip
    source: str

    def level_counts(self) -> dict[int, int]:
        """Rows per difficulty level."""
        return dict(sorted(Counter(row.difficulty for row in self.rows).items()))


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

LEVEL_FIELD = "difficulty"
ROLES = ("system", "user", "assistant")


def raw_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(1-based row number, raw row) of one data file (jsonl, json, parquet, csv, tsv,
    arrow) or an HF `save_to_disk` Dataset directory. A row that cannot be read comes as a
    DataError in its place. Folders of files, globs and hub names: `open_source`."""
    if not path.is_dir():
        return file_rows(path, (LEVEL_FIELD,))
    source = open_source(str(path), str(path))
    if source.kind == "save_to_disk" and list(source.splits) == ["train"]:
        return iter(source.splits["train"][0].read())
    what = f"holds splits {', '.join(source.splits)}" if source.kind == "save_to_disk" else "is a folder of data files"
    raise DataError(f"{path}: {what}; point at one data file or one split's save_to_disk directory")


def require_fields(path: Path | str, number: int, raw: Any, fields: tuple[str, ...]) -> dict:
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


def require_text(path: Path | str, number: int, raw: dict, key: str) -> str:
    """Field `key` of a row as a non-blank string of valid Unicode (JSON's "\\ud800"
    escape gives a lone surrogate, which no tokenizer or file can take), or a DataError
    naming file and row."""
    return _text(f"{path}: row {number}: field {key!r}", raw[key])


def _text(where: str, value: Any, kind: str = "a string") -> str:
    if not isinstance(value, str):
        raise DataError(f"{where} must be {kind}, got {type(value).__name__}")
    if not value.strip():
        raise DataError(f"{where} is empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise DataError(f"{where} is not valid Unicode ({err.reason} at character {err.start})") from None
    return value


# answers that stand for a missing one (as JSON strings, or csv cells, which have no types): no reply
# can be checked against them, and a reply that echoes one would pass
PLACEHOLDER_ANSWERS = frozenset({
    "nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity", "true", "false",
    "none", "null", "nil", "n/a", "#n/a", "-", "--", "?", "tbd", "undefined",
})


def _answer(path: str, number: int, raw: dict, key: str) -> str:
    """The answer a reply is verified against: non-blank text (code tests included) or a
    finite number. Booleans, NaN and infinities cannot be checked, so they are bad rows,
    as numbers or as text (`PLACEHOLDER_ANSWERS`: "NaN", "None", "N/A", "-", ...). A float
    is written in positional notation (1e-05 is "0.00001"): math checks read "1e-05" as e - 5."""
    value = raw[key]
    if isinstance(value, str):
        text = require_text(path, number, raw, key)
        if text.strip().lower() in PLACEHOLDER_ANSWERS:
            raise DataError(
                f"{path}: row {number}: field {key!r} is {text.strip()!r:.40}, a placeholder no reply can be checked against"
            )
        return text
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"{path}: row {number}: field {key!r} must be a string or number, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise DataError(f"{path}: row {number}: field {key!r} is {value}, which no reply can be checked against")
    return _positional(value) if isinstance(value, float) else str(value)


def _positional(value: float) -> str:
    """A float as the shortest decimal that reads back as it, without an exponent: 1e-05 is
    "0.00001", 1e+21 is "1000000000000000000000", 2.5 is "2.5", 3.0 is "3.0"."""
    text = format(Decimal(repr(value)), "f")
    return text if "." in text or "e" in repr(value) else f"{text}.0"


def _prompt_id(part: Part, number: int, raw: dict) -> str:
    """The row's `prompt_id` (a string or integer), or `<file name>-<row>` without one."""
    value = raw.get("prompt_id")
    if value is None:
        return f"{part.id_prefix}-{number}"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return require_text(part.label, number, raw, "prompt_id")


def _level(path: str, number: int, raw: dict, levels: int | None) -> int:
    """The row's `difficulty` (0 without one): an integer from 0 to levels - 1, since the
    prompt queue samples level i with task.weights[i] and never samples a level past them."""
    value = raw.get(LEVEL_FIELD)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or (levels is not None and value >= levels):
        allowed = "an integer >= 0" if levels is None else f"an integer from 0 to {levels - 1} (one level per task.weights entry)"
        raise DataError(f"{path}: row {number}: field {LEVEL_FIELD!r} is {value!r:.40}; it must be {allowed}")
    return value


def _messages(path: str, number: int, key: str, value: list) -> tuple[tuple[str, str], ...]:
    """Chat turns of a messages field: each an object with a role (system, user, assistant)
    and non-blank string content; a system turn only first; the last turn the user's."""
    if not value:
        raise DataError(f"{path}: row {number}: field {key!r} is an empty list of turns")
    turns = []
    for i, turn in enumerate(value, start=1):
        where = f"{path}: row {number}: field {key!r} turn {i}"
        if not isinstance(turn, dict):
            raise DataError(f"{where} must be an object with 'role' and 'content', got {type(turn).__name__}")
        role = turn.get("role")
        if role not in ROLES:
            raise DataError(f"{where}: role {role!r:.40} is not allowed; use {', '.join(ROLES)}")
        if role == "system" and i > 1:
            raise DataError(f"{where}: a system turn must come first")
        turns.append((role, _text(f"{where} content", turn.get("content"))))
    if turns[-1][0] != "user":
        raise DataError(f"{path}: row {number}: field {key!r}: the last turn is {turns[-1][0]!r}; it must be the user's")
    return tuple(turns)


def _prompt(path: str, number: int, raw: dict, key: str, system_prompt: str | None) -> tuple[str, tuple[tuple[str, str], ...]]:
    """(text, chat turns) of the prompt field: plain text, or a list of turns whose text is
    the last user turn. `system_prompt` becomes the first turn of a prompt without one."""
    value = raw[key]
    if isinstance(value, (list, tuple)):
        turns = _messages(path, number, key, list(value))
        text = turns[-1][1]  # the last turn is the user's
    else:
        text = _text(f"{path}: row {number}: field {key!r}", value, "a string or a list of {role, content} turns")
        turns = (("user", text),) if system_prompt else ()
    if system_prompt and turns[0][0] != "system":
        turns = (("system", system_prompt), *turns)
    return text, turns


def _check_row(
    part: Part, number: int, raw: Any, prompt_field: str, answer_field: str, levels: int | None, system_prompt: str | None
) -> TaskRow:
    raw = require_fields(part.label, number, raw, (prompt_field, answer_field))
    text, turns = _prompt(part.label, number, raw, prompt_field, system_prompt)
    return TaskRow(
        prompt_id=_prompt_id(part, number, raw),
        prompt=text,
        answer=_answer(part.label, number, raw, answer_field),
        difficulty=_level(part.label, number, raw, levels),
        line=number,
        source=part.label,
        messages=turns,
    )


def load_rows(
    path: str | Path,
    prompt_field: str,
    answer_field: str,
    on_bad_row: str = "error",
    levels: int | None = None,
    *,
    split: str | None = None,
    config: str | None = None,
    system_prompt: str | None = None,
    key: str = "task.train_path",
    split_key: str = "task.train_split",
) -> LoadedRows:
    """Load and validate one split of a user dataset (a file, folder, glob or cached hub
    name: `datasets_io.open_source`). `split` None: the source's only split. Bad rows raise
    `DataError` naming file and row, or, with on_bad_row="skip", are skipped and counted.
    `levels`: how many difficulty levels the task samples (len(task.weights)); a row
    outside them is a bad row. A prompt_id seen on an earlier row is a bad row too: the
    prompt queue and its ledger (what a resumed run has trained) know a prompt by its id."""
    source = open_source(str(path), key, config, (LEVEL_FIELD,))
    if split is None and len(source.splits) == 1:
        split = next(iter(source.splits))
    elif split is None:
        raise DataError(f"{key}={source.value!r}: holds splits {', '.join(source.splits)}; set {split_key} to one")
    split = choose_split(source, split, split_key, key)
    return load_split(source, split, prompt_field, answer_field, on_bad_row, levels, system_prompt)


def load_split(
    source: Source, split: str, prompt_field: str, answer_field: str, on_bad_row: str = "error",
    levels: int | None = None, system_prompt: str | None = None,
) -> LoadedRows:
    """Validated rows of one split of a resolved source (see `load_rows`)."""
    first_row: dict[str, tuple[str, int]] = {}
    rows: list[TaskRow] = []
    skipped = 0
    for part in source.splits[split]:
        for number, raw in part.read():
            try:
                row = _check_row(part, number, raw, prompt_field, answer_field, levels, system_prompt)
                if row.prompt_id in first_row:
                    where = first_row[row.prompt_id]
                    at = f"row {where[1]}" if where[0] == part.label else f"{where[0]} row {where[1]}"
                    raise DataError(f"{part.label}: row {number}: prompt_id {row.prompt_id!r:.80} repeats {at}")
                first_row[row.prompt_id] = (part.label, number)
                rows.append(row)
            except DataError:
                if on_bad_row != "skip":
                    raise
                skipped += 1
    label = source.label(split)
    if not rows:
        raise DataError(f"{label}: no usable rows ({skipped} skipped)")
    return LoadedRows(rows=rows, skipped=skipped, source=label)


def load_checked(path: Path, check: Callable[[int, Any], T], on_bad_row: str = "error") -> tuple[list[T], int]:
    """Every row of one data file or save_to_disk directory (`raw_rows`) through
    `check(row_number, raw_row)`. A DataError is raised, or with on_bad_row="skip" the row
    is skipped and counted. Returns (rows, skipped); a file with no usable row is an error."""
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


def dataset_task_rows(task: TaskConfig) -> tuple[LoadedRows, LoadedRows]:
    """(train, held-out) rows of task.name=dataset. Held-out rows come from task.eval_path,
    else from train_path's source when it has task.eval_split (None: "test", else
    "validation"); a train source without one gives no held-out rows."""
    levels = len(task.weights)
    fields = (task.prompt_field, task.answer_field, task.on_bad_row, levels, task.system_prompt)
    train_source = open_source(task.train_path, "task.train_path", task.dataset_config, (LEVEL_FIELD,))
    train_split = choose_split(train_source, task.train_split, "task.train_split", "task.train_path")
    train = load_split(train_source, train_split, *fields)
    if task.eval_path:
        return train, load_eval_rows(task.eval_path, task.eval_split, task.dataset_config, *fields)
    eval_split = choose_split(train_source, task.eval_split, "task.eval_split", "task.train_path", ("test", "validation"))
    if eval_split == train_split:
        raise DataError(f"task.eval_split={eval_split!r} is task.train_split too: held-out prompts must not be trained on")
    held_out = load_split(train_source, eval_split, *fields) if eval_split else LoadedRows(rows=[], skipped=0, source="")
    return train, held_out


def mixture_task_rows(task: TaskConfig) -> tuple[LoadedRows, LoadedRows]:
    """(train, held-out) rows of a task mixture: each dataset's train split and (when it
    has one) held-out split, prompt ids prefixed by the dataset's name (`name/id`, unique
    across datasets) and rows tagged with it; levels checked against its own weights."""
    train: list[TaskRow] = []
    held_out: list[TaskRow] = []
    skipped = 0
    for i, part in enumerate(task.mixture):
        key = f"task.mixture[{i}]"
        weights = part.weights if part.weights is not None else task.weights
        fields = (part.prompt_field or task.prompt_field, part.answer_field or task.answer_field, task.on_bad_row,
                  len(weights), task.system_prompt)
        source = open_source(part.path, f"{key}.path", part.dataset_config, (LEVEL_FIELD,))
        train_split = choose_split(source, part.train_split, f"{key}.train_split", f"{key}.path")
        rows = load_split(source, train_split, *fields)
        check_level_weights(weights, rows, f"{key}.weights" if part.weights is not None else "task.weights")
        eval_split = choose_split(source, part.eval_split, f"{key}.eval_split", f"{key}.path", ("test", "validation"))
        if eval_split == train_split:
            raise DataError(f"{key}.eval_split={eval_split!r} is its train_split too: held-out prompts must not be trained on")
        held = load_split(source, eval_split, *fields) if eval_split else LoadedRows(rows=[], skipped=0, source="")
        for loaded, out in ((rows, train), (held, held_out)):
            out.extend(replace(row, prompt_id=f"{part.name}/{row.prompt_id}", dataset=part.name) for row in loaded.rows)
            skipped += loaded.skipped
    names = ", ".join(part.name for part in task.mixture)
    return (
        LoadedRows(rows=train, skipped=skipped, source=f"task.mixture ({names})"),
        LoadedRows(rows=held_out, skipped=0, source=f"task.mixture held-out ({names})"),
    )


def load_eval_rows(
    path: str, split: str | None, config: str | None, prompt_field: str, answer_field: str, on_bad_row: str = "error",
    levels: int | None = None, system_prompt: str | None = None, key: str = "task.eval_path", split_key: str = "task.eval_split",
) -> LoadedRows:
    """Held-out rows of a source (see `load_rows`): `split`, which must exist, else the
    source's only split, else "test", else "validation"; a source with none of them is
    an error naming `split_key`."""
    source = open_source(path, key, config, (LEVEL_FIELD,))
    only = tuple(source.splits) if len(source.splits) == 1 else ()
    chosen = choose_split(source, split, split_key, key, (*only, "test", "validation"))
    if chosen is None:
        raise DataError(f"{key}={path!r}: holds splits {', '.join(source.splits)}; set {split_key} to one")
    return load_split(source, chosen, prompt_field, answer_field, on_bad_row, levels, system_prompt)


def _file_identity(source: str) -> tuple[int, int] | str:
    """What tells a row's file apart whatever its spelling (relative, `..`, a symlink, a
    hard link): its (device, inode); a source that is no file (a hub split) by its label."""
    try:
        stat = os.stat(source)
    except (OSError, ValueError):
        return source
    return (stat.st_dev, stat.st_ino)


def check_apart(train: LoadedRows, held_out: LoadedRows, key: str, on_bad_row: str = "error") -> None:
    """Held-out prompts must never be trained on. Refuse held-out rows read from a file the
    training rows come from too (a glob or folder that also matched the test file, the same
    file given twice or spelled two ways: files are compared by device and inode). A
    held-out row whose prompt (its chat turns) is also a training prompt is a bad row: an
    error naming both rows, or with on_bad_row="skip" it is dropped from `held_out` (in
    place) and counted in its `skipped`."""
    train_files: dict[tuple[int, int] | str, str] = {}
    for source in dict.fromkeys(row.source for row in train.rows if row.source):
        train_files.setdefault(_file_identity(source), source)
    shared = {}
    for source in dict.fromkeys(row.source for row in held_out.rows if row.source):
        identity = _file_identity(source)
        if identity in train_files:
            shared[source] = train_files[identity]
    if shared:
        named = ", ".join(s if s == t else f"{s} (which is {t})" for s, t in sorted(shared.items()))
        raise DataError(
            f"{key}: held-out rows come from {named}, which the training data ({train.source}) reads too; "
            "held-out prompts must not be trained on: point the two at different files"
        )
    trained = {}
    for row in train.rows:
        trained.setdefault(_prompt_key(row), row)
    overlap = [(row, trained[_prompt_key(row)]) for row in held_out.rows if _prompt_key(row) in trained]
    if not overlap:
        return
    if on_bad_row != "skip":
        row, twin = overlap[0]
        raise DataError(
            f"{key}: {len(overlap)} held-out prompt(s) of {held_out.source} are training prompts too (the first: "
            f"{row.source or held_out.source} row {row.line} is {twin.source or train.source} row {twin.line}); "
            "held-out prompts must not be trained on: remove them from one side, or set task.on_bad_row=skip "
            "to leave them out of the held-out set (counted as skipped rows)"
        )
    dropped = {id(row) for row, _ in overlap}
    held_out.rows[:] = [row for row in held_out.rows if id(row) not in dropped]
    held_out.skipped += len(dropped)


def _prompt_key(row: TaskRow) -> tuple:
    """A prompt as the policy sees it: its chat turns, else its text (whitespace at the ends aside)."""
    return tuple((role, text.strip()) for role, text in row.messages) or (("user", row.prompt.strip()),)


def check_level_weights(weights: list[float], train: LoadedRows, key: str = "task.weights") -> None:
    """Refuse train rows that `weights` (the config key `key`) can never draw from: every
    row's level is below len(weights) already (a bad row otherwise), and here at least one
    level present must have a weight > 0."""
    counts = train.level_counts()
    if not any(weights[level] > 0 for level in counts):
        present = ", ".join(f"level {level}: {n} rows" for level, n in counts.items())
        raise DataError(
            f"{key}={list(weights)} gives no weight to the difficulty levels of {train.source} ({present}); "
            f"give one of them a weight > 0"
        )


def task_rows(task: TaskConfig, seed: int, data_dir: Path) -> tuple[LoadedRows, LoadedRows]:
    """The (train, held-out) rows of the configured task.

    The arithmetic and count tasks are written to `data_dir` as parquet and read back
    through the same loader as user data, so both paths are the same code. Every row's
    level must be one task.weights samples, and the train rows must hold a level with a
    weight > 0. Train and eval are separate id spaces: eval rows never enter the prompt
    queue, so an id may appear in both.
    """
    levels = len(task.weights)
    if task.name in ("arithmetic", "count"):
        train, held_out = (arithmetic_rows if task.name == "arithmetic" else count_rows)(task, seed)
        train_path = write_parquet(train, data_dir / "train.parquet")
        eval_path = write_parquet(held_out, data_dir / "eval.parquet")
        loaded = (
            load_rows(train_path, "prompt", "answer", levels=levels, system_prompt=task.system_prompt),
            load_rows(eval_path, "prompt", "answer", levels=levels, system_prompt=task.system_prompt),
        )
    elif task.mixture:
        loaded = mixture_task_rows(task)  # each dataset's levels checked against its own weights
        check_apart(*loaded, "task.mixture", task.on_bad_row)
        return loaded
    else:
        loaded = dataset_task_rows(task)
        check_apart(*loaded, "task.eval_path" if task.eval_path else "task.eval_split", task.on_bad_row)
    check_level_weights(task.weights, loaded[0])
    return loaded
