"""Where a dataset's raw rows come from, the Hugging Face way, offline.

A source (task.train_path / task.eval_path) is resolved in this order:

1. an existing file: .jsonl, .json (JSON Lines, or one JSON array), .parquet, .csv, .tsv, .arrow;
2. an existing folder: an HF `save_to_disk` directory (a Dataset, or a DatasetDict of
   splits), else a folder of data files whose names give their split the HF way
   (train-*.parquet, data/test/..., a README.md `configs:` block);
3. a glob (data/train-*.parquet): every matching data file, in name order;
4. a hub name (openai/gsm8k), read only from the local caches: the prepared arrow cache
   `datasets` writes (HF_DATASETS_CACHE, default $HF_HOME/datasets), then a hub snapshot
   (HF_HUB_CACHE, default $HF_HOME/hub). The network is never asked.

A single file, a glob or a save_to_disk Dataset is one split, "train" (as in `datasets`).
Files are read here, row by row, so an error names the file and its row: in jsonl and csv
files row N is line N; in parquet, arrow and HF datasets it is the N-th row (from 1).
"""
from __future__ import annotations

import csv
import glob
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".tsv", ".arrow")
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
_GLOB_CHARS = re.compile(r"[*?\[]")


class DataError(ValueError):
    """A dataset row, file or source that cannot be used; the message names the config key
    or the file, and the row."""


@dataclass(frozen=True)
class Part:
    """One file (or one split of a loaded HF dataset) of a source; rows are numbered within it."""

    label: str  # names it in errors: a file path, or "openai/gsm8k (config main, split test)"
    id_prefix: str  # a row without a prompt_id gets "<id_prefix>-<row>"
    read: Callable[[], Iterable[tuple[int, Any]]]  # (row number, raw row or a DataError in its place)


@dataclass(frozen=True)
class Source:
    """A resolved train_path / eval_path: its parts by split."""

    value: str  # as configured
    kind: str  # file | folder | save_to_disk | glob | hub
    splits: dict[str, list[Part]]
    config: str | None = None  # the config read, where the source has named ones

    def label(self, split: str) -> str:
        """The source as errors and summaries name it."""
        config = f"config {self.config}, " if self.config else ""
        return self.value if list(self.splits) == [split] and not config else f"{self.value} ({config}split {split})"


# ---------------------------------------------------------------- one file


