"""The durable job store: one SQLite file (WAL mode) shared by every process of a user.

Location: ``$QFLEET_HOME/jobs.sqlite3``, else the user data dir (``$XDG_DATA_HOME/qfleet``,
``~/.local/share/qfleet`` on Linux; the platform's equivalent elsewhere).

A row holds what it takes to show, finish, re-attach or re-run a job: the program text, the
bound circuits (PennyLane tapes as versioned JSON data, :mod:`qfleet.circuits.tape_json` --
never pickles: reading the store back never runs code), parameters, preferences, the
executor's configuration *without secrets* (tokens are never written: an executor rebuilt
from a row reads its token from the config file or environment again), backend job ids,
status, the owning process, the backend's raw output as it arrived (JSON data,
:mod:`qfleet.jobs.raw_json`) and the results finished from it when first asked for (JSON).

Every status change is a conditional UPDATE (``WHERE status IN (QUEUED, RUNNING) AND owner =
me``), so a process that lost ownership (it was presumed dead and another process took the
job over, or the job was cancelled) cannot overwrite the job.

Integrity: every row read is validated (:mod:`qfleet.jobs.rows`); a file that is empty,
not SQLite, not a job store, or has an invalid row raises a :class:`JobStoreError` subclass
naming the file and the way back. Commits are durable (WAL, ``synchronous = FULL``: a torn
write loses at most the transaction being written, never a committed result), and a
verified copy (``jobs.sqlite3.bak``: SQLite's online backup, checked with ``quick_check``)
is refreshed at most every :data:`BACKUP_INTERVAL_S` seconds when jobs finish;
``qfleet jobs restore`` (:meth:`JobStore.restore_backup`) puts it back after the file was
destroyed. Stores of schema 1 (pickled tapes) are migrated on first open, after a backup
(``jobs.sqlite3.v1.bak``), reading old pickles only through a restricted unpickler
(:mod:`qfleet.jobs.migrate`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from qfleet.errors import ConfigError, QFleetError

SCHEMA_VERSION = 2
FILENAME = "jobs.sqlite3"
ACTIVE = ("QUEUED", "RUNNING")
FINAL = ("COMPLETED", "FAILED", "CANCELLED")
BACKUP_INTERVAL_S = 30.0
"""A finished job refreshes the verified backup if it is older than this."""

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
    tapes TEXT NOT NULL,
    backend_job_ids TEXT NOT NULL DEFAULT '[]',
    owner_host TEXT,
    owner_pid INTEGER,
    owner_started TEXT,
    heartbeat REAL,
    attempts INTEGER NOT NULL DEFAULT 1,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    run_metadata TEXT,
    results TEXT,
    error TEXT,
    session_id TEXT,
    program_id TEXT,
    parent_id TEXT,
    checkpoint TEXT,
    raw_output TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
"""
#: Columns added after schema 2 (sessions, minimizations, raw output): nullable, so an older
#: store gets them by ALTER TABLE on first open, without a schema version of their own.
_ADDED = ("session_id", "program_id", "parent_id", "checkpoint", "raw_output")
_COLUMNS = (
    "seq", "id", "name", "kind", "status", "created_at", "started_at", "ended_at", "backend",
    "executor", "runner", "program_kind", "program", "parameters", "batch", "preferences",
    "observable", "num_shots", "layout", "tapes", "backend_job_ids", "owner_host",
    "owner_pid", "owner_started", "heartbeat", "attempts", "cancel_requested",
    "run_metadata", "results", "error",
)
_WRITABLE = frozenset(_COLUMNS + _ADDED)
_LISTED = (
    "seq", "id", "name", "kind", "status", "created_at", "started_at", "ended_at", "backend",
    "num_shots", "batch", "error", "backend_job_ids", "owner_host", "owner_pid",
    "owner_started", "heartbeat", "session_id", "program_id", "parent_id",
)


@dataclasses.dataclass(frozen=True)
class _Fetched:
    """A statement's rows, all read, and how many rows it changed."""

    rows: list[Any]
    rowcount: int

    def fetchone(self) -> Any:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[Any]:
        return self.rows


class JobStoreError(QFleetError, RuntimeError):
    """The job store cannot be used (corrupt file, no permission, ...)."""


class JobStoreLockedError(JobStoreError):
    """Another process held the job store locked for longer than the store's timeout."""


class JobStoreCorruptError(JobStoreError):
    """The job store file is damaged: empty (truncated), not SQLite, or SQLite reports
    corruption. The message names the file, the backup (if any) and how to recover."""


class JobStoreForeignError(JobStoreError):
    """The file at the job store's path is an SQLite database, but not a qfleet job store
    (or one written by a newer qfleet)."""


