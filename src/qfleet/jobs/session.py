"""ExecutionSession: Classiq's session API (sample / estimate, single or batch, blocking or
``submit_*``) for any qfleet executor, with durable jobs.

    >>> import qfleet as qf
    >>> qasm = ('OPENQASM 3.0; include "stdgates.inc"; input float t; qubit[1] q; bit[1] c; '
    ...         'rx(t) q[0]; c = measure q;')
    >>> prefs = qf.ExecutionPreferences(num_shots=1000, random_seed=7)
    >>> with qf.ExecutionSession(qasm, prefs) as es:
    ...     es.sample({"t": 0.5}).dataframe            # default backend: the local simulator
    ...     es.estimate(qf.Pauli.I(0) + 2 * qf.Pauli.Z(0), {"t": 0.5}).value   # 1 + 2 cos(0.5)
      bitstring  counts  probability
    0         0     941        0.941
    1         1      59        0.059
    2.75516512378...

Every call makes a job in the job store (see :mod:`qfleet.jobs.store`). ``sample`` and
``estimate`` wait for it; ``submit_*`` return the :class:`ExecutionJob` as soon as the work is
on its way. Tapes are built and prepared on the caller's thread; the background dispatcher
only submits and waits.

Estimation on an executor that can run exactly (a statevector simulator: ``LocalExecutor``,
Classiq's simulator) is computed from the state, not from shots, whatever ``num_shots`` is.
"""

from __future__ import annotations

import json
import pickle
import time
from typing import Any, Literal

import pennylane as qml
from pennylane.tape import QuantumScript
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator

from qfleet.circuits.programs import load_program, program_parameters
from qfleet.errors import ConfigError, QFleetError
from qfleet.jobs.job import (
    EstimationResult,
    ExecutionJob,
    SampleResult,
    current_owner,
    dumps,
    executor_spec,
    launch,
    new_job_id,
)
from qfleet.jobs.pauli import as_pauli_sum
from qfleet.jobs.store import JobStore

DEFAULT_NUM_SHOTS = 2048
"""Shots for ``sample`` when neither the preferences nor the executor set any."""

Transpilation = Literal[
    "none", "decompose", "auto optimize", "light", "medium", "intensive", "custom"
]


class SessionClosedError(QFleetError, RuntimeError):
    """The session was closed; open a new one."""


