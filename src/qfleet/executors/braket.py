"""BraketLocalExecutor: Amazon Braket's local simulators (braket_sv, braket_dm), offline.

The sampling plan's circuits go to Braket as OpenQASM 3 programs
(:func:`qfleet.circuits.qasm3.to_openqasm3`, Braket's gate names). Sampled circuits measure
every wire and come back as per-shot :class:`~qfleet.sampling.Samples`; exact circuits
(shots=None) ask Braket for the state vector (braket_sv) or density matrix (braket_dm),
returned as a :class:`~qfleet.sampling.State` from which the plan computes the results.

The program building (:func:`braket_program`) and the reading of Braket's results
(:func:`raw_output`) are shared with the cloud executor, :mod:`qfleet.executors.braket_cloud`.

amazon-braket-sdk is imported only when a batch runs (extra ``qfleet[braket]``).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
import threading
import time
import warnings
from typing import Any, ClassVar, Literal

import numpy as np
from pennylane.measurements import StateMP
from pennylane.tape import QuantumScript
from pydantic import Field, field_validator, model_validator

from qfleet.circuits.qasm3 import BRAKET_GATES, BRAKET_NOISE, is_channel, to_openqasm3
from qfleet.executors.base import (
    BatchResult,
    Capabilities,
    Prepared,
    QuantumExecutor,
)
from qfleet.sampling import SAMPLING_MEASUREMENTS, Samples, State

#: Qubits each local simulator takes (Braket's device properties).
MAX_QUBITS = {"braket_sv": 26, "braket_dm": 13}

#: Shorthand noise (``noise_model={"depolarizing": 0.01}``): Braket noise classes, applied
#: after every gate to each qubit it acts on.
NOISE_SHORTHAND = {
    "depolarizing": "Depolarizing",
    "bit_flip": "BitFlip",
    "phase_flip": "PhaseFlip",
    "amplitude_damping": "AmplitudeDamping",
    "phase_damping": "PhaseDamping",
}

#: What Braket's state vector gives exactly (PennyLane's state measurements); braket_dm
#: has no state vector, so no qml.state().
_EXACT = frozenset({"expval", "var", "probs", "state", "density_matrix", "purity",
                    "vn_entropy", "mutual_info"})


@dataclasses.dataclass(frozen=True)
class BraketProgram:
    """One OpenQASM 3 program for Braket (plain data: it may go to a worker process or to
    Braket's cloud, :mod:`qfleet.executors.braket_cloud`)."""

    source: str
    shots: int
    """0: exact (a state/density-matrix result type)."""
    used: frozenset[int]
    """The qubits its instructions act on (Braket simulates only those)."""
    num_qubits: int


@dataclasses.dataclass(frozen=True)
class _InlineRun:
    outputs: tuple
    submitted_at: float
    seconds: float


# -- the simulation side (any thread or process; no PennyLane objects) ----------------------

_simulators: dict[tuple, Any] = {}
_simulators_lock = threading.Lock()


def _quiet_braket() -> None:
    """Braket warns on every noise-free braket_dm run; users chose braket_dm knowingly.
    (Re-installed on each run: warnings.catch_warnings blocks may have reset the filters;
    an identical filter replaces the old one.)"""
    warnings.filterwarnings(
        "ignore", message="You are running a noise-free circuit", category=UserWarning
    )


def _noise_model(spec: dict | None):
    if not spec:
        return None
    from braket.circuits import noises
    from braket.circuits.noise_model import GateCriteria, NoiseModel

    if "instructions" in spec:
        return NoiseModel.from_dict(spec)
    model = NoiseModel()
    for name, probability in spec.items():
        model.add_noise(getattr(noises, NOISE_SHORTHAND[name])(probability), GateCriteria())
    return model


def _make_simulator(device: str, seed: int | None):
    """A Braket LocalSimulator; with a seed, one whose shots come from a seeded stream."""
    from braket.devices import LocalSimulator

    if seed is None:
        return LocalSimulator(device)
    from braket.default_simulator import DensityMatrixSimulator, StateVectorSimulator

    base: type[Any] = StateVectorSimulator if device == "braket_sv" else DensityMatrixSimulator

    class _Seeded(base):
        # Braket draws shots from the simulation's private generator (a fresh
        # default_rng() per run); give every run the next part of one seeded stream.
        def __init__(self) -> None:
            super().__init__()
            self._qfleet_rng = np.random.default_rng(seed)

        def initialize_simulation(self, **kwargs):
            simulation = super().initialize_simulation(**kwargs)
            if not hasattr(simulation, "_rng_generator"):
                raise RuntimeError(
                    "this amazon-braket-default-simulator version has no per-run generator "
                    "to seed; use seed=None"
                )
            simulation._rng_generator = self._qfleet_rng
            return simulation

    return LocalSimulator(_Seeded())


def _simulate(
    device: str, seed: int | None, noise: dict | None, programs: tuple, cache: dict | None = None
) -> tuple:
    """Run ``programs`` on a Braket simulator kept per thread in ``cache`` (default: this
    process's, for pool workers); one raw output per program: Samples (shots x qubits, qubit
    order) or the exact State over all its qubits."""
    from braket.ir.openqasm import Program

    if device == "braket_dm":
        _quiet_braket()
    key = (device, seed, threading.get_ident())
    with _simulators_lock:
        cache = _simulators if cache is None else cache
        simulator = cache.get(key)
        if simulator is None:
            simulator = cache[key] = _make_simulator(device, seed)
    model = _noise_model(noise)
    dm = device == "braket_dm"
    outputs: list[Samples | State] = []
    for program in programs:
        source = program.source
        if model is not None:
            from braket.circuits import Circuit
            from braket.circuits.serialization import IRType

            source = model.apply(Circuit.from_ir(source)).to_ir(IRType.OPENQASM).source
        result = simulator.run(Program(source=source), shots=program.shots).result()
        outputs.append(raw_output(program, result, dm))
    return tuple(outputs)


def raw_output(program: BraketProgram, result: Any, density: bool) -> Samples | State:
    """A Braket ``GateModelQuantumTaskResult`` of ``program`` as the plan's raw output:
    Samples (shots x qubits, qubit order) or the exact State over all its qubits."""
    if program.shots:
        measured = np.asarray(result.measurements, dtype=np.int8)
        # Columns in measured_qubits order; a qubit Braket did not measure stays |0>.
        samples = np.zeros((program.shots, program.num_qubits), dtype=np.int8)
        samples[:, list(result.measured_qubits)] = measured
        return Samples(samples)
    values = np.asarray(result.values[0])
    if values.dtype.kind != "c" and values.ndim == (3 if density else 2):
        # Braket's cloud writes complex numbers as [re, im] pairs; the SDK turns a state
        # vector's back into complex numbers, a density matrix's not.
        values = values[..., 0] + 1j * values[..., 1]
    state = expand_state(values, program.used, program.num_qubits, density)
    return State(state, density=density)


def braket_program(circuit: QuantumScript, density: bool = False) -> BraketProgram:
    """A plan circuit as a Braket program. With shots: every qubit measured (per-shot
    samples). Without: the exact state, as a ``state_vector`` result (a ``density_matrix``
    one when ``density``). q[i] = circuit.wires[i]: Samples columns and State qubits come
    back in circuit.wires order."""
    if circuit.shots:
        source, used = to_openqasm3(circuit)
        return BraketProgram(source, circuit.shots.total_shots, used, len(circuit.wires))
    pragma = "density_matrix" if density else "state_vector"
    # Only a state result can see a global phase.
    phase = any(isinstance(mp, StateMP) for mp in circuit.measurements)
    source, used = to_openqasm3(circuit, measure=False, result_pragmas=[pragma],
                                global_phase=phase)
    return BraketProgram(source, 0, used, len(circuit.wires))


def expand_state(values: np.ndarray, used: frozenset[int], num_qubits: int,
                 dm: bool) -> np.ndarray:
    """Braket simulates only the qubits a program acts on (in index order); put the idle
    ones back in |0> (a state vector, or a density matrix when ``dm``)."""
    if values.shape[0] == 2**num_qubits:
        return values
    used_sorted = sorted(used)
    if values.shape[0] != 2 ** len(used_sorted):
        raise ValueError(f"Braket returned a {values.shape} result for {num_qubits} qubits")
    zero = np.zeros(2 ** (num_qubits - len(used_sorted)), dtype=values.dtype)
    zero[0] = 1
    # Qubit axes after the product: the used qubits in index order, then the idle ones.
    order = used_sorted + [q for q in range(num_qubits) if q not in used]
    axes = [order.index(q) for q in range(num_qubits)]
    if not dm:
        full = np.multiply.outer(values, zero).reshape([2] * num_qubits)
        return full.transpose(axes).reshape(-1)
    # kron(A, B)[(i, j), (k, l)] = A[i, k] B[j, l]: rows and columns are (used, idle).
    full = np.kron(values, np.outer(zero, zero)).reshape([2] * (2 * num_qubits))
    axes = axes + [num_qubits + a for a in axes]
    return full.transpose(axes).reshape(2**num_qubits, 2**num_qubits)


# -- the executor ---------------------------------------------------------------------------


class BraketLocalExecutor(QuantumExecutor):
    """Runs tapes on Amazon Braket's local simulators (no AWS account, fully offline).

    ``device``: ``"braket_sv"`` (state vector, up to 26 qubits) or ``"braket_dm"`` (density
    matrix, up to 13 qubits, noise). ``noise_model`` (braket_dm only): a Braket
    ``NoiseModel``, or a shorthand such as ``{"depolarizing": 0.01}`` applied after every
    gate; PennyLane noise channels in the circuit (``qml.DepolarizingChannel``,
    ``qml.add_noise``, ...) run natively on braket_dm too. ``seed`` makes shots
    reproducible. ``parallel="process"`` simulates on a pool of ``workers`` processes
    (default: on the calling thread, lowest overhead).

    Example:
        >>> ex = BraketLocalExecutor(device="braket_dm", noise_model={"depolarizing": 0.02},
        ...                          shots=2000, seed=7)
        >>> ex.run_circuit_sync(QuantumScript([qml.X(0)], [qml.expval(qml.Z(0))]))
        np.float64(-0.977)
    """

    device: Literal["braket_sv", "braket_dm"] = "braket_sv"
    seed: int | None = None
    """Seed of the shots' random stream (per process and thread); None: fresh entropy."""
    noise_model: dict[str, Any] | None = None
    """A Braket NoiseModel (kept as its ``to_dict()``) or ``{channel: probability}``."""
    parallel: Literal["process"] | None = None
    workers: int | None = Field(default=None, gt=0)

    backend_kind: ClassVar[str] = "braket-local"

    @field_validator("noise_model", mode="before")
    @classmethod
    def _noise_from_model(cls, value: Any) -> Any:
        if value is not None and hasattr(value, "to_dict") and hasattr(value, "apply"):
            return value.to_dict()  # a braket NoiseModel; its dict pickles anywhere
        if isinstance(value, dict) and "instructions" not in value:
            unknown = set(value) - set(NOISE_SHORTHAND)
            if unknown:
                raise ValueError(
                    f"unknown noise {sorted(unknown)}; use a Braket NoiseModel or "
                    f"{{name: probability}} with names {sorted(NOISE_SHORTHAND)}"
                )
            for name, p in value.items():
                if not isinstance(p, (int, float)) or not 0 <= p <= 1:
                    raise ValueError(f"noise {name}: probability must be in [0, 1], got {p!r}")
        return value

    @model_validator(mode="after")
    def _noise_needs_dm(self) -> BraketLocalExecutor:
        if self.noise_model and self.device != "braket_dm":
            raise ValueError(
                "noise_model needs device='braket_dm' (braket_sv simulates pure states)"
            )
        return self

    @property
    def backend_description(self) -> str:
        return f"braket:{self.device}"

    @property
    def capabilities(self) -> Capabilities:
        exact = _EXACT - {"state"} if self.device == "braket_dm" else _EXACT
        return Capabilities(
            max_wires=MAX_QUBITS[self.device],
            measurements=SAMPLING_MEASUREMENTS,
            exact_measurements=exact,
            native_gates=frozenset(BRAKET_GATES),
            mid_circuit_measurements=False,
        )

    def supports_operation(self, op: Any) -> bool:
        # Noise channels run natively on braket_dm (named pragmas, else kraus on <= 2 qubits).
        if self.device != "braket_dm" or not is_channel(op):
            return False
        return op.name in BRAKET_NOISE or len(op.wires) <= 2

    # -- caller's thread -------------------------------------------------------------------

    def translate(self, circuits: tuple[QuantumScript, ...]) -> Any:
        programs = tuple(braket_program(c, density=self.device == "braket_dm") for c in circuits)
        if self.parallel is None:
            # Simulate here, on the caller's thread (as LocalExecutor does): no hand-off.
            submitted_at, started = time.time(), time.perf_counter()
            cache = self._runtime.setdefault("simulators", {})
            outputs = _simulate(self.device, self.seed, self.noise_model, programs, cache)
            return programs, _InlineRun(outputs, submitted_at, time.perf_counter() - started)
        return programs, None

    # -- event loop ------------------------------------------------------------------------

    def _pool(self) -> concurrent.futures.Executor:
        pool = self._runtime.get("pool")
        if pool is None:
            # spawn: forking a process that runs the dispatcher thread is unsafe.
            pool = concurrent.futures.ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn")
            )
            self._runtime["pool"] = pool
        return pool

    async def submit(self, payload: Any) -> tuple[Any, tuple[str, ...]]:
        import asyncio

        programs, inline = payload
        if inline is not None:
            return asyncio.ensure_future(asyncio.sleep(0, result=inline.outputs)), ()
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(
            self._pool(), _simulate, self.device, self.seed, self.noise_model, programs
        )
        return work, ()

    async def collect(self, job: Any) -> list[Any]:
        return list(await job)  # one Samples/State per planned circuit

    async def cancel(self, job: Any) -> None:
        job.cancel()  # the inline run's task, or a pool's future not yet running

    def completed_inline(self, prepared: Prepared) -> BatchResult | None:
        _, inline = prepared.payload
        if inline is None or self.max_concurrent or self.rate:
            return None
        return self.runner.inline(prepared, inline.outputs, inline.submitted_at, inline.seconds)
