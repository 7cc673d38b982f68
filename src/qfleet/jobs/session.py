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

import hashlib
import random
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import pennylane as qml
from pennylane.tape import QuantumScript
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator

from qfleet.circuits.programs import (
    WIRE_ORDER,
    ParameterError,
    PennyLaneProgram,
    QiskitProgram,
    load_program,
    program_parameters,
)
from qfleet.circuits.tape_json import tapes_document
from qfleet.errors import ConfigError, QFleetError
from qfleet.executors.idempotency import idempotent
from qfleet.jobs.distributions import CostFunctionError, check_quantile, evaluate_cost
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

if TYPE_CHECKING:
    from qfleet.jobs.minimize import MinimizationResult

DEFAULT_NUM_SHOTS = 2048
"""Shots for ``sample`` when neither the preferences nor the executor set any."""

Transpilation = Literal[
    "none", "decompose", "auto optimize", "light", "medium", "intensive", "custom"
]


class SessionClosedError(QFleetError, RuntimeError):
    """The session was closed; open a new one."""


class MeasuredStateFilterError(QFleetError, ValueError):
    """``set_measured_state_filter`` cannot apply: not a statevector simulator, called after
    the session's first job, an unknown register, or a condition no value meets."""


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


def reseeded(executor: Any, seed: int) -> Any:
    """A fresh copy of ``executor`` with ``seed`` in its ``seed`` / ``random_seed`` fields
    (cluster members too); executors without such a field are returned as they are.

    Fresh, not ``model_copy``: a copy would share the original's per-process cache, whose
    simulators were seeded with the old seed. A cluster is rebuilt too, so its selector
    starts from the same state for every job: routing is part of what a seed reproduces.
    """
    from qfleet.cluster import QuantumCluster

    fields = {name: getattr(executor, name) for name in executor.model_fields_set}
    if isinstance(executor, QuantumCluster):
        fields["executors"] = [reseeded(m, seed) for m in executor.executors]
        return type(executor)(**fields)
    names = [n for n in ("seed", "random_seed") if n in type(executor).model_fields]
    if not names:
        return executor
    fields.update(dict.fromkeys(names, seed))
    return type(executor)(**fields)


