"""The fleet's own SQLite file: budgets' spend and the result cache, shared by processes.

Location: ``$QFLEET_HOME/fleet.sqlite3``, else the user data dir (where the job store
lives too). WAL mode: readers never wait; a charge is one ``BEGIN IMMEDIATE`` transaction
(check and record together), so concurrent processes can never overshoot a budget.

Example:
    >>> import tempfile, pathlib
    >>> ledger = Ledger(pathlib.Path(tempfile.mkdtemp()) / "fleet.sqlite3")
    >>> budget = Budget(total=1.0)
    >>> charge = ledger.charge(budget, 0.75, member="qpu")
    >>> charge.remaining
    0.25
    >>> ledger.charge(budget, 0.5, member="qpu")
    Traceback (most recent call last):
    ...
    qfleet.cluster.ledger.BudgetExceededError: this batch costs 0.5 USD on qpu, but ...
    >>> ledger.refund(charge)  # the backend never accepted that batch
    >>> ledger.spent()
    (0.0, 0.0)
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from qfleet.errors import QFleetError

#: Seconds a writer waits for another process's transaction.
BUSY_TIMEOUT = 60.0


class BudgetExceededError(QFleetError):
    """A batch would spend more than its cluster's budget allows; nothing was sent.

    ``cost``: what the batch would cost; ``remaining``: what the budget still allows.
    """

    def __init__(self, message: str, *, cost: float, remaining: float) -> None:
        super().__init__(message)
        self.cost = cost
        self.remaining = remaining

    def __reduce__(self):
        return (_rebuild, (str(self), self.cost, self.remaining))


def _rebuild(message: str, cost: float, remaining: float) -> BudgetExceededError:
    return BudgetExceededError(message, cost=cost, remaining=remaining)


@dataclasses.dataclass(frozen=True)
class Charge:
    """A recorded charge: ``cost`` under ``account`` on UTC ``day`` for a batch on
    ``member``; ``remaining``: what the budget allowed after it."""

    account: str
    cost: float
    day: str
    member: str
    remaining: float
    batch: str | None = None


def _undo(conn: sqlite3.Connection, charge: Charge) -> None:
    # Within the caller's transaction: the totals of the charge's own day, and a negative
    # spend row, so the spend history shows the refund.
    for period in ("total", charge.day):
        conn.execute(
            "UPDATE spend_totals SET amount = MAX(amount - ?, 0.0) "
            "WHERE account = ? AND period = ?",
            (charge.cost, charge.account, period),
        )
    conn.execute(
        "INSERT INTO spend (account, at, amount, member, batch) VALUES (?, ?, ?, ?, ?)",
        (charge.account, time.time(), -charge.cost, charge.member, charge.batch),
    )


class Budget(BaseModel):
    """Spending limits of a cluster, checked before every submission.

    ``per_call``: most one batch may cost; ``per_day``: most per UTC day; ``total``: most
    ever. Spend is recorded under ``account``: clusters (and processes) with the same account
    share it.

    Example:
        >>> Budget(per_call=2.0, per_day=50.0).total is None
        True
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    per_call: float | None = Field(default=None, ge=0)
    per_day: float | None = Field(default=None, ge=0)
    total: float | None = Field(default=None, ge=0)
    currency: str = "USD"
    account: str = "default"


def default_path() -> Path:
    """``$QFLEET_HOME/fleet.sqlite3``, else in the user data directory."""
    home = os.environ.get("QFLEET_HOME")
    if home:
        return Path(home).expanduser() / "fleet.sqlite3"
    import platformdirs

    return Path(platformdirs.user_data_dir("qfleet", appauthor=False)) / "fleet.sqlite3"


def _today() -> str:
    return datetime.datetime.now(datetime.UTC).date().isoformat()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS spend_totals (
    account TEXT NOT NULL, period TEXT NOT NULL, amount REAL NOT NULL,
    PRIMARY KEY (account, period));
CREATE TABLE IF NOT EXISTS spend (
    id INTEGER PRIMARY KEY, account TEXT NOT NULL, at REAL NOT NULL, amount REAL NOT NULL,
    member TEXT NOT NULL, batch TEXT);
