"""ClassiqExecutor: runs tapes on Classiq's execution service through the classiq SDK.

Each circuit of the batch's sampling plan (:class:`qfleet.sampling.SamplingPlan`:
broadcasting expanded, mid-circuit measurements deferred, gates decomposed into OpenQASM 2's)
goes to the SDK's ``ExecutionSession`` as OpenQASM 2 (DESIGN.md "Classiq"):

- circuits with shots measure all their wires and are sampled (``submit_sample``); Classiq's
  counts go back to the plan as :class:`~qfleet.sampling.Counts`;
- circuits without shots (exact; Classiq's simulators only, ``capabilities.analytic``) are
  observed on the state vector (``submit_observe(..., estimate=False)``): ``expval`` of any
  observable (as a Pauli sum), ``var`` (from the observable and its square) and ``probs``
  (from the Z strings of its wires) come back as :class:`~qfleet.sampling.Values`.
  Hardware only samples: tapes without shots run with ``num_shots`` or ``DEFAULT_SHOTS``.

One Classiq job per circuit; their ids are the batch's job ids, so a job in the qfleet job
store whose process died is re-attached by id (``_attach``) instead of being run again.

The classiq SDK keeps one client per process (host + credentials). The executor points it
at ``host``/``token`` when they are set (else the SDK's own configuration: ``CLASSIQ_HOST``,
stored credentials, ``CLASSIQ_XCH_TOKEN``, ...) and serializes its SDK calls on a lock.
classiq is imported only when a batch runs (extra ``qfleet[classiq]``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pennylane as qml
from pennylane.measurements import ExpectationMP, ProbabilityMP, Shots, VarianceMP
from pennylane.tape import QuantumScript
from pydantic import Field, SecretStr, field_validator

from qfleet.circuits.qasm import QASM2_GATES, to_openqasm2
from qfleet.config.secrets import is_secret_key
from qfleet.errors import ConfigError, ExecutorError, UnsupportedCircuitError
from qfleet.executors.base import SAMPLING_MEASUREMENTS, Capabilities, QuantumExecutor
from qfleet.runtime.daemon import in_daemon_thread
from qfleet.sampling import Counts, RawOutput, Values

#: Provider names as classiq's ``Provider`` enum spells them, by the short names its
#: "provider/backend" specifiers use.
PROVIDERS = {
    "classiq": "Classiq", "ibm": "IBM Quantum", "azure": "Azure Quantum",
    "braket": "Amazon Braket", "ionq": "IonQ", "google": "Google", "alice&bob": "Alice & Bob",
    "oqc": "OQC", "intel": "Intel", "aqt": "AQT", "cineca": "CINECA", "jhpc": "JHPC",
    "c12": "C12", "quantum_art": "Quantum Art", "iqm": "IQM",
}
SIMULATORS = {
    "simulator",
    "simulator_statevector",
    "nvidia_simulator",
    "nvidia_simulator_statevector",
}

#: Shots of tapes without any on hardware, when ``num_shots`` is not set (Classiq's default).
DEFAULT_SHOTS = 2048
#: Most wires of an exact ``probs`` (it observes 2**wires Z strings).
MAX_EXACT_PROBS_WIRES = 10

Transpilation = Literal[
    "none", "decompose", "auto optimize", "light", "medium", "intensive", "custom"
]


@dataclasses.dataclass(frozen=True)
class _Circuit:
    qasm: str
    kind: str  # "sample" | "observe"
    shots: int | None = None
    observables: tuple = ()  # per observable: ((coefficient, ((index, "X"), ...)), ...)
    num_qubits: int = 0
    recipe: tuple = ()  # per measurement, how its value comes from the observed values


@dataclasses.dataclass(frozen=True)
class _Payload:
    circuits: tuple[_Circuit, ...]


@dataclasses.dataclass(frozen=True)
class ObservedValues:
    """Raw output of an exact circuit: the observed values and how they make its result."""

    values: tuple[float, ...]
    recipe: tuple


@dataclasses.dataclass(frozen=True)
class _Job:
    ids: tuple[str, ...]
    payload: _Payload


# -- the SDK's process-wide client --------------------------------------------------------

_sdk_lock = threading.RLock()
_installed: tuple[tuple[str | None, str | None], Any] | None = None
"""(host, token) and the SDK client this module installed for them."""


def _use_client(host: str | None, token: str | None) -> None:
    """Point the classiq SDK's client at ``host`` with ``token`` (call under _sdk_lock)."""
    global _installed
    from classiq._internals import client as client_module

    key = (host, token)
    current = client_module.DEFAULT_CLIENT
    if _installed is not None and _installed[0] == key and current is _installed[1]:
        return
    if host is None and token is None:
        if _installed is not None and current is _installed[1]:
            client_module.DEFAULT_CLIENT = None  # back to the SDK's own configuration
        _installed = (key, client_module.client())
        return
    from classiq._internals import config as config_module
    from classiq._internals.authentication import password_manager, token_manager
    from classiq.interface.exceptions import ClassiqAuthenticationError

    base = config_module.init([])
    conf = config_module.Configuration(
        # pydantic validates the str into AnyHttpUrl; without its mypy plugin mypy expects one
        host=host or str(base.host),  # type: ignore[arg-type]
        ide=base.ide, should_check_host=base.should_check_host,
        mode=base.mode, text_only=base.text_only, auth=base.auth,
    )
    client = client_module.Client(conf)
    if token is not None:

        class _Token(password_manager.PasswordManager):
            has_refresh_token = False

            def _get(self, key: str) -> str | None:
                return token if key == self._settings.ACCESS_TOKEN_KEY else None

            def _set(self, key: str, value: str | None) -> None:
                pass

            def _clear(self, key: str) -> None:
                pass

            @staticmethod
            def is_supported() -> bool:
                return True

        class _Manager(token_manager.TokenManager):
            async def update_expired_access_token(self) -> None:
                raise ClassiqAuthenticationError(
                    "the Classiq token given to ClassiqExecutor expired; give it a new one"
                )

        client._token_manager = _Manager(config=conf, password_manager=_Token())
    client_module.set_client(client)
    if conf.should_check_host:
        client.check_host()
    _installed = (key, client)