def program_id(program: Any) -> str:
    """A content address of a program (its kind and text): equal programs, equal ids."""
    digest = hashlib.sha256(f"{program.kind}\n{program.source}".encode()).hexdigest()
    return digest[:32]


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
                 store: JobStore | None = None, session_id: str | None = None,
                 measured_state_filters: list[dict[str, Any]] | None = None):
        from qfleet.executors.base import QuantumExecutor

        if isinstance(preferences, (QuantumExecutor, list)):
            if executor is not None:
                raise ConfigError("pass the executor once: as the second argument or executor=")
            executor, preferences = preferences, None
        preferences = _as_preferences(preferences)
        if executor is not None and preferences.backend is not None:
            raise ConfigError(
                "give the backend either in the preferences or as executor=, not both"
            )
        if isinstance(executor, list):
            executor = resolve_executor(ExecutionPreferences(backend=executor))
        self.program = load_program(program)
        self.preferences = preferences
        self._explicit_executor = executor
        self.executor = resolve_executor(preferences, executor)
        self._store = store
        self._closed = False
        self._session_id = session_id or str(uuid.uuid4())
        self._program_id = program_id(self.program)
        self._filters: list[dict[str, Any]] = [dict(f) for f in measured_state_filters or []]
        self._jobs_started = 0
        self._seed_stream(preferences.random_seed)

    def _seed_stream(self, seed: int | None) -> None:
        # Classiq's rule: the first job gets the session seed, each next job the next
        # draw of random.Random(seed).
        self._random_seed = seed
        self._rng = random.Random(seed)  # reproducible seeds, not secrets

    def next_job_seed(self) -> int | None:
        """The seed of the session's next job (None: the session is unseeded); each call
        moves the session's seed stream on, as a submitted job does."""
        seed = self._random_seed
        if seed is not None:
            self._random_seed = self._rng.randint(0, 2**32 - 1)
        return seed

    def job_executor(self, seed: int | None) -> Any:
        """The executor a job with ``seed`` runs on (the session's, reseeded)."""
        return self.executor if seed is None else reseeded(self.executor, seed)

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

    def get_session_id(self) -> str:
        """The session's id; every job it submits carries it (``get_execution_actions``
        filters on it)."""
        return self._session_id

    @property
    def session_id(self) -> str:
        return self._session_id

    @property
    def program_id(self) -> str:
        """A content address of the program (jobs of equal programs share it)."""
        return self._program_id

    @property
    def measured_state_filters(self) -> list[dict[str, Any]]:
        """The filters set with :meth:`set_measured_state_filter`, as data: the register,
        its bits' positions in the bitstrings and the allowed values."""
        return [dict(f) for f in self._filters]

    def update_execution_preferences(self, execution_preferences: Any) -> None:
        """Use ``execution_preferences`` (ExecutionPreferences or a dict; None: no change)
        for the session's next jobs. A new ``random_seed`` restarts the seed stream; a new
        ``backend`` switches the executor (unless the session was given ``executor=``)."""
        if execution_preferences is None:
            return
        self._check_open()
        preferences = _as_preferences(execution_preferences)
        if self._explicit_executor is not None and preferences.backend is not None:
            raise ConfigError(
                "this session was given executor=; its preferences cannot name a backend too"
            )
        executor = resolve_executor(preferences, self._explicit_executor)
        if self._filters and not executor.capabilities.analytic:
            raise MeasuredStateFilterError(
                f"the session has measured-state filters, which need a statevector simulator; "
                f"{executor.label} is not one"
            )
        previous = self.preferences.random_seed
        self.preferences = preferences
        self.executor = executor
        if "random_seed" in preferences.model_fields_set or preferences.random_seed != previous:
            self._seed_stream(preferences.random_seed)

    # -- measured-state filters ----------------------------------------------------------

    def set_measured_state_filter(self, output_name: str, condition: Callable[[int], bool]) -> None:
        """On a statevector simulator, discard the amplitudes of states whose register
        ``output_name`` has a value for which ``condition(value)`` is false (Classiq's
        ``set_measured_state_filter``): samples then come only from the other states, all
        ``num_shots`` of them. Filters add up (all must hold).

        ``output_name``: a classical register of an OpenQASM / qiskit program (its value
        an unsigned integer, bit 0 least significant), or a wire of a PennyLane program
        with known wires (value 0 or 1). Call before the session's first job.
        """
        self._check_open()
        if self._jobs_started:
            raise MeasuredStateFilterError(
                "set_measured_state_filter must be called before the session's first job "
                "(sample, estimate, ...); open a new session"
            )
        if not self.executor.capabilities.analytic:
            raise MeasuredStateFilterError(
                f"measured-state filters emulate post-processing on statevector simulators; "
                f"{self.executor.label} ({self.executor.backend_description}) samples, so "
                f"filter its counts yourself or use a simulator"
            )
        if not callable(condition):
            raise MeasuredStateFilterError(
                f"condition must be a callable value -> bool, got {type(condition).__name__}"
            )
        positions = self._register_positions(output_name)
        if len(positions) > 20:
            raise MeasuredStateFilterError(
                f"register {output_name!r} has {len(positions)} bits; filters take at most 20"
            )
        allowed = [v for v in range(2 ** len(positions)) if condition(v)]
        if not allowed:
            raise MeasuredStateFilterError(
                f"the condition is false for every value of register {output_name!r}; it "
                f"would discard every state"
            )
        self._filters.append({"register": output_name, "positions": positions,
                              "allowed": allowed})

    def _register_positions(self, output_name: str) -> list[int]:
        """Where bit ``j`` of register ``output_name`` sits in the program's bitstrings."""
        program = self.program
        if isinstance(program, QiskitProgram):
            circuit = program.circuit
            for register in circuit.cregs:
                if register.name == output_name:
                    num_bits = circuit.num_clbits
                    # OpenQASM / qiskit bitstrings: classical bit 0 rightmost
                    return [num_bits - 1 - circuit.find_bit(bit).index for bit in register]
            names = [r.name for r in circuit.cregs]
            raise MeasuredStateFilterError(
                f"the program has no classical register {output_name!r}; its registers are "
                f"{names}"
            )
        if isinstance(program, PennyLaneProgram) and program.wires is not None:
            if output_name in program.wires:
                return [program.wires.index(output_name)]
            raise MeasuredStateFilterError(
                f"the program has no wire {output_name!r}; its wires are {list(program.wires)}"
            )
        raise MeasuredStateFilterError(
            "measured-state filters name a classical register of an OpenQASM or qiskit "
            "program, or a wire of a PennyLane program whose QNode device has wires"
        )

    # -- sample ----------------------------------------------------------------------------

    def sample(self, parameters: Any = None) -> SampleResult | list[SampleResult]:
        """Sample the program with one parameter dict (-> SampleResult) or a list (-> list)."""
        job = self.submit_sample(parameters)
        return job.get_batch_sample_result() if job.is_batch else job.get_sample_result()

    def submit_sample(self, parameters: Any = None) -> ExecutionJob:
        """Start sampling; returns the job at once."""
        return self._submit_sample(parameters)

    def batch_sample(self, parameters: list[dict[str, Any]]) -> list[SampleResult]:
        """Sample each parameter set of the list (one job); a list of SampleResults."""
        return self.submit_batch_sample(parameters).get_batch_sample_result()

    def submit_batch_sample(self, parameters: list[dict[str, Any]]) -> ExecutionJob:
        """Start sampling a list of parameter sets; returns the job at once."""
        _require_list(parameters, "submit_batch_sample")
        return self._submit_sample(parameters)

    def _submit_sample(self, parameters: Any, **extra: Any) -> ExecutionJob:
        self._check_open()
        sets, batch = program_parameters(parameters)
        shots = self.preferences.num_shots or DEFAULT_NUM_SHOTS
        seed = self.next_job_seed()
        if self._filters:  # exact probabilities, filtered, then sampled (statevector only)
            return self._submit_distribution(sets, batch, "sample", all_qubits=False,
                                             seed=seed, shots=shots, **extra)
        tapes, layout = [], []
        for values in sets:
            circuit = self.program.bind(values)
            tapes.append(QuantumScript(
                circuit.operations, [qml.counts(wires=circuit.measured_wires)], shots=shots
            ))
            layout.append({"num_bits": circuit.num_bits, "positions": list(circuit.bit_positions),
                           "order": circuit.bit_order})
        return self._submit("sample", sets, batch, tapes, layout, shots, None,
                            executor=self.job_executor(seed), **extra)

    # -- distributions (for classical cost functions) ---------------------------------------

    def submit_distribution(self, parameters: Any = None, *, all_qubits: bool = False,
                            job_id: str | None = None, parent_id: str | None = None,
                            seed: int | None = None) -> ExecutionJob:
        """Start measuring the program's distribution: exact probabilities (a ``"probs"``
        job) on a statevector simulator, else counts (a ``"sample"`` job).

        ``all_qubits``: measure every qubit, bitstrings listing qubit ``i`` at position
        ``i`` (for diagonal observables); else the program's own bits and bitstrings.
        ``seed``: the job's seed (default: the session's next).
        """
        self._check_open()
        sets, batch = program_parameters(parameters)
        if seed is None:
            seed = self.next_job_seed()
        kind = "probs" if self.executor.capabilities.analytic else "sample"
        shots = self.preferences.num_shots or DEFAULT_NUM_SHOTS
        return self._submit_distribution(sets, batch, kind, all_qubits=all_qubits, seed=seed,
                                         shots=shots, job_id=job_id, parent_id=parent_id)

    def _submit_distribution(self, sets: list[dict[str, Any]], batch: bool, kind: str, *,
                             all_qubits: bool, seed: int | None, shots: int,
                             **extra: Any) -> ExecutionJob:
        exact = self.executor.capabilities.analytic
        if self._filters and not exact:
            raise MeasuredStateFilterError(
                f"the session has measured-state filters, which need a statevector "
                f"simulator; {self.executor.label} is not one"
            )
        tapes, layout = [], []
        for i, values in enumerate(sets):
            circuit = self.program.bind(values)
            if all_qubits:
                wires = circuit.wires
                lay: dict[str, Any] = {"num_bits": len(wires), "positions": list(range(len(wires))),
                                       "order": WIRE_ORDER}
            else:
                wires = circuit.measured_wires
                lay = {"num_bits": circuit.num_bits, "positions": list(circuit.bit_positions),
                       "order": circuit.bit_order}
            if exact:
                measurement = qml.probs(wires=wires)
                lay.update(exact=True, filters=self._filters if not all_qubits else [],
                           shots=shots, seed=_item_seed(seed, i))
                tape = QuantumScript(circuit.operations, [measurement], shots=None)
            else:
                tape = QuantumScript(circuit.operations, [qml.counts(wires=wires)], shots=shots)
            tapes.append(tape)
            layout.append(lay)
        job_shots = None if kind == "probs" else shots
        return self._submit(kind, sets, batch, tapes, layout, job_shots, None,
                            executor=self.job_executor(seed), **extra)

    def estimate_cost(self, cost_func: Callable[[str], float], parameters: Any = None,
                      quantile: float = 1.0) -> float:
        """Classiq's ``estimate_cost``: the mean of ``cost_func(bitstring)`` over the
        program's measured distribution, over its lowest-cost ``quantile`` only when
        ``quantile < 1`` (CVaR). Exact probabilities on statevector simulators, else
        ``num_shots`` samples. Bitstrings are written as in ``sample``'s counts.
        """
        quantile = check_quantile(quantile)
        if not callable(cost_func):
            raise CostFunctionError(
                f"cost_func must be a callable bitstring -> float, got {type(cost_func).__name__}"
            )
        sets, batch = program_parameters(parameters)
        if batch:
            raise CostFunctionError("estimate_cost takes one parameter dict, not a list")
        job = self.submit_distribution(sets[0])
        distribution, exact = job_distribution(job)
        return evaluate_cost(cost_func, distribution, quantile, exact=exact)

    # -- estimate ----------------------------------------------------------------------------

    def estimate(
        self, hamiltonian: Any, parameters: Any = None
    ) -> EstimationResult | list[EstimationResult]:
        """Expectation value of ``hamiltonian`` (qf.Pauli sum, qiskit SparsePauliOp or
        PennyLane observable) for one parameter dict (-> EstimationResult) or a list."""
        job = self.submit_estimate(hamiltonian, parameters)
        return job.get_batch_estimate_result() if job.is_batch else job.get_estimate_result()

    def submit_estimate(self, hamiltonian: Any, parameters: Any = None, *,
                        job_id: str | None = None, parent_id: str | None = None,
                        seed: int | None = None) -> ExecutionJob:
        """Start estimating; returns the job at once. (``job_id``, ``parent_id``, ``seed``:
        for jobs that are part of a minimization.)"""
        self._check_open()
        if self._filters:
            raise MeasuredStateFilterError(
                "measured-state filters apply to sampled distributions (sample, "
                "batch_sample, estimate_cost), not to estimate; use a session without filters"
            )
        sets, batch = program_parameters(parameters)
        pauli = as_pauli_sum(hamiltonian)
        exact = self.executor.capabilities.analytic
        shots = None if exact else (self.preferences.num_shots or DEFAULT_NUM_SHOTS)
        if seed is None:
            seed = self.next_job_seed()
        tapes, layout = [], []
        for values in sets:
            circuit = self.program.bind(values)
            observable = pauli.to_pennylane(circuit.wires) if pauli is not None else hamiltonian
            tapes.append(QuantumScript(circuit.operations, [qml.expval(observable)], shots=shots))
            layout.append({"shots": shots})
        text = dumps(pauli.to_list()) if pauli is not None else repr(hamiltonian)
        return self._submit("estimate", sets, batch, tapes, layout, shots, text,
                            executor=self.job_executor(seed), job_id=job_id, parent_id=parent_id)

    def batch_estimate(self, hamiltonian: Any, parameters: list[dict[str, Any]]
                       ) -> list[EstimationResult]:
        """Estimate ``hamiltonian`` for each parameter set of the list (one job)."""
        return self.submit_batch_estimate(hamiltonian, parameters).get_batch_estimate_result()

    def submit_batch_estimate(self, hamiltonian: Any, parameters: list[dict[str, Any]]
                              ) -> ExecutionJob:
        """Start estimating for a list of parameter sets; returns the job at once."""
        _require_list(parameters, "submit_batch_estimate")
        return self.submit_estimate(hamiltonian, parameters)

    # -- minimize ----------------------------------------------------------------------------

    def minimize(self, cost_function: Any, initial_params: dict[str, Any], max_iteration: int,
                 quantile: float = 1.0, tolerance: float | None = None, *,
                 method: str = "COBYLA", options: dict[str, Any] | None = None
                 ) -> MinimizationResult:
        """Minimize ``cost_function`` over the program's parameters, starting from
        ``initial_params``; returns ``[(cost, parameters), ...]``, one entry per cost
        evaluation (each one a quantum job), as Classiq's ``minimize`` does.

        ``cost_function``: an observable (qf.Pauli sum, qiskit/Classiq SparsePauliOp): its
        expectation value (``quantile=1``) or the CVaR of its eigenvalues over the
        lowest-cost ``quantile`` of the measured distribution (diagonal observables); or a
        callable ``bitstring -> float`` (a classical cost, as in :meth:`estimate_cost`).
        ``method``: any ``scipy.optimize.minimize`` method (COBYLA by default);
        ``tolerance``: its ``tol``; ``max_iteration``: the most cost evaluations.

        The minimization is a durable job: it checkpoints every evaluation in the job
        store, and ``ExecutionJob.from_id(id)`` in another process resumes it after a crash
        (see :mod:`qfleet.jobs.minimize`). The job store keeps data, never code: a Python
        cost function or a PennyLane program is supplied again on resuming, with
        ``ExecutionJob.from_id(id).resume(cost_function=f, program=qnode)``, which checks
        it against the stored run.
        """
        return self.submit_minimize(cost_function, initial_params, max_iteration, quantile,
                                    tolerance, method=method,
                                    options=options).get_minimization_result()

    def submit_minimize(self, cost_function: Any, initial_params: dict[str, Any],
                        max_iteration: int, quantile: float = 1.0,
                        tolerance: float | None = None, *, method: str = "COBYLA",
                        options: dict[str, Any] | None = None) -> ExecutionJob:
        """Start :meth:`minimize`; returns its job at once (the optimizer runs in this
        process's background; ``job.get_minimization_result()`` waits for it)."""
        from qfleet.jobs.minimize import submit_minimize

        self._check_open()
        return submit_minimize(self, cost_function, initial_params, max_iteration, quantile,
                               tolerance, method=method, options=options)

    # Classiq 1.34 renamed minimize to variational_minimize; both names work here.
    variational_minimize = minimize
    submit_variational_minimize = submit_minimize

    # -- job rows ----------------------------------------------------------------------------

    def job_row(self, kind: str, job_id: str, *, executor: Any, parameters: list[dict[str, Any]],
                batch: bool, observable: str | None, num_shots: int | None, layout: Any,
                parent_id: str | None = None) -> dict[str, Any]:
        """A new job row of this session (QUEUED, owned by this process)."""
        now = time.time()
        owner = current_owner()
        self._jobs_started += 1
        return {
            "id": job_id,
            "name": self.preferences.job_name,
            "kind": kind,
            "status": "QUEUED",
            "created_at": now,
            "backend": f"{executor.label} ({executor.backend_description})",
            "executor": dumps(executor_spec(executor)),
            "program_kind": self.program.kind,
            "program": self.program.source,
            "parameters": dumps(parameters),
            "batch": int(batch),
            "preferences": dumps(self.preferences.public()),
            "observable": observable,
            "num_shots": num_shots,
            "layout": dumps(layout),
            "session_id": self._session_id,
            "program_id": self._program_id,
            "parent_id": parent_id,
            "owner_host": owner[0],
            "owner_pid": owner[1],
            "owner_started": owner[2],
            "heartbeat": now,
        }

    def _submit(self, kind: str, sets: list[dict[str, Any]], batch: bool, tapes: list,
                layout: list, shots: int | None, observable: str | None, *, executor: Any,
                job_id: str | None = None, parent_id: str | None = None) -> ExecutionJob:
        store = self.store
        store.check()
        job_id = job_id or new_job_id()
        row = self.job_row(kind, job_id, executor=executor, parameters=sets, batch=batch,
                           observable=observable, num_shots=shots, layout=layout,
                           parent_id=parent_id)
        try:
            # Keyed by the job: a restart of this job re-attaches to what a cluster member
            # already accepted instead of submitting the batch again.
            with idempotent(f"job:{job_id}"):
                prepared = executor.prepare(tapes)
        except Exception as exc:
            row.update(status="FAILED", ended_at=time.time(), tapes=tapes_document(tapes),
                       error=f"{type(exc).__name__}: {exc}")
            store.insert(row)
            raise
        row["tapes"] = tapes_document(prepared.tapes)
        row["runner"] = dumps(executor_spec(prepared.executor))
        store.insert(row)
        try:
            launch(store, job_id, prepared, (kind, sets, layout))
        except BaseException as exc:
            store.update(job_id, {"status": "FAILED", "ended_at": time.time(),
                                  "error": f"{type(exc).__name__}: {exc}"}, active_only=True)
            raise
        return ExecutionJob(row, store)