def file_rows(path: Path, int_fields: tuple[str, ...] = ()) -> Iterator[tuple[int, Any]]:
    """(row number, raw row) of one data file, by its suffix. A row that cannot be read
    comes as a DataError in its place; `int_fields`: csv columns read as integers."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _jsonl_rows(path)
    if suffix == ".json":
        return _json_rows(path)
    if suffix == ".parquet":
        return _table_rows(path, lambda: _parquet_batches(path))
    if suffix == ".arrow":
        return _table_rows(path, lambda: _arrow_batches(path))
    if suffix in (".csv", ".tsv"):
        return _csv_rows(path, "\t" if suffix == ".tsv" else ",", int_fields)
    raise DataError(f"{path}: unsupported data file; use {', '.join(DATA_SUFFIXES)}, a folder or an HF dataset directory")


_BOM = b"\xef\xbb\xbf"  # a UTF-8 byte-order mark, as some editors write one


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            raw = raw.removeprefix(_BOM) if number == 1 else raw
            if raw.strip():
                yield number, parse_json(path, number, raw)


def _json_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """A .json file: one JSON array of rows (row N is its N-th element), else JSON Lines.
    An array with a syntax error is an error at the array (not a line count of JSON Lines)."""
    with open(path, "rb") as fh:
        head = fh.read(4096).removeprefix(_BOM).lstrip()
    if head.startswith(b"["):
        data = Path(path).read_bytes().removeprefix(_BOM)
        whole = parse_json(path, 1, data)
        if isinstance(whole, list):
            yield from ((number, _duplicated(path, number, row)) for number, row in enumerate(whole, start=1))
            return
        if isinstance(parse_json(path, 1, data.lstrip().split(b"\n", 1)[0]), DataError):  # not JSON Lines either
            reason = str(whole).rpartition("not valid JSON ")[2] if isinstance(whole, DataError) else "not a list"
            raise DataError(f"{path}: the file is one JSON array that is not valid JSON {reason}")
    yield from _jsonl_rows(path)


class _Duplicated(dict):
    """A JSON object with a key given twice (in it or in an object it holds): `{"answer": 1,
    "answer": 2}` has no one answer, and json.loads would quietly keep the last."""

    twice = ""


def _keys_once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    twice = None
    if len(obj) != len(pairs):
        seen: set[str] = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
    else:
        inner = (x for v in obj.values() for x in (v if isinstance(v, list) else [v]) if isinstance(x, _Duplicated))
        twice = next((x.twice for x in inner), None)
    if twice is None:
        return obj
    marked = _Duplicated(obj)
    marked.twice = twice
    return marked


def _duplicated(path: Path, number: int, value: Any) -> Any:
    """`value`, or a DataError naming the key it gives twice."""
    if isinstance(value, _Duplicated):
        return DataError(f"{path}: row {number}: the key {value.twice!r:.80} appears twice in one object")
    return value


def parse_json(path: Path, number: int, raw: bytes) -> Any:
    """One JSON value, or a DataError naming file and row: invalid UTF-8, bad syntax, a key
    given twice in one object, an integer past Python's digit limit, nesting past the recursion limit."""
    try:
        return _duplicated(path, number, json.loads(raw.decode("utf-8"), object_pairs_hook=_keys_once))
    except UnicodeDecodeError as err:
        return DataError(f"{path}: row {number}: not valid UTF-8 ({err.reason} at byte {err.start})")
    except json.JSONDecodeError as err:
        return DataError(f"{path}: row {number}: not valid JSON ({err.msg})")
    except ValueError as err:  # "Exceeds the limit (4300 digits) for integer string conversion: ..."
        return DataError(f"{path}: row {number}: not valid JSON ({str(err).split(':')[0]})")
    except RecursionError:
        return DataError(f"{path}: row {number}: not valid JSON (nested too deeply)")


def _parquet_batches(path: Path) -> Iterator[Any]:
    import pyarrow.parquet as pq

    yield from pq.ParquetFile(path).iter_batches(batch_size=1024)


def _arrow_batches(path: Path) -> Iterator[Any]:
    """Record batches of an Arrow IPC stream (what `datasets` writes) or IPC file."""
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        try:
            reader = pa.ipc.open_stream(source)
        except pa.ArrowInvalid:
            source.seek(0)
            reader = pa.ipc.open_file(source)
            yield from (reader.get_batch(i) for i in range(reader.num_record_batches))
            return
        yield from reader


def _table_rows(path: Path, batches: Callable[[], Iterator[Any]]) -> Iterator[tuple[int, Any]]:
    import pyarrow as pa

    number = 0
    try:
        for batch in batches():
            for row in batch.to_pylist():
                number += 1
                yield number, row
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: cannot be read after row {number} ({type(err).__name__}: {err})") from None