#: How long the SDK keeps retrying a request that could not be sent (connection refused,
#: DNS, connect timeout) when the executor has no ``timeout``. The SDK's own budget is 300 s;
#: a cluster retries transient failures on another member, so a dead host is reported soon.
CONNECT_RETRY_S = 15.0


def _bound_sdk_time(timeout: float | None) -> None:
    """Bound the SDK's retries and each HTTP request by ``timeout`` (call under _sdk_lock:
    the retry budget is the SDK's module-wide setting, so it is set per call)."""
    import httpx
    from classiq._internals import client as client_module

    # half the timeout: the SDK sleeps up to 10 s between tries, on top of its budget
    budget = timeout / 2 if timeout is not None else CONNECT_RETRY_S
    # The SDK declares these as ints; it passes them on to tenacity and httpx, which take
    # float seconds (and an httpx.Timeout).
    setattr(client_module, "_RETRY_BUDGET_SEC", budget)  # noqa: B010
    current = client_module.DEFAULT_CLIENT
    if current is not None:
        read = timeout if timeout is not None else 3600.0  # the SDK's own request timeout
        setattr(current, "_HTTP_TIMEOUT_SECONDS",  # noqa: B010
                httpx.Timeout(read, connect=min(budget, 10.0)))


class ClassiqExecutor(QuantumExecutor):
    """Runs tapes on Classiq's execution service (simulators and the hardware Classiq
    reaches) through the classiq SDK.

    Example (running needs a Classiq account):
        >>> ex = ClassiqExecutor(backend_preferences="classiq/simulator")
        >>> tape = QuantumScript([qml.RX(0.5, 0)], [qml.probs(wires=0)], shots=2000)
        >>> ex.run_circuit_sync(tape)  # doctest: +SKIP
        array([0.9395, 0.0605])
        >>> tape = QuantumScript([qml.RX(0.5, 0)], [qml.expval(qml.Z(0))])  # exact
        >>> ex.run_circuit_sync(tape)  # doctest: +SKIP
        np.float64(0.8775825618903728)
    """

    backend_preferences: dict[str, Any] = Field(
        default_factory=lambda: {"backend_service_provider": "Classiq", "backend_name": "simulator"}
    )
    """Classiq backend preferences (provider, backend name, provider options), or a
    "provider/backend" string such as "classiq/simulator" or "ibm/ibm_torino"."""
    num_shots: int | None = Field(default=None, gt=0)
    """Shots for tapes that have none (Classiq's ExecutionPreferences.num_shots). None: such
    tapes run exactly on Classiq's simulators (expval, var, probs), with ``DEFAULT_SHOTS``
    on hardware."""
    token: SecretStr | None = None
    """A Classiq access token; None: the SDK's own credentials."""
    host: str | None = None
    """Classiq's API URL; None: the SDK's (``CLASSIQ_HOST`` or its default)."""
    random_seed: int | None = None
    transpile_to_hardware: Transpilation | None = None
    poll_interval: float = Field(default=1.0, gt=0)
    """Longest wait between two status polls (it starts at 0.05 s and grows)."""

    backend_kind = "classiq"

    @field_validator("backend_preferences", mode="before")
    @classmethod
    def _from_specifier(cls, value: Any) -> Any:
        if hasattr(value, "model_dump"):  # a classiq BackendPreferences object
            return value.model_dump(mode="json")
        if isinstance(value, str):
            provider, sep, name = value.partition("/")
            if not sep:
                provider, name = "classiq", value
            canonical = PROVIDERS.get(provider.strip().lower())
            if canonical is None:
                raise ValueError(
                    f"unknown provider {provider!r} in {value!r}; use one of {sorted(PROVIDERS)}"
                )
            return {"backend_service_provider": canonical, "backend_name": name.strip()}
        return value

    @field_validator("backend_preferences")
    @classmethod
    def _has_provider(cls, value: dict[str, Any]) -> dict[str, Any]:
        if "backend_service_provider" not in value or "backend_name" not in value:
            raise ValueError(
                "backend_preferences needs backend_service_provider and backend_name "
                "(or a 'provider/backend' string)"
            )
        return _hide_secrets(value)


    @property
    def _provider(self) -> str:
        return str(self.backend_preferences["backend_service_provider"])

    @property
    def _backend_name(self) -> str:
        return str(self.backend_preferences["backend_name"])

    @property
    def backend_description(self) -> str:
        return f"classiq:{self._provider}/{self._backend_name}"

    @property
    def capabilities(self) -> Capabilities:
        exact = self._provider == "Classiq" and self._backend_name in SIMULATORS
        return Capabilities(
            analytic=exact,
            measurements=SAMPLING_MEASUREMENTS,
            exact_measurements=frozenset({"expval", "var", "probs"}),
            native_gates=QASM2_GATES,
            mid_circuit_measurements=False,
            default_shots=None if exact else (self.num_shots or DEFAULT_SHOTS),
        )

    # -- caller's thread -----------------------------------------------------------------

    def with_shots(self, tapes: Sequence[QuantumScript]) -> tuple[QuantumScript, ...]:
        tapes = super().with_shots(tapes)
        if self.num_shots is None:
            return tapes
        shots = Shots(self.num_shots)
        return tuple(t if t.shots else t.copy(shots=shots) for t in tapes)

    def translate(self, circuits: tuple[QuantumScript, ...]) -> _Payload:
        """The plan's circuits as OpenQASM 2: sampled ones measure all their wires, exact
        ones are observed (their measurements as Pauli sums, qubit i = circuit.wires[i])."""
        out: list[_Circuit] = []
        for circuit in circuits:
            if circuit.shots:
                out.append(_Circuit(to_openqasm2(circuit), "sample", circuit.shots.total_shots))
            else:
                observables, recipe = _exact_observables(circuit)
                out.append(_Circuit(_unmeasured_qasm(circuit), "observe", None, observables,
                                    len(circuit.wires), recipe))
        return _Payload(tuple(out))

    def decode(self, circuits: tuple[QuantumScript, ...], raw: Sequence[Any]) -> list[RawOutput]:
        """Sampled circuits: Classiq's counts (first wire first); exact ones: their values."""
        outputs: list[RawOutput] = []
        for _circuit, data in zip(circuits, raw, strict=True):
            if isinstance(data, ObservedValues):
                outputs.append(Values(_assemble(data)))
            else:
                outputs.append(Counts(data))
        return outputs

    # -- event loop (SDK calls run in worker threads) ------------------------------------

    def _sdk(self):
        executor = self

        class _Context:
            def __enter__(self):
                _sdk_lock.acquire()
                try:
                    _bound_sdk_time(executor.timeout)  # the host check in _use_client too
                    _use_client(executor.host, executor.secret("token"))
                    _bound_sdk_time(executor.timeout)
                except BaseException:
                    _sdk_lock.release()
                    raise
                return self

            def __exit__(self, *exc):
                _sdk_lock.release()

        return _Context()

    def _preferences(self, shots: int | None):
        from classiq.interface.executor.execution_preferences import ExecutionPreferences

        data: dict[str, Any] = {"backend_preferences": _reveal(self.backend_preferences)}
        if shots is not None:
            data["num_shots"] = shots
        if self.random_seed is not None:
            data["random_seed"] = self.random_seed
        if self.transpile_to_hardware is not None:
            data["transpile_to_hardware"] = self.transpile_to_hardware
        try:
            return ExecutionPreferences.model_validate(data)
        except Exception as exc:  # pydantic ValidationError
            raise ConfigError(
                f"{self.label}: invalid Classiq execution preferences: {exc}"
            ) from exc

    def _submit_all(self, payload: _Payload) -> tuple[str, ...]:
        from classiq import ExecutionSession  # type: ignore[attr-defined]  # lazy export, unseen by mypy

        ids: list[str] = []
        try:
            with self._sdk():
                for circuit in payload.circuits:
                    preferences = self._preferences(circuit.shots)
                    with ExecutionSession(circuit.qasm, execution_preferences=preferences,
                                          provider_session=False) as session:
                        if circuit.kind == "sample":
                            job = session.submit_sample()
                        else:
                            observables = [
                                _classiq_observable(o, circuit.num_qubits)
                                for o in circuit.observables
                            ]
                            job = session.submit_observe(
                                observables if len(observables) > 1 else observables[0],
                                estimate=False,
                            )
                    ids.append(job.id)
        except BaseException:
            if ids:
                self._cancel_ids(ids)
            raise
        return tuple(ids)

    async def submit(self, payload: _Payload) -> tuple[_Job, tuple[str, ...]]:
        ids = await in_daemon_thread(self._submit_all, payload)
        return _Job(ids, payload), ids

    @property
    def reattachable(self) -> bool:
        return True  # Classiq keeps the execution jobs: any process re-attaches by job id

    def attach(self, payload: _Payload, job_ids: Sequence[str]) -> _Job:
        """The job for backend ids from an earlier submission of the same tapes."""
        self.check_job_ids(job_ids, len(payload.circuits), "Classiq job ids")
        return _Job(tuple(job_ids), payload)

    def _statuses(self, ids: Sequence[str]) -> list[str]:
        from classiq import ExecutionJob  # type: ignore[attr-defined]  # lazy export, unseen by mypy

        with self._sdk():
            return [str(ExecutionJob.from_id(i).status) for i in ids]

    def _fetch(self, job: _Job) -> list[Any]:
        from classiq import ExecutionJob  # type: ignore[attr-defined]  # lazy export, unseen by mypy

        outputs: list[Any] = []
        with self._sdk():
            for job_id, circuit in zip(job.ids, job.payload.circuits, strict=True):
                remote = ExecutionJob.from_id(job_id)
                status = str(remote.status)
                if status == "FAILED":
                    raise ExecutorError(
                        f"Classiq job {job_id} failed: {remote.error}", executor=self.label
                    )
                if status == "CANCELLED":
                    raise ExecutorError(f"Classiq job {job_id} was cancelled", executor=self.label)
                if circuit.kind == "sample":
                    details = remote.get_sample_result()
                    # qubit 0 (circuit.wires[0]) leftmost, as Counts lists them
                    counts = details.counts_by_qubit_order(lsb_right=False)
                    outputs.append({str(k): int(v) for k, v in counts.items()})
                elif len(circuit.observables) > 1:
                    values = tuple(float(r.value) for r in remote.get_batch_estimate_result())
                    outputs.append(ObservedValues(values, circuit.recipe))
                else:
                    values = (float(remote.get_estimate_result().value),)
                    outputs.append(ObservedValues(values, circuit.recipe))
        return outputs

    async def collect(self, job: _Job) -> list[Any]:
        delay = 0.05
        pending = list(job.ids)
        while pending:
            statuses = await in_daemon_thread(self._statuses, pending)
            pending = [
                i
                for i, s in zip(pending, statuses, strict=True)
                if s not in {"COMPLETED", "FAILED", "CANCELLED"}
            ]
            if pending:
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, self.poll_interval)
        return await in_daemon_thread(self._fetch, job)

    def _cancel_ids(self, ids: Sequence[str]) -> None:
        from classiq import ExecutionJob  # type: ignore[attr-defined]  # lazy export, unseen by mypy

        with self._sdk():
            for job_id in ids:
                try:
                    remote = ExecutionJob.from_id(job_id)
                    if not remote.status.is_final():
                        remote.cancel()
                except Exception:  # best effort
                    pass

    async def cancel(self, job: _Job) -> None:
        await in_daemon_thread(self._cancel_ids, job.ids)




