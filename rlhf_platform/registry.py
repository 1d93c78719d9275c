"""The model registry: every checkpoint with its lineage, metrics, eval results and status.

`Registry` is the interface recipes and the `rlhf` command use; `SQLiteRegistry` (one
file, `registry.sqlite`, in the run directory or any root shared by several runs) is
the default backend. A version is registered only after its checkpoint directory is
complete, so a save that died half-way never appears here.

Runs are keyed by a run id, unique in the registry: a run's name (its directory's name)
when no other run of the registry has that id, else the name and 8 hex digits. The id is
recorded in the run directory (`run_id`), so a resume finds it again, and two runs with the
same name sharing one registry never see, resume or delete each other's versions.
Registries written before run ids key a run by its name, which stays its id.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

STATUSES = ("candidate", "promoted", "rejected", "rolled_back")
REGISTRY_FILE = "registry.sqlite"
RUN_ID_FILE = "run_id"  # in a run directory: the run's id in its registry
MAX_VERSION = 2**63 - 1  # the largest integer SQLite stores


class RegistryError(LookupError):
    """An unknown version or run, a status that is not allowed, or a registry file that
    cannot be used."""


def version_id(value: object) -> int:
    """A version id, from an int or its decimal text; RegistryError for anything else
    (negative, zero, beyond what SQLite stores, not a whole number)."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        value = int(value)
    if type(value) is int and 1 <= value <= MAX_VERSION:
        return value
    shown = repr(value)[:40] if not isinstance(value, int) or value.bit_length() <= 64 else "beyond 2**63"
    raise RegistryError(f"version {shown}: not a version id (a whole number from 1 to {MAX_VERSION}; see `rlhf ckpt list`)")


def recorded_run_id(run_dir: Path) -> str | None:
    """The run id recorded in `run_dir`, or None when it has none (a new run, or one
    written before run ids)."""
    path = Path(run_dir) / RUN_ID_FILE
    if not path.is_file():
        return None
    try:
        run_id = path.read_text().strip()
    except (OSError, ValueError) as err:
        raise RegistryError(f"{path}: unreadable run id ({err})") from err
    if not run_id or len(run_id) > 255 or not run_id.isprintable():
        raise RegistryError(f"{path}: {run_id[:40]!r} is not a run id")
    return run_id


def record_run_id(run_dir: Path, run_id: str) -> None:
    """Write `run_id` into `run_dir` (temp file, then rename)."""
    path = Path(run_dir) / RUN_ID_FILE
    tmp = path.with_name(f".{RUN_ID_FILE}.{os.getpid()}")
    tmp.write_text(run_id + "\n")
    os.replace(tmp, path)


@dataclass
class VersionRecord:
    run: str  # the run's id (see the module docstring)
    step: int
    weight_version: int
    recipe: str
    path: str  # the checkpoint directory
    checksum: str  # Manifest.checksum of the directory
    config_hash: str
    config: dict[str, Any] = field(default_factory=dict)
    data_position: dict[str, Any] = field(default_factory=dict)  # prompt-queue position at save time
    metrics: dict[str, float] = field(default_factory=dict)  # training metrics of the step saved
    eval: dict[str, Any] = field(default_factory=dict)  # eval-gate results, once evaluated
    parent: int | None = None  # the version this one was trained from
    status: str = "candidate"
    reason: str = ""  # why it was rejected, rolled back or promoted
    created: float = field(default_factory=time.time)
    deleted: bool = False  # its directory was removed by the retention policy
    id: int = 0  # assigned by the registry


_JSON_FIELDS = ("config", "data_position", "metrics", "eval")


