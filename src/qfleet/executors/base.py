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

A backend implements only these hooks; the executor's :class:`~qfleet.executors.runner.Runner`
does everything around them (limits, rate, timeouts, error mapping, metadata, the sync bridge,
``run_later``). The public API is one way to run a batch, ``run_all_circuits`` (async), with
its sync twin ``execute`` and ``run_later``; Covalent's names are kept as shorthands.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from pennylane.measurements import Shots
from pennylane.tape import QuantumScript
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, field_validator

# BaseModel's metaclass, which pydantic exports only from here (SQLModel subclasses it too):
# the executor classes' front door extends it.
from pydantic._internal._model_construction import ModelMetaclass

import qfleet.telemetry as telemetry
from qfleet.config import executor_defaults
from qfleet.config.loader import configured_value_error
from qfleet.config.logs import remember, remember_in
from qfleet.errors import ExecutorError, UnsupportedCircuitError
from qfleet.executors.batch import BatchHandle, BatchResult, Prepared, RunMetadata
from qfleet.executors.runner import Runner
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


class ConfiguredFrontDoor(ModelMetaclass):
    """Calling an executor class is its front door: the config file's and the environment's
    values for the class fill in the arguments not given (argument > environment > file >
    field default), and the executor's secrets are masked in qfleet's logs from then on.

    The model itself takes only what it is given (``model_validate``, ``model_copy`` and
    unpickling read no config). Not a validator: pydantic turns a ValueError raised inside
    validation (ConfigError is one) into a ValidationError, and callers catch ConfigError.
    """

    def __call__(cls, /, **data: Any) -> Any:
        defaults = executor_defaults(cls)
        try:
            executor = super().__call__(**({**defaults, **data} if defaults else data))
        except ValueError as exc:  # a bad value from the environment or file: name its source
            error = configured_value_error(cls, exc, data) if defaults else None
            if error is None:
                raise
            raise error from exc
        remember_in(executor)
        return executor


class QuantumExecutor(BaseModel, metaclass=ConfiguredFrontDoor):
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

    def run_metadata(self, payload: Any) -> dict[str, Any]:
        """Extra :class:`RunMetadata` fields for a batch with this ``payload`` (e.g. its
        ``cost`` or ``compile`` report); the runner adds them. Default: none."""
        return {}

    def routed_label(self, prepared: Prepared) -> str:
        """The name a batch's handle shows (a cluster names the members it routed to)."""
        return self.label

    def completed_inline(self, prepared: Prepared) -> BatchResult | None:
        """The results, if ``prepare`` already computed them (a simulator that runs small
        batches on the caller's thread: nothing left to wait for). Default: None."""
        return None

    # -- phase 2: event loop -------------------------------------------------------------

    # The backend contract: submit, collect, cancel, attach. The runner (``self.runner``:
    # limits, rate, timeouts, errors, metadata, the sync bridge) calls them; nothing else does.

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

    def check_job_ids(self, job_ids: Sequence[str], expected: int, what: str) -> None:
        """For ``attach``: raise ExecutorError unless there is one id per job the payload
        makes (``what``: the ids' name, e.g. "Azure job ids"; ``expected``: how many)."""
        if len(job_ids) != expected:
            raise ExecutorError(
                f"{len(job_ids)} {what} for {expected} jobs of this batch; give the ids of one "
                f"earlier submission of the same tapes, in order",
                executor=self.label,
            )

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

    @property
    def runner(self) -> Runner:
        """This executor's :class:`~qfleet.executors.runner.Runner` in this process."""
        runner = self._runtime.get("runner")
        if runner is None:  # setdefault: two threads asking at once share one runner
            runner = self._runtime.setdefault("runner", Runner(self))
        return runner

    # -- public API ----------------------------------------------------------------------

    # One way to run a batch: ``run_all_circuits`` (async), its sync twin ``execute`` and
    # ``run_later`` (a future). Covalent's QElectron names below are the same runner's
    # two halves (``batch_submit``/``batch_get_results``) and one-tape shorthands.

    async def run_all_circuits(self, tapes: Sequence[QuantumScript]) -> BatchResult:
        """Run ``tapes`` and return one result per tape, with ``metadata``."""
        prepared = self.prepare(tapes)
        return prepared.complete(await prepared.executor.runner.run(prepared))

    def execute(
        self, tapes: Sequence[QuantumScript], derivatives: Derivatives | None = None
    ) -> BatchResult:
        """:meth:`run_all_circuits` from synchronous code (the device's path); ``derivatives``:
        also (or instead) compute the simulator's derivatives."""
        prepared = self.prepare(tapes, derivatives=derivatives)
        return prepared.executor.runner.run_sync(prepared)

    def run_later(self, tapes: Sequence[QuantumScript]) -> LazyFuture:
        """Prepare ``tapes`` here and run them on the background loop; returns a future at
        once (``result()``, ``await``, ``cancel()`` cancels the backend work)."""
        prepared = self.prepare(tapes)
        return prepared.executor.runner.run_later(prepared)

    async def batch_submit(self, tapes: Sequence[QuantumScript]) -> BatchHandle:
        """Submit ``tapes``; returns a handle as soon as the backend accepted the work."""
        prepared = self.prepare(tapes)
        return await prepared.executor.runner.submit(prepared)

    async def batch_get_results(self, handle: BatchHandle) -> BatchResult:
        """Wait for a submitted batch (``batch_submit``, ``reattach``); its results."""
        if handle.owner is None or handle.prepared is None:
            raise ValueError(
                f"this BatchHandle carries no batch (job ids {list(handle.job_ids)}): pass the "
                f"handle batch_submit returned, or re-attach by job id with "
                f"ex.reattach(tapes, job_ids)"
            )
        return handle.prepared.complete(await handle.owner.runner.collect(handle))

    async def run_circuit(self, tape: QuantumScript) -> Any:
        """Run one tape and return its result."""
        return (await self.run_all_circuits([tape]))[0]

    def run_circuit_sync(self, tape: QuantumScript) -> Any:
        """:meth:`run_circuit` from synchronous code."""
        return self.execute([tape])[0]

    def run_all_circuits_sync(self, tapes: Sequence[QuantumScript]) -> BatchResult:
        """The same as :meth:`execute` (Covalent-style name)."""
        return self.execute(tapes)

    # -- durable work: backend jobs by id -------------------------------------------------

    def reattach(
        self,
        tapes: Sequence[QuantumScript],
        job_ids: Sequence[str],
        submitted_at: float | None = None,
    ) -> BatchHandle:
        """A handle for backend jobs submitted earlier for the same tapes (``handle.job_ids``
        or ``metadata.job_ids``, e.g. from another process that died):
        ``await ex.batch_get_results(handle)``."""
        prepared = self.prepare(tapes)
        return prepared.executor.runner.attach(prepared, job_ids, submitted_at)

    def results_of(self, tapes: Sequence[QuantumScript], job_ids: Sequence[str]) -> BatchResult:
        """Re-attach to the backend jobs ``job_ids`` of ``tapes`` and return their results
        (waits for them; synchronous)."""
        handle = self.reattach(tapes, job_ids)
        return handle.prepared.complete(get_dispatcher().run(self.runner.collect(handle)))


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
