"""The durable job store: one SQLite file (WAL mode) shared by every process of a user.

Location: ``$QFLEET_HOME/jobs.sqlite3``, else the user data dir (``$XDG_DATA_HOME/qfleet``,
``~/.local/share/qfleet`` on Linux; the platform's equivalent elsewhere).

A row holds what it takes to show, finish, re-attach or re-run a job: the program text, the
bound circuits (pickled PennyLane tapes), parameters, preferences, the executor's
configuration *without secrets* (tokens are never written: an executor rebuilt from a row
reads its token from the config file or environment again), backend job ids, status, the
owning process and the finished results (JSON).

Every status change is a conditional UPDATE (``WHERE status IN (QUEUED, RUNNING) AND owner =
me``), so a process that lost ownership (it was presumed dead and another process took the
job over, or the job was cancelled) cannot overwrite the job.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from qfleet.errors import QFleetError

SCHEMA_VERSION = 1
FILENAME = "jobs.sqlite3"
ACTIVE = ("QUEUED", "RUNNING")
FINAL = ("COMPLETED", "FAILED", "CANCELLED")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    ended_at REAL,
    backend TEXT,
    executor TEXT NOT NULL,
    runner TEXT,
    program_kind TEXT,
    program TEXT,
    parameters TEXT NOT NULL,
    batch INTEGER NOT NULL DEFAULT 0,
    preferences TEXT NOT NULL,
    observable TEXT,
    num_shots INTEGER,
    layout TEXT,
    tapes BLOB NOT NULL,
    backend_job_ids TEXT NOT NULL DEFAULT '[]',
    owner_host TEXT,
    owner_pid INTEGER,
    owner_started TEXT,
    heartbeat REAL,
    attempts INTEGER NOT NULL DEFAULT 1,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    run_metadata TEXT,
    results TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
"""


class JobStoreError(QFleetError, RuntimeError):
    """The job store cannot be used (corrupt file, no permission, ...)."""


class JobStoreLockedError(JobStoreError):
    """Another process held the job store locked for longer than the store's timeout."""


def default_home() -> Path:
    """``$QFLEET_HOME``, else the user data directory for qfleet."""
    explicit = os.environ.get("QFLEET_HOME")
    if explicit:
        return Path(explicit).expanduser()
    if sys.platform.startswith("linux") or os.environ.get("XDG_DATA_HOME"):
        base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
        return Path(base) / "qfleet"
    try:
        import platformdirs

        return Path(platformdirs.user_data_dir("qfleet", appauthor=False))
    except ImportError:  # pragma: no cover - platformdirs is nearly always present
        return Path.home() / ".qfleet"


def default_path() -> Path:
    return default_home() / FILENAME


def _timeout() -> float:
    raw = os.environ.get("QFLEET_JOBSTORE_TIMEOUT")
    try:
        return float(raw) if raw else 10.0
    except ValueError:
        return 10.0


Owner = tuple[str | None, int | None, str | None]


