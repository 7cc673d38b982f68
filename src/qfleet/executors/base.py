"""The executor contract every backend implements, and the result model.

An executor runs a batch of PennyLane tapes in three phases:

1. ``prepare(tapes)`` on the caller's thread: apply the executor's shots, plan the batch
   for the backend's :class:`~qfleet.sampling.Capabilities` (one
   :class:`~qfleet.sampling.SamplingPlan` for every backend: broadcasting, mid-circuit
   measurements, diagonalization, native gates), ``translate`` the plan's circuits.
2. on an event loop: ``submit`` (job ids once accepted), ``collect`` (wait, fetch one raw
   output per circuit), ``cancel``; ``attach`` rebuilds a job from its ids after a crash.
   Only I/O and waiting: PennyLane is not thread-safe, so no tape work here.
3. on the caller's thread again: ``decode`` the raw output (Samples, Counts, State,
   Values) and let the plan turn it into PennyLane results.

The public async API (``run_circuit``, ``batch_submit``, ``batch_get_results``,
``run_all_circuits``) and the sync wrappers are built on those two phases.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from asyncio_throttle import Throttler
from pennylane.exceptions import DeviceError, QuantumFunctionError
from pennylane.measurements import Shots
from pennylane.tape import QuantumScript
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, field_validator

import qfleet.telemetry as telemetry
from qfleet.config.logs import remember, remember_in
from qfleet.errors import ExecutorError, ExecutorTimeoutError, QFleetError, UnsupportedCircuitError
from qfleet.executors.status import PERFECT, ExecutorStatus, Price
from qfleet.runtime import get_dispatcher
from qfleet.runtime.futures import LazyFuture
from qfleet.sampling import (
    ALL_MEASUREMENTS,
    SAMPLING_MEASUREMENTS,
    BatchShape,
    Capabilities,
    RawOutput,
    SamplingPlan,
    measurement_kind,
    needs_backend_support,
)
from qfleet.sampling.derivatives import Derivatives

__all__ = [
    "ALL_MEASUREMENTS",
    "SAMPLING_MEASUREMENTS",
    "BatchHandle",
    "BatchResult",
    "Capabilities",
    "Prepared",
    "QuantumExecutor",
    "RunMetadata",
    "measurement_kind",
]


class RunMetadata(BaseModel):
    """Where and how a batch ran."""

    executor: str
    backend: str
    num_circuits: int
    execution_time: float
    """Seconds from submission to results."""
    submitted_at: float
    """Unix time of submission."""
    job_ids: tuple[str, ...] = ()
    shots: tuple[int | None, ...] = ()
    """Per tape: the shots its circuits ran on the backend (None: exact)."""
    cost: float | None = None
    """Estimated price of the batch (the executor's ``price``; None: unknown)."""
    compile: dict[str, Any] | None = None
    """What compiling for the backend's chip did (2300, Quantum Inspire): ``seconds``,
    ``cached`` circuits, ``swaps`` and ``added_two_qubit_gates``; None: not compiled."""


class BatchResult(tuple):
    """The results of a batch, in PennyLane's structure, with ``metadata`` attached.

    It is a tuple (one entry per tape), so it can be handed to PennyLane as is.
    """

    metadata: RunMetadata

    def __new__(cls, results: Sequence[Any], metadata: RunMetadata) -> BatchResult:
        obj = super().__new__(cls, results)
        obj.metadata = metadata
        return obj

    def __reduce__(self):
        return (BatchResult, (tuple(self), self.metadata))


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A batch translated for one executor, ready to run on an event loop."""

    executor: QuantumExecutor
    payload: Any
    tapes: tuple[QuantumScript, ...]
    plan: SamplingPlan | None = None
    """How the tapes became the backend's circuits (None: a delegating executor)."""
    derivatives: Derivatives | None = None
    """The simulator derivatives the batch asks for (None: results only)."""

    @property
    def num_circuits(self) -> int:
        return len(self.tapes)

    @property
    def num_outputs(self) -> int:
        """Raw outputs the backend returns: one per planned circuit."""
        return len(self.plan.circuits) if self.plan is not None else len(self.tapes)

    def complete(self, raw: BatchResult) -> BatchResult:
        """Raw backend output -> PennyLane results (call on the caller's thread)."""
        with telemetry.finishing(self, raw):
            if self.plan is None:
                return BatchResult(self.executor.finish(self.tapes, raw), raw.metadata)
            if self.plan.is_passthrough:
                return raw
            outputs = self.executor.decode(self.plan.circuits, raw)
            metadata = raw.metadata.model_copy(update={"shots": self.plan.shots_used})
            return BatchResult(self.plan.results(outputs), metadata)


class BatchHandle(BaseModel):
    """Returned by ``batch_submit`` once the backend has accepted the work."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    executor: str
    num_circuits: int
    submitted_at: float
    job_ids: tuple[str, ...] = ()
    job: Any = Field(default=None, repr=False, exclude=True)
    prepared: Any = Field(default=None, repr=False, exclude=True)
    owner: Any = Field(default=None, repr=False, exclude=True)
    """The executor that accepted the batch (a cluster member for cluster batches)."""
    started: float = Field(default=0.0, repr=False)
    limits_held: bool = Field(default=False, repr=False)


def _validate_shots(value: Any) -> Any:
    if value is None:
        return None
    problem = ValueError(
        f"shots must be None, a positive integer or a shot vector of positive integers "
        f"(e.g. 1024 or [100, 1000]), got {value!r}"
    )
    if isinstance(value, bool):
        raise problem
    try:
        shots = Shots(value)
    except Exception as exc:  # Shots raises several types for bad input
        raise problem from exc
    if any(
        type(sc.shots) is not int or sc.shots <= 0 or sc.copies <= 0 for sc in shots.shot_vector
    ):
        raise problem
    return value


class QuantumExecutor(BaseModel):
    """Base class of every qfleet executor.

    Holds only picklable configuration; sockets, pools and sessions live in a per-process
    cache that is dropped when the executor is pickled.

    Example:
        >>> ex = qfleet.executor.LocalExecutor()
        >>> tape = qml.tape.QuantumScript([qml.RX(0.5, 0)], [qml.expval(qml.Z(0))])
        >>> ex.run_circuit_sync(tape)
        np.float64(0.87758256189...)
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    name: str | None = None
    """Shown in errors, metadata and health reports; defaults to the class name."""
    shots: int | list[int | tuple[int, int]] | None = None
    """None: use the QNode's shots. An int or a shot vector overrides them."""
    max_concurrent: int | None = Field(default=None, gt=0)
    """Most batches in flight at once on this executor (None: no limit)."""
    rate: float | None = Field(default=None, gt=0)
    """Most submissions per second (asyncio-throttle); None: no limit."""
    timeout: float | None = Field(default=None, gt=0)
    """Seconds to wait for one batch's results before raising ExecutorTimeoutError."""
    price: Price | None = None
    """What a batch costs here (``qf.Price``); providers don't serve prices, users know theirs."""

    backend_kind: ClassVar[str] = "executor"
    resubmits_idempotently: ClassVar[bool] = False
    """Whether submitting again under the same idempotency key (``qfleet.executors.
    idempotency.submitting``) returns the jobs the backend already has, never a second copy
    (a protocol handle chosen by the client: Azure Quantum job ids, Braket's clientToken)."""

    _runtime_cache: dict = PrivateAttr(default_factory=dict)

    @property
    def _runtime(self) -> dict:
        """Per-process cache (pools, sockets, sessions, statistics); never pickled.

        A property because pydantic finds private attributes through a slow __getattr__,
        and this is on every batch's path.
        """
        # pydantic types __pydantic_private__ as Optional; a model with private attributes has it
        return self.__pydantic_private__["_runtime_cache"]  # type: ignore[index]

    # -- configuration -------------------------------------------------------------------

    def __init__(self, /, **data: Any) -> None:
        # Config-file and environment defaults are merged here, not in a validator: pydantic
        # turns a ValueError raised inside validation (ConfigError is one) into a
        # ValidationError, and callers could no longer catch ConfigError.
        from qfleet.config import executor_defaults  # config imports executors' field lists

        defaults = executor_defaults(type(self))
        try:
            super().__init__(**({**defaults, **data} if defaults else data))
        except ValueError as exc:  # a bad value from the environment or file: name its source
            from qfleet.config.loader import configured_value_error

            error = configured_value_error(type(self), exc, data) if defaults else None
            if error is None:
                raise
            raise error from exc
        remember_in(self)  # its secrets are masked in qfleet's logs from now on

    @field_validator("shots", mode="before")
    @classmethod
    def _check_shots(cls, value: Any) -> Any:
        return _validate_shots(value)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        # Per-process resources (pools, locks, sockets) never travel, and neither do
        # secrets: an unpickled executor (on a workflow worker) reads its token from that
        # process's config file or environment.
        state["__pydantic_private__"] = {
            **(state.get("__pydantic_private__") or {}),
            "_runtime_cache": {},
        }
        state["__dict__"] = {k: _without_secrets(v) for k, v in state["__dict__"].items()}
        return state

    def secret(self, *path: str) -> str | None:
        """A secret's value, e.g. ``secret("token")`` or ``secret("credentials",
        "client_secret")``: this executor's own, else this process's config file or
        environment (an unpickled executor carries no secrets), else None."""

        def lookup(value: Any) -> Any:
            for key in path:
                if value is None:
                    return None
                value = value.get(key) if isinstance(value, dict) else getattr(value, key, None)
            return value

        value = lookup(self)
        if value is None:
            from qfleet.config import executor_defaults

            value = lookup(executor_defaults(type(self)))
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        remember(value)  # read from the config or environment: masked in logs too
        return value or None

    @property
    def label(self) -> str:
        """The executor's name, or its class name."""
        return self.name or type(self).__name__

    @property
    def capabilities(self) -> Capabilities:
        """What the backend runs (default: a PennyLane simulator taking tapes as they are)."""
        return SIMULATOR_CAPABILITIES

    @property
    def backend_description(self) -> str:
        """A short description of the backend, for metadata."""
        return self.backend_kind

    def status(self) -> ExecutorStatus:
        """Live status: available (or why not), queue, calibration, price. Backends that
        publish these override it (it may block on I/O: clusters call it from a background
        thread, never on a batch's path). Default: available; an exact simulator is
        noiseless."""
        exact = self.capabilities.analytic and self.shots is None
        return ExecutorStatus(
            executor=self.label, price=self.price, calibration=PERFECT if exact else None
        )

    def supports_operation(self, op: Any) -> bool:
        """Whether the backend runs ``op`` natively. The device asks only about operators
        with neither a matrix nor a decomposition (e.g. QubitDensityMatrix, noise channels);
        gates are the business of the executor's own preprocessing. Default: no."""
        return False

    @property
    def batch_timeout(self) -> float | None:
        """Seconds ``batch_get_results`` waits for a batch; default ``timeout``. Executors
        whose ``timeout`` bounds each request (not the batch) return None."""
        return self.timeout

    def __repr__(self) -> str:  # pydantic's repr lists every field; keep the set ones
        fields = ", ".join(
            f"{k}={getattr(self, k)!r}"
            for k in self.model_fields_set
            if k in type(self).model_fields
        )
        return f"{type(self).__name__}({fields})"

    # -- phase 1: caller's thread --------------------------------------------------------

    def with_shots(self, tapes: Sequence[QuantumScript]) -> tuple[QuantumScript, ...]:
        """The tapes with this executor's ``shots`` applied (unchanged when shots is None)."""
        if self.shots is None:
            return tuple(tapes)
        shots = Shots(self.shots)
        return tuple(t if t.shots == shots else t.copy(shots=shots) for t in tapes)

    def check(self, tapes: Sequence[QuantumScript]) -> None:
        """Raise UnsupportedCircuitError if a tape needs something this executor lacks
        (the cluster asks before routing; nothing has been sent)."""
        reason = self.why_not_shape(BatchShape.of(tapes))
        if reason:
            raise UnsupportedCircuitError(f"{self.label} cannot run this circuit: {reason}")

    def why_not(self, tapes: Sequence[QuantumScript]) -> str | None:
        """Why this executor cannot run ``tapes`` (after its own shots), or None."""
        return self.why_not_shape(BatchShape.of(self.with_shots(tapes)))

    def why_not_shape(self, shape: BatchShape) -> str | None:
        """:meth:`why_not` for a batch's shape (its tapes with this executor's shots)."""
        caps = self.capabilities
        for tape in shape.tapes:
            reason = caps.why_not(tape)
            if reason:
                return reason
        for op in shape.operators:
            if needs_backend_support(op) and not self.supports_operation(op):
                return f"it cannot run {op.name}, which has neither a matrix nor a decomposition"
        return None

    def plan(self, tapes: Sequence[QuantumScript], checked: bool = False) -> SamplingPlan:
        """The sampling plan of ``tapes`` for this backend (caller's thread); ``checked``:
        the tapes were already checked against this executor (a cluster routed them)."""
        caps = self.capabilities
        if caps.takes_tapes:
            # A full PennyLane simulator judges the tapes itself (DeviceError, as on
            # default.qubit); limits declared on top of it are checked here.
            if not checked and caps.declares_limits:
                self.check(tapes)
            return SamplingPlan.passthrough(tapes)
        return SamplingPlan.build(
            tapes,
            caps,
            executor=self.label,
            accepts=self.supports_operation,
            seed=getattr(self, "seed", None),
        )

    def prepare(
        self,
        tapes: Sequence[QuantumScript],
        checked: bool = False,
        derivatives: Derivatives | None = None,
    ) -> Prepared:
        """Apply shots, plan and translate ``tapes`` (caller's thread); ``checked``: see
        :meth:`plan`; ``derivatives``: the simulator derivatives to compute with them."""
        with telemetry.batch(self, tapes) as trace, trace.phase("prepare", self):
            if derivatives is not None and not checked:
                reason = self.capabilities.why_not_derivatives(derivatives)
                if reason:
                    raise UnsupportedCircuitError(f"{self.label}: {reason}")
            plan = self.plan(self.with_shots(tapes), checked=checked)
            try:
                if derivatives is None:
                    payload = self.translate(plan.circuits)
                else:
                    payload = self.translate_derivatives(plan.circuits, derivatives)
            except Exception as exc:
                # Keep the type (callers may catch PennyLane's own errors); name the executor.
                exc.add_note(f"raised by executor {self.label!r} while preparing the batch")
                raise
            prepared = Prepared(self, payload, plan.tapes, plan, derivatives)
            trace.bind(prepared)  # the loop side and the results find the batch's trace
        return prepared

    def translate(self, circuits: tuple[QuantumScript, ...]) -> Any:
        """Turn the plan's circuits into the backend's input. Default: the circuits."""
        return circuits

    def translate_derivatives(
        self, circuits: tuple[QuantumScript, ...], derivatives: Derivatives
    ) -> Any:
        """:meth:`translate` for a batch that asks for the simulator's derivatives
        (executors whose capabilities list ``derivatives``); ``collect`` then returns, per
        circuit, what ``derivatives.mode`` names."""
        raise UnsupportedCircuitError(
            f"{self.label} computes no {derivatives.method} derivatives itself"
        )

    def finish(self, tapes: tuple[QuantumScript, ...], raw: Sequence[Any]) -> Sequence[Any]:
        """Results of a batch prepared without a plan: a delegating executor (a cluster)
        finishes its members' output here. Default: the raw output is the results."""
        return raw

    def decode(
        self, circuits: tuple[QuantumScript, ...], raw: Sequence[Any]
    ) -> Sequence[RawOutput]:
        """The backend's raw output (one entry per circuit, from ``collect``) as
        Samples/Counts/State/Values; runs on the caller's thread. Default: as it is."""
        return raw

    # -- phase 2: event loop -------------------------------------------------------------

    # The backend contract: submit, collect, cancel, attach. The runner methods below
    # (limits, timeouts, metadata, the sync bridge) call them; nothing else does.

    async def submit(self, payload: Any) -> tuple[Any, tuple[str, ...]]:
        """Submit ``payload``; return (job, job ids) once the backend has accepted it."""
        raise NotImplementedError(f"{type(self).__name__} must implement submit")

    async def collect(self, job: Any) -> Sequence[Any]:
        """Wait for ``job``; its raw output, one entry per planned circuit (see ``decode``)."""
        raise NotImplementedError(f"{type(self).__name__} must implement collect")

    async def cancel(self, job: Any) -> None:  # optional hook
        """Cancel ``job`` on the backend (default: nothing to cancel)."""

    def attach(self, payload: Any, job_ids: Sequence[str]) -> Any:
        """The job of an earlier submission of the same payload, from its backend job ids
        (re-attach after a crash); backends that cannot re-attach leave this out."""
        raise NotImplementedError(f"{type(self).__name__} cannot re-attach to backend jobs")

    @property
    def can_attach(self) -> bool:
        """Whether jobs of this backend can be re-attached by id (see ``attach``)."""
        return type(self).attach is not QuantumExecutor.attach

    @property
    def reattachable(self) -> bool:
        """Whether ``attach`` reaches the backend's own jobs, which outlive this process, so a
        cluster records accepted batches and re-attaches to them instead of submitting again
        (see ``qfleet.cluster.idempotency``). Default False: no jobs, or an ``attach`` that
        runs the batch again (the 2300 keeps nothing after its session)."""
        return False

    def reattach(
        self,
        tapes: Sequence[QuantumScript],
        job_ids: Sequence[str],
        submitted_at: float | None = None,
    ) -> BatchHandle:
        """A handle for backend jobs submitted earlier for the same tapes (``handle.job_ids``
        or ``metadata.job_ids``, e.g. from another process that died):
        ``await ex.batch_get_results(handle)``."""
        return self.attach_prepared(self.prepare(tapes), job_ids, submitted_at)

    def attach_prepared(
        self, prepared: Prepared, job_ids: Sequence[str], submitted_at: float | None = None
    ) -> BatchHandle:
        """:meth:`reattach` for a batch already prepared here (no tape work: loop side too)."""
        return BatchHandle.model_construct(
            executor=self.label,
            num_circuits=prepared.num_circuits,
            submitted_at=submitted_at or time.time(),
            job_ids=tuple(job_ids),
            job=self.attach(prepared.payload, job_ids),
            started=time.perf_counter(),
            limits_held=False,
            prepared=prepared,
            owner=self,
        )

    def results_of(self, tapes: Sequence[QuantumScript], job_ids: Sequence[str]) -> BatchResult:
        """Re-attach to the backend jobs ``job_ids`` of ``tapes`` and return their results
        (waits for them; synchronous)."""
        handle = self.reattach(tapes, job_ids)
        return handle.prepared.complete(get_dispatcher().run(self.collect_raw(handle)))

    def _limits(self) -> tuple[asyncio.Semaphore | None, Throttler | None]:
        # Loop-bound objects: one set per event loop, kept in the per-process cache.
        loop = asyncio.get_running_loop()
        key = ("limits", id(loop))
        if key not in self._runtime:
            semaphore = asyncio.Semaphore(self.max_concurrent) if self.max_concurrent else None
            throttler = None
            if self.rate:
                per_period = max(1, int(self.rate))
                throttler = Throttler(rate_limit=per_period, period=per_period / self.rate)
            self._runtime[key] = (semaphore, throttler)
        return self._runtime[key]

    async def submit_prepared(self, prepared: Prepared) -> BatchHandle:
        """Submit a prepared batch; returns once the backend has accepted it."""
        semaphore, throttler = self._limits()
        with telemetry.phase(prepared, "queue", self):
            if semaphore is not None:
                await semaphore.acquire()
        try:
            if throttler is not None:
                await throttler.acquire()
            submitted_at, started = time.time(), time.perf_counter()
            with telemetry.phase(prepared, "submit", self) as span:
                job, job_ids = await self._guard(self.submit(prepared.payload))
                if job_ids:
                    span.set(job_ids=list(job_ids))
        except BaseException as exc:
            if semaphore is not None:
                semaphore.release()
            telemetry.failed(prepared, exc)
            raise
        # model_construct: values made here, no validation on every batch's path
        return BatchHandle.model_construct(
            executor=self.label,
            num_circuits=prepared.num_circuits,
            submitted_at=submitted_at,
            job_ids=tuple(job_ids),
            job=job,
            started=started,
            limits_held=semaphore is not None,
            prepared=prepared,
            owner=self,
        )

    async def batch_get_results(self, handle: BatchHandle) -> BatchResult:
        """Wait for a submitted batch and return its results with metadata."""
        if handle.owner is not None and handle.owner is not self:
            return await handle.owner.batch_get_results(handle)
        return handle.prepared.complete(await self.collect_raw(handle))

    async def collect_raw(self, handle: BatchHandle) -> BatchResult:
        try:
            collect = self._guard(self.collect(handle.job))
            try:
                with telemetry.phase(handle.prepared, "run", self):
                    results = await asyncio.wait_for(collect, self.batch_timeout)
            except ExecutorError:
                raise  # the backend's own error (ExecutorTimeoutError is a TimeoutError too)
            except TimeoutError as exc:
                await self.cancel(handle.job)
                raise ExecutorTimeoutError(
                    f"no results after {self.batch_timeout} s (timeout); raise the executor's "
                    f"timeout or check the backend",
                    executor=self.label,
                    transient=True,
                ) from exc
            except asyncio.CancelledError:
                await asyncio.shield(self.cancel(handle.job))
                raise
        except BaseException as exc:
            telemetry.failed(handle.prepared, exc)  # the batch's trace ends with the error
            raise
        finally:
            if handle.limits_held:
                semaphore, _ = self._limits()
                assert semaphore is not None  # limits_held: this call acquired it
                semaphore.release()
                handle.limits_held = False
        if isinstance(results, BatchResult):
            return results  # a delegating executor (a cluster) passes its member's output on
        expected = handle.num_circuits if handle.prepared is None else handle.prepared.num_outputs
        if len(results) != expected:
            raise ExecutorError(
                f"backend returned {len(results)} results for {expected} circuits",
                executor=self.label,
            )
        return BatchResult(
            results,
            RunMetadata.model_construct(
                executor=self.label,
                backend=self.backend_description,
                num_circuits=handle.num_circuits,
                execution_time=time.perf_counter() - handle.started,
                submitted_at=handle.submitted_at,
                job_ids=handle.job_ids,
            ),
        )

    async def run_raw(self, prepared: Prepared) -> BatchResult:
        """Submit a prepared batch and wait for its raw output (loop side only)."""
        return await self.collect_raw(await self.submit_prepared(prepared))

    async def run_prepared(self, prepared: Prepared) -> BatchResult:
        """Submit a prepared batch and wait for its results."""
        return prepared.complete(await self.run_raw(prepared))

    def completed_inline(self, prepared: Prepared) -> BatchResult | None:
        """The results, if ``prepare`` already computed them (nothing left to wait for)."""
        return None

    def inline_results(
        self, prepared: Prepared, outputs: Sequence[Any], submitted_at: float, seconds: float
    ) -> BatchResult:
        """Results of a batch simulated on the caller's thread (for ``completed_inline``)."""
        return prepared.complete(
            BatchResult(
                outputs,
                RunMetadata.model_construct(
                    executor=self.label,
                    backend=self.backend_description,
                    num_circuits=prepared.num_circuits,
                    execution_time=seconds,
                    submitted_at=submitted_at,
                ),
            )
        )

    def run_prepared_sync(self, prepared: Prepared) -> BatchResult:
        """Run a prepared batch from synchronous code (through the background loop)."""
        done = self.completed_inline(prepared)
        if done is not None:
            return done
        return prepared.complete(get_dispatcher().run(self.run_raw(prepared)))

    def run_prepared_later(self, prepared: Prepared) -> LazyFuture:
        """Start a prepared batch on the background loop; returns a future at once.

        Its result is finished (raw -> PennyLane results) on the thread that asks for it.
        """
        return LazyFuture.start(self.run_raw(prepared), prepared.complete)

    def run_later(self, tapes: Sequence[QuantumScript]) -> LazyFuture:
        """Prepare ``tapes`` here and run them on the background loop; returns a future."""
        prepared = self.prepare(tapes)
        return prepared.executor.run_prepared_later(prepared)

    async def _guard(self, coro):
        """Await ``coro``; foreign exceptions become ExecutorError naming this executor.

        Lost connections and timeouts are transient (a retry may succeed); the rest not.
        """
        try:
            return await coro
        except (QFleetError, asyncio.CancelledError):
            raise
        except (DeviceError, QuantumFunctionError) as exc:
            # PennyLane's own verdict on the circuit (from a simulator): keep its type.
            exc.add_note(f"raised by executor {self.label!r}")
            raise
        except Exception as exc:
            from qfleet.executors.faults import unreachable  # SDK-wrapped network failures too

            raise ExecutorError(
                f"{type(exc).__name__}: {exc}",
                executor=self.label,
                transient=unreachable(exc) is not None,
            ) from exc

    # -- public API ----------------------------------------------------------------------

    async def batch_submit(self, tapes: Sequence[QuantumScript]) -> BatchHandle:
        """Submit ``tapes``; returns a handle as soon as the backend accepted the work."""
        prepared = self.prepare(tapes)
        return await prepared.executor.submit_prepared(prepared)

    async def run_all_circuits(self, tapes: Sequence[QuantumScript]) -> BatchResult:
        """Run ``tapes`` and return one result per tape (submit + get)."""
        prepared = self.prepare(tapes)
        return await prepared.executor.run_prepared(prepared)

    async def run_circuit(self, tape: QuantumScript) -> Any:
        """Run one tape and return its result."""
        return (await self.run_all_circuits([tape]))[0]

    def execute(
        self, tapes: Sequence[QuantumScript], derivatives: Derivatives | None = None
    ) -> BatchResult:
        """Run ``tapes`` from synchronous code; the fastest path (used by the device).
        ``derivatives``: also (or instead) compute the simulator's derivatives."""
        prepared = self.prepare(tapes, derivatives=derivatives)
        return prepared.executor.run_prepared_sync(prepared)

    def run_all_circuits_sync(self, tapes: Sequence[QuantumScript]) -> BatchResult:
        """Sync wrapper of :meth:`run_all_circuits`."""
        return self.execute(tapes)

    def run_circuit_sync(self, tape: QuantumScript) -> Any:
        """Sync wrapper of :meth:`run_circuit`."""
        return self.execute([tape])[0]


#: The capabilities of a PennyLane simulator (built once: asked on every batch's path).
SIMULATOR_CAPABILITIES = Capabilities()


def _without_secrets(value: Any) -> Any:
    """``value`` with every SecretStr in it (nested models, dicts, lists) set to None."""
    if isinstance(value, SecretStr):
        return None
    if isinstance(value, QuantumExecutor):
        return value  # pickles through its own __getstate__
    if isinstance(value, BaseModel):
        changes = {k: _without_secrets(v) for k, v in value.__dict__.items()}
        changed = {k: v for k, v in changes.items() if v is not value.__dict__[k]}
        return value.model_copy(update=changed) if changed else value
    if isinstance(value, dict):
        cleaned = {k: _without_secrets(v) for k, v in value.items()}
        return cleaned if any(cleaned[k] is not value[k] for k in value) else value
    if isinstance(value, (list, tuple)):
        items = [_without_secrets(v) for v in value]
        if any(a is not b for a, b in zip(items, value, strict=True)):
            return type(value)(items)
        return value
    return value