def _as_preferences(preferences: Any) -> ExecutionPreferences:
    if preferences is None:
        return ExecutionPreferences()
    if isinstance(preferences, dict):
        return ExecutionPreferences(**preferences)
    if isinstance(preferences, ExecutionPreferences):
        return preferences
    raise ConfigError(
        f"the second argument must be ExecutionPreferences or an executor, got "
        f"{type(preferences).__name__}"
    )


def _require_list(parameters: Any, name: str) -> None:
    if not isinstance(parameters, (list, tuple)):
        raise ParameterError(
            f"{name} takes a list of parameter dicts, got {type(parameters).__name__}; "
            f"use the single-set method for one dict"
        )


def _item_seed(seed: int | None, index: int) -> int | None:
    """The seed of parameter set ``index`` of a job seeded with ``seed``."""
    if seed is None:
        return None
    import numpy as np

    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def job_distribution(job: ExecutionJob, timeout_sec: float | None = None
                     ) -> tuple[dict[str, float], bool]:
    """(distribution, exact) of a finished ``submit_distribution`` job: probabilities of a
    ``"probs"`` job (exact) or counts of a ``"sample"`` job."""
    value = job.result_value(timeout_sec)
    if job.kind == "probs":
        return dict(value), True
    return dict(value.counts), False