class Registry(Protocol):
    path: Path  # where the registry lives, for messages

    def add(self, record: VersionRecord) -> VersionRecord: ...
    def get(self, version: int) -> VersionRecord: ...
    def versions(self, run: str | None = None) -> list[VersionRecord]: ...
    def set_status(self, version: int, status: str, reason: str = "") -> None: ...
    def set_eval(self, version: int, results: dict[str, Any]) -> None: ...
    def mark_deleted(self, version: int) -> None: ...
    def head(self, run: str) -> int | None: ...
    def set_head(self, run: str, version: int) -> None: ...
    def log_event(self, event: "Event") -> None: ...
    def events(self, run: str | None = None) -> list["Event"]: ...
    def open_run(self, name: str, run_id: str | None = None, run_dir: Path | None = None) -> str: ...
    def run_ids(self, name: str) -> list[str]: ...
    def run_name(self, run_id: str) -> str: ...


@dataclass
class Event:
    """Something the gate or the divergence watch did, with why (a rollback, a stop)."""

    run: str  # the run's id
    step: int
    kind: str  # rollback | stop | reject
    reason: str
    version: int | None = None  # the version restored (rollback) or judged
    created: float = field(default_factory=time.time)


class SQLiteRegistry:
    """The registry in one SQLite file; safe for one writer and many readers. With
    `read_only` (the `rlhf` commands that only look) the file is opened read-only and
    must already be a registry: nothing is created or added to it."""

    def __init__(self, root: str | Path, read_only: bool = False) -> None:
        root = Path(root)
        self.path = root / REGISTRY_FILE if root.suffix != ".sqlite" else root
        self.read_only = read_only
        if not read_only:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise RegistryError(f"{self.path}: cannot create a registry there ({err})") from err
        with self._db() as db:
            present = {row["name"] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if present and "versions" not in present or read_only and not present:
                raise RegistryError(f"{self.path}: a database without a versions table; not a model registry")
            for table, columns in _tables().items():
                if table not in present:
                    if read_only:
                        raise RegistryError(f"{self.path}: no table {table}; not a model registry")
                    db.execute(f"CREATE TABLE {table} ({', '.join(columns)})")
                    continue
                have = {row["name"] for row in db.execute(f"PRAGMA table_info({table})")}
                missing = [c.split()[0] for c in columns if c.split()[0] not in have]
                if missing == ["dir"] and table == "runs":  # registries from before run directories were kept
                    if not read_only:
                        db.execute("ALTER TABLE runs ADD COLUMN dir TEXT")
                elif missing:
                    raise RegistryError(f"{self.path}: table {table} has no column {', '.join(missing)}; not a model registry")

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """A connection, committed if the block succeeds and closed after it; a file that
        is not a usable SQLite registry raises RegistryError naming it."""
        try:
            if self.read_only:
                db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", timeout=30, uri=True)
            else:
                db = sqlite3.connect(self.path, timeout=30)
            try:
                db.row_factory = sqlite3.Row
                with db:
                    yield db
            finally:
                db.close()
        except sqlite3.DatabaseError as err:
            raise RegistryError(f"{self.path}: not a usable model registry ({err})") from err

    def add(self, record: VersionRecord) -> VersionRecord:
        """Insert `record` (its id is assigned) and make it the head of its run."""
        _check_status(record.status)
        row = asdict(record)
        row.pop("id")
        for key in _JSON_FIELDS:
            row[key] = json.dumps(row[key], sort_keys=True)
        with self._db() as db:
            cursor = db.execute(
                f"INSERT INTO versions ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})", list(row.values())
            )
            record.id = int(cursor.lastrowid)
            db.execute("INSERT OR REPLACE INTO heads VALUES (?, ?)", (record.run, record.id))
        return record

    def get(self, version: int) -> VersionRecord:
        with self._db() as db:
            row = db.execute("SELECT * FROM versions WHERE id = ?", (version_id(version),)).fetchone()
        if row is None:
            raise RegistryError(f"no version {version} in {self.path}")
        return _record(row, self.path)

    def versions(self, run: str | None = None) -> list[VersionRecord]:
        """Every version (of `run`, if given), oldest first."""
        query, args = ("SELECT * FROM versions WHERE run = ? ORDER BY id", (run,)) if run else ("SELECT * FROM versions ORDER BY id", ())
        with self._db() as db:
            return [_record(row, self.path) for row in db.execute(query, args)]

    def set_status(self, version: int, status: str, reason: str = "") -> None:
        _check_status(status)
        self.get(version)
        with self._db() as db:
            db.execute("UPDATE versions SET status = ?, reason = ? WHERE id = ?", (status, reason, version_id(version)))

    def set_eval(self, version: int, results: dict[str, Any]) -> None:
        self.get(version)
        with self._db() as db:
            db.execute("UPDATE versions SET eval = ? WHERE id = ?", (json.dumps(results, sort_keys=True), version_id(version)))

    def mark_deleted(self, version: int) -> None:
        with self._db() as db:
            db.execute("UPDATE versions SET deleted = 1 WHERE id = ?", (version_id(version),))

    def head(self, run: str) -> int | None:
        """The version a resume of `run` starts from (the newest, unless rolled back)."""
        with self._db() as db:
            row = db.execute("SELECT version FROM heads WHERE run = ?", (run,)).fetchone()
        if row is None:
            return None
        if type(row["version"]) is not int:
            raise RegistryError(f"{self.path}: the head of run {run!r} is {row['version']!r:.40}, not a version; the registry was altered")
        return row["version"]

    def set_head(self, run: str, version: int) -> None:
        record = self.get(version)
        if record.run != run:
            raise RegistryError(f"version {version} belongs to run {record.run!r}, not {run!r}")
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO heads VALUES (?, ?)", (run, record.id))

    def log_event(self, event: Event) -> None:
        row = asdict(event)
        with self._db() as db:
            db.execute(f"INSERT INTO events ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})", list(row.values()))

    def events(self, run: str | None = None) -> list[Event]:
        """Gate and watch events (of `run`, if given), oldest first."""
        query, args = ("SELECT * FROM events WHERE run = ? ORDER BY rowid", (run,)) if run else ("SELECT * FROM events ORDER BY rowid", ())
        with self._db() as db:
            return [_event(row, self.path) for row in db.execute(query, args)]

    def open_run(self, name: str, run_id: str | None = None, run_dir: Path | None = None) -> str:
        """Register a run and return its id: `run_id` when its directory recorded one; else
        `name` if no run of this registry has that id yet, else `name-<8 hex digits>`
        (claimed in one statement, so two runs starting at once never get the same id).
        The run's directory is kept with its id: a copy of a run directory (its `run_id`
        file too) cannot continue the original run in a registry they share while the
        original is still there. (A copy that holds its own registry is a fork: its
        registry is a copy too, and its retention never touches the original's files.)"""
        where = str(Path(run_dir).resolve()) if run_dir is not None else None
        shared = where is not None and Path(where) not in self.path.resolve().parents
        with self._db() as db:
            if run_id is not None:
                row = db.execute("SELECT dir FROM runs WHERE id = ?", (run_id,)).fetchone()
                owner = row["dir"] if row is not None else None
                if shared and owner and owner != where and recorded_run_id(Path(owner)) == run_id:
                    raise RegistryError(
                        f"{where}: its {RUN_ID_FILE} file names run {run_id!r}, which is the run in {owner}; a copied run "
                        f"directory cannot continue another run. Delete its {RUN_ID_FILE} file and checkpoints folder (copies of the "
                        "original's) to start it as a new run"
                    )
                db.execute("INSERT OR IGNORE INTO runs (id, name, created, dir) VALUES (?, ?, ?, ?)", (run_id, name, time.time(), where))
                if where is not None:  # a run directory moved (the old one is gone) now lives here
                    db.execute("UPDATE runs SET dir = ? WHERE id = ?", (where, run_id))
                return run_id
            for candidate in (name, *(f"{name}-{uuid.uuid4().hex[:8]}" for _ in range(3))):
                claimed = db.execute(
                    "INSERT OR IGNORE INTO runs (id, name, created, dir) SELECT ?, ?, ?, ? "
                    "WHERE NOT EXISTS (SELECT 1 FROM versions WHERE run = ?)",
                    (candidate, name, time.time(), where, candidate),
                ).rowcount
                if claimed:
                    return candidate
        raise RegistryError(f"{self.path}: no free run id for run {name!r}")

    def run_ids(self, name: str) -> list[str]:
        """The ids of the runs called `name` or whose id is `name`."""
        with self._db() as db:
            rows = db.execute(
                "SELECT id FROM runs WHERE id = ? OR name = ? UNION SELECT run FROM versions WHERE run = ?", (name, name, name)
            )
            return sorted(row[0] for row in rows)

    def run_name(self, run_id: str) -> str:
        """The name (run.name) of run `run_id`; a run from before run ids: its id."""
        with self._db() as db:
            row = db.execute("SELECT name FROM runs WHERE id = ?", (run_id,)).fetchone()
        return run_id if row is None else row["name"]


def champion(registry: Registry, run: str) -> VersionRecord | None:
    """The newest promoted version of `run`: what the eval gate compares against."""
    promoted = [r for r in registry.versions(run) if r.status == "promoted" and not r.deleted]
    return promoted[-1] if promoted else None


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise RegistryError(f"status {status!r} is not allowed; choose one of {', '.join(STATUSES)}")


def _tables() -> dict[str, list[str]]:
    """Each table of the registry and its columns."""
    return {
        "versions": [f"{f.name} INTEGER PRIMARY KEY AUTOINCREMENT" if f.name == "id" else f.name for f in fields(VersionRecord)],
        "heads": ["run TEXT PRIMARY KEY", "version INTEGER"],
        "events": [f.name for f in fields(Event)],
        "runs": ["id TEXT PRIMARY KEY", "name TEXT", "created REAL", "dir TEXT"],
    }


def _text(value: object) -> bool:
    return type(value) is str


def _count(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_VERSION


def _version_or_none(value: object) -> bool:
    return value is None or type(value) is int and 1 <= value <= MAX_VERSION


def _time(value: object) -> bool:
    return type(value) in (int, float) and 0 <= value < 1e11  # seconds since 1970, before the year 5000


def _checked_row(row: sqlite3.Row, cls: type, checks: dict[str, Callable[[object], bool]], what: str, path: Path) -> dict[str, Any]:
    """The fields of `cls` from `row`, each passing its check; RegistryError naming the
    row and field otherwise (a registry edited by hand, or by another program)."""
    values = {f.name: row[f.name] for f in fields(cls)}
    for name, check in checks.items():
        if not check(values[name]):
            raise RegistryError(f"{path}: {what} has a bad {name} ({values[name]!r:.60}); the registry was altered")
    return values


_VERSION_CHECKS: dict[str, Callable[[object], bool]] = {
    "id": lambda v: _count(v) and v >= 1, "run": _text, "step": _count, "weight_version": _count, "recipe": _text,
    "path": lambda v: _text(v) and v != "", "checksum": _text, "config_hash": _text, "parent": _version_or_none,
    "status": lambda v: v in STATUSES, "reason": _text, "created": _time, "deleted": lambda v: v in (0, 1),
}
_EVENT_CHECKS: dict[str, Callable[[object], bool]] = {
    "run": _text, "step": _count, "kind": _text, "reason": _text, "version": _version_or_none, "created": _time,
}


def _record(row: sqlite3.Row, path: Path) -> VersionRecord:
    values = _checked_row(row, VersionRecord, _VERSION_CHECKS, f"version {row['id']!r:.30}", path)
    try:
        for key in _JSON_FIELDS:
            values[key] = json.loads(values[key]) if values[key] else {}
    except (ValueError, TypeError, RecursionError) as err:
        raise RegistryError(f"{path}: version {values['id']} has an unreadable field ({err})") from err
    for key in _JSON_FIELDS:
        if not isinstance(values[key], dict):
            raise RegistryError(f"{path}: version {values['id']} has a bad {key} (not a JSON object); the registry was altered")
    values["deleted"] = bool(values["deleted"])
    return VersionRecord(**values)


def _event(row: sqlite3.Row, path: Path) -> Event:
    return Event(**_checked_row(row, Event, _EVENT_CHECKS, "an event", path))
