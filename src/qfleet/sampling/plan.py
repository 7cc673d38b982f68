"""The sampling plan: PennyLane tapes -> circuits a backend runs -> raw output -> results.

One path for every backend that is not itself a PennyLane device:

1. shots: a tape without shots runs exactly where the backend can; on a shots-only backend it
   runs with the executor's shots (warned once), ``sample``/``counts`` without shots raise;
2. parameter broadcasting is expanded into one circuit per parameter set;
3. mid-circuit measurements (``qml.measure``, ``qml.cond``) are deferred to extra wires
   when the backend does not run them itself;
4. sampled tapes: non-commuting measurements are split, every observable is diagonalized
   (Paulis by PennyLane, Hermitian/Projector/SparseHamiltonian through their eigenbasis),
   and each circuit measures all its wires in the computational basis;
5. every operation is decomposed into the backend's native gates, through the operator's
   matrix (``QubitUnitary``) where PennyLane has no decomposition (BlockEncode, ...);
6. a tape whose measurements need no circuit (``expval(Identity)``) still runs once, so a
   circuit the backend cannot run fails as it would with any other measurement.

The backend returns one raw output per circuit (:class:`Samples`, :class:`Counts`,
:class:`State` or :class:`Values`); :meth:`SamplingPlan.results` turns them into what
default.qubit returns for the original tapes.
"""

from __future__ import annotations

import dataclasses
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pennylane as qml
from pennylane.devices.preprocess import decompose
from pennylane.measurements import MidMeasureMP
from pennylane.ops import Conditional, PauliMeasure
from pennylane.tape import QuantumScript
from pennylane.transforms.core import CompilePipeline

from qfleet.circuits.results import result_from_samples, samples_from_counts
from qfleet.errors import UnsupportedCircuitError
from qfleet.sampling.capabilities import SHOTS_ONLY_MEASUREMENTS, Capabilities
from qfleet.sampling.kinds import measurement_kind


class ShotsWarning(UserWarning):
    """An analytic tape ran with an executor's shots on a backend that only samples."""


# -- raw output: what a backend hands back per circuit ---------------------------------------


@dataclasses.dataclass(frozen=True)
class Samples:
    """Per-shot outcomes, shape (shots, wires), columns in ``circuit.wires`` order."""

    array: np.ndarray


@dataclasses.dataclass(frozen=True)
class Counts:
    """A histogram {bitstring: count}; bitstrings list ``circuit.wires`` first wire first.

    A histogram has no shot order: where per-shot data is needed (``qml.sample``, shot
    vectors) the plan shuffles it uniformly (seeded), which is exactly how i.i.d. shots with
    that histogram are distributed.
    """

    counts: Mapping[str, int]


@dataclasses.dataclass(frozen=True)
class State:
    """An exact state vector (or density matrix) over ``circuit.wires``, first wire most
    significant."""

    array: np.ndarray
    density: bool = False


@dataclasses.dataclass(frozen=True)
class Values:
    """The circuit's result already in PennyLane's structure (an estimator, a simulator)."""

    value: Any


RawOutput = Samples | Counts | State | Values


# -- the plan -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Planned:
    """One original tape: its circuits' slice and how their results recombine."""

    start: int
    stop: int
    postprocess: Callable[[Sequence[Any]], Any]