def _csv_rows(path: Path, delimiter: str, int_fields: tuple[str, ...]) -> Iterator[tuple[int, Any]]:
    """csv/tsv rows as dicts of strings, keyed by the header (line 1); row N is the line the
    record starts on. An empty cell is a missing value; `int_fields` cells that hold an
    integer are read as one (a csv has no types)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:  # -sig: a spreadsheet's byte-order mark
            reader = csv.reader(fh, delimiter=delimiter)
            header = next(reader, None)
            if header is None:
                return
            twice = sorted({name for name in header if header.count(name) > 1})
            if twice:
                raise DataError(
                    f"{path}: the header (line 1) names column(s) {', '.join(map(repr, twice))} more than once; "
                    "a row would have two values for it: rename or remove one (no row of the file was used)"
                )
            start = reader.line_num + 1
            for cells in reader:
                number, start = start, reader.line_num + 1
                if not cells:
                    continue
                if len(cells) != len(header) and reader.line_num > number:  # the file's quoting, not one row
                    raise DataError(
                        f"{path}: row {number}: a quote opened there is not closed where the row ends, so lines "
                        f"{number}-{reader.line_num} read as one record ({len(cells)} fields; the header has "
                        f"{len(header)}); fix the quoting (no row of the file was used)"
                    )
                if len(cells) != len(header):
                    yield number, DataError(f"{path}: row {number}: has {len(cells)} fields; the header has {len(header)}")
                    continue
                row: dict[str, Any] = {key: (cell if cell != "" else None) for key, cell in zip(header, cells)}
                for key in int_fields:
                    if isinstance(row.get(key), str) and re.fullmatch(r"-?\d{1,18}", row[key].strip()):
                        row[key] = int(row[key])
                yield number, row
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid UTF-8 ({err.reason} at byte {err.start} of a read block)") from None
    except csv.Error as err:
        raise DataError(f"{path}: not valid {'TSV' if delimiter == chr(9) else 'CSV'} ({err})") from None


def dataset_rows(ds: Any) -> Iterator[tuple[int, Any]]:
    """(row number, row) of an HF `datasets.Dataset`, read in arrow batches."""
    number = 0
    for batch in ds.with_format("arrow").iter(batch_size=1024):
        for row in batch.to_pylist():
            number += 1
            yield number, row


# ---------------------------------------------------------------- sources


def open_source(value: str, key: str, config: str | None = None, int_fields: tuple[str, ...] = ()) -> Source:
    """Resolve a configured source (see the module docstring for the order). `key` names
    the setting in errors; `config`: the config name (task.dataset_config) of a hub dataset
    or a folder whose README.md lists configs."""
    try:
        return _open_source(value, key, config, int_fields)
    except (OSError, RuntimeError) as err:  # `~nosuchuser/x`, a name longer than the file system takes, ...
        reason = f"{err.strerror} (errno {err.errno})" if isinstance(err, OSError) and err.strerror else str(err)
        raise DataError(f"{key}={value!r:.200}: not a usable path: {reason}") from None


def _open_source(value: str, key: str, config: str | None, int_fields: tuple[str, ...]) -> Source:
    path = Path(value).expanduser()
    if path.is_file():
        return Source(str(path), "file", {"train": [_file_part(path, path.parent, int_fields)]})
    if path.is_dir():
        if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
            return _save_to_disk_source(value, path, key)
        return Source(value, "folder", *_folder_splits(value, path, key, config, int_fields))
    if _GLOB_CHARS.search(value):
        return Source(value, "glob", {"train": _glob_parts(value, key, int_fields)})
    if _HUB_NAME.fullmatch(value) and not value.lower().endswith(DATA_SUFFIXES):
        return _hub_source(value, key, config, int_fields)
    raise DataError(f"{key}={value!r}: {value}: dataset does not exist (no such file, folder, glob match or hub name)")


def _file_part(path: Path, base: Path, int_fields: tuple[str, ...]) -> Part:
    prefix = os.path.relpath(path, base) if base != path.parent else path.name
    return Part(str(path), prefix, lambda: file_rows(path, int_fields))


def _save_to_disk_source(value: str, path: Path, key: str) -> Source:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except (OSError, ValueError) as err:
        raise DataError(f"{key}={value!r}: not a readable HF dataset directory ({err})") from None
    if isinstance(loaded, datasets.DatasetDict):
        return Source(value, "save_to_disk", {
            split: [Part(f"{value} (split {split})", f"{path.name}-{split}", lambda ds=ds: dataset_rows(ds))]
            for split, ds in loaded.items()
        })
    return Source(value, "save_to_disk", {"train": [Part(value, path.name, lambda: dataset_rows(loaded))]})


def _folder_splits(
    value: str, path: Path, key: str, config: str | None, int_fields: tuple[str, ...]
) -> tuple[dict[str, list[Part]], str | None]:
    """(the data files of each split, the config name where the folder names configs) of
    a folder, as `datasets.load_dataset(folder)` finds them: split names from file and
    folder names, or a README.md `configs:` block. Unlike `datasets`, which reads one
    format per folder (the most common) and drops the other files of a split, every data
    file of a split is read (train-0.jsonl and train-1.csv: both)."""
    from datasets.data_files import DataFilesDict, EmptyDatasetError, get_data_patterns
    from datasets.load import dataset_module_factory

    _refuse_remote_data_files(value, path, key)
    try:
        module = dataset_module_factory(str(path))
    except (EmptyDatasetError, FileNotFoundError) as err:
        raise DataError(f"{key}={value!r}: the folder holds no data files ({', '.join(DATA_SUFFIXES)}): {err}") from None
    except (ValueError, RuntimeError) as err:  # e.g. one split jsonl, another parquet
        raise DataError(f"{key}={value!r}: not a folder `datasets` can read ({err})") from None
    params = module.builder_configs_parameters
    configs = {c.name: c for c in params.builder_configs}
    name = config or params.default_config_name or (next(iter(configs)) if len(configs) == 1 else None)
    if name not in configs:
        wanted = f"task.dataset_config={config!r} is not one of its configs" if config else "it has several configs"
        raise DataError(f"{key}={value!r}: {wanted}: {', '.join(configs)}; set task.dataset_config to one")
    chosen = configs[name].data_files or {}
    try:
        files = DataFilesDict.from_patterns({str(s): list(p) for s, p in chosen.items()}, base_path=str(path))
    except FileNotFoundError as err:
        raise DataError(f"{key}={value!r}: config {name!r} names data files that are missing: {err}") from None
    listed_by_split = {str(split): set(listed) for split, listed in files.items()}
    if not params.metadata_configs:  # the files of each split in every format, not only the one `datasets` chose
        every = DataFilesDict.from_patterns(get_data_patterns(str(path.resolve())), base_path=str(path.resolve()))
        for split, listed in every.items():
            listed_by_split.setdefault(str(split), set()).update(f for f in listed if Path(f).suffix.lower() in DATA_SUFFIXES)
    root = path.resolve()
    for listed in listed_by_split.values():
        for f in listed:
            target = Path(f).resolve()
            if root not in target.parents:
                named = f"its README.md names the data file {f}" if params.metadata_configs else f"its data file {f} is a link to {target}"
                raise DataError(f"{key}={value!r}: {named}, outside the folder; only files in it are read")
    splits = {split: [_file_part(Path(f), path, int_fields) for f in sorted(listed)] for split, listed in listed_by_split.items() if listed}
    return splits, (name if params.metadata_configs else None)


def _refuse_remote_data_files(value: str, path: Path, key: str) -> None:
    """A folder's README.md may name data files by URL (hf://, https://): a run never
    downloads, so such a folder is refused before `datasets` would reach for them."""
    import yaml

    readme = path / "README.md"
    if not readme.is_file():
        return
    text = readme.read_text(errors="replace")
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.DOTALL)
    try:
        meta = yaml.safe_load(match.group(1)) if match else None
    except yaml.YAMLError as err:
        raise DataError(f"{key}={value!r}: {readme}: its metadata block is not valid YAML ({err})") from None

    def names(node: Any) -> Iterator[str]:
        if isinstance(node, str):
            yield node
        elif isinstance(node, list):
            for item in node:
                yield from names(item)
        elif isinstance(node, dict):
            yield from names(node.get("path"))

    configs = meta.get("configs") if isinstance(meta, dict) else None
    for entry in configs if isinstance(configs, list) else []:
        for name in names(entry.get("data_files") if isinstance(entry, dict) else None):
            if "://" in name or name.startswith("hf:"):
                raise DataError(f"{key}={value!r}: {readme} names remote data files ({name}); runs never download: use local files")


def _glob_parts(pattern: str, key: str, int_fields: tuple[str, ...]) -> list[Part]:
    """Every data file `pattern` matches (** spans folders), in name order; hidden files are skipped."""
    pattern = os.path.expanduser(pattern)
    parts = Path(pattern).parts
    base = Path(*parts[: _first_magic(parts)] or ["."])
    matches = sorted(
        Path(p) for p in glob.glob(pattern, recursive=True)
        if Path(p).is_file() and Path(p).suffix.lower() in DATA_SUFFIXES
    )
    if not matches:
        raise DataError(f"{key}={pattern!r}: the glob matches no data files ({', '.join(DATA_SUFFIXES)})")
    return [_file_part(p, base, int_fields) for p in matches]


def _first_magic(parts: tuple[str, ...]) -> int:
    return next((i for i, part in enumerate(parts) if _GLOB_CHARS.search(part)), len(parts))


# ---------------------------------------------------------------- hub names, from the local caches


def datasets_cache_dir() -> Path:
    """Where `datasets` keeps prepared datasets: $HF_DATASETS_CACHE, else $HF_HOME/datasets."""
    if os.environ.get("HF_DATASETS_CACHE"):
        return Path(os.environ["HF_DATASETS_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "datasets"
    import datasets.config

    return Path(datasets.config.HF_DATASETS_CACHE).expanduser()


def hub_cache_dir() -> Path:
    """Where huggingface_hub keeps downloaded repos: $HF_HUB_CACHE, else $HF_HOME/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE).expanduser()