class ExecutionPreferences(BaseModel):
    """How a session runs its jobs (Classiq's ExecutionPreferences, for any backend).

    ``backend``: an executor or cluster, or the name of an executor class configured in the
    config file (``"ClassiqExecutor"`` -> its ``[executors.ClassiqExecutor]`` section);
    default: a local ``default.qubit`` simulator (no credentials needed).
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    num_shots: PositiveInt | None = None
    backend: Any = None
    job_name: str | None = Field(default=None, min_length=1)
    transpile_to_hardware: Transpilation = "decompose"
    random_seed: int | None = None

    @field_validator("transpile_to_hardware", mode="before")
    @classmethod
    def _bool_transpile(cls, value: Any) -> Any:
        if value is True:
            return "auto optimize"
        if value is False:
            return "none"
        return getattr(value, "value", value)

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: Any) -> Any:
        from qfleet.executors.base import QuantumExecutor

        if value is None or isinstance(value, (QuantumExecutor, str)):
            return value
        if isinstance(value, (list, tuple)) and all(isinstance(v, QuantumExecutor) for v in value):
            return list(value)
        raise ValueError(
            f"backend must be an executor, a list of executors (a cluster), or the name of an "
            f"executor class in the config file; got {type(value).__name__}"
        )

    def public(self) -> dict[str, Any]:
        """JSON-able summary (the backend by label, never its secrets)."""
        data = self.model_dump(exclude={"backend"})
        backend = self.backend
        if backend is None or isinstance(backend, str):
            data["backend"] = backend
        elif isinstance(backend, list):
            data["backend"] = [b.label for b in backend]
        else:
            data["backend"] = backend.label
        return data


def _with_field(executor: Any, field: str, value: Any) -> Any:
    from qfleet.cluster import QuantumCluster

    if isinstance(executor, QuantumCluster):
        members = [_with_field(e, field, value) for e in executor.executors]
        return executor.model_copy(update={"executors": members})
    if field in type(executor).model_fields:
        copy = executor.model_copy(update={field: value})
        copy.model_fields_set.add(field)
        return copy
    return executor


def resolve_executor(preferences: ExecutionPreferences, executor: Any = None) -> Any:
    """The executor a session runs on, with the preferences' seed and transpilation applied
    to executors that have such fields."""
    from qfleet.cluster import QuantumCluster
    from qfleet.config import executor_classes
    from qfleet.executors import LocalExecutor, QuantumExecutor

    backend = executor if executor is not None else preferences.backend
    if backend is None:
        backend = LocalExecutor()
    elif isinstance(backend, str):
        classes = executor_classes()
        if backend not in classes:
            raise ConfigError(
                f"unknown backend {backend!r}; name an executor class "
                f"({', '.join(sorted(classes))}) configured in the config file, or pass an executor"
            )
        backend = classes[backend]()
    elif isinstance(backend, list):
        backend = QuantumCluster(executors=backend)
    if not isinstance(backend, QuantumExecutor):
        raise ConfigError(f"backend must be a qfleet executor, got {type(backend).__name__}")
    if preferences.random_seed is not None:
        backend = _with_field(backend, "seed", preferences.random_seed)
        backend = _with_field(backend, "random_seed", preferences.random_seed)
    if "transpile_to_hardware" in preferences.model_fields_set:
        backend = _with_field(backend, "transpile_to_hardware", preferences.transpile_to_hardware)
    return backend


class ExecutionSession:
    """Runs one program with many parameter sets and observables; jobs are durable.

    ``program``: OpenQASM 2/3 text (OpenQASM 3 ``input float x;`` parameters), a PennyLane
    quantum function or QNode, or a qiskit ``QuantumCircuit``. The second argument is an
    :class:`ExecutionPreferences` or an executor (then default preferences).

    Example:
        >>> qasm = ('OPENQASM 3.0; include "stdgates.inc"; input float t; qubit[1] q; bit[1] c; '
        ...         'rx(t) q[0]; c = measure q;')
        >>> prefs = ExecutionPreferences(num_shots=1000, random_seed=7)
        >>> with ExecutionSession(qasm, prefs) as es:
        ...     job = es.submit_sample([{"t": 0.5}, {"t": 0.6}])
        ...     job.get_batch_sample_result()
        [SampleResult(counts={'0': 941, '1': 59}, num_shots=1000),
         SampleResult(counts={'0': 913, '1': 87}, num_shots=1000)]
    """

    def __init__(self, program: Any, preferences: Any = None, *, executor: Any = None,
                 store: JobStore | None = None):
        from qfleet.executors.base import QuantumExecutor

        if isinstance(preferences, (QuantumExecutor, list)):
            if executor is not None:
                raise ConfigError("pass the executor once: as the second argument or executor=")
            executor, preferences = preferences, None
        if preferences is None:
            preferences = ExecutionPreferences()
        elif isinstance(preferences, dict):
            preferences = ExecutionPreferences(**preferences)
        elif not isinstance(preferences, ExecutionPreferences):
            raise ConfigError(
                f"the second argument must be ExecutionPreferences or an executor, got "
                f"{type(preferences).__name__}"
            )
        if executor is not None and preferences.backend is not None:
            raise ConfigError(
                "give the backend either in the preferences or as executor=, not both"
            )
        if isinstance(executor, list):
            executor = resolve_executor(ExecutionPreferences(backend=executor))
        self.program = load_program(program)
        self.preferences = preferences
        self.executor = resolve_executor(preferences, executor)
        self._store = store
        self._closed = False

    # -- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> ExecutionSession:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the session. Submitted jobs go on and stay reachable by id."""
        self._closed = True

    @property
    def store(self) -> JobStore:
        return self._store or JobStore.default()

    def _check_open(self) -> None:
        if self._closed:
            raise SessionClosedError("this ExecutionSession is closed; open a new one")

    # -- operations ----------------------------------------------------------------------

    def sample(self, parameters: Any = None) -> SampleResult | list[SampleResult]:
        """Sample the program with one parameter dict (-> SampleResult) or a list (-> list)."""
        job = self.submit_sample(parameters)
        return job.get_batch_sample_result() if job.is_batch else job.get_sample_result()

    def submit_sample(self, parameters: Any = None) -> ExecutionJob:
        """Start sampling; returns the job at once."""
        self._check_open()
        sets, batch = program_parameters(parameters)
        shots = self.preferences.num_shots or DEFAULT_NUM_SHOTS
        tapes, layout = [], []
        for values in sets:
            circuit = self.program.bind(values)
            tapes.append(QuantumScript(
                circuit.operations, [qml.counts(wires=circuit.measured_wires)], shots=shots
            ))
            layout.append({"num_bits": circuit.num_bits, "positions": list(circuit.bit_positions),
                           "order": circuit.bit_order})
        return self._submit("sample", sets, batch, tapes, layout, shots, None)

    def estimate(
        self, hamiltonian: Any, parameters: Any = None
    ) -> EstimationResult | list[EstimationResult]:
        """Expectation value of ``hamiltonian`` (qf.Pauli sum, qiskit SparsePauliOp or
        PennyLane observable) for one parameter dict (-> EstimationResult) or a list."""
        job = self.submit_estimate(hamiltonian, parameters)
        return job.get_batch_estimate_result() if job.is_batch else job.get_estimate_result()

    def submit_estimate(self, hamiltonian: Any, parameters: Any = None) -> ExecutionJob:
        """Start estimating; returns the job at once."""
        self._check_open()
        sets, batch = program_parameters(parameters)
        pauli = as_pauli_sum(hamiltonian)
        exact = self.executor.capabilities.analytic
        shots = None if exact else (self.preferences.num_shots or DEFAULT_NUM_SHOTS)
        tapes, layout = [], []
        for values in sets:
            circuit = self.program.bind(values)
            observable = pauli.to_pennylane(circuit.wires) if pauli is not None else hamiltonian
            tapes.append(QuantumScript(circuit.operations, [qml.expval(observable)], shots=shots))
            layout.append({"shots": shots})
        text = dumps(pauli.to_list()) if pauli is not None else repr(hamiltonian)
        return self._submit("estimate", sets, batch, tapes, layout, shots, text)

    def _submit(self, kind: str, sets: list[dict[str, Any]], batch: bool, tapes: list,
                layout: list, shots: int | None, observable: str | None) -> ExecutionJob:
        store = self.store
        store.check()
        job_id = new_job_id()
        now = time.time()
        owner = current_owner()
        row = {
            "id": job_id,
            "name": self.preferences.job_name,
            "kind": kind,
            "status": "QUEUED",
            "created_at": now,
            "backend": f"{self.executor.label} ({self.executor.backend_description})",
            "executor": dumps(executor_spec(self.executor)),
            "program_kind": self.program.kind,
            "program": self.program.source,
            "parameters": dumps(sets),
            "batch": int(batch),
            "preferences": dumps(self.preferences.public()),
            "observable": observable,
            "num_shots": shots,
            "layout": json.dumps(layout),
            "owner_host": owner[0],
            "owner_pid": owner[1],
            "owner_started": owner[2],
            "heartbeat": now,
        }
        try:
            prepared = self.executor.prepare(tapes)
        except Exception as exc:
            row.update(status="FAILED", ended_at=time.time(), tapes=pickle.dumps(tuple(tapes)),
                       error=f"{type(exc).__name__}: {exc}")
            store.insert(row)
            raise
        row["tapes"] = pickle.dumps(tuple(prepared.tapes))
        row["runner"] = dumps(executor_spec(prepared.executor))
        store.insert(row)
        try:
            launch(store, job_id, prepared, (kind, sets, layout))
        except BaseException as exc:
            store.update(job_id, {"status": "FAILED", "ended_at": time.time(),
                                  "error": f"{type(exc).__name__}: {exc}"}, active_only=True)
            raise
        return ExecutionJob(row, store)