@dataclasses.dataclass(frozen=True)
class SamplingPlan:
    """Circuits to run for a batch of tapes, and how their raw output becomes results.

    Example:
        >>> caps = Capabilities(analytic=False, measurements=SAMPLING_MEASUREMENTS,
        ...                     native_gates=frozenset({"RX", "RY", "RZ", "CNOT"}))
        >>> tape = QuantumScript([qml.Hadamard(0)], [qml.expval(qml.X(0))], shots=4)
        >>> plan = SamplingPlan.build([tape], caps)
        >>> [op.name for op in plan.circuits[0].operations]  # H, then X's eigenbasis
        ['RZ', 'GlobalPhase', 'RX', 'RZ', 'GlobalPhase', 'RY']
        >>> plan.results([Samples(np.zeros((4, 1), dtype=int))])
        (np.float64(1.0),)
    """

    tapes: tuple[QuantumScript, ...]
    circuits: tuple[QuantumScript, ...]
    """What the backend runs, in order: native gates, no broadcasting, and for sampled
    circuits one computational-basis sample of all their wires."""
    readers: tuple[QuantumScript | None, ...]
    """Per circuit: the tape whose measurements read its output (None: run only)."""
    planned: tuple[_Planned, ...]
    seed: int | None = None
    is_passthrough: bool = False
    """The backend runs the tapes themselves; its raw output is the results."""

    @property
    def shots_used(self) -> tuple[int | None, ...]:
        """Per original tape: the shots its circuits ran (None: exact)."""
        if self.is_passthrough:
            return tuple(t.shots.total_shots if t.shots else None for t in self.tapes)
        used = []
        for entry in self.planned:
            circuits = self.circuits[entry.start : entry.stop]
            shots = [c.shots.total_shots for c in circuits if c.shots]
            used.append(sum(shots) if shots else None)
        return tuple(used)

    @classmethod
    def passthrough(cls, tapes: Sequence[QuantumScript]) -> SamplingPlan:
        """The plan of a backend that runs PennyLane tapes itself: raw output = results."""
        tapes = tuple(tapes)
        return cls(tapes, tapes, tapes, (), is_passthrough=True)

    @classmethod
    def build(
        cls,
        tapes: Sequence[QuantumScript],
        caps: Capabilities,
        *,
        executor: str = "the executor",
        accepts: Callable[[Any], bool] | None = None,
        seed: int | None = None,
    ) -> SamplingPlan:
        """Plan ``tapes`` for a backend with ``caps`` (raises UnsupportedCircuitError).

        ``accepts(op)`` admits operators beyond ``caps.native_gates`` (e.g. noise channels a
        density-matrix simulator runs); ``executor`` names the backend in messages.
        """
        if caps.takes_tapes:
            return cls.passthrough(tapes)
        circuits: list[QuantumScript] = []
        readers: list[QuantumScript | None] = []
        planned: list[_Planned] = []
        native = _native(caps, accepts)
        for tape in tapes:
            tape = _with_shots(tape, caps, executor)
            reason = caps.why_not(tape)
            if reason:
                raise UnsupportedCircuitError(f"{executor} cannot run this circuit: {reason}")
            parts, postprocess = _front_pipeline(tape, caps)((tape,))
            start = len(circuits)
            slices: list[tuple[int, int, Callable]] = []
            for part in parts:
                pairs, combine = _executable(part, caps)
                first = len(circuits) - start
                for reader, circuit in pairs:
                    readers.append(reader)
                    circuits.append(_to_native(circuit, native, executor))
                slices.append((first, len(circuits) - start, combine))
            if not parts and tape.operations:
                # Nothing to measure (expval of the identity), but the circuit must still be
                # one the backend can run: send it once (broadcast and deferred like any
                # other) and ignore the outcome.
                probe = QuantumScript(tape.operations, [qml.sample(wires=tape.wires)], shots=1)
                for part in _front_pipeline(probe, caps)((probe,))[0]:
                    readers.append(None)
                    circuits.append(_to_native(part, native, executor))
            planned.append(_Planned(start, len(circuits), _recombine(slices, postprocess)))
        return cls(tuple(tapes), tuple(circuits), tuple(readers), tuple(planned), seed)

    def results(self, raw: Sequence[RawOutput | Any]) -> tuple[Any, ...]:
        """PennyLane results of the original tapes from one raw output per circuit."""
        if len(raw) != len(self.circuits):
            raise ValueError(f"got {len(raw)} outputs for {len(self.circuits)} circuits")
        if self.is_passthrough:
            return tuple(raw)
        rng = np.random.default_rng(self.seed)
        values = [
            None if reader is None else _read(reader, circuit, output, rng)
            for reader, circuit, output in zip(self.readers, self.circuits, raw, strict=True)
        ]
        return tuple(
            entry.postprocess(values[entry.start : entry.stop]) for entry in self.planned
        )


def _first(results: Sequence[Any]) -> Any:
    return results[0]


def _recombine(slices: Sequence[tuple[int, int, Callable]], postprocess: Callable) -> Callable:
    """Circuit outputs -> one result per split tape -> the original tape's result."""

    def recombine(values: Sequence[Any]) -> Any:
        return postprocess([combine(values[a:b]) for a, b, combine in slices])[0]

    return recombine


# -- building -------------------------------------------------------------------------------

_warned: set[tuple[str, int]] = set()
_warned_lock = threading.Lock()