class JobStore:
    """Thread-safe access to one job-store file (one connection per thread and process).

    Example:
        >>> store = JobStore.default()                     # under $QFLEET_HOME if set
        >>> [row["id"] for row in store.list(limit=3)]     # the newest jobs first
        [...]
    """

    def __init__(self, path: str | os.PathLike, timeout: float | None = None):
        self.path = Path(path)
        self.timeout = _timeout() if timeout is None else timeout
        self._local = threading.local()
        self._ready = False
        self._ready_lock = threading.Lock()

    _instances: ClassVar[dict[tuple[str, float], JobStore]] = {}
    _instances_lock = threading.Lock()

    @classmethod
    def default(cls) -> JobStore:
        """The store at :func:`default_path` (re-read from the environment on every call)."""
        path, timeout = default_path(), _timeout()
        key = (str(path), timeout)
        with cls._instances_lock:
            store = cls._instances.get(key)
            if store is None:
                if len(cls._instances) >= 4:  # QFLEET_HOME changed (tests): drop old stores
                    cls._instances.pop(next(iter(cls._instances)))
                store = cls._instances[key] = cls(path, timeout)
        return store

    # -- connections and errors ----------------------------------------------------------

    def _error(self, exc: sqlite3.Error) -> JobStoreError:
        text = str(exc)
        lowered = text.lower()
        if "locked" in lowered or "busy" in lowered:
            return JobStoreLockedError(
                f"the job store {self.path} stayed locked by another process for "
                f"{self.timeout:g} s ({text}); retry, or raise QFLEET_JOBSTORE_TIMEOUT"
            )
        if "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered:
            return JobStoreError(
                f"the job store {self.path} is corrupt ({text}); move it aside (qfleet then "
                f"starts a new, empty one) or restore it from a backup"
            )
        if "unable to open" in lowered or "readonly" in lowered or "read-only" in lowered:
            return JobStoreError(
                f"cannot open the job store {self.path} for writing ({text}); check the "
                f"directory's permissions or set QFLEET_HOME to a writable directory"
            )
        return JobStoreError(f"job store {self.path}: {text}")

    def _connection(self) -> sqlite3.Connection:
        pid = os.getpid()
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == pid:
            return conn
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JobStoreError(
                f"cannot create the job store directory {self.path.parent}: {exc}; set "
                f"QFLEET_HOME to a writable directory"
            ) from exc
        try:
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            self._prepare(conn)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        self._local.conn, self._local.pid = conn, pid
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        with self._ready_lock:
            if self._ready:
                return
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":  # pragma: no cover - e.g. a read-only medium
                raise JobStoreError(f"the job store {self.path} cannot use WAL mode ({mode})")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise JobStoreError(
                    f"the job store {self.path} was written by a newer qfleet (schema "
                    f"{version} > {SCHEMA_VERSION}); upgrade qfleet"
                )
            conn.executescript(_SCHEMA)
            if version < SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._ready = True
        conn.execute("PRAGMA synchronous = NORMAL")

    def _run(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        conn = self._connection()
        try:
            return conn.execute(sql, tuple(params))
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def check(self) -> None:
        """Open the store (creating it) and read it once; raises JobStoreError."""
        self._run("SELECT count(*) FROM jobs").fetchone()

    # -- rows ----------------------------------------------------------------------------

    def insert(self, row: Mapping[str, Any]) -> None:
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        self._run(f"INSERT INTO jobs ({columns}) VALUES ({marks})", row.values())

    def get(self, job_id: str) -> dict[str, Any] | None:
        found = self._run("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return dict(found) if found is not None else None

    def list(self, offset: int = 0, limit: int = 50) -> list[dict[str, Any]]:
        """Rows newest first, without the large columns."""
        rows = self._run(
            "SELECT seq, id, name, kind, status, created_at, started_at, ended_at, backend, "
            "num_shots, batch, error, backend_job_ids, owner_host, owner_pid, owner_started, "
            "heartbeat FROM jobs ORDER BY seq DESC LIMIT ? OFFSET ?",
            (int(limit), int(offset)),
        ).fetchall()
        return [dict(r) for r in rows]

    def count(self) -> int:
        return self._run("SELECT count(*) FROM jobs").fetchone()[0]

    def update(self, job_id: str, fields: Mapping[str, Any], *, active_only: bool = False,
               owner: Owner | None = None, where: str = "",
               where_params: Iterable[Any] = ()) -> bool:
        """Set ``fields``; only on an unfinished job with ``active_only``, only while ``owner``
        owns it with ``owner``. True if the row changed."""
        sets = ", ".join(f"{k} = ?" for k in fields)
        sql = f"UPDATE jobs SET {sets} WHERE id = ?"
        params: list[Any] = [*fields.values(), job_id]
        if active_only:
            sql += " AND status IN ('QUEUED', 'RUNNING')"
        if owner is not None:
            sql += " AND owner_host IS ? AND owner_pid IS ? AND owner_started IS ?"
            params.extend(owner)
        if where:
            sql += f" AND {where}"
            params.extend(where_params)
        return self._run(sql, params).rowcount == 1

    def claim(self, job_id: str, previous: Owner, new: Owner) -> bool:
        """Take over an unfinished job from ``previous`` (a dead or departed owner); True if
        this caller won (exactly one of several concurrent claimers does)."""
        cursor = self._run(
            "UPDATE jobs SET owner_host = ?, owner_pid = ?, owner_started = ?, heartbeat = ?, "
            "attempts = attempts + 1 WHERE id = ? AND status IN ('QUEUED', 'RUNNING') "
            "AND owner_host IS ? AND owner_pid IS ? AND owner_started IS ?",
            (*new, time.time(), job_id, *previous),
        )
        return cursor.rowcount == 1
