"""The one runner around every backend: everything a batch needs besides the backend itself.

A backend implements the contract in :mod:`qfleet.executors.base` (``translate``, ``submit``,
``collect``, ``cancel``, ``attach``); the :class:`Runner` of each executor owns what goes
around those calls, once for all backends: the concurrency limit (``max_concurrent``) and
submission rate (``rate``, asyncio-throttle), the batch timeout (cancelling the backend work
when it passes), error mapping (foreign exceptions become :class:`ExecutorError` naming the
executor; PennyLane's own errors keep their type), run metadata, telemetry phases, the sync
bridge through the background loop and ``run_later`` futures.

Every way of running a batch (``run_all_circuits``, ``execute``, ``run_later``, Covalent's
``batch_submit``/``batch_get_results``, the device, clusters, durable jobs) goes through
these methods; nothing else calls a backend's ``submit``/``collect``.

Example:
    >>> ex = qfleet.executor.LocalExecutor()
    >>> tape = qml.tape.QuantumScript([qml.RX(0.5, 0)], [qml.expval(qml.Z(0))])
    >>> prepared = ex.prepare([tape])
    >>> result = prepared.executor.runner.run_sync(prepared)
    >>> round(float(result[0]), 6), result.metadata.executor
    (0.877583, 'LocalExecutor')
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from asyncio_throttle import Throttler
from pennylane.exceptions import DeviceError, QuantumFunctionError

import qfleet.telemetry as telemetry
from qfleet.errors import ExecutorError, ExecutorTimeoutError, QFleetError
from qfleet.executors.batch import BatchHandle, BatchResult, Prepared, RunMetadata
from qfleet.executors.faults import unreachable
from qfleet.runtime import get_dispatcher
from qfleet.runtime.background import per_loop
from qfleet.runtime.futures import LazyFuture

if TYPE_CHECKING:
    from qfleet.executors.base import QuantumExecutor

__all__ = ["Runner"]

T = TypeVar("T")


class Runner:
    """Runs prepared batches on one executor (one runner per executor and process)."""

    def __init__(self, executor: QuantumExecutor) -> None:
        self.executor = executor
        self._per_loop: dict[str, Any] = {}  # loop-bound objects (see per_loop)

    def __repr__(self) -> str:
        return f"Runner({self.executor.label!r})"

    # -- loop side -----------------------------------------------------------------------

    def _limits(self) -> tuple[asyncio.Semaphore | None, Throttler | None]:
        return per_loop(self._per_loop, "limits", self._make_limits)

    def _make_limits(self) -> tuple[asyncio.Semaphore | None, Throttler | None]:
        executor = self.executor
        semaphore = None
        if executor.max_concurrent:
            semaphore = asyncio.Semaphore(executor.max_concurrent)
        throttler = None
        if executor.rate:
            per_period = max(1, int(executor.rate))
            throttler = Throttler(rate_limit=per_period, period=per_period / executor.rate)
        return semaphore, throttler

    async def guard(self, work: Awaitable[T]) -> T:
        """Await backend ``work``; foreign exceptions become ExecutorError naming the executor.

        Lost connections and timeouts are transient (a retry may succeed); the rest not.
        PennyLane's own verdict on a circuit (DeviceError, QuantumFunctionError) keeps its type.
        """
        label = self.executor.label
        try:
            return await work
        except (QFleetError, asyncio.CancelledError):
            raise
        except (DeviceError, QuantumFunctionError) as exc:
            exc.add_note(f"raised by executor {label!r}")
            raise
        except Exception as exc:
            transient = unreachable(exc) is not None
            raise ExecutorError(
                f"{type(exc).__name__}: {exc}", executor=label, transient=transient
            ) from exc

    async def submit(self, prepared: Prepared) -> BatchHandle:
        """Submit a prepared batch within the executor's limits; returns once the backend
        has accepted it (the concurrency slot is held until :meth:`collect`)."""
        executor = self.executor
        semaphore, throttler = self._limits()
        with telemetry.phase(prepared, "queue", executor):
            if semaphore is not None:
                await semaphore.acquire()
        try:
            if throttler is not None:
                await throttler.acquire()
            submitted_at, started = time.time(), time.perf_counter()
            with telemetry.phase(prepared, "submit", executor) as span:
                job, job_ids = await self.guard(executor.submit(prepared.payload))
                if job_ids:
                    span.set(job_ids=list(job_ids))
        except BaseException as exc:
            if semaphore is not None:
                semaphore.release()
            telemetry.failed(prepared, exc)
            raise
        return self._handle(prepared, job, job_ids, submitted_at, started, semaphore is not None)

    def attach(
        self, prepared: Prepared, job_ids: Sequence[str], submitted_at: float | None = None
    ) -> BatchHandle:
        """A handle for backend jobs submitted earlier for ``prepared`` (re-attach after a
        crash, see the backend's ``attach``); no tape work, so loop side too."""
        job = self.executor.attach(prepared.payload, job_ids)
        return self._handle(
            prepared, job, job_ids, submitted_at or time.time(), time.perf_counter(), False
        )

    def _handle(
        self,
        prepared: Prepared,
        job: Any,
        job_ids: Sequence[str],
        submitted_at: float,
        started: float,
        limits_held: bool,
    ) -> BatchHandle:
        # model_construct: values made here, no validation on every batch's path
        return BatchHandle.model_construct(
            executor=self.executor.routed_label(prepared),
            num_circuits=prepared.num_circuits,
            submitted_at=submitted_at,
            job_ids=tuple(job_ids),
            job=job,
            started=started,
            limits_held=limits_held,
            prepared=prepared,
            owner=self.executor,
        )

    async def collect(self, handle: BatchHandle) -> BatchResult:
        """Wait for an accepted batch (within the batch timeout); its raw output, one entry
        per planned circuit, with the run's metadata. Frees the concurrency slot."""
        executor = self.executor
        try:
            work = self.guard(executor.collect(handle.job))
            try:
                with telemetry.phase(handle.prepared, "run", executor):
                    results = await asyncio.wait_for(work, executor.batch_timeout)
            except ExecutorError:
                raise  # the backend's own error (ExecutorTimeoutError is a TimeoutError too)
            except TimeoutError as exc:
                await executor.cancel(handle.job)
                raise ExecutorTimeoutError(
                    f"no results after {executor.batch_timeout} s (timeout); raise the "
                    f"executor's timeout or check the backend",
                    executor=executor.label,
                    transient=True,
                ) from exc
            except asyncio.CancelledError:
                await asyncio.shield(executor.cancel(handle.job))
                raise
        except BaseException as exc:
            telemetry.failed(handle.prepared, exc)  # the batch's trace ends with the error
            raise
        finally:
            if handle.limits_held:
                semaphore, _ = self._limits()
                assert semaphore is not None  # limits_held: submit acquired it
                semaphore.release()
                handle.limits_held = False
        if isinstance(results, BatchResult):
            return results  # a delegating executor (a cluster) passes its member's output on
        prepared = handle.prepared
        expected = handle.num_circuits if prepared is None else prepared.num_outputs
        if len(results) != expected:
            raise ExecutorError(
                f"backend returned {len(results)} results for {expected} circuits",
                executor=executor.label,
            )
        metadata = RunMetadata.model_construct(
            executor=executor.label,
            backend=executor.backend_description,
            num_circuits=handle.num_circuits,
            execution_time=time.perf_counter() - handle.started,
            submitted_at=handle.submitted_at,
            job_ids=handle.job_ids,
        )
        if prepared is not None:
            extra = executor.run_metadata(prepared.payload)
            if extra:
                metadata = metadata.model_copy(update=extra)
        return BatchResult(results, metadata)

    async def run(self, prepared: Prepared) -> BatchResult:
        """Submit a prepared batch and wait for its raw output (loop side)."""
        return await self.collect(await self.submit(prepared))

    # -- caller's thread -----------------------------------------------------------------

    def inline(
        self, prepared: Prepared, outputs: Sequence[Any], submitted_at: float, seconds: float
    ) -> BatchResult:
        """Results of a batch the backend simulated while it was prepared (its
        ``completed_inline``): no loop round trip."""
        executor = self.executor
        return prepared.complete(
            BatchResult(
                outputs,
                RunMetadata.model_construct(
                    executor=executor.label,
                    backend=executor.backend_description,
                    num_circuits=prepared.num_circuits,
                    execution_time=seconds,
                    submitted_at=submitted_at,
                ),
            )
        )

    def run_sync(self, prepared: Prepared) -> BatchResult:
        """Run a prepared batch from synchronous code (through the background loop) and
        finish its results on this thread."""
        done = self.executor.completed_inline(prepared)
        if done is not None:
            return done
        return prepared.complete(get_dispatcher().run(self.run(prepared)))

    def run_later(self, prepared: Prepared) -> LazyFuture:
        """Start a prepared batch on the background loop; returns a future at once, whose
        results are finished on the thread that asks for them."""
        return LazyFuture.start(self.run(prepared), prepared.complete)
