"""Classiq's ``get_execution_actions``: the job store as a pandas DataFrame, with filters; and
job costs from the executors' prices.

    >>> import qfleet as qf
    >>> completed = qf.ExecutionJobFilters(status="COMPLETED")
    >>> frame = qf.get_execution_actions(limit=5, filters=completed)
    >>> list(frame.columns)[:6]
    ['id', 'session_id', 'name', 'start_time', 'end_time', 'provider']

A job's cost is its executor's ``price`` (``qf.Price(per_task=..., per_shot=...)``) applied
to what the job runs: its circuits (tasks: one per parameter set, or as the run metadata
counts them) and their shots (the job's shots per circuit; exact runs have none). A minimization
costs the sum of its cost evaluations. Where no price is known, ``ExecutionJob.cost()``
raises :class:`CostUnknownError` and the DataFrame shows ``total_cost`` as missing (NaN),
never 0.
"""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from qfleet.errors import QFleetError
from qfleet.jobs.store import JobStore

if TYPE_CHECKING:
    import pandas as pd

#: DataFrame columns, in order (Classiq's, plus ``kind`` and ``parent_id``).
COLUMNS = [
    "id", "session_id", "name", "start_time", "end_time", "provider", "backend_name",
    "status", "num_shots", "program_id", "error", "total_cost", "currency_code",
    "runtime_ms", "kind", "parent_id",
]  # fmt: skip


class CostUnknownError(QFleetError, LookupError):
    """No price is known for the executor a job ran on (so its cost is unknown, not 0)."""


class JobCost(BaseModel):
    """What a job cost: ``total_cost`` in ``currency_code``, from ``tasks`` circuits and
    ``shots`` shots at the executor's price (as Classiq's ``JobCost``)."""

    total_cost: float
    currency_code: str = "USD"
    tasks: int = 0
    shots: int = 0


@dataclasses.dataclass
class ExecutionJobFilters:
    """Filters for :func:`get_execution_actions` (Classiq's ``ExecutionJobFilters``): every
    given field must match (AND). Ranges are inclusive; naive datetimes are local time."""

    id: str | None = None
    session_id: str | None = None
    status: Any = None
    name: str | None = None
    provider: str | None = None
    backend: str | None = None
    program_id: str | None = None
    total_cost_min: float | None = None
    total_cost_max: float | None = None
    start_time_min: datetime | None = None
    start_time_max: datetime | None = None
    end_time_min: datetime | None = None
    end_time_max: datetime | None = None

    def matches(self, record: dict[str, Any]) -> bool:
        """Whether one DataFrame record passes every given filter."""
        exact = {
            "id": self.id, "session_id": self.session_id, "name": self.name,
            "provider": self.provider, "backend_name": self.backend,
            "program_id": self.program_id,
            "status": None if self.status is None else str(getattr(self.status, "value",
                                                                   self.status)),
        }  # fmt: skip
        for column, wanted in exact.items():
            if wanted is not None and record[column] != wanted:
                return False
        cost = record["total_cost"]
        for bound, keep in ((self.total_cost_min, lambda c, b: c >= b),
                            (self.total_cost_max, lambda c, b: c <= b)):
            if bound is not None and (cost is None or not keep(cost, bound)):
                return False
        for column, low, high in (("start_time", self.start_time_min, self.start_time_max),
                                  ("end_time", self.end_time_min, self.end_time_max)):
            when: datetime | None = record[column]
            for limit, is_low in ((low, True), (high, False)):
                if limit is None:
                    continue
                if when is None:
                    return False
                t, b = when.timestamp(), limit.timestamp()
                if (is_low and t < b) or (not is_low and t > b):
                    return False
        return True


# -- derived columns ------------------------------------------------------------------------


def _spec(row: dict[str, Any]) -> dict[str, Any]:
    text = row.get("runner") or row.get("executor")
    return json.loads(text) if text else {}


def _label(spec: dict[str, Any]) -> str:
    return spec.get("fields", {}).get("name") or spec.get("class", "?").rpartition(":")[2]


def _metadata(row: dict[str, Any]) -> dict[str, Any]:
    text = row.get("run_metadata")
    data = json.loads(text) if text else None
    return data if isinstance(data, dict) else {}


def _member_spec(spec: dict[str, Any], label: str | None) -> dict[str, Any]:
    """The member of a cluster spec that ran the batch (by label), else ``spec``."""
    members = spec.get("fields", {}).get("executors")
    if not isinstance(members, list) or label is None:
        return spec
    for member in members:
        inner = member.get("__executor__") if isinstance(member, dict) else None
        if inner and (label == _label(inner) or label.startswith(_label(inner) + "#")):
            return inner
    return spec


def provider_of(row: dict[str, Any]) -> str | None:
    """The executor that ran the job (a cluster's member, by the run metadata)."""
    ran = _metadata(row).get("executor")
    if ran:
        return str(ran)
    spec = _spec(row)
    return _label(spec) if spec else None


def backend_name_of(row: dict[str, Any]) -> str | None:
    """The backend as its executor describes it (``"label (description)"`` -> description)."""
    backend = row.get("backend")
    if not backend:
        return None
    _label_part, sep, rest = backend.partition(" (")
    return rest[:-1] if sep and rest.endswith(")") else backend