def _cached_configs(name: str, cache: Path) -> list[str]:
    """Configs of hub dataset `name` prepared in the datasets cache, as `datasets` writes
    them: <namespace>___<name>/<config>/<version>/<hash>/dataset_info.json."""
    from datasets.naming import camelcase_to_snakecase

    *namespace, dataset = name.split("/")
    root = cache / "___".join([*namespace, camelcase_to_snakecase(dataset)])
    return sorted({info.parts[-4] for info in root.glob("*/*/*/dataset_info.json")})


def _hub_source(name: str, key: str, config: str | None, int_fields: tuple[str, ...]) -> Source:
    cache, hub = datasets_cache_dir(), hub_cache_dir()
    configs = _cached_configs(name, cache)
    if configs and (config is None or config in configs):
        if config is None and len(configs) > 1:
            raise DataError(
                f"{key}={name!r}: the cache {cache} holds several configs of it ({', '.join(configs)}); "
                "set task.dataset_config to one"
            )
        return _arrow_cache_source(name, key, config or configs[0], cache)
    snapshot = _hub_snapshot(name, hub)
    if snapshot is not None:
        return Source(name, "hub", *_folder_splits(name, snapshot, key, config, int_fields))
    what = f"{name!r}" + (f" (config {config!r})" if config else "")
    cached = f"; its cache holds only configs {', '.join(configs)} (task.dataset_config)" if configs else ""
    raise DataError(
        f"{key}={name!r}: no local file or folder of that name, and dataset {what} is not in the local Hugging Face "
        f"cache (looked in {cache} and {hub}){cached}. "
        "Runs never download: on a machine with network, run "
        f"`python -c \"import datasets; datasets.load_dataset({name!r}{', ' + repr(config) if config else ''})\"` "
        "with the same HF_HOME (or HF_DATASETS_CACHE) and copy that cache here, "
        f"or point {key} at local files (jsonl, json, parquet, csv, arrow, a folder or a glob)"
    )


