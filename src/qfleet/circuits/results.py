"""Computational-basis samples or counts -> PennyLane results (one place for all backends).

Convention: a sample row / bitstring lists the tape's wires in ``tape.wires`` order, first
wire first (PennyLane's order). Backends with other orders (qiskit, cQASM: rightmost =
qubit 0) reverse their strings before calling these functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pennylane as qml
from pennylane.devices.preprocess import validate_device_wires
from pennylane.tape import QuantumScript

from qfleet.errors import UnsupportedCircuitError


def require_computational_basis(tape: QuantumScript) -> None:
    """Raise UnsupportedCircuitError unless every measurement of ``tape`` is diagonal in the
    computational basis (what circuit exporters can measure)."""
    for mp in tape.measurements:
        diagonal = mp.obs is None or (
            mp.obs.has_diagonalizing_gates and not mp.obs.diagonalizing_gates()
        )
        if not diagonal:
            raise UnsupportedCircuitError(
                f"{mp} is not in the computational basis; export the circuits of a "
                f"qfleet.sampling.SamplingPlan (they measure in the computational basis)"
            )


def _check_sampled(tape: QuantumScript) -> None:
    if not tape.shots:
        raise UnsupportedCircuitError(
            "this backend samples; set shots on the QNode (qml.set_shots) or on the executor"
        )


def _all_wires_explicit(tape: QuantumScript) -> QuantumScript:
    """``qml.probs()``, ``qml.counts()``, ``qml.sample()`` without wires measure every wire
    of the tape (a device fills them in; a tape that skipped the device's preprocessing
    has not)."""
    if all(mp.obs is not None or mp.wires for mp in tape.measurements) or not tape.wires:
        return tape
    [filled], _ = validate_device_wires(tape, wires=tape.wires)
    return filled


def _per_bin(tape: QuantumScript, process) -> Any:
    """Apply ``process(mp, shot_range)`` to every measurement, in PennyLane's structure."""
    tape = _all_wires_explicit(tape)
    single = len(tape.measurements) == 1

    def one_bin(shot_range):
        values = tuple(process(mp, shot_range) for mp in tape.measurements)
        return values[0] if single else values

    if not tape.shots.has_partitioned_shots:
        return one_bin(None)
    return tuple(one_bin((lower, upper)) for lower, upper in tape.shots.bins())


def result_from_samples(
    tape: QuantumScript, samples: np.ndarray, wire_order: Sequence[Any] | None = None
) -> Any:
    """PennyLane's result for ``tape`` from computational-basis ``samples``.

    ``samples`` has shape (total shots, number of wires), columns in ``wire_order``
    (default: ``tape.wires``) order. Shot vectors are split in order, as default.qubit does.

    Example:
        >>> tape = QuantumScript([], [qml.expval(qml.Z(0))], shots=4)
        >>> result_from_samples(tape, np.array([[0], [0], [1], [0]]))
        np.float64(0.5)
    """
    _check_sampled(tape)
    wires = tape.wires if wire_order is None else qml.wires.Wires(wire_order)
    samples = np.asarray(samples, dtype=np.int64).reshape(-1, len(wires) or 1)
    if samples.shape[0] != tape.shots.total_shots:
        raise ValueError(
            f"backend returned {samples.shape[0]} samples for {tape.shots.total_shots} shots"
        )

    def process(mp, shot_range):
        return mp.process_samples(samples, wire_order=wires, shot_range=shot_range)

    return _per_bin(tape, process)


def samples_from_counts(
    counts: Mapping[str, int], num_wires: int, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Per-shot samples (shuffled) that have exactly the histogram ``counts``.

    For backends that return only histograms; the shuffle stands in for the unknown order.
    """
    rows = [
        np.repeat(np.array([[int(b) for b in bitstring]], dtype=np.int64), count, axis=0)
        for bitstring, count in counts.items()
        if count
    ]
    samples = np.concatenate(rows) if rows else np.zeros((0, num_wires), dtype=np.int64)
    if samples.shape[1] != num_wires:
        raise ValueError(f"bitstrings have {samples.shape[1]} bits, expected {num_wires}")
    (rng or np.random.default_rng()).shuffle(samples)
    return samples
