"""Plain data for the templates: jobs as table rows, results as histogram bars, executors as
fleet cards. Only the public API of :mod:`qfleet.jobs` and :mod:`qfleet.cluster` is read."""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import UTC, datetime
from typing import Any

ACTIVE = ("QUEUED", "RUNNING")
#: Most jobs scanned for a filtered listing (newest first).
SCAN_LIMIT = 5000
#: Bars drawn in a histogram (the most frequent outcomes); the table lists them all.
MAX_BARS = 48


def when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def seconds(value: float | None) -> str:
    """A duration for people.

    Example:
        >>> seconds(0.0123), seconds(0.00042), seconds(3.5), seconds(125), seconds(None)
        ('12 ms', '0.42 ms', '3.50 s', '2 min 5 s', '-')
    """
    if value is None:
        return "-"
    if value < 0.01:  # local simulators: sub-millisecond batches
        return f"{value * 1000:.2f} ms"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.2f} s"
    return f"{int(value // 60)} min {int(value % 60)} s"


def duration(job: Any) -> float | None:
    start, end = job.start_time, job.end_time
    if end is not None:
        return max((end - start).total_seconds(), 0.0)
    if job.status.value in ACTIVE:
        return max(time.time() - start.timestamp(), 0.0)
    return None


def cost(job: Any) -> str:
    """The job's cost by its executor's price ("1.3 USD"), '-' where none is known."""
    from qfleet.errors import QFleetError

    if not callable(getattr(type(job), "cost", None)):  # job stores without prices
        return "-"
    try:
        return str(job.cost())
    except QFleetError:  # CostUnknownError: no price configured for its executor
        return "-"


def job_row(job: Any) -> dict[str, Any]:
    status = job.status.value
    return {
        "id": job.id,
        "short_id": job.id[:8],
        "name": job.name or "",
        "status": status,
        "active": status in ACTIVE,
        "kind": job.kind + (" (batch)" if job.is_batch else ""),
        "backend": job.backend or "",
        "shots": "exact" if job.num_shots is None else str(job.num_shots),
        "created": when(job.start_time),
        "duration": seconds(duration(job)),
        "cost": cost(job),
    }


@dataclasses.dataclass
class Filters:
    status: str = ""
    backend: str = ""
    name: str = ""
    id: str = ""

    @property
    def any(self) -> bool:
        return bool(self.status or self.backend or self.name or self.id)

    def match(self, job: Any) -> bool:
        if self.id and not job.id.startswith(self.id.strip()):
            return False
        if self.status and job.status.value != self.status:
            return False
        if self.backend and self.backend.lower() not in (job.backend or "").lower():
            return False
        return not (self.name and self.name.lower() not in (job.name or "").lower())


def list_jobs(filters: Filters, page: int, per_page: int) -> tuple[list[Any], bool]:
    """One page of jobs (newest first) matching ``filters``, and whether more follow."""
    from qfleet.jobs import get_execution_jobs

    if not filters.any:
        jobs = get_execution_jobs(offset=page * per_page, limit=per_page + 1)
        return jobs[:per_page], len(jobs) > per_page
    wanted = range(page * per_page, (page + 1) * per_page + 1)
    found: list[Any] = []
    seen = 0
    chunk = 200
    for offset in range(0, SCAN_LIMIT, chunk):
        batch = get_execution_jobs(offset=offset, limit=chunk)
        for job in batch:
            if filters.match(job):
                if seen in wanted:
                    found.append(job)
                seen += 1
        if len(batch) < chunk or len(found) > per_page:
            break
    return found[:per_page], len(found) > per_page


