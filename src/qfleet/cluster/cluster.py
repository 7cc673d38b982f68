"""QuantumCluster: a group of executors that acts as one executor.

Routing is per batch (the tapes of one QNode call or one gradient go to one executor: one
job) unless ``spread=True``. A transient failure (timeout, lost connection, 5xx/429, no
reply) is retried with exponential backoff and jitter on another healthy executor; a
permanent one (invalid circuit, auth) is raised at once with the executor's name. An
executor with ``breaker_threshold`` consecutive transient failures is taken out of rotation
for ``breaker_cooldown`` seconds, then probed with one batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, Literal

import numpy as np
from pennylane.measurements import Shots
from pennylane.tape import QuantumScript
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

import qfleet.telemetry as telemetry
from qfleet.cluster.cache import batch_key
from qfleet.cluster.idempotency import call_nonce, maybe_delivered, run_once, submission_key
from qfleet.cluster.ledger import Budget, BudgetExceededError, Charge, Ledger
from qfleet.cluster.policy import (
    PRESETS,
    Decision,
    Features,
    FleetState,
    NoMemberError,
    Policy,
    costs,
    ranked,
)
from qfleet.cluster.selectors import SELECTORS, SelectorFn, guarded
from qfleet.cluster.status import StatusBoard
from qfleet.errors import ExecutorError, QFleetError, UnsupportedCircuitError
from qfleet.executors.base import (
    BatchResult,
    Capabilities,
    Prepared,
    QuantumExecutor,
    RunMetadata,
)
from qfleet.executors.status import ExecutorStatus
from qfleet.runtime.background import per_loop
from qfleet.runtime.caller import on_caller_thread
from qfleet.runtime.progress import BatchProgress
from qfleet.sampling import BatchShape
from qfleet.sampling.derivatives import Derivatives

#: Weight of the newest latency in the exponentially weighted mean.
EWMA_WEIGHT = 0.3
#: Latest batch latencies per member that health()'s percentiles are taken over.
LATENCY_WINDOW = 256
#: Seconds between checks for a free member while a late-bound batch waits.
BIND_RECHECK = 0.25


def latency_percentiles(
    latencies: Sequence[float],
) -> tuple[float | None, float | None, float | None]:
    """The 50th, 90th and 99th percentile of ``latencies`` (linear interpolation between
    the closest ranks); Nones for none.

    Example:
        >>> latency_percentiles([0.1, 0.2, 0.3, 0.4, 0.5])
        (0.3, 0.46, 0.496)
        >>> latency_percentiles([])
        (None, None, None)
    """
    if not latencies:
        return None, None, None
    # rounded to picoseconds: drops float noise (0.45999999999999996) that means nothing
    p50, p90, p99 = (round(float(v), 12) for v in np.percentile(latencies, [50, 90, 99]))
    return p50, p90, p99


class SelectorError(QFleetError, ValueError):
    """A selector is unknown or chose something that is not in the cluster."""


class ExecutorHealth(BaseModel):
    """One executor's state, as ``QuantumCluster.health()`` reports it."""

    executor: str
    state: Literal["healthy", "open", "half-open"]
    in_flight: int
    done: int
    failed: int
    mean_latency: float | None
    """Mean seconds per finished batch."""
    p50_latency: float | None = None
    """Median seconds per batch over the latest ``LATENCY_WINDOW`` finished ones."""
    p90_latency: float | None = None
    p99_latency: float | None = None
    available: bool | None = None
    """The member's last known status says it can run (None: not known yet)."""
    reason: str | None = None
    """Why it is down (or a note on its state), from its last known status."""
    status: ExecutorStatus | None = None
    """Its last known status (queue, calibration, published metrics), refreshed in the
    background every ``status_ttl`` seconds; None until the first answer."""