CREATE TABLE IF NOT EXISTS result_cache (
    key TEXT PRIMARY KEY, created REAL NOT NULL, results TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS submissions (
    batch TEXT PRIMARY KEY, key TEXT NOT NULL, member TEXT NOT NULL, job_ids TEXT NOT NULL,
    accepted REAL NOT NULL);
"""

#: Seconds an accepted submission is remembered for re-attaching (then pruned).
SUBMISSION_TTL = 7 * 86400.0


@dataclasses.dataclass(frozen=True)
class Submission:
    """A batch a backend accepted: ``batch`` (the call's idempotency key), ``key`` (the
    batch's circuits on ``member``), the member's label and the backend's job ids."""

    batch: str
    key: str
    member: str
    job_ids: tuple[str, ...]
    accepted: float


class Ledger:
    """Spend records and cached results in one SQLite file (one connection per process)."""

    _instances: ClassVar[dict[tuple[int, Path], Ledger]] = {}
    _instances_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    @classmethod
    def default(cls) -> Ledger:
        """This process's ledger at :func:`default_path`."""
        key = (os.getpid(), default_path())
        with cls._instances_lock:
            ledger = cls._instances.get(key)
            if ledger is None:
                ledger = cls._instances[key] = cls(key[1])
            return ledger

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(
                    self.path, timeout=BUSY_TIMEOUT, isolation_level=None,
                    check_same_thread=False,
                )  # fmt: skip
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.executescript(_SCHEMA)
            except (OSError, sqlite3.Error) as exc:
                raise QFleetError(
                    f"cannot open the fleet ledger {self.path}: {exc}; check the directory's "
                    f"permissions or set QFLEET_HOME to a writable directory"
                ) from exc
            self._conn = conn
        return self._conn

    # -- budgets ----------------------------------------------------------------------

    def spent(self, account: str = "default") -> tuple[float, float]:
        """(spent today, spent in total) under ``account``."""
        with self._lock:
            rows = dict(
                self._connection().execute(
                    "SELECT period, amount FROM spend_totals "
                    "WHERE account = ? AND period IN (?, ?)",
                    (account, "total", _today()),
                ).fetchall()
            )
        return rows.get(_today(), 0.0), rows.get("total", 0.0)

    def remaining(self, budget: Budget) -> float:
        """Most the next batch may cost under ``budget`` (inf: no limit)."""
        today, total = self.spent(budget.account)
        return _remaining(budget, today, total)

    def charge(
        self, budget: Budget, cost: float, *, member: str, batch: str | None = None
    ) -> Charge:
        """Record ``cost`` against ``budget`` if it fits (atomically, across processes).
        Raises BudgetExceededError (nothing recorded) if it does not."""
        return self._record(budget, cost, member, batch, undo=None)

    def move(self, charge: Charge, budget: Budget, cost: float, *, member: str) -> Charge:
        """Take back ``charge`` (its batch was never sent) and charge ``cost`` on ``member``
        instead, in one transaction; raises BudgetExceededError (nothing changed) if the new
        charge does not fit."""
        return self._record(budget, cost, member, charge.batch, undo=charge)

    def refund(self, charge: Charge) -> None:
        """Take back ``charge``: no backend accepted its batch (nothing was spent)."""
        if charge.cost <= 0:
            return
        with self._lock, self._transaction() as conn:
            _undo(conn, charge)

    def _record(
        self, budget: Budget, cost: float, member: str, batch: str | None, undo: Charge | None
    ) -> Charge:
        day = _today()
        with self._lock, self._transaction() as conn:
            if undo is not None:
                _undo(conn, undo)
            rows = dict(
                conn.execute(
                    "SELECT period, amount FROM spend_totals "
                    "WHERE account = ? AND period IN (?, ?)",
                    (budget.account, "total", day),
                ).fetchall()
            )
            left = _remaining(budget, rows.get(day, 0.0), rows.get("total", 0.0))
            if cost > left + 1e-12:
                raise _refusal(budget, cost, left, member, rows.get(day, 0.0),
                               rows.get("total", 0.0))  # fmt: skip
            for period in ("total", day):
                conn.execute(
                    "INSERT INTO spend_totals (account, period, amount) VALUES (?, ?, ?) "
                    "ON CONFLICT (account, period) DO UPDATE SET amount = amount + ?",
                    (budget.account, period, cost, cost),
                )
            conn.execute(
                "INSERT INTO spend (account, at, amount, member, batch) VALUES (?, ?, ?, ?, ?)",
                (budget.account, time.time(), cost, member, batch),
            )
        return Charge(budget.account, cost, day, member, left - cost, batch)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")  # the write lock: no other charge in between
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def refusal(
        self,
        budget: Budget,
        cost: float,
        member: str,
        *,
        limit: float | None = None,
        skips: dict[str, str] | None = None,
    ) -> BudgetExceededError:
        """The error refusing a batch of ``cost`` on ``member`` (the cheapest that could run
        it); ``limit``: what it could have cost; ``skips``: why each member was passed over."""
        today, total = self.spent(budget.account)
        left = _remaining(budget, today, total)
        if budget.per_call is not None and cost > budget.per_call and cost <= left:
            error = BudgetExceededError(
                f"this batch costs {cost:.6g} {budget.currency} on {member} (the cheapest member "
                f"that can run it), more than budget {budget.account!r} allows per call "
                f"({budget.per_call:g} {budget.currency}); raise per_call or split the batch",
                cost=cost,
                remaining=min(left, budget.per_call),
            )
        else:
            error = _refusal(budget, cost, left, member, today, total)
        if skips:
            error.add_note("members: " + "; ".join(f"{k}: {v}" for k, v in skips.items()))
        return error

    # -- idempotent submission ----------------------------------------------------------

    def submission(self, batch: str) -> Submission | None:
        """The accepted submission of the call ``batch``, if a backend accepted one."""
        with self._lock:
            row = self._connection().execute(
                "SELECT batch, key, member, job_ids, accepted FROM submissions WHERE batch = ?",
                (batch,),
            ).fetchone()
        return None if row is None else _submission(row)

    def record_submission(
        self, batch: str, key: str, member: str, job_ids: Sequence[str]
    ) -> Submission:
        """Record that ``member`` accepted ``batch`` as ``job_ids`` (one transaction, across
        processes); returns the recorded submission: this one, or the one another process
        recorded first (then the caller holds a second copy and cancels it). No ``job_ids``:
        pending, the member may hold the batch (a lost reply) and its retry stays there."""
        now = time.time()
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "INSERT INTO submissions (batch, key, member, job_ids, accepted) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (batch) DO UPDATE SET "
                    "job_ids = excluded.job_ids, accepted = excluded.accepted "
                    # a pending record (no ids yet) becomes its member's accepted one
                    "WHERE submissions.job_ids = '[]' AND excluded.job_ids != '[]' "
                    "AND submissions.member = excluded.member AND submissions.key = excluded.key",
                    (batch, key, member, json.dumps(list(job_ids)), now),
                )
                row = conn.execute(
                    "SELECT batch, key, member, job_ids, accepted FROM submissions "
                    "WHERE batch = ?",
                    (batch,),
                ).fetchone()
                # keep the table small: old batches are past any retry
                conn.execute("DELETE FROM submissions WHERE accepted < ?", (now - SUBMISSION_TTL,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return _submission(row)

    def forget_submission(self, batch: str) -> None:
        """Drop ``batch``'s record (its jobs were cancelled: a retry must submit again)."""
        with self._lock:
            self._connection().execute("DELETE FROM submissions WHERE batch = ?", (batch,))

    # -- result cache -----------------------------------------------------------------

    def cached(self, key: str) -> Any | None:
        with self._lock:
            row = self._connection().execute(
                "SELECT results FROM result_cache WHERE key = ?", (key,)
            ).fetchone()
        return None if row is None else decode_results(row[0])

    def cache(self, key: str, results: Any) -> bool:
        """Keep ``results`` under ``key``; False when they cannot be stored as data."""
        try:
            text = encode_results(results)
        except TypeError:
            return False
        with self._lock:
            self._connection().execute(
                "INSERT OR REPLACE INTO result_cache (key, created, results) VALUES (?, ?, ?)",
                (key, time.time(), text),
            )
        return True


def _submission(row: tuple) -> Submission:
    batch, key, member, job_ids, accepted = row
    return Submission(batch, key, member, tuple(json.loads(job_ids)), accepted)


def _remaining(budget: Budget, today: float, total: float) -> float:
    limits = [math.inf]
    if budget.per_day is not None:
        limits.append(budget.per_day - today)
    if budget.total is not None:
        limits.append(budget.total - total)
    return max(min(limits), 0.0)


def _refusal(
    budget: Budget, cost: float, left: float, member: str, today: float, total: float
) -> BudgetExceededError:
    c = budget.currency
    if budget.per_day is not None and budget.per_day - today <= left + 1e-12:
        limit = f"today (per_day {budget.per_day:g} {c}, spent {today:g})"
    else:
        limit = f"of its total {budget.total:g} {c}"
    return BudgetExceededError(
        f"this batch costs {cost:.6g} {c} on {member}, but budget {budget.account!r} has "
        f"{left:.6g} {c} left {limit}; raise the budget, wait for the next day, or route to "
        f"a cheaper member (selector='cost')",
        cost=cost,
        remaining=left,
    )


# -- results as data (JSON; never pickle: a shared file must not run code) -------------


def _encode(value: Any) -> Any:
    if isinstance(value, np.ndarray | np.generic):
        arr = np.asarray(value)
        if arr.dtype == object:
            raise TypeError("object arrays are not cached")
        return {
            "nd": base64.b64encode(np.ascontiguousarray(arr).tobytes()).decode(),
            "dtype": arr.dtype.str,
            "shape": list(arr.shape),
            "scalar": isinstance(value, np.generic),
        }
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, tuple):
        return {"t": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"d": {k: _encode(v) for k, v in value.items()}}
    raise TypeError(f"{type(value).__name__} results are not cached")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        if "nd" in value:
            dtype = np.dtype(value["dtype"])
            if dtype.hasobject:  # never written; a tampered file gets no object arrays
                raise ValueError("object arrays in the result cache")
            arr = np.frombuffer(base64.b64decode(value["nd"]), dtype=dtype)
            arr = arr.reshape(value["shape"]).copy()
            return arr[()] if value["scalar"] else arr
        if "t" in value:
            return tuple(_decode(v) for v in value["t"])
        return {k: _decode(v) for k, v in value["d"].items()}
    return value


def encode_results(results: Any) -> str:
    """Results (tuples, arrays, numbers, counts dicts) as JSON text; TypeError otherwise."""
    return json.dumps(_encode(results), separators=(",", ":"))


def decode_results(text: str) -> Any:
    return _decode(json.loads(text))