def _children(store: JobStore, parent_id: str,
              children: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
    """The evaluation jobs of a minimization (``children``: parent id -> child ids, when
    the caller has listed the store already)."""
    if children is None:
        ids = [r["id"] for r in _all_listed(store) if r.get("parent_id") == parent_id]
    else:
        ids = children.get(parent_id, [])
    return [row for row in map(store.get, ids) if row is not None]


def _all_listed(store: JobStore, page: int = 500):
    offset = 0
    while True:
        rows = store.list(offset, page)
        yield from rows
        if len(rows) < page:
            return
        offset += page


def job_cost(row: dict[str, Any], store: JobStore,
             children: dict[str, list[str]] | None = None) -> JobCost:
    """The job's cost at its executor's price; CostUnknownError without a price."""
    if row["kind"] == "minimize":
        parts = [job_cost(child, store) for child in _children(store, row["id"], children)]
        currencies = {p.currency_code for p in parts}
        if len(currencies) > 1:
            raise CostUnknownError(
                f"minimization {row['id']} ran on executors priced in {sorted(currencies)}; "
                f"costs in different currencies do not add up"
            )
        return JobCost(total_cost=sum(p.total_cost for p in parts),
                       currency_code=currencies.pop() if currencies else "USD",
                       tasks=sum(p.tasks for p in parts), shots=sum(p.shots for p in parts))
    metadata = _metadata(row)
    spec = _member_spec(_spec(row), metadata.get("executor"))
    price = spec.get("fields", {}).get("price")
    if not isinstance(price, dict):
        raise CostUnknownError(
            f"job {row['id']} ran on {_label(spec)}, which has no price; set one "
            f"(price=qf.Price(per_task=..., per_shot=...) on the executor, or "
            f"price = {{per_task = ..., per_shot = ...}} in its config section) to see costs"
        )
    tasks = int(metadata.get("num_circuits") or len(json.loads(row.get("parameters") or "[]")))
    ran = [int(s) for s in metadata.get("shots") or () if s]
    # the shots each circuit ran, where the run metadata has them; else the job's shots
    shots = sum(ran) if ran else int(row.get("num_shots") or 0) * tasks
    total = float(price.get("per_task", 0.0)) * tasks + float(price.get("per_shot", 0.0)) * shots
    return JobCost(total_cost=total, currency_code=str(price.get("currency", "USD")),
                   tasks=tasks, shots=shots)


def _ts(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, tz=UTC) if value is not None else None


def action_record(row: dict[str, Any], store: JobStore,
                  children: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """One DataFrame record (see :data:`COLUMNS`) of a full job row."""
    try:
        cost: JobCost | None = job_cost(row, store, children)
    except CostUnknownError:
        cost = None
    seconds = _metadata(row).get("execution_time")
    runtime = None if seconds is None or not math.isfinite(seconds) else round(seconds * 1000)
    return {
        "id": row["id"], "session_id": row.get("session_id"), "name": row.get("name"),
        "start_time": _ts(row["created_at"]), "end_time": _ts(row.get("ended_at")),
        "provider": provider_of(row), "backend_name": backend_name_of(row),
        "status": row["status"], "num_shots": row.get("num_shots"),
        "program_id": row.get("program_id"), "error": row.get("error"),
        "total_cost": cost.total_cost if cost else None,
        "currency_code": cost.currency_code if cost else None,
        "runtime_ms": runtime, "kind": row["kind"], "parent_id": row.get("parent_id"),
    }  # fmt: skip


def get_execution_actions(offset: int = 0, limit: int = 50,
                          filters: ExecutionJobFilters | None = None,
                          *, store: JobStore | None = None) -> pd.DataFrame:
    """Jobs of the job store as a pandas DataFrame (newest first; columns
    :data:`COLUMNS`), those matching ``filters`` only, ``offset`` of them skipped, at most
    ``limit``. Unknown costs are NaN, not 0."""
    import pandas as pd

    for name, value in (("offset", offset), ("limit", limit)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    if filters is not None and not isinstance(filters, ExecutionJobFilters):
        raise TypeError(f"filters must be qf.ExecutionJobFilters, got {type(filters).__name__}")
    store = store or JobStore.default()
    listed_rows = list(_all_listed(store))
    children: dict[str, list[str]] = {}
    for listed in listed_rows:
        if listed.get("parent_id"):
            children.setdefault(listed["parent_id"], []).append(listed["id"])
    records: list[dict[str, Any]] = []
    skipped = 0
    for listed in listed_rows:
        if len(records) >= limit:
            break
        row = store.get(listed["id"])
        if row is None:  # deleted meanwhile
            continue
        record = action_record(row, store, children)
        if filters is not None and not filters.matches(record):
            continue
        if skipped < offset:
            skipped += 1
            continue
        records.append(record)
    return pd.DataFrame(records, columns=COLUMNS)


async def get_execution_actions_async(offset: int = 0, limit: int = 50,
                                      filters: ExecutionJobFilters | None = None,
                                      *, store: JobStore | None = None) -> pd.DataFrame:
    """:func:`get_execution_actions` on a worker thread (awaitable in a running loop)."""
    import asyncio

    return await asyncio.to_thread(get_execution_actions, offset, limit, filters, store=store)