class ClusterRunMetadata(RunMetadata):
    """A cluster batch's metadata: where it ran, and why there.

    ``routing``: the policy's decision (``routing.explain()``, ``.scores()``, ``.skipped()``;
    None for the plain selectors); ``cost``: what the budget was charged; ``cache_hit``: the
    results came from the result cache (no backend ran, nothing charged); ``hedged``: the
    members a hedged batch was sent to (``executor`` is the one whose results won).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    routing: Decision | None = None
    cache_hit: bool = False
    hedged: tuple[str, ...] = ()


@dataclasses.dataclass
class _Stats:
    """Live statistics of one member (per process; guarded by the cluster's lock)."""

    in_flight: int = 0
    """Batches running on the member."""
    queued: int = 0
    """Batches routed to the member that have not started yet."""
    done: int = 0
    failed: int = 0
    consecutive_failures: int = 0
    latency_total: float = 0.0
    latencies: deque[float] = dataclasses.field(
        default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    """Seconds of the latest finished batches (bounded: percentiles, not a history)."""
    ewma_latency: float | None = None
    """Exponentially weighted seconds per circuit."""
    state: Literal["healthy", "open", "half-open"] = "healthy"
    opened_at: float = 0.0
    probing: bool = False


@dataclasses.dataclass(frozen=True)
class RawPart:
    """One part of a cluster batch's raw output (:meth:`QuantumCluster.raw_parts`)."""

    member: int
    """The index in ``executors`` of the member that ran it (or whose results were cached)."""
    tapes: tuple[QuantumScript, ...]
    prepared: Prepared
    """The member's preparation of ``tapes``, which finishes ``output``."""
    cached: tuple | None
    """Results from the result cache (then ``output`` is None: nothing ran)."""
    output: BatchResult | None
    """The member's raw output."""


@dataclasses.dataclass(frozen=True)
class _Chunk:
    """Part of a batch: the cluster-level tapes and their preparation for one member."""

    tapes: tuple[QuantumScript, ...]
    prepared: Prepared
    capable: frozenset[int]
    """The members that can run these tapes (failover and late binding stay inside)."""
    decision: Decision | None = None
    cost: float = 0.0
    """Charged to the budget for this chunk (routing, then any failover)."""
    charge: Charge | None = None
    """The budget's charge for the member the chunk is on now (refunded if that member
    never accepts it)."""
    key: str | None = None
    """The result cache's key (None: not cached)."""
    hit: tuple | None = None
    """Results from the cache: nothing runs."""
    hedge: bool = False
    """One of several copies of a hedged batch: the first to finish wins."""
    batch: str | None = None
    """The chunk's idempotency key: the call's nonce and the chunk's place in the call
    (None: no member can re-attach, so there is nothing to record)."""
    submission: str | None = None
    """The digest of ``batch`` on its member (see :mod:`qfleet.cluster.idempotency`)."""


def is_transient(exc: BaseException) -> bool:
    """Whether retrying (elsewhere) may succeed."""
    if isinstance(exc, ExecutorError):
        return exc.transient
    return isinstance(exc, (TimeoutError, ConnectionError))


class QuantumCluster(QuantumExecutor):
    """Runs each batch on one of its executors, chosen by ``selector``.

    ``selector``: "cyclic" (default), "random", "least_busy" (fewest batches in flight
    relative to ``max_concurrent``), "fastest" (lowest weighted latency, with exploration),
    or a callable ``f(tapes, executors) -> executor``. ``spread=True`` splits one batch
    across executors in proportion to their free capacity (sub-batches of at most
    ``chunk_size`` tapes) and reassembles the results in order. ``timeout`` is per batch,
    retries included.

    Example:
        >>> cluster = QuantumCluster(
        ...     executors=[LocalExecutor(), LocalExecutor(device="lightning.qubit")],
        ...     selector="least_busy", retries=3,
        ... )
        >>> cluster.health()["LocalExecutor#1"].state
        'healthy'
    """

    executors: list[QuantumExecutor] = Field(min_length=1)
    selector: str | Callable | Policy = "cyclic"
    spread: bool = False
    chunk_size: int | None = Field(default=None, gt=0)
    retries: int = Field(default=3, ge=0)
    """Transient failures retried per batch (on another executor when there is one)."""
    backoff: float = Field(default=0.05, ge=0)
    """First retry delay in seconds; doubles per retry, with full jitter."""
    backoff_max: float = Field(default=2.0, ge=0)
    breaker_threshold: int = Field(default=3, gt=0)
    breaker_cooldown: float = Field(default=30.0, ge=0)
    budget: Budget | None = None
    """Spending limits (``qf.Budget``), checked before each submission; members need a
    ``price``."""
    hedge: int = Field(default=1, ge=1)
    """Send each batch to this many members; the first complete result wins, the others
    are cancelled on their backends (a budget is charged for every copy)."""
    cache: bool | None = None
    """Result cache: None caches exact results of backends that are not PennyLane
    simulators (simulating again costs about what a lookup does); True caches every result,
    sampled ones too (a repeated call returns the same samples); False caches nothing."""
    status_ttl: float = Field(default=5.0, gt=0)
    """Seconds between background refreshes of the members' status (started by a policy or
    the first ``health()``)."""

    backend_kind = "cluster"

    _selector_fn: SelectorFn = PrivateAttr()
    _policy: Policy | None = PrivateAttr(default=None)

    @field_validator("executors", mode="before")
    @classmethod
    def _non_empty(cls, value: Any) -> Any:
        if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 0:
            raise ValueError("a QuantumCluster needs at least one executor, got an empty list")
        return value

    @field_validator("selector")
    @classmethod
    def _known_selector(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in SELECTORS and value not in PRESETS:
            raise ValueError(
                f"unknown selector {value!r}; use one of {sorted(SELECTORS)}, a policy "
                f"({', '.join(sorted(PRESETS))} or qf.Policy(time=, cost=, fidelity=)) or a "
                f"callable f(tapes, executors) -> executor"
            )
        return value

    @model_validator(mode="after")
    def _member_limits_only(self) -> QuantumCluster:
        for field in ("max_concurrent", "rate", "price"):
            if getattr(self, field) is not None:
                raise ValueError(
                    f"set {field} on the cluster's executors, not on the cluster itself"
                )
        return self

    def model_post_init(self, context: Any) -> None:
        if isinstance(self.selector, Policy) or self.selector in PRESETS:
            # Policies score members on their status (see decide); this selector only
            # serves callers that hand the cluster a list of executors themselves.
            self._policy = (
                self.selector if isinstance(self.selector, Policy) else PRESETS[self.selector]
            )
            self._selector_fn = SELECTORS["cyclic"]()
        else:
            self._selector_fn = (
                SELECTORS[self.selector]() if isinstance(self.selector, str)
                else guarded(self.selector)  # its errors say they came from the selector
            )
        if hasattr(self._selector_fn, "attach"):
            self._selector_fn.attach(lambda executor: self._stats()[self._index(executor)])

    @property
    def _select(self) -> SelectorFn:
        # Through __pydantic_private__: pydantic's private-attribute __getattr__ is slow.
        return self.__pydantic_private__["_selector_fn"]  # type: ignore[index]  # pydantic: Optional

    @property
    def _late_binding(self) -> bool:
        return hasattr(self._select, "attach")

    # -- members and their statistics ----------------------------------------------------

    @property
    def capabilities(self) -> Capabilities:
        # What at least one member runs: each batch is routed only to members that can run
        # it (see capable), so the same call has the same outcome whichever is picked.
        caps = self.executors[0].capabilities
        for executor in self.executors[1:]:
            caps = caps.union(executor.capabilities)
        return caps

    def supports_operation(self, op: Any) -> bool:
        return any(executor.supports_operation(op) for executor in self.executors)

    def why_not(self, tapes: Sequence[QuantumScript]) -> str | None:
        try:
            self.capable(self.with_shots(tapes))
        except UnsupportedCircuitError as exc:
            return str(exc)
        return None

    def capable(
        self, tapes: Sequence[QuantumScript], derivatives: Derivatives | None = None
    ) -> frozenset[int]:
        """Indices of the members that can run ``tapes`` (and compute the ``derivatives``
        they ask for), checked before anything is sent.

        Exact tapes go to members with exact results when there are any (a shots-only
        member would return estimates). Raises UnsupportedCircuitError naming every
        member's reason when none can run them.
        """
        shape = BatchShape.of(tapes)  # one pass over the batch for every member
        reasons = [
            (derivatives and member.capabilities.why_not_derivatives(derivatives))
            or (member.why_not_shape(shape) if member.shots is None else member.why_not(tapes))
            for member in self.executors
        ]
        capable = frozenset(i for i, reason in enumerate(reasons) if reason is None)
        if not capable:
            raise UnsupportedCircuitError(
                f"no member of {self.label} can run this batch: "
                + "; ".join(
                    f"{label}: {reason}"
                    for label, reason in zip(self.member_labels, reasons, strict=True)
                )
            )
        if any(not tape.shots for tape in tapes):
            exact = frozenset(
                i for i in capable
                if self.executors[i].capabilities.analytic and self.executors[i].shots is None
            )
            return exact or capable
        return capable

    @property
    def member_labels(self) -> list[str]:
        """Unique labels: an executor's label, with ``#i`` where labels repeat."""
        labels = [e.label for e in self.executors]
        return [f"{lb}#{i}" if labels.count(lb) > 1 else lb for i, lb in enumerate(labels)]

    def _stats(self) -> list[_Stats]:
        cache = self._runtime
        stats = cache.get("stats")
        if stats is None:
            stats = cache.setdefault("stats", [_Stats() for _ in self.executors])
            cache.setdefault("lock", threading.Lock())
        return stats

    @property
    def _lock(self) -> threading.Lock:
        self._stats()
        return self._runtime["lock"]

    def _index(self, executor: Any) -> int:
        for i, member in enumerate(self.executors):
            if member is executor:
                return i
        raise SelectorError(
            f"selector {self.selector!r} returned {executor!r}, which is not one of this "
            f"cluster's executors; it must return an element of the list it is given"
        )

    def _available(self, i: int, now: float) -> bool:
        stats = self._stats()[i]
        if stats.state == "open" and now - stats.opened_at >= self.breaker_cooldown:
            stats.state = "half-open"
        return stats.state == "healthy" or (stats.state == "half-open" and not stats.probing)

    def health(self) -> dict[str, ExecutorHealth]:
        """Per executor: batches in flight, done, failed, mean latency, breaker state, and
        its last known status (available or why not, queue, calibration, metrics). No I/O
        here: the first call starts the background status refresh (every ``status_ttl``)."""
        self._fleet()  # takes the lock itself
        board: StatusBoard = self._runtime["board"]
        board.start()
        statuses = board.last_known()
        with self._lock:
            now = time.monotonic()
            for i in range(len(self.executors)):
                self._available(i, now)
            percentiles = [latency_percentiles(s.latencies) for s in self._stats()]
            return {
                label: ExecutorHealth(
                    executor=label,
                    state=s.state,
                    in_flight=s.in_flight,
                    done=s.done,
                    failed=s.failed,
                    mean_latency=s.latency_total / s.done if s.done else None,
                    p50_latency=p50,
                    p90_latency=p90,
                    p99_latency=p99,
                    available=status.available if status else None,
                    reason=status.reason if status else None,
                    status=status,
                )
                for label, s, status, (p50, p90, p99) in zip(
                    self.member_labels, self._stats(), statuses, percentiles, strict=True
                )
            }

    def _capacity(self, i: int) -> float:
        return self.executors[i].max_concurrent or math.inf

    def _loaded(self, i: int, circuits: int) -> None:
        # The policies' count of circuits queued or in flight (once a policy made one).
        fleet = self._runtime.get("fleet")
        if fleet is not None:
            fleet.add_load(i, circuits)

    def _route(self, i: int, delta: int = 1, circuits: int = 1) -> None:
        with self._lock:
            self._stats()[i].queued += delta
            self._loaded(i, delta * circuits)

    def _begin(self, i: int, routed_to: int | None = None, circuits: int = 1) -> None:
        """Batch starts on member ``i`` (leaving the queue of ``routed_to``, if given)."""
        with self._lock:
            if routed_to is not None:
                self._stats()[routed_to].queued -= 1
                self._loaded(routed_to, -circuits)
            stats = self._stats()[i]
            stats.in_flight += 1
            self._loaded(i, circuits)
            if stats.state == "half-open":
                stats.probing = True

    def _succeeded(self, i: int, seconds: float, circuits: int) -> None:
        with self._lock:
            stats = self._stats()[i]
            stats.in_flight -= 1
            stats.done += 1
            stats.latency_total += seconds
            stats.latencies.append(seconds)
            per_circuit = seconds / max(circuits, 1)
            stats.ewma_latency = (
                per_circuit
                if stats.ewma_latency is None
                else (1 - EWMA_WEIGHT) * stats.ewma_latency + EWMA_WEIGHT * per_circuit
            )
            stats.consecutive_failures = 0
            stats.state, stats.probing = "healthy", False
            self._loaded(i, -circuits)
            fleet = self._runtime.get("fleet")
            if fleet is not None:
                fleet.set_latency(i, stats.ewma_latency)

    def _failed(self, i: int, transient: bool, circuits: int = 1) -> None:
        with self._lock:
            stats = self._stats()[i]
            stats.in_flight -= 1
            stats.failed += 1
            stats.probing = False
            self._loaded(i, -circuits)
            if not transient:  # the batch was bad, not the executor
                return
            stats.consecutive_failures += 1
            if stats.state == "half-open" or stats.consecutive_failures >= self.breaker_threshold:
                stats.state, stats.opened_at = "open", time.monotonic()

    def _cancelled(self, i: int, circuits: int = 1) -> None:
        with self._lock:
            stats = self._stats()[i]
            stats.in_flight -= 1
            stats.probing = False
            self._loaded(i, -circuits)

    # -- routing -------------------------------------------------------------------------

    def _candidates(self, exclude: set[int], capable: frozenset[int]) -> list[QuantumExecutor]:
        with self._lock:
            now = time.monotonic()
            available = [i for i in sorted(capable) if self._available(i, now)]
        # Prefer healthy executors not yet tried for this batch; then any healthy one; with
        # every breaker open, still try (the caller gets the real error, not a refusal).
        for pool in (
            [i for i in available if i not in exclude],
            available,
            [i for i in sorted(capable) if i not in exclude],
            sorted(capable),
        ):
            if pool:
                return [self.executors[i] for i in pool]
        raise AssertionError("a cluster always has an executor")

    def select(
        self,
        tapes: Sequence[QuantumScript],
        exclude: AbstractSet[int] = frozenset(),
        capable: frozenset[int] | None = None,
        credit: float = 0.0,
    ) -> QuantumExecutor:
        """The executor that will run ``tapes`` (``exclude``: member indices to avoid;
        ``capable``: the members that can run them, default: asked here; ``credit``: a
        charge of this batch that moves with it, so the budget allows that much more)."""
        return self._route_one(tapes, exclude, capable, credit)[0]

    def _route_one(
        self,
        tapes: Sequence[QuantumScript],
        exclude: AbstractSet[int] = frozenset(),
        capable: frozenset[int] | None = None,
        credit: float = 0.0,
    ) -> tuple[QuantumExecutor, Decision | None]:
        """:meth:`select`, with the decision that explains the choice (None: a selector)."""
        if capable is None:
            capable = self.capable(tapes)
        if self._policy is not None or self.budget is not None:
            return self._routes(tapes, capable, exclude, top=1, credit=credit)[0]
        candidates = self._candidates(set(exclude), capable)
        chosen = self._select(tapes, candidates)
        self._index(chosen)  # raises SelectorError for a foreign executor
        return chosen, None

    # -- policies, budgets, status -------------------------------------------------------

    def _fleet(self) -> FleetState:
        """The policies' numbers (per process): prices, status, load, latency."""
        fleet = self._runtime.get("fleet")
        if fleet is None:
            with self._lock:
                fleet = self._runtime.get("fleet")
                if fleet is None:
                    fleet = FleetState(
                        self.member_labels,
                        [
                            (Shots(m.shots).total_shots or 0) if m.shots else 0
                            for m in self.executors
                        ],
                        [
                            0 if m.capabilities.analytic else m.capabilities.default_shots or 0
                            for m in self.executors
                        ],
                    )
                    board = StatusBoard(self.executors, self.member_labels, self.status_ttl, fleet)
                    for i, status in enumerate(board.statuses):
                        fleet.update(i, status)
                    fleet.publish()
                    self._runtime["board"] = board
                    self._runtime["fleet"] = fleet
        if self._policy is not None:
            self._runtime["board"].start()  # statuses matter only to policies
        return fleet

    def member_status(self, refresh: bool = False) -> dict[str, ExecutorStatus]:
        """Each member's last known status (``refresh=True``: ask them all now; blocks)."""
        self._fleet()
        board: StatusBoard = self._runtime["board"]
        statuses = board.refresh() if refresh else board.statuses
        return dict(zip(self.member_labels, statuses, strict=True))

    def status(self) -> ExecutorStatus:
        """Available when a member is; the shortest published queue and wait among them."""
        statuses = [s for s in self.member_status().values() if s.available]
        queues = [s.queue_length for s in statuses if s.queue_length is not None]
        waits = [s.estimated_wait for s in statuses if s.estimated_wait is not None]
        return ExecutorStatus(
            executor=self.label,
            available=bool(statuses),
            reason=None if statuses else "no member is available",
            queue_length=min(queues) if queues else None,
            estimated_wait=min(waits) if waits else None,
        )

    def _ledger(self) -> Ledger:
        return Ledger.default()

    def _blocked(
        self, tapes: Sequence[QuantumScript], capable: frozenset[int], exclude: AbstractSet[int]
    ) -> dict[int, str]:
        """Members that may not take the batch, and why (besides status and budget)."""
        blocked: dict[int, str] = {}
        with self._lock:
            now = time.monotonic()
            for i, member in enumerate(self.executors):
                if i not in capable:
                    why = member.why_not(tapes) or "exact members run exact tapes"
                    blocked[i] = f"cannot run it: {why}"
                elif i in exclude:
                    blocked[i] = "failed this batch already"
                elif not self._available(i, now):
                    blocked[i] = "circuit breaker open"
        return blocked

    def _routes(
        self,
        tapes: Sequence[QuantumScript],
        capable: frozenset[int],
        exclude: AbstractSet[int] = frozenset(),
        top: int = 1,
        credit: float = 0.0,
    ) -> list[tuple[QuantumExecutor, Decision | None]]:
        """The best ``top`` members for ``tapes`` by the policy (or the selector), within the
        budget (plus ``credit``, see :meth:`select`); each with the decision that explains it."""
        fleet = self._fleet()
        features = Features.of(tapes)
        limit = math.inf
        if self.budget is not None:
            limit = self._ledger().remaining(self.budget) + credit
            if self.budget.per_call is not None:
                limit = min(limit, self.budget.per_call)
        if self._policy is None:
            return self._selected_within(tapes, capable, exclude, features, limit, top)
        blocked = self._blocked(tapes, capable, exclude)
        try:
            with fleet.lock:
                decisions = ranked(
                    fleet, self._policy, features, limit=limit, blocked=blocked, top=top
                )
        except NoMemberError as exc:
            over = {k: v for k, v in exc.skips.items() if v.startswith("over budget")}
            if over:
                raise self._refusal(fleet, features, limit, exc.skips) from None
            # Every member that can run it is offline, broken or tried already: still try
            # (the caller gets the backend's real error, not a refusal).
            cannot = {i: why for i, why in blocked.items() if why.startswith("cannot")}
            with fleet.lock:
                decisions = ranked(
                    fleet, self._policy, features, limit=limit, blocked=cannot, top=top,
                    offline_ok=True,
                )  # fmt: skip
        return [(self.executors[d.chosen], d) for d in decisions]

    def _selected_within(
        self,
        tapes: Sequence[QuantumScript],
        capable: frozenset[int],
        exclude: AbstractSet[int],
        features: Features,
        limit: float,
        top: int,
    ) -> list[tuple[QuantumExecutor, Decision | None]]:
        """The selector's choice among the members the budget allows (``top`` > 1: then
        its choice among the rest, and so on)."""
        price = costs(self._fleet().snapshot, features)
        affordable = frozenset(i for i in capable if price[i] <= limit)
        if not affordable:
            skips = {
                self.member_labels[i]: f"over budget: costs {price[i]:.6g}"
                for i in sorted(capable)
            }
            raise self._refusal(self._fleet(), features, limit, skips)
        chosen: list[tuple[QuantumExecutor, Decision | None]] = []
        for _ in range(min(top, len(affordable))):
            taken = set(exclude) | {self._index(m) for m, _ in chosen}
            if chosen and not affordable - taken:
                break
            candidates = self._candidates(taken, affordable)
            member = self._select(tapes, candidates)
            self._index(member)  # raises SelectorError for a foreign executor
            if any(member is m for m, _ in chosen):
                break
            chosen.append((member, None))
        return chosen

    def _refusal(
        self, fleet: FleetState, features: Features, limit: float, skips: dict[str, str]
    ) -> BudgetExceededError:
        assert self.budget is not None  # only a budget refuses
        price = costs(fleet.snapshot, features)
        cheapest = int(price.argmin())
        return self._ledger().refusal(
            self.budget, float(price[cheapest]), self.member_labels[cheapest], limit=limit,
            skips=skips,
        )  # fmt: skip

    def _cost(self, member: QuantumExecutor, prepared: Prepared) -> float:
        """What ``prepared`` costs on ``member``: its price per planned circuit and shot."""
        if member.price is None:
            return 0.0
        circuits = prepared.plan.circuits if prepared.plan is not None else prepared.tapes
        shots = sum(c.shots.total_shots or 0 for c in circuits)
        return member.price.cost(len(circuits), shots)

    def _cache_key(self, member: QuantumExecutor, prepared: Prepared) -> str | None:
        if self.cache is False or prepared.derivatives is not None:
            return None
        circuits = prepared.plan.circuits if prepared.plan is not None else prepared.tapes
        if self.cache is None and (
            member.capabilities.takes_tapes or any(c.shots for c in circuits)
        ):
            return None  # sampled results are cached only when asked (cache=True)
        epoch = None
        if type(member).status is not QuantumExecutor.status:  # it publishes calibrations
            # The key needs its calibration epoch as last published; before the first status
            # answer it is unknown, and a result keyed on a guess could outlive a
            # recalibration: no cache for this batch, and the status refresh starts.
            self._fleet()
            board: StatusBoard = self._runtime["board"]
            board.start()
            status = board.last_known()[self._index(member)]
            if status is None:
                return None
            epoch = status.calibration.epoch if status.calibration is not None else None
        return batch_key(
            circuits,
            backend=f"{type(member).__name__}:{member.backend_description}",
            shots=member.shots,
            seed=getattr(member, "seed", None),
            epoch=epoch,
        )

    def _account(self, chunk: _Chunk, i: int) -> _Chunk:
        """Look ``chunk`` up in the result cache; charge the budget if it must run."""
        member = chunk.prepared.executor
        key = self._cache_key(member, chunk.prepared)
        if key is not None:
            hit = self._ledger().cached(key)
            if hit is not None:
                return dataclasses.replace(chunk, key=key, hit=tuple(hit))
        if self.budget is None:
            return dataclasses.replace(chunk, key=key)
        cost = self._cost(member, chunk.prepared)
        charge = self._ledger().charge(self.budget, cost, member=self.member_labels[i])
        return dataclasses.replace(chunk, key=key, cost=cost, charge=charge)

    def _refund(self, chunk: _Chunk) -> None:
        """Take back ``chunk``'s charge on its member: the member never accepted it."""
        if chunk.charge is not None:
            self._ledger().refund(chunk.charge)

    async def _refund_unsent(self, chunk: _Chunk, sent: asyncio.Event) -> None:
        """:meth:`_refund` unless the member accepted the chunk (the ledger off the loop)."""
        if chunk.charge is not None and not sent.is_set():
            await asyncio.to_thread(self._refund, chunk)

    def _charge_moved(self, chunk: _Chunk, sent: bool) -> _Chunk:
        """``chunk`` (prepared for another member now) charged there; ``sent``: the member it
        was on accepted it (that charge stands), else that charge moves. Raises
        BudgetExceededError if the new member's cost does not fit."""
        assert self.budget is not None  # callers charge only under a budget
        member = chunk.prepared.executor
        label, cost = self.member_labels[self._index(member)], self._cost(member, chunk.prepared)
        ledger = self._ledger()
        if sent or chunk.charge is None:
            charge = ledger.charge(self.budget, cost, member=label)
            return dataclasses.replace(chunk, cost=chunk.cost + cost, charge=charge)
        charge = ledger.move(chunk.charge, self.budget, cost, member=label)
        return dataclasses.replace(chunk, cost=chunk.cost - chunk.charge.cost + cost, charge=charge)

    def _metadata(
        self, base: RunMetadata, chunks: Sequence[_Chunk], winner: _Chunk | None = None
    ) -> ClusterRunMetadata:
        """``base`` with the routing decision, the charge and the cache and hedge marks."""
        chunk = winner or chunks[0]
        fields = {name: getattr(base, name) for name in RunMetadata.model_fields}
        if self.budget is not None or chunk.hit is not None:
            fields["cost"] = sum(c.cost for c in chunks)
        return ClusterRunMetadata.model_construct(
            **fields,
            # a member that is itself a cluster explains its own choice
            routing=chunk.decision or getattr(base, "routing", None),
            cache_hit=chunk.hit is not None,
            hedged=tuple(c.prepared.executor.label for c in chunks) if chunk.hedge else (),
        )

    def _split(
        self, tapes: tuple[QuantumScript, ...], capable: frozenset[int]
    ) -> list[tuple[QuantumExecutor, tuple]]:
        members = self._candidates(set(), capable)
        stats = self._stats()
        free = [
            max(
                (m.max_concurrent or 1)
                - stats[self._index(m)].in_flight
                - stats[self._index(m)].queued,
                0,
            )
            for m in members
        ]
        if not any(free):
            free = [1] * len(members)
        total = sum(free)
        # Largest-remainder shares, then contiguous slices (results reassemble in order).
        exact = [len(tapes) * f / total for f in free]
        shares = [int(x) for x in exact]
        for j in sorted(range(len(members)), key=lambda j: exact[j] - shares[j], reverse=True):
            if sum(shares) == len(tapes):
                break
            shares[j] += 1
        parts, start = [], 0
        for member, share in zip(members, shares, strict=True):
            size = self.chunk_size or share or 1
            for lo in range(start, start + share, size):
                parts.append((member, tapes[lo : min(lo + size, start + share)]))
            start += share
        return parts

    # -- phase 1: caller's thread --------------------------------------------------------

    def prepare(
        self,
        tapes: Sequence[QuantumScript],
        checked: bool = False,
        derivatives: Derivatives | None = None,
    ) -> Prepared:
        with telemetry.batch(self, tapes) as trace:  # members' preparations join it
            with trace.phase("route", self):
                tapes = self.with_shots(tapes)
                capable = self.capable(tapes, derivatives)
                # A derivative batch stays whole: one forward and backward pass on one member.
                spread = self.spread and len(tapes) > 1 and len(capable) > 1
                if spread and derivatives is None:
                    parts: list[tuple[QuantumExecutor, tuple, Decision | None]] = [
                        (m, part, None) for m, part in self._split(tapes, capable)
                    ]
                elif self._policy is not None or self.budget is not None or self.hedge > 1:
                    routes = self._routes(tapes, capable, top=self.hedge)
                    parts = [(member, tapes, decision) for member, decision in routes]
                else:
                    parts = [(self.select(tapes, capable=capable), tapes, None)]
            hedge = len(parts) > 1 and not spread
            chunks: list[_Chunk] = []
            for member, part, decision in parts:
                # Count the batch as in flight from the moment it is routed, so load-aware
                # selectors see the batches that are prepared but not yet started.
                i = self._index(member)
                self._route(i, circuits=len(part))
                try:
                    prepared = member.prepare(part, checked=True, derivatives=derivatives)
                    chunk = _Chunk(part, prepared, capable, decision=decision, hedge=hedge)
                    chunk = self._account(chunk, i)
                    if chunk.hit is not None:  # nothing runs: not in flight after all
                        self._route(i, -1, len(part))
                        for other in chunks:
                            self._route(self._index(other.prepared.executor), -1, len(part))
                        chunks = [dataclasses.replace(chunk, hedge=False)]
                        break
                    chunks.append(chunk)
                except BaseException:
                    self._route(i, -1, len(part))
                    for chunk in chunks:
                        self._route(self._index(chunk.prepared.executor), -1, len(chunk.tapes))
                        self._refund(chunk)  # nothing was sent
                    raise
            if chunks[0].hit is None and self._attachable:
                nonce = call_nonce()
                chunks = [self._keyed(dataclasses.replace(c, batch=f"{nonce}/{n}"))
                          for n, c in enumerate(chunks)]  # fmt: skip
            whole = Prepared(self, chunks, tapes)
            trace.bind(whole, leaf=False)
        return whole

    @property
    def _attachable(self) -> bool:
        """Whether a member re-attaches to its backend's jobs (then batches are recorded)."""
        found = self._runtime.get("attachable")
        if found is None:
            found = self._runtime["attachable"] = any(m.reattachable for m in self.executors)
        return found

    def _keyed(self, chunk: _Chunk) -> _Chunk:
        """``chunk`` with its submission key on its (new) member (caller's thread)."""
        if chunk.batch is None:
            return chunk
        member = chunk.prepared.executor
        label = self.member_labels[self._index(member)]
        return dataclasses.replace(
            chunk, submission=submission_key(member, label, chunk.prepared, chunk.batch)
        )

    def completed_inline(self, prepared: Prepared) -> BatchResult | None:
        chunks: list[_Chunk] = prepared.payload
        if len(chunks) != 1:
            return None
        if chunks[0].hit is not None:
            return BatchResult(chunks[0].hit, self._hit_metadata(chunks[0]))
        member = chunks[0].prepared.executor
        done = member.completed_inline(chunks[0].prepared)
        if done is not None:
            i = self._index(member)
            self._begin(i, routed_to=i, circuits=prepared.num_circuits)
            self._succeeded(i, done.metadata.execution_time, prepared.num_circuits)
            if chunks[0].key is not None:
                self._ledger().cache(chunks[0].key, tuple(done))
            done.metadata = self._metadata(done.metadata, chunks)
        return done

    def raw_parts(self, raw: Sequence[Any]) -> list[RawPart]:
        """The parts of a batch's raw output (what the runner collected for a batch this
        cluster prepared), in the order of the batch's tapes: who ran each, and how it is
        finished (for keeping the raw output as data, e.g. a durable job)."""
        return [
            RawPart(self._index(chunk.prepared.executor), chunk.tapes, chunk.prepared,
                    chunk.hit, out)
            for chunk, out in raw
        ]  # fmt: skip

    def finish(self, tapes: tuple[QuantumScript, ...], raw: Sequence[Any]) -> list[Any]:
        results: list[Any] = []
        for chunk, chunk_raw in raw:
            if chunk.hit is not None:
                results.extend(chunk.hit)
                continue
            done = chunk.prepared.complete(chunk_raw)
            if chunk.key is not None:
                self._ledger().cache(chunk.key, tuple(done))
            results.extend(done)
        return results

    def _hit_metadata(self, chunk: _Chunk) -> ClusterRunMetadata:
        return self._metadata(
            RunMetadata.model_construct(
                executor=chunk.prepared.executor.label,
                backend=chunk.prepared.executor.backend_description,
                num_circuits=len(chunk.tapes),
                execution_time=0.0,
                submitted_at=time.time(),
            ),
            [chunk],
        )

    # -- phase 2: event loop -------------------------------------------------------------

    def routed_label(self, prepared: Prepared) -> str:
        # The member(s) the batch was routed to (failover may move it later).
        return "+".join(dict.fromkeys(c.prepared.executor.label for c in prepared.payload))

    async def submit(self, payload: list[_Chunk]) -> tuple[Any, tuple[str, ...]]:
        return asyncio.ensure_future(self._run_chunks(payload)), ()

    async def collect(self, job: asyncio.Future) -> BatchResult:
        return await job

    async def cancel(self, job: asyncio.Future) -> None:
        job.cancel()  # each member cancels or terminates its own backend work
        await asyncio.gather(job, return_exceptions=True)

    async def _run_chunks(self, chunks: list[_Chunk]) -> BatchResult:
        submitted_at, started = time.time(), time.perf_counter()
        progress = BatchProgress(sum(len(c.tapes) for c in chunks), f"{self.label}")
        progress.start()
        try:
            if chunks[0].hit is not None:
                return BatchResult([(chunks[0], None)], self._hit_metadata(chunks[0]))
            if chunks[0].hedge:
                winner = await self._race(chunks, progress)
                return BatchResult([winner], self._metadata(winner[1].metadata, chunks, winner[0]))
            if len(chunks) == 1:  # no gather: it would wrap the chunk in another task
                done = [await self._run_chunk(chunks[0], progress)]
            else:
                done = await asyncio.gather(*(self._run_chunk(c, progress) for c in chunks))
        finally:
            progress.stop()
        if len(done) == 1:  # the chunk as it ran (failover may have moved and charged it)
            return BatchResult(done, self._metadata(done[0][1].metadata, [done[0][0]]))
        return BatchResult(
            done,
            RunMetadata.model_construct(
                executor="+".join(dict.fromkeys(raw.metadata.executor for _, raw in done)),
                backend=self.backend_description,
                num_circuits=sum(len(c.tapes) for c, _ in done),
                execution_time=time.perf_counter() - started,
                submitted_at=submitted_at,
                job_ids=tuple(j for _, raw in done for j in raw.metadata.job_ids),
                cost=sum(c.cost for c, _ in done) if self.budget is not None else None,
            ),
        )

    async def _race(
        self, chunks: list[_Chunk], progress: BatchProgress
    ) -> tuple[_Chunk, BatchResult]:
        """Run the copies of a hedged batch; the first to succeed wins, the rest are
        cancelled (each member cancels its backend job, as for a cancelled future)."""
        tasks = [asyncio.ensure_future(self._run_chunk(c, progress)) for c in chunks]
        error: BaseException | None = None
        try:
            pending = set(tasks)
            while pending:
                finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    if task.exception() is None:
                        return task.result()
                    error = error or task.exception()
            assert error is not None  # every copy failed
            raise error
        finally:
            losers = [task for task in tasks if not task.done()]
            for task in losers:
                task.cancel()
            await asyncio.gather(*losers, return_exceptions=True)

    def _slots(self) -> asyncio.Condition:
        return per_loop(self._runtime, "slots", asyncio.Condition)

    async def _slot_freed(self) -> None:
        # One slot freed: wake one waiting batch (waking all would make every finished
        # batch cost a pass over every waiting one).
        async with self._slots():
            self._slots().notify(1)

    async def _prepare_elsewhere(self, target: QuantumExecutor, chunk: _Chunk) -> _Chunk:
        # Tape work: on the thread that waits for this batch (PennyLane is not thread-safe).
        prepared = await on_caller_thread(
            telemetry.within(chunk.prepared, target.prepare),  # joins the batch's trace
            chunk.tapes, True, chunk.prepared.derivatives
        )
        moved = dataclasses.replace(chunk, prepared=prepared)
        return await on_caller_thread(self._keyed, moved) if chunk.batch else moved

    async def _bind(self, chunk: _Chunk) -> _Chunk:
        """Start ``chunk`` on a member. Load-aware selectors bind late: the batch waits
        for a free slot (``max_concurrent``) anywhere and goes to the best free member, so
        a slow executor's queue drains to the fast ones."""
        routed_to = self._index(chunk.prepared.executor)
        size = len(chunk.tapes)
        if not self._late_binding:
            self._begin(routed_to, routed_to, size)
            return chunk
        async with self._slots():
            while True:
                with self._lock:
                    now = time.monotonic()
                    members = sorted(chunk.capable)
                    # with every breaker open, still try (the caller gets the real error)
                    pool = [i for i in members if self._available(i, now)] or members
                    stats = self._stats()
                    free = [i for i in pool if stats[i].in_flight < self._capacity(i)]
                if free:
                    break
                # a breaker's cooldown ending frees no slot: look again now and then
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._slots().wait(), BIND_RECHECK)
            target = (
                routed_to
                if routed_to in free
                else self._index(self._select(chunk.tapes, [self.executors[i] for i in free]))
            )
            self._begin(target, routed_to, size)
        if target == routed_to:
            return chunk
        try:
            moved = await self._prepare_elsewhere(self.executors[target], chunk)
        except BaseException:
            self._cancelled(target, size)
            raise
        if self.budget is None:
            return moved
        try:
            return await asyncio.to_thread(self._charge_moved, moved, False)
        except BudgetExceededError:  # the free member costs more than the budget allows:
            self._cancelled(target, size)  # wait on the member it was routed to after all
            self._begin(routed_to, circuits=size)
            return chunk

    async def _to_recorded(self, chunk: _Chunk, label: str, counted: bool) -> _Chunk:
        """``chunk`` on the member ``label`` that accepted it before (its jobs are re-attached,
        not submitted again elsewhere); ``counted``: the chunk counts as begun on its member."""
        labels = self.member_labels
        if label not in labels or labels.index(label) == self._index(chunk.prepared.executor):
            return chunk
        target = labels.index(label)
        if not self.executors[target].reattachable:
            return chunk
        size = len(chunk.tapes)
        if counted:
            self._cancelled(self._index(chunk.prepared.executor), size)
            self._begin(target, circuits=size)
        try:
            return await self._prepare_elsewhere(self.executors[target], chunk)
        except BaseException:
            if counted:
                self._cancelled(target, size)
            raise

    async def _run_chunk(
        self, chunk: _Chunk, progress: BatchProgress
    ) -> tuple[_Chunk, BatchResult]:
        chunk = await self._bind(chunk)
        tried: set[int] = set()
        size = len(chunk.tapes)
        for attempt in range(self.retries + 1):
            record = None
            if chunk.batch is not None:  # accepted before (a retry, a restarted call)?
                record = await asyncio.to_thread(self._ledger().submission, chunk.batch)
                if record is not None:
                    chunk = await self._to_recorded(chunk, record.member, counted=not attempt)
            member = chunk.prepared.executor
            i = self._index(member)
            if attempt:
                self._begin(i, circuits=size)
            started = time.perf_counter()
            sent = asyncio.Event()  # set once the member accepted the chunk (charged rightly)
            try:
                if chunk.batch is not None and chunk.submission is not None and member.reattachable:
                    label = self.member_labels[i]
                    raw = await run_once(
                        member, label, chunk.prepared, chunk.batch, chunk.submission,
                        self._ledger(), record if record and record.member == label else None,
                        sent=sent,
                    )  # fmt: skip
                else:
                    try:
                        handle = await member.runner.submit(chunk.prepared)
                    except Exception as exc:
                        if maybe_delivered(exc):  # a lost reply: the backend may run it
                            sent.set()
                        raise
                    sent.set()
                    raw = await member.runner.collect(handle)
            except asyncio.CancelledError:
                self._cancelled(i, size)
                await self._slot_freed()
                await asyncio.shield(self._refund_unsent(chunk, sent))
                raise
            except Exception as exc:
                await self._slot_freed()
                transient = is_transient(exc)
                self._failed(i, transient, size)
                if not transient or attempt == self.retries:
                    await self._refund_unsent(chunk, sent)
                    if transient:
                        exc.add_note(
                            f"{self.label}: gave up after {attempt + 1} attempts on "
                            f"{sorted({self.member_labels[j] for j in tried | {i}})}"
                        )
                    raise
                tried.add(i)
                delay = min(self.backoff_max, self.backoff * 2**attempt)
                await asyncio.sleep(random.uniform(0, delay))
                # An unsent charge moves with the batch: the budget allows that much more.
                credit = 0.0 if sent.is_set() or chunk.charge is None else chunk.charge.cost
                with telemetry.phase(chunk.prepared, "route", self):  # failover
                    target, decision = self._route_one(chunk.tapes, tried, chunk.capable, credit)
                if target is not member:
                    chunk = await self._prepare_elsewhere(target, chunk)
                if decision is not None:  # metadata.routing explains where it ran, and why
                    chunk = dataclasses.replace(chunk, decision=decision)
                if self.budget is not None and (target is not member or sent.is_set()):
                    try:  # a new submission: charge it
                        chunk = await asyncio.to_thread(self._charge_moved, chunk, sent.is_set())
                    except BudgetExceededError:
                        await self._refund_unsent(chunk, sent)  # its member never had it
                        raise
                continue
            self._succeeded(i, time.perf_counter() - started, len(chunk.tapes))
            await self._slot_freed()
            progress.advance(len(chunk.tapes))
            return chunk, raw
        raise AssertionError("unreachable: the last attempt returns or raises")