def _hide_secrets(value: Any, key: str = "") -> Any:
    """Provider credentials in backend preferences (``access_token``, ``client_secret``,
    ...) become SecretStr: repr, logs and the job store never show them."""
    if isinstance(value, dict):
        return {k: _hide_secrets(v, str(k)) for k, v in value.items()}
    if isinstance(value, str) and is_secret_key(key):
        return SecretStr(value)
    return value


def _reveal(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _reveal(v) for k, v in value.items()}
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return value


def _sentence(observable: Any) -> Any:
    """``observable`` as a PauliSentence (Pauli words directly, else through its matrix)."""
    rep = getattr(observable, "pauli_rep", None)
    if rep is not None:
        return rep
    try:
        matrix = qml.matrix(observable, wire_order=observable.wires)
        return qml.pauli_decompose(matrix, wire_order=observable.wires, pauli=True)
    except Exception as exc:  # PennyLane raises several types
        raise UnsupportedCircuitError(
            f"{observable} has no matrix to write as a sum of Pauli words for Classiq's exact "
            f"observe; run with shots"
        ) from exc


def _pauli_terms(sentence: Any, wires: Any, observable: Any = None) -> tuple:
    """((coefficient, ((index, "X"|"Y"|"Z"), ...)), ...) with index = position in ``wires``."""
    position = {w: i for i, w in enumerate(wires)}
    terms = []
    for word, coeff in sentence.items():
        coeff = complex(coeff)
        if abs(coeff.imag) > 1e-12:
            raise UnsupportedCircuitError(
                f"{observable if observable is not None else sentence} has a complex "
                f"coefficient; it must be Hermitian"
            )
        if abs(coeff.real) < 1e-15:
            continue
        terms.append((coeff.real, tuple(sorted((position[w], p) for w, p in word.items()))))
    return tuple(terms) or ((0.0, ()),)