def histogram(counts: dict[str, int], shots: int) -> dict[str, Any]:
    """Bars for an inline SVG: the most frequent outcomes, heights relative to the highest.

    Example:
        >>> h = histogram({"00": 75, "11": 25}, 100)
        >>> [(b["label"], round(b["height"], 1)) for b in h["bars"]]
        [('00', 150.0), ('11', 50.0)]
    """
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_BARS]
    top.sort(key=lambda kv: kv[0])
    width = max(28, min(72, 640 // max(len(top), 1)))  # few outcomes: wide bars
    height, gap = 150, 8
    highest = max((c for _, c in top), default=1) or 1
    bars = []
    for i, (bitstring, count) in enumerate(top):
        h = height * count / highest
        bars.append({
            "label": bitstring, "count": count, "probability": count / shots if shots else 0,
            "x": gap + i * (width + gap), "y": 10 + height - h, "width": width, "height": h,
        })
    return {
        "bars": bars,
        "width": gap + len(bars) * (width + gap),
        "height": height + 10,
        "axis_y": 10 + height,
        "hidden": max(len(counts) - len(top), 0),
    }


#: Most characters of a circuit drawing shown (a deep circuit draws as pages of text).
MAX_DRAWING = 20_000


def run_details(metadata: dict[str, Any]) -> dict[str, Any]:
    """What the detail page shows of a job's run metadata (``ExecutionJob.run_metadata``):
    "-" or "" where the run did not report it.

    Example:
        >>> d = run_details({"executor": "cheap", "cost": 1.1, "cache_hit": False,
        ...                  "execution_time": 0.25, "job_ids": ["j-1"],
        ...                  "routing": {"chosen": "cheap", "explanation": "policy cost"}})
        >>> d["route"], d["route_explanation"], d["charged"], d["cache_hit"], d["run_time"]
        ('cheap', 'policy cost', '1.1', 'no', '250 ms')
    """
    routing = metadata.get("routing")
    routing = routing if isinstance(routing, dict) else {}
    cost = metadata.get("cost")
    hit = metadata.get("cache_hit")
    hedged = metadata.get("hedged") or []
    compiled = metadata.get("compile")
    run_time = metadata.get("execution_time")
    return {
        "route": str(routing.get("chosen") or metadata.get("executor") or "-"),
        "route_explanation": str(routing.get("explanation") or ""),
        "hedged": ", ".join(map(str, hedged)),
        "cache_hit": "-" if hit is None else ("yes" if hit else "no"),
        "charged": "-" if not isinstance(cost, int | float) else f"{cost:g}",
        "run_time": seconds(run_time) if isinstance(run_time, int | float) else "-",
        "compile": json.dumps(compiled, indent=1) if compiled else "",
        "run_job_ids": ", ".join(map(str, metadata.get("job_ids") or [])),
    }


def drawing(job: Any) -> str:
    """A text drawing of the job's first stored circuit (PennyLane's ``tape_text``)."""
    import pennylane as qml

    from qfleet.jobs import JobError

    try:
        tapes = job.tapes
    except JobError as exc:  # e.g. a row whose circuits could not be stored
        return f"(no drawing: {exc})"
    if not tapes:
        return ""
    text = qml.drawer.tape_text(tapes[0], decimals=3, max_length=120)
    if len(text) > MAX_DRAWING:
        text = text[:MAX_DRAWING] + "\n... (cut: the circuit is too deep to draw here)"
    if len(tapes) > 1:
        text += f"\n\n(the first of {len(tapes)} circuits, one per parameter set)"
    return text


def job_detail(job: Any) -> dict[str, Any]:
    """Everything the detail page shows about ``job``."""
    from qfleet.jobs import JobError

    row = job_row(job)
    row.update(
        program=job.program or "",
        parameters=json.dumps(job.parameters, indent=1),
        backend_job_ids=", ".join(job.backend_job_ids) or "-",
        attempts=job.attempts,
        ended=when(job.end_time),
        error=job.error or "",
        samples=[],
        estimates=[],
        result_error="",
        # the cluster member that ran it, where the job store records one
        provider=(job.provider if hasattr(type(job), "provider") else None) or "-",
        drawing=drawing(job),
    )
    row.update(run_details(job.run_metadata))
    if row["backend_job_ids"] == "-" and row["run_job_ids"]:
        row["backend_job_ids"] = row["run_job_ids"]
    if row["status"] == "COMPLETED":
        try:
            value = job.result(timeout_sec=0)[0].value
        except JobError as exc:  # e.g. a store row without results
            row["result_error"] = str(exc)
            return row
        values = value if isinstance(value, list) else [value]
        if job.kind == "sample":
            row["samples"] = [
                {"parameters": json.dumps(v.parameters), "shots": v.num_shots,
                 "histogram": histogram(v.counts, v.num_shots),
                 "table": [(b, c, c / v.num_shots) for b, c in v.counts.items()]}
                for v in values
            ]
        else:
            row["estimates"] = [
                {"parameters": json.dumps(v.parameters), "value": f"{v.value:.10g}",
                 "shots": "exact" if v.num_shots is None else v.num_shots}
                for v in values
            ]
    return row


def price_text(price: Any) -> str:
    """A :class:`qfleet.Price` for people.

    Example:
        >>> from qfleet.executors.status import Price
        >>> price_text(Price(per_task=0.3, per_shot=0.00035, currency="EUR"))
        '0.3 EUR per circuit + 0.00035 EUR per shot'
        >>> price_text(Price(per_task=1.0))
        '1 USD per circuit'
    """
    parts = [f"{price.per_task:g} {price.currency} per circuit" if price.per_task else "",
             f"{price.per_shot:g} {price.currency} per shot" if price.per_shot else ""]
    return " + ".join(p for p in parts if p) or f"free ({price.currency})"


def fleet_cards(
    clusters: list[Any], stored: dict[str, int] | None = None
) -> list[dict[str, Any]]:
    """One card per executor of each cluster, all from ``health()`` (no I/O: the cluster
    refreshes its members' status in the background): breaker state, in flight, done,
    failures, latency mean and percentiles, and from the last known status availability,
    queue, wait and price (unknown until the first refresh answered); ``stored``: completed
    jobs per executor in the job store (any process's), shown beside this process's own."""
    cards = []
    for c, cluster in enumerate(clusters):
        health = cluster.health()
        for (label, h), member in zip(health.items(), cluster.executors, strict=True):
            status = h.status
            cards.append({
                "cluster": cluster.label, "cluster_index": c,
                "executor": label, "backend": member.backend_description,
                "state": h.state, "in_flight": h.in_flight, "done": h.done,
                "stored": "-" if stored is None else stored.get(label, 0),
                "failed": h.failed, "latency": seconds(h.mean_latency),
                "p50": seconds(h.p50_latency), "p90": seconds(h.p90_latency),
                "p99": seconds(h.p99_latency),
                "available": h.available,
                "reason": h.reason or ("" if status else "status not known yet"),
                "queue": "-" if status is None or status.queue_length is None
                else str(status.queue_length),
                "wait": "-" if status is None or status.estimated_wait is None
                else seconds(status.estimated_wait),
                "price": "" if status is None or status.price is None
                else price_text(status.price),
            })
    return cards