def _with_shots(tape: QuantumScript, caps: Capabilities, executor: str) -> QuantumScript:
    if tape.shots or caps.analytic:
        return tape
    kinds = {measurement_kind(mp) for mp in tape.measurements}
    if kinds & SHOTS_ONLY_MEASUREMENTS:
        raise UnsupportedCircuitError(
            f"{', '.join(sorted(kinds & SHOTS_ONLY_MEASUREMENTS))}() needs shots: set shots "
            f"on the QNode (qml.set_shots) or on the executor"
        )
    if caps.default_shots is None:
        raise UnsupportedCircuitError(
            f"{executor} only samples and neither the circuit nor the executor has shots; "
            f"set shots on the QNode (qml.set_shots) or on the executor (shots=1024)"
        )
    key = (executor, caps.default_shots)
    with _warned_lock:
        first = key not in _warned
        _warned.add(key)
    if first:
        warnings.warn(
            f"{executor} only samples: analytic measurements run with {caps.default_shots} "
            f"shots and are estimates. Set shots on the QNode or the executor to choose.",
            ShotsWarning,
            stacklevel=6,
        )
    return tape.copy(shots=caps.default_shots)


def is_mid_circuit(op: Any) -> bool:
    """A mid-circuit measurement or an operation conditioned on one."""
    return isinstance(op, (MidMeasureMP, Conditional, PauliMeasure))


_support_by_type: dict[type, bool] = {}


def needs_backend_support(op: Any) -> bool:
    """True for operators no gate set reaches (no matrix, no decomposition, not a
    mid-circuit measurement): noise channels, state preparations. Only the backend itself
    can run them (see ``supports_operation``); cached per operator class, as this is asked
    on every batch's path."""
    needs = _support_by_type.get(type(op))
    if needs is None:
        needs = not (op.has_matrix or op.has_decomposition or is_mid_circuit(op))
        _support_by_type[type(op)] = needs
    return needs


def _has_mcm(tape: QuantumScript) -> bool:
    return any(is_mid_circuit(op) for op in tape.operations)


def _front_pipeline(tape: QuantumScript, caps: Capabilities) -> CompilePipeline:
    pipeline = CompilePipeline()
    if tape.batch_size:
        pipeline.add_transform(qml.transforms.broadcast_expand)
    if _has_mcm(tape) and not caps.mid_circuit_measurements:
        if any(getattr(op, "postselect", None) is not None for op in tape.operations):
            raise UnsupportedCircuitError(
                "postselection (qml.measure(..., postselect=...)) needs a backend that runs "
                "mid-circuit measurements itself; use a local simulator"
            )
        pipeline.add_transform(qml.defer_measurements)
    if tape.shots and not caps.observables:
        if any(isinstance(mp.obs, qml.SparseHamiltonian) for mp in tape.measurements):
            pipeline.add_transform(_dense_sparse_hamiltonians)
        pipeline.add_transform(qml.transforms.split_non_commuting)
        pipeline.add_transform(qml.transforms.diagonalize_measurements)
    return pipeline


@qml.transform
def _dense_sparse_hamiltonians(tape: QuantumScript):
    """SparseHamiltonian has no diagonalizing gates; as a Hermitian it has them."""
    measurements = [
        type(mp)(qml.Hermitian(mp.obs.sparse_matrix(wire_order=mp.obs.wires).toarray(),
                               wires=mp.obs.wires))
        if isinstance(mp.obs, qml.SparseHamiltonian) else mp
        for mp in tape.measurements
    ]
    return (tape.copy(measurements=measurements),), _first


def _diagonal(obs: Any) -> bool:
    return obs is None or (obs.has_diagonalizing_gates and not obs.diagonalizing_gates())