def _exact_observables(circuit: QuantumScript) -> tuple[tuple, tuple]:
    """The Pauli sums to observe for an exact circuit, and per measurement how its value is
    made of theirs: ("expval", i), ("var", i, j) or ("probs", first, number of wires)."""
    observables: list[tuple] = []
    recipe: list[tuple] = []

    def add(terms: tuple) -> int:
        observables.append(terms)
        return len(observables) - 1

    for mp in circuit.measurements:
        if getattr(mp, "mv", None) is not None and not isinstance(mp, ProbabilityMP):
            raise UnsupportedCircuitError(
                f"{mp} of a mid-circuit measurement needs shots on Classiq; set shots"
            )
        if isinstance(mp, ProbabilityMP):
            wires = list(mp.wires) or list(circuit.wires)
            if len(wires) > MAX_EXACT_PROBS_WIRES:
                raise UnsupportedCircuitError(
                    f"exact probs of {len(wires)} wires on Classiq observes 2**{len(wires)} "
                    f"Pauli strings (at most {MAX_EXACT_PROBS_WIRES} wires); set shots"
                )
            position = {w: i for i, w in enumerate(circuit.wires)}
            k = len(wires)
            first = len(observables)
            # probs(op=obs): the Z strings of obs's eigenbasis, U^dagger Z_S U
            rotation = None if mp.obs is None else qml.matrix(
                QuantumScript(mp.obs.diagonalizing_gates()), wire_order=wires)
            for mask in range(2**k):  # Z on wires[j] where bit k-1-j of mask is set
                z_wires = [wires[j] for j in range(k) if (mask >> (k - 1 - j)) & 1]
                if rotation is None:
                    add(((1.0, tuple(sorted((position[w], "Z") for w in z_wires))),))
                    continue
                z = qml.matrix(qml.prod(*[qml.Z(w) for w in z_wires]) if z_wires
                               else qml.Identity(wires[0]), wire_order=wires)
                rotated = qml.pauli_decompose(rotation.conj().T @ z @ rotation,
                                              wire_order=wires, pauli=True)
                add(_pauli_terms(rotated, circuit.wires, mp.obs))
            recipe.append(("probs", first, k))
        elif isinstance(mp, ExpectationMP) and mp.obs is not None:
            recipe.append(("expval", add(_pauli_terms(_sentence(mp.obs), circuit.wires, mp.obs))))
        elif isinstance(mp, VarianceMP) and mp.obs is not None:
            sentence = _sentence(mp.obs)
            i = add(_pauli_terms(sentence, circuit.wires, mp.obs))
            j = add(_pauli_terms(sentence @ sentence, circuit.wires, mp.obs))
            recipe.append(("var", i, j))
        else:
            raise UnsupportedCircuitError(
                f"Classiq computes expval, var and probs exactly; {mp} needs shots: set shots "
                f"on the QNode or num_shots"
            )
    return tuple(observables), tuple(recipe)