def _arrow_cache_source(name: str, key: str, config: str, cache: Path) -> Source:
    """The splits `datasets.load_dataset(name, config)` prepared earlier, read as its offline
    mode reads them (the `cache` builder), without asking the hub first."""
    from datasets.packaged_modules.cache.cache import Cache

    try:
        builder = Cache(
            cache_dir=str(cache), dataset_name=name.split("/")[-1], repo_id=name,
            config_name=config, version="auto", hash="auto",
        )
        splits = list(builder.info.splits or {})
    except (OSError, ValueError) as err:
        raise DataError(f"{key}={name!r}: its cache in {cache} cannot be read ({err})") from None
    short = name.split("/")[-1]
    return Source(name, "hub", {
        split: [Part(f"{name} (config {config}, split {split})", f"{short}-{split}",
                     lambda split=split: dataset_rows(builder.as_dataset(split=split)))]
        for split in splits
    }, config)


def _hub_snapshot(name: str, hub: Path) -> Path | None:
    """The local snapshot of dataset repo `name` (huggingface_hub's cache), or None."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(name, repo_type="dataset", cache_dir=str(hub), local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None


def choose_split(source: Source, wanted: str | None, key: str, source_key: str, fallback: tuple[str, ...] = ()) -> str | None:
    """The split to read: `wanted` (which must exist), else the first of `fallback` the
    source has; None when `wanted` is None and none is there."""
    if wanted is not None:
        if wanted not in source.splits:
            one = source.kind in ("file", "glob", "save_to_disk") and list(source.splits) == ["train"]
            single = " (a single file, a glob or a saved Dataset is split 'train')" if one else ""
            raise DataError(
                f"{key}={wanted!r}: {source_key}={source.value!r} has no split {wanted!r}; "
                f"its splits: {', '.join(source.splits)}{single}"
            )
        return wanted
    return next((split for split in fallback if split in source.splits), None)
