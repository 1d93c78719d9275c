"""The model registry: every checkpoint with its lineage, metrics, eval results and status.

`Registry` is the interface recipes and the `rlhf` command use; `SQLiteRegistry` (one
file, `registry.sqlite`, in the run directory or any root shared by several runs) is
the default backend. A version is registered only after its checkpoint directory is
complete, so a save that died half-way never appears here.
"""
from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

STATUSES = ("candidate", "promoted", "rejected", "rolled_back")
REGISTRY_FILE = "registry.sqlite"


class RegistryError(LookupError):
    """An unknown version or run, or a status that is not allowed."""


@dataclass
class VersionRecord:
    run: str
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


@dataclass
class Event:
    """Something the gate or the divergence watch did, with why (a rollback, a stop)."""

    run: str
    step: int
    kind: str  # rollback | stop | reject
    reason: str
    version: int | None = None  # the version restored (rollback) or judged
    created: float = field(default_factory=time.time)


class SQLiteRegistry:
    """The registry in one SQLite file; safe for one writer and many readers."""

    def __init__(self, root: str | Path) -> None:
        root = Path(root)
        self.path = root / REGISTRY_FILE if root.suffix != ".sqlite" else root
        self.path.parent.mkdir(parents=True, exist_ok=True)
        columns = ", ".join(
            f"{f.name} {'INTEGER PRIMARY KEY AUTOINCREMENT' if f.name == 'id' else ''}" for f in fields(VersionRecord)
        )
        with self._connect() as db:
            db.execute(f"CREATE TABLE IF NOT EXISTS versions ({columns})")
            db.execute("CREATE TABLE IF NOT EXISTS heads (run TEXT PRIMARY KEY, version INTEGER)")
            db.execute(f"CREATE TABLE IF NOT EXISTS events ({', '.join(f.name for f in fields(Event))})")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.row_factory = sqlite3.Row
        return db

    def add(self, record: VersionRecord) -> VersionRecord:
        """Insert `record` (its id is assigned) and make it the head of its run."""
        _check_status(record.status)
        row = asdict(record)
        row.pop("id")
        for key in _JSON_FIELDS:
            row[key] = json.dumps(row[key], sort_keys=True)
        with self._connect() as db:
            cursor = db.execute(
                f"INSERT INTO versions ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})", list(row.values())
            )
            record.id = int(cursor.lastrowid)
            db.execute("INSERT OR REPLACE INTO heads VALUES (?, ?)", (record.run, record.id))
        return record

    def get(self, version: int) -> VersionRecord:
        with self._connect() as db:
            row = db.execute("SELECT * FROM versions WHERE id = ?", (int(version),)).fetchone()
        if row is None:
            raise RegistryError(f"no version {version} in {self.path}")
        return _record(row)

    def versions(self, run: str | None = None) -> list[VersionRecord]:
        """Every version (of `run`, if given), oldest first."""
        query, args = ("SELECT * FROM versions WHERE run = ? ORDER BY id", (run,)) if run else ("SELECT * FROM versions ORDER BY id", ())
        with self._connect() as db:
            return [_record(row) for row in db.execute(query, args)]

    def set_status(self, version: int, status: str, reason: str = "") -> None:
        _check_status(status)
        self.get(version)
        with self._connect() as db:
            db.execute("UPDATE versions SET status = ?, reason = ? WHERE id = ?", (status, reason, int(version)))

    def set_eval(self, version: int, results: dict[str, Any]) -> None:
        self.get(version)
        with self._connect() as db:
            db.execute("UPDATE versions SET eval = ? WHERE id = ?", (json.dumps(results, sort_keys=True), int(version)))

    def mark_deleted(self, version: int) -> None:
        with self._connect() as db:
            db.execute("UPDATE versions SET deleted = 1 WHERE id = ?", (int(version),))

    def head(self, run: str) -> int | None:
        """The version a resume of `run` starts from (the newest, unless rolled back)."""
        with self._connect() as db:
            row = db.execute("SELECT version FROM heads WHERE run = ?", (run,)).fetchone()
        return None if row is None else int(row["version"])

    def set_head(self, run: str, version: int) -> None:
        record = self.get(version)
        if record.run != run:
            raise RegistryError(f"version {version} belongs to run {record.run!r}, not {run!r}")
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO heads VALUES (?, ?)", (run, int(version)))


    def log_event(self, event: Event) -> None:
        row = asdict(event)
        with self._connect() as db:
            db.execute(f"INSERT INTO events ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})", list(row.values()))

    def events(self, run: str | None = None) -> list[Event]:
        """Gate and watch events (of `run`, if given), oldest first."""
        query, args = ("SELECT * FROM events WHERE run = ? ORDER BY rowid", (run,)) if run else ("SELECT * FROM events ORDER BY rowid", ())
        with self._connect() as db:
            return [Event(**dict(row)) for row in db.execute(query, args)]


def champion(registry: Registry, run: str) -> VersionRecord | None:
    """The newest promoted version of `run`: what the eval gate compares against."""
    promoted = [r for r in registry.versions(run) if r.status == "promoted" and not r.deleted]
    return promoted[-1] if promoted else None


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise RegistryError(f"status {status!r} is not allowed; choose one of {', '.join(STATUSES)}")


def _record(row: sqlite3.Row) -> VersionRecord:
    values = dict(row)
    for key in _JSON_FIELDS:
        values[key] = json.loads(values[key]) if values[key] else {}
    values["deleted"] = bool(values["deleted"])
    return VersionRecord(**values)