def _executable(
    tape: QuantumScript, caps: Capabilities
) -> tuple[list[tuple[QuantumScript, QuantumScript]], Callable]:
    """(reader, circuit) pairs for one split tape, and how their results make its result.

    Exact or estimator tapes run as they are. Sampled tapes: observables PennyLane's
    diagonalization left (Hermitian, Projector, ...) are rotated into their eigenbasis
    here; the reader keeps the observable, whose ``process_samples`` maps basis states to
    its eigenvalues, as default.qubit does.
    """
    if not tape.shots or caps.observables:
        return [(tape, tape)], _first
    pending = [mp for mp in tape.measurements if not _diagonal(mp.obs)]
    others = [mp for mp in tape.measurements if _diagonal(mp.obs)]
    taken: set[Any] = set().union(*(mp.wires for mp in others)) if others else set()
    rotated: list[Any] = []
    for mp in pending:
        if any(qml.equal(mp.obs, seen) for seen in rotated):
            continue
        if taken & set(mp.wires):
            break  # two bases on one wire: read each measurement from its own circuit
        rotated.append(mp.obs)
        taken |= set(mp.wires)
    else:
        gates = [g for obs in rotated for g in obs.diagonalizing_gates()]
        return [(tape, _sample_all(tape, gates))], _first
    pairs = [
        (single, _sample_all(single, [] if _diagonal(mp.obs) else mp.obs.diagonalizing_gates()))
        for mp in tape.measurements
        for single in [tape.copy(measurements=[mp])]
    ]
    return pairs, _per_measurement(tape)


def _per_measurement(tape: QuantumScript) -> Callable:
    """Results of one-measurement tapes -> the result of ``tape`` (shot vectors too)."""

    def combine(values: Sequence[Any]) -> Any:
        if not tape.shots.has_partitioned_shots:
            return tuple(values)
        return tuple(tuple(v[i] for v in values) for i in range(tape.shots.num_copies))

    return combine


def _sample_all(tape: QuantumScript, rotations: list[Any]) -> QuantumScript:
    return QuantumScript(
        [*tape.operations, *rotations], [qml.sample(wires=tape.wires)], shots=tape.shots
    )


def _native(caps: Capabilities, accepts: Callable[[Any], bool] | None) -> Callable[[Any], bool]:
    gates = caps.native_gates or frozenset()
    runs_mcm = caps.mid_circuit_measurements

    def is_native(op: Any) -> bool:
        return (
            op.name in gates
            or isinstance(op, qml.GlobalPhase)
            or (runs_mcm and is_mid_circuit(op))
            or (accepts is not None and accepts(op))
        )

    return is_native


def _matrix_fallback(op: Any) -> Sequence[Any]:
    """PennyLane's decomposition, else the operator's matrix as a QubitUnitary."""
    if op.has_decomposition:
        return op.decomposition()
    if op.has_matrix:
        return [qml.QubitUnitary(op.matrix(), wires=op.wires)]
    return op.decomposition()  # raises DecompositionUndefinedError: reported below


def _to_native(
    tape: QuantumScript, is_native: Callable[[Any], bool], executor: str
) -> QuantumScript:
    if all(is_native(op) for op in tape.operations):
        return tape
    try:
        [native], _ = decompose(
            tape, stopping_condition=is_native, decomposer=_matrix_fallback, name=executor
        )
    except qml.exceptions.DeviceError as exc:
        foreign = sorted({op.name for op in tape.operations if not is_native(op)})
        raise UnsupportedCircuitError(
            f"{', '.join(foreign)} cannot be decomposed into the native gates of {executor} "
            f"({exc}); use gates it runs or another executor"
        ) from exc
    return native


# -- reading --------------------------------------------------------------------------------


def _read(reader: QuantumScript, circuit: QuantumScript, output: Any, rng: np.random.Generator):
    if isinstance(output, Values):
        return output.value
    if isinstance(output, Counts):
        output = Samples(samples_from_counts(output.counts, len(circuit.wires), rng))
    if isinstance(output, Samples):
        return result_from_samples(reader, output.array, wire_order=circuit.wires)
    if isinstance(output, State):
        return _from_state(reader, circuit, output)
    raise TypeError(
        f"unknown raw output {type(output).__name__}; use Samples, Counts, State or Values"
    )


def _from_state(reader: QuantumScript, circuit: QuantumScript, output: State) -> Any:
    """Exact results: PennyLane's own state measurements, as default.qubit computes them."""
    n = len(circuit.wires)
    # Only the measurements: some templates cannot map their wires (HilbertSchmidt).
    wire_map = {w: i for i, w in enumerate(circuit.wires)}
    measurements = [mp.map_wires(wire_map) for mp in reader.measurements]
    if output.density:
        values = np.asarray(output.array).reshape([2] * (2 * n))
        measure = qml.devices.qubit_mixed.measure
    else:
        values = np.asarray(output.array).reshape([2] * n)
        measure = qml.devices.qubit.measure
    processed = tuple(measure(mp, values) for mp in measurements)
    return processed[0] if len(processed) == 1 else processed