def _assemble(observed: ObservedValues) -> Any:
    """An exact circuit's result in PennyLane's structure from its observed values."""
    values = observed.values
    results: list[Any] = []
    for entry in observed.recipe:
        if entry[0] == "expval":
            results.append(np.float64(values[entry[1]]))
        elif entry[0] == "var":
            results.append(np.float64(values[entry[2]] - values[entry[1]] ** 2))
        else:  # probs: Walsh-Hadamard transform of the Z-string expectations
            _, first, k = entry
            t = np.array(values[first : first + 2**k], dtype=float).reshape([2] * k or [1])
            for axis in range(k):  # H on every bit: entries (-1)**popcount(b & mask)
                a, b = t.take(0, axis=axis), t.take(1, axis=axis)
                t = np.stack([a + b, a - b], axis=axis)
            results.append(np.clip(t.ravel() / 2**k, 0.0, 1.0))
    return results[0] if len(results) == 1 else tuple(results)


def _classiq_observable(terms: tuple, num_qubits: int) -> Any:
    from classiq.qmod.builtins.enums import Pauli
    from classiq.qmod.builtins.structs import IndexedPauli, SparsePauliOp, SparsePauliTerm

    num_qubits = max(num_qubits, 1 + max((i for _, word in terms for i, _ in word), default=0))
    built = []
    for coeff, word in terms:
        # QMod structs annotate fields with classical types (CInt, CArray) that take Python
        # values at runtime; classiq's annotations do not say so.
        paulis = [IndexedPauli(pauli=getattr(Pauli, p), index=i) for i, p in word] or [
            IndexedPauli(pauli=Pauli.I, index=0)  # type: ignore[arg-type]
        ]
        built.append(SparsePauliTerm(paulis=paulis, coefficient=coeff))  # type: ignore[arg-type]
    return SparsePauliOp(terms=built, num_qubits=num_qubits)


def _unmeasured_qasm(tape: QuantumScript) -> str:
    """OpenQASM 2 of the tape's operations, no measurements (qubit i = tape.wires[i])."""
    [decomposed], _ = qml.transforms.decompose(
        QuantumScript(tape.operations), gate_set=QASM2_GATES | {"GlobalPhase"}
    )
    operations = [op for op in decomposed.operations if not isinstance(op, qml.GlobalPhase)]
    if not operations:  # to_openqasm writes no register for an empty circuit
        operations = [qml.Identity(w) for w in tape.wires]
    return qml.to_openqasm(
        QuantumScript(operations), wires=tape.wires, rotations=False, measure_all=False
    )
