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
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, Literal

from pennylane.tape import QuantumScript
from pydantic import BaseModel, Field, PrivateAttr, field_validator, model_validator

from qfleet.cluster.selectors import SELECTORS, SelectorFn
from qfleet.errors import ExecutorError, QFleetError, UnsupportedCircuitError
from qfleet.executors.base import (
    BatchHandle,
    BatchResult,
    Capabilities,
    Prepared,
    QuantumExecutor,
    RunMetadata,
)
from qfleet.runtime.caller import on_caller_thread
from qfleet.runtime.progress import BatchProgress
from qfleet.sampling import BatchShape

#: Weight of the newest latency in the exponentially weighted mean.
EWMA_WEIGHT = 0.3
#: Seconds between checks for a free member while a late-bound batch waits.
BIND_RECHECK = 0.25


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
    ewma_latency: float | None = None
    """Exponentially weighted seconds per circuit."""
    state: Literal["healthy", "open", "half-open"] = "healthy"
    opened_at: float = 0.0
    probing: bool = False


@dataclasses.dataclass(frozen=True)
class _Chunk:
    """Part of a batch: the cluster-level tapes and their preparation for one member."""

    tapes: tuple[QuantumScript, ...]
    prepared: Prepared
    capable: frozenset[int]
    """The members that can run these tapes (failover and late binding stay inside)."""


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
    selector: str | Callable = "cyclic"
    spread: bool = False
    chunk_size: int | None = Field(default=None, gt=0)
    retries: int = Field(default=3, ge=0)
    """Transient failures retried per batch (on another executor when there is one)."""
    backoff: float = Field(default=0.05, ge=0)
    """First retry delay in seconds; doubles per retry, with full jitter."""
    backoff_max: float = Field(default=2.0, ge=0)
    breaker_threshold: int = Field(default=3, gt=0)
    breaker_cooldown: float = Field(default=30.0, ge=0)

    backend_kind = "cluster"

    _selector_fn: SelectorFn = PrivateAttr()

    @field_validator("executors", mode="before")
    @classmethod
    def _non_empty(cls, value: Any) -> Any:
        if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 0:
            raise ValueError("a QuantumCluster needs at least one executor, got an empty list")
        return value

    @field_validator("selector")
    @classmethod
    def _known_selector(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in SELECTORS:
            raise ValueError(
                f"unknown selector {value!r}; use one of {sorted(SELECTORS)} or a callable "
                f"f(tapes, executors) -> executor"
            )
        return value

    @model_validator(mode="after")
    def _member_limits_only(self) -> QuantumCluster:
        for field in ("max_concurrent", "rate"):
            if getattr(self, field) is not None:
                raise ValueError(
                    f"set {field} on the cluster's executors, not on the cluster itself"
                )
        return self

    def model_post_init(self, context: Any) -> None:
        self._selector_fn = (
            SELECTORS[self.selector]() if isinstance(self.selector, str) else self.selector
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

    def capable(self, tapes: Sequence[QuantumScript]) -> frozenset[int]:
        """Indices of the members that can run ``tapes``, checked before anything is sent.

        Exact tapes go to members with exact results when there are any (a shots-only
        member would return estimates). Raises UnsupportedCircuitError naming every
        member's reason when none can run them.
        """
        shape = BatchShape.of(tapes)  # one pass over the batch for every member
        reasons = [
            member.why_not_shape(shape) if member.shots is None else member.why_not(tapes)
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
        """Per executor: batches in flight, done, failed, mean latency, breaker state."""
        with self._lock:
            now = time.monotonic()
            for i in range(len(self.executors)):
                self._available(i, now)
            return {
                label: ExecutorHealth(
                    executor=label,
                    state=s.state,
                    in_flight=s.in_flight,
                    done=s.done,
                    failed=s.failed,
                    mean_latency=s.latency_total / s.done if s.done else None,
                )
                for label, s in zip(self.member_labels, self._stats(), strict=True)
            }

    def _capacity(self, i: int) -> float:
        return self.executors[i].max_concurrent or math.inf

    def _route(self, i: int, delta: int = 1) -> None:
        with self._lock:
            self._stats()[i].queued += delta

    def _begin(self, i: int, routed_to: int | None = None) -> None:
        """Batch starts on member ``i`` (leaving the queue of ``routed_to``, if given)."""
        with self._lock:
            if routed_to is not None:
                self._stats()[routed_to].queued -= 1
            stats = self._stats()[i]
            stats.in_flight += 1
            if stats.state == "half-open":
                stats.probing = True

    def _succeeded(self, i: int, seconds: float, circuits: int) -> None:
        with self._lock:
            stats = self._stats()[i]
            stats.in_flight -= 1
            stats.done += 1
            stats.latency_total += seconds
            per_circuit = seconds / max(circuits, 1)
            stats.ewma_latency = (
                per_circuit
                if stats.ewma_latency is None
                else (1 - EWMA_WEIGHT) * stats.ewma_latency + EWMA_WEIGHT * per_circuit
            )
            stats.consecutive_failures = 0
            stats.state, stats.probing = "healthy", False

    def _failed(self, i: int, transient: bool) -> None:
        with self._lock:
            stats = self._stats()[i]
            stats.in_flight -= 1
            stats.failed += 1
            stats.probing = False
            if not transient:  # the batch was bad, not the executor
                return
            stats.consecutive_failures += 1
            if stats.state == "half-open" or stats.consecutive_failures >= self.breaker_threshold:
                stats.state, stats.opened_at = "open", time.monotonic()

    def _cancelled(self, i: int) -> None:
        with self._lock:
            stats = self._stats()[i]
            stats.in_flight -= 1
            stats.probing = False

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
    ) -> QuantumExecutor:
        """The executor that will run ``tapes`` (``exclude``: member indices to avoid;
        ``capable``: the members that can run them, default: asked here)."""
        if capable is None:
            capable = self.capable(tapes)
        candidates = self._candidates(set(exclude), capable)
        chosen = self._select(tapes, candidates)
        self._index(chosen)  # raises SelectorError for a foreign executor
        return chosen

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

    def prepare(self, tapes: Sequence[QuantumScript], checked: bool = False) -> Prepared:
        tapes = self.with_shots(tapes)
        capable = self.capable(tapes)
        if self.spread and len(tapes) > 1 and len(capable) > 1:
            parts = self._split(tapes, capable)
        else:
            parts = [(self.select(tapes, capable=capable), tapes)]
        chunks: list[_Chunk] = []
        for member, part in parts:
            # Count the batch as in flight from the moment it is routed, so load-aware
            # selectors see the batches that are prepared but not yet started.
            i = self._index(member)
            self._route(i)
            try:
                chunks.append(_Chunk(part, member.prepare(part, checked=True), capable))
            except BaseException:
                self._route(i, -1)
                for chunk in chunks:
                    self._route(self._index(chunk.prepared.executor), -1)
                raise
        return Prepared(self, chunks, tapes)

    def completed_inline(self, prepared: Prepared) -> BatchResult | None:
        chunks: list[_Chunk] = prepared.payload
        if len(chunks) != 1:
            return None
        member = chunks[0].prepared.executor
        done = member.completed_inline(chunks[0].prepared)
        if done is not None:
            i = self._index(member)
            self._begin(i, routed_to=i)
            self._succeeded(i, done.metadata.execution_time, prepared.num_circuits)
        return done

    def finish(self, tapes: tuple[QuantumScript, ...], raw: Sequence[Any]) -> list[Any]:
        results: list[Any] = []
        for chunk, chunk_raw in raw:
            results.extend(chunk.prepared.complete(chunk_raw))
        return results

    # -- phase 2: event loop -------------------------------------------------------------

    async def submit_prepared(self, prepared: Prepared) -> BatchHandle:
        handle = await super().submit_prepared(prepared)
        # Name the member(s) the batch was routed to (failover may move it later).
        handle.executor = "+".join(
            dict.fromkeys(c.prepared.executor.label for c in prepared.payload)
        )
        return handle

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
            if len(chunks) == 1:  # no gather: it would wrap the chunk in another task
                done = [await self._run_chunk(chunks[0], progress)]
            else:
                done = await asyncio.gather(*(self._run_chunk(c, progress) for c in chunks))
        finally:
            progress.stop()
        if len(done) == 1:
            return BatchResult(done, done[0][1].metadata)
        return BatchResult(
            done,
            RunMetadata.model_construct(
                executor="+".join(dict.fromkeys(raw.metadata.executor for _, raw in done)),
                backend=self.backend_description,
                num_circuits=sum(len(c.tapes) for c, _ in done),
                execution_time=time.perf_counter() - started,
                submitted_at=submitted_at,
                job_ids=tuple(j for _, raw in done for j in raw.metadata.job_ids),
            ),
        )

    def _slots(self) -> asyncio.Condition:
        key = ("slots", id(asyncio.get_running_loop()))
        if key not in self._runtime:
            self._runtime[key] = asyncio.Condition()
        return self._runtime[key]

    async def _slot_freed(self) -> None:
        # One slot freed: wake one waiting batch (waking all would make every finished
        # batch cost a pass over every waiting one).
        async with self._slots():
            self._slots().notify(1)

    async def _prepare_elsewhere(self, target: QuantumExecutor, chunk: _Chunk) -> _Chunk:
        # Tape work: on the thread that waits for this batch (PennyLane is not thread-safe).
        prepared = await on_caller_thread(target.prepare, chunk.tapes, True)
        return _Chunk(chunk.tapes, prepared, chunk.capable)

    async def _bind(self, chunk: _Chunk) -> _Chunk:
        """Start ``chunk`` on a member. Load-aware selectors bind late: the batch waits
        for a free slot (``max_concurrent``) anywhere and goes to the best free member, so
        a slow executor's queue drains to the fast ones."""
        routed_to = self._index(chunk.prepared.executor)
        if not self._late_binding:
            self._begin(routed_to, routed_to)
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
            self._begin(target, routed_to)
        if target == routed_to:
            return chunk
        try:
            return await self._prepare_elsewhere(self.executors[target], chunk)
        except BaseException:
            self._cancelled(target)
            raise

    async def _run_chunk(
        self, chunk: _Chunk, progress: BatchProgress
    ) -> tuple[_Chunk, BatchResult]:
        chunk = await self._bind(chunk)
        tried: set[int] = set()
        for attempt in range(self.retries + 1):
            member = chunk.prepared.executor
            i = self._index(member)
            if attempt:
                self._begin(i)
            started = time.perf_counter()
            try:
                raw = await member.run_raw(chunk.prepared)
            except asyncio.CancelledError:
                self._cancelled(i)
                await self._slot_freed()
                raise
            except Exception as exc:
                await self._slot_freed()
                transient = is_transient(exc)
                self._failed(i, transient)
                if not transient:
                    raise
                if attempt == self.retries:
                    exc.add_note(
                        f"{self.label}: gave up after {attempt + 1} attempts on "
                        f"{sorted({self.member_labels[j] for j in tried | {i}})}"
                    )
                    raise
                tried.add(i)
                delay = min(self.backoff_max, self.backoff * 2**attempt)
                await asyncio.sleep(random.uniform(0, delay))
                target = self.select(chunk.tapes, exclude=tried, capable=chunk.capable)
                if target is not member:
                    chunk = await self._prepare_elsewhere(target, chunk)
                continue
            self._succeeded(i, time.perf_counter() - started, len(chunk.tapes))
            await self._slot_freed()
            progress.advance(len(chunk.tapes))
            return chunk, raw
        raise AssertionError("unreachable: the last attempt returns or raises")