class JobStoreRowError(JobStoreError):
    """A row of the job store does not hold what qfleet writes (tampered or damaged)."""


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
    if raw is None or not raw.strip():
        return 10.0
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(
            f"environment variable QFLEET_JOBSTORE_TIMEOUT={raw!r} is not a number of seconds "
            f"> 0; set it to e.g. 10, or unset it for the default (10 s)"
        )
    return value


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
        self._last_backup = 0.0

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

    @property
    def backup_path(self) -> Path:
        """The verified copy of the store (refreshed as jobs finish)."""
        return self.path.with_name(self.path.name + ".bak")

    # -- connections and errors ----------------------------------------------------------

    def _backup_hint(self) -> str:
        backup = self.backup_path
        if backup.is_file() and backup.stat().st_size > 0:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(backup.stat().st_mtime))
            return (f"a verified backup from {when} is at {backup}: run `qfleet jobs restore` "
                    f"to put it back (the damaged file is kept aside), or move it aside "
                    f"to start a new, empty store")
        return ("no backup exists; move it aside (qfleet then starts a new, empty store) or "
                "restore it from your own backup")

    def _error(self, exc: sqlite3.Error) -> JobStoreError:
        text = str(exc)
        lowered = text.lower()
        if "locked" in lowered or "busy" in lowered:
            return JobStoreLockedError(
                f"the job store {self.path} stayed locked by another process for "
                f"{self.timeout:g} s ({text}); retry, or raise QFLEET_JOBSTORE_TIMEOUT"
            )
        if "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered:
            return JobStoreCorruptError(
                f"the job store {self.path} is corrupt ({text}); {self._backup_hint()}"
            )
        if "unable to open" in lowered or "readonly" in lowered or "read-only" in lowered:
            return JobStoreError(
                f"cannot open the job store {self.path} for writing ({text}); check the "
                f"directory's permissions or set QFLEET_HOME to a writable directory"
            )
        return JobStoreError(f"job store {self.path}: {text}")

    def _connect(self, path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, timeout=self.timeout, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        return conn

    def _create(self) -> None:
        """A new store, made whole under a temporary name and linked into place, so no
        process ever sees a half-made (empty) store file at ``path``."""
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}")
        try:
            conn = self._connect(temp)
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.executescript(_SCHEMA)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            finally:
                conn.close()
            try:
                os.link(temp, self.path)
            except FileExistsError:  # another process made it first
                pass
            except OSError:  # no hard links on this file system: rename, unless made meanwhile
                if not self.path.exists():
                    os.replace(temp, self.path)
        finally:
            for leftover in (temp, Path(f"{temp}-wal"), Path(f"{temp}-shm")):
                with contextlib.suppress(OSError):
                    leftover.unlink()

    def _check_file(self) -> None:
        if self.path.is_dir():
            raise JobStoreForeignError(
                f"the job store path {self.path} is a directory; remove or rename it, or set "
                f"QFLEET_HOME to another directory"
            )
        if not self.path.exists():
            self._create()
        elif self.path.stat().st_size == 0:
            raise JobStoreCorruptError(
                f"the job store {self.path} is empty (0 bytes): it was truncated, its jobs "
                f"are not readable; {self._backup_hint()}"
            )

    def _identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        if st.st_size == 0:
            raise JobStoreCorruptError(
                f"the job store {self.path} is empty (0 bytes): it was truncated, its jobs "
                f"are not readable; {self._backup_hint()}"
            )
        return (st.st_dev, st.st_ino)

    def _connection(self) -> sqlite3.Connection:
        pid = os.getpid()
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == pid:
            # The file may have been truncated, replaced or restored since (a stat per call).
            if self._identity() == self._local.identity:
                return conn
            conn.close()
            self._local.conn = None
            with self._ready_lock:
                self._ready = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JobStoreError(
                f"cannot create the job store directory {self.path.parent}: {exc}; set "
                f"QFLEET_HOME to a writable directory"
            ) from exc
        try:
            self._check_file()
            conn = self._connect(self.path)
            try:
                self._prepare(conn)
            except BaseException:
                conn.close()
                raise
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        except OSError as exc:
            raise JobStoreError(f"cannot open the job store {self.path}: {exc}") from exc
        self._local.conn, self._local.pid = conn, pid
        self._local.identity = self._identity()
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        with self._ready_lock:
            if self._ready:
                conn.execute("PRAGMA synchronous = FULL")
                return
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if version > SCHEMA_VERSION:
                raise JobStoreForeignError(
                    f"the job store {self.path} was written by a newer qfleet (schema "
                    f"{version} > {SCHEMA_VERSION}); upgrade qfleet, or set QFLEET_HOME to "
                    f"another directory"
                )
            if version < 1 or "jobs" not in tables:
                raise JobStoreForeignError(
                    f"{self.path} is an SQLite database but not a qfleet job store (schema "
                    f"version {version}, tables {sorted(tables)}); move it aside (qfleet then "
                    f"starts a new store there) or set QFLEET_HOME to another directory"
                )
            columns = {r[1] for r in conn.execute("PRAGMA table_info(jobs)")}
            missing = set(_COLUMNS) - columns
            if missing:
                raise JobStoreForeignError(
                    f"the table 'jobs' in {self.path} lacks the columns {sorted(missing)}: not "
                    f"a qfleet job store; move it aside or set QFLEET_HOME to another directory"
                )
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":  # pragma: no cover - e.g. a read-only medium
                raise JobStoreError(f"the job store {self.path} cannot use WAL mode ({mode})")
            if version < SCHEMA_VERSION:
                self._migrate(conn)
            self._add_columns(conn, columns)
            self._ready = True
        conn.execute("PRAGMA synchronous = FULL")

    def _add_columns(self, conn: sqlite3.Connection, columns: set[str]) -> None:
        """ALTER TABLE for the columns of :data:`_ADDED` a store lacks (once per store;
        concurrent openers: the first adds them, the others find them there)."""
        if not set(_ADDED) - columns:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            present = {r[1] for r in conn.execute("PRAGMA table_info(jobs)")}
            for column in _ADDED:
                if column not in present:
                    conn.execute(f"ALTER TABLE jobs ADD COLUMN {column} TEXT")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Schema 1 -> 2: pickled tapes become JSON data (read through the restricted
        unpickler of :mod:`qfleet.jobs.migrate`), after a backup of the old file."""
        from qfleet.circuits.tape_json import tapes_document, unavailable_document
        from qfleet.jobs.migrate import UnsafePickleError, safe_load_tapes

        self._backup_to(self.path.with_name(self.path.name + ".v1.bak"), conn)
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
                conn.execute("COMMIT")  # another process migrated it meanwhile
                return
            for row in conn.execute("SELECT id, status, tapes FROM jobs").fetchall():
                data = row["tapes"]
                fields: dict[str, Any] = {}
                if isinstance(data, str):
                    continue  # already data
                try:
                    fields["tapes"] = tapes_document(safe_load_tapes(bytes(data or b"")))
                except UnsafePickleError as exc:
                    reason = f"a schema-1 row's pickled tapes were refused: {exc}"
                    fields["tapes"] = unavailable_document(reason)
                    if row["status"] in ACTIVE:
                        fields.update(status="FAILED", ended_at=time.time(),
                                      error=f"not resumed after the job store migration: {reason}")
                sets = ", ".join(f"{k} = ?" for k in fields)
                conn.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (*fields.values(), row["id"]))
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _run(self, sql: str, params: Iterable[Any] = ()) -> _Fetched:
        conn = self._connection()
        try:
            # Rows are fetched here: reading a damaged row fails in the fetch, not the execute.
            cursor = conn.execute(sql, tuple(params))
            return _Fetched(cursor.fetchall(), cursor.rowcount)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        except UnicodeEncodeError as exc:
            raise JobStoreError(
                f"a value for the job store is not valid text ({exc.reason} at "
                f"{exc.start}); use text without lone surrogates"
            ) from exc

    def check(self) -> None:
        """Open the store (creating it) and read it once; raises JobStoreError."""
        self._run("SELECT count(*) FROM jobs").fetchone()

    # -- backup ---------------------------------------------------------------------------

    def _backup_to(self, target: Path, conn: sqlite3.Connection | None = None) -> int:
        """A verified copy of the store at ``target`` (written beside it, checked, then
        renamed into place); returns the number of jobs in it."""
        temp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}")
        source = conn or self._connection()
        try:
            copy = sqlite3.connect(temp, isolation_level=None)
            try:
                source.backup(copy)
                check = copy.execute("PRAGMA quick_check").fetchone()[0]
                jobs = copy.execute("SELECT count(*) FROM jobs").fetchone()[0]
                copy.execute("PRAGMA journal_mode = DELETE")
            finally:
                copy.close()
            if check != "ok":
                raise JobStoreCorruptError(
                    f"the backup of {self.path} failed its check ({check}); "
                    f"{self._backup_hint()}"
                )
            os.replace(temp, target)
            return jobs
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        finally:
            with contextlib.suppress(OSError):
                temp.unlink()

    def backup(self) -> Path:
        """Refresh the verified backup now; returns its path."""
        self._backup_to(self.backup_path)
        self._last_backup = time.monotonic()
        return self.backup_path

    def _backup_if_due(self) -> None:
        if time.monotonic() - self._last_backup >= BACKUP_INTERVAL_S:
            with contextlib.suppress(JobStoreError, OSError):  # the store itself is fine
                self.backup()

    def restore_backup(self) -> Path:
        """Put the verified backup in place of a damaged store; the damaged file is moved to
        ``jobs.sqlite3.damaged-<time>`` (returned). Raises JobStoreError without a backup."""
        backup = self.backup_path
        if not backup.is_file() or backup.stat().st_size == 0:
            raise JobStoreError(f"there is no backup of the job store at {backup}")
        check = sqlite3.connect(backup, isolation_level=None)
        try:
            verdict = check.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.Error as exc:
            verdict = str(exc)
        finally:
            check.close()
        if verdict != "ok":
            raise JobStoreCorruptError(f"the backup {backup} is damaged too ({verdict})")
        aside = self.path.with_name(f"{self.path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        if self.path.exists():
            os.replace(self.path, aside)
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(OSError):
                Path(f"{self.path}{suffix}").unlink()
        temp = self.path.with_name(f".{self.path.name}.restore.{os.getpid()}")
        temp.write_bytes(backup.read_bytes())
        os.replace(temp, self.path)
        with self._ready_lock:
            self._ready = False
        return aside

    # -- rows ----------------------------------------------------------------------------

    def _validated(self, row: sqlite3.Row | None, model: Any) -> dict[str, Any] | None:
        from qfleet.jobs.rows import validate_row

        if row is None:
            return None
        data = dict(row)
        problem = validate_row(model, data)
        if problem is not None:
            raise self.row_error(data.get("id"), problem)
        return data

    def row_error(self, job_id: Any, problem: str) -> JobStoreRowError:
        """The error for job ``job_id``'s row holding what qfleet does not write."""
        return JobStoreRowError(
            f"job {job_id!r} in the job store {self.path} is not a valid job row ({problem}): "
            f"the file was altered or damaged. Remove the row (sqlite3 {self.path} "
            f"\"DELETE FROM jobs WHERE id = '<id>'\"), or {self._backup_hint()}"
        )

    def insert(self, row: Mapping[str, Any]) -> None:
        """Add a job row. Values are data: text, numbers or None (``tapes``: the JSON of
        :func:`qfleet.circuits.tape_json.tapes_document`)."""
        bad = sorted(k for k, v in row.items()
                     if k not in _WRITABLE or not (v is None or isinstance(v, (str, int, float))))
        if bad:
            raise JobStoreError(f"job row columns {bad} are unknown or not text/numbers/None")
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        self._run(f"INSERT INTO jobs ({columns}) VALUES ({marks})", row.values())

    def get(self, job_id: str) -> dict[str, Any] | None:
        from qfleet.jobs.rows import FullRow

        found = self._run("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return self._validated(found, FullRow)

    def list(self, offset: int = 0, limit: int = 50) -> list[dict[str, Any]]:
        """Rows newest first, without the large columns."""
        from qfleet.jobs.rows import ListedRow

        if int(offset) < 0 or int(limit) < 0:
            raise ValueError(f"offset and limit must be >= 0, got {offset}, {limit}")
        rows = self._run(
            f"SELECT {', '.join(_LISTED)} FROM jobs ORDER BY seq DESC LIMIT ? OFFSET ?",
            (int(limit), int(offset)),
        ).fetchall()
        return [self._validated(r, ListedRow) for r in rows]  # type: ignore[misc]

    def count(self) -> int:
        return self._run("SELECT count(*) FROM jobs").fetchone()[0]

    def completed_by_executor(self) -> dict[str, int]:
        """Completed jobs per executor that ran them (the run metadata's ``executor``: for a
        cluster's job, the member)."""
        rows = self._run(
            "SELECT json_extract(run_metadata, '$.executor'), count(*) FROM jobs "
            "WHERE status = 'COMPLETED' AND json_valid(run_metadata) GROUP BY 1"
        ).fetchall()
        return {name: count for name, count in rows if isinstance(name, str)}

    def update(self, job_id: str, fields: Mapping[str, Any], *, active_only: bool = False,
               owner: Owner | None = None, where: str = "",
               where_params: Iterable[Any] = ()) -> bool:
        """Set ``fields``; only on an unfinished job with ``active_only``, only while ``owner``
        owns it with ``owner``. True if the row changed."""
        bad = sorted(k for k, v in fields.items()
                     if k not in _WRITABLE or not (v is None or isinstance(v, (str, int, float))))
        if bad:
            raise JobStoreError(f"job row columns {bad} are unknown or not text/numbers/None")
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
        changed = self._run(sql, params).rowcount == 1
        if changed and fields.get("status") == "COMPLETED":
            self._backup_if_due()
        return changed

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
