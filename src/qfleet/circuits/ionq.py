"""Tape -> IonQ JSON circuit (``ionq.circuit.v1``, the "qis" gate set), and IonQ histograms
back to bitstrings in the shared convention (first tape wire first).

IonQ measures every qubit at the end of the circuit and returns a histogram of probabilities
keyed by the basis-state index, qubit 0 as the least significant bit: ``{"0": 0.5, "3": 0.5}``
for a Bell pair. Qubit ``i`` of the IonQ circuit is ``tape.wires[i]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pennylane as qml
from pennylane.tape import QuantumScript

from qfleet.circuits.results import require_computational_basis
from qfleet.errors import UnsupportedCircuitError

#: PennyLane operator name -> (IonQ gate, number of control wires). Controls come first in
#: the operator's wires, then the targets.
_GATES: dict[str, tuple[str, int]] = {
    "PauliX": ("x", 0),
    "PauliY": ("y", 0),
    "PauliZ": ("z", 0),
    "Hadamard": ("h", 0),
    "S": ("s", 0),
    "Adjoint(S)": ("si", 0),
    "T": ("t", 0),
    "Adjoint(T)": ("ti", 0),
    "SX": ("v", 0),
    "Adjoint(SX)": ("vi", 0),
    "RX": ("rx", 0),
    "RY": ("ry", 0),
    "RZ": ("rz", 0),
    "SWAP": ("swap", 0),
    "IsingXX": ("xx", 0),
    "IsingYY": ("yy", 0),
    "IsingZZ": ("zz", 0),
    "CNOT": ("x", 1),
    "CY": ("y", 1),
    "CZ": ("z", 1),
    "CRX": ("rx", 1),
    "CRY": ("ry", 1),
    "CRZ": ("rz", 1),
    "Toffoli": ("x", 2),
}

#: PennyLane gates with an IonQ "qis" equivalent; everything else is decomposed into these.
IONQ_GATES = frozenset(_GATES)


def to_ionq_circuit(tape: QuantumScript) -> dict[str, Any]:
    """IonQ's JSON circuit for ``tape``: ``{"gateset": "qis", "qubits": n, "circuit": [...]}``.

    Qubit ``i`` is ``tape.wires[i]``; IonQ measures all qubits at the end, so the tape's
    measurements must already be in the computational basis (pass it through
    :class:`qfleet.sampling.SamplingPlan`). Gates IonQ lacks are decomposed; global phases
    are dropped (they change no measurement).

    Example:
        >>> to_ionq_circuit(QuantumScript([qml.H(0), qml.CNOT([0, 1])], [qml.probs()]))
        {'gateset': 'qis', 'qubits': 2, 'circuit': [{'gate': 'h', 'targets': [0]},
         {'gate': 'x', 'controls': [0], 'targets': [1]}]}
    """
    require_computational_basis(tape)
    [decomposed], _ = qml.transforms.decompose(tape, gate_set=IONQ_GATES | {"GlobalPhase"})
    index = {wire: i for i, wire in enumerate(tape.wires)}
    circuit: list[dict[str, Any]] = []
    for op in decomposed.operations:
        if isinstance(op, qml.GlobalPhase):
            continue
        try:
            gate, num_controls = _GATES[op.name]
        except KeyError:  # decompose stopped at an operator without a decomposition
            raise UnsupportedCircuitError(
                f"{op.name} has no decomposition into IonQ's gates "
                f"({', '.join(sorted(IONQ_GATES))})"
            ) from None
        qubits = [index[w] for w in op.wires]
        instruction: dict[str, Any] = {"gate": gate}
        if num_controls:
            instruction["controls"] = qubits[:num_controls]
        instruction["targets"] = qubits[num_controls:]
        if op.num_params:
            angle = qml.math.toarray(op.parameters[0])
            instruction["rotation"] = float(np.real(angle))
        circuit.append(instruction)
    return {"gateset": "qis", "qubits": len(tape.wires), "circuit": circuit}


def histogram_bitstrings(histogram: Mapping[str, float], num_qubits: int) -> dict[str, float]:
    """IonQ's ``{"<basis index>": probability}`` as ``{bitstring: probability}``, bitstrings
    first qubit first (qubit 0 is the least significant bit of IonQ's index)."""
    out: dict[str, float] = {}
    for key, probability in histogram.items():
        index = int(key)
        if index < 0 or index >= 2**num_qubits:
            raise ValueError(f"IonQ histogram key {key!r} is out of range for {num_qubits} qubits")
        bits = "".join(str((index >> q) & 1) for q in range(num_qubits))
        out[bits] = out.get(bits, 0.0) + float(probability)
    return out


def counts_from_probabilities(
    probabilities: Mapping[str, float],
    shots: int,
    *,
    sample: bool,
    rng: np.random.Generator | None = None,
) -> dict[str, int]:
    """Counts summing to ``shots`` from a histogram of probabilities.

    ``sample=True`` (an ideal simulator's exact probabilities): draw ``shots`` samples, as
    hardware would. ``sample=False`` (hardware: probabilities are counts / shots): round back
    to the counts, keeping the total at ``shots``.
    """
    keys = list(probabilities)
    if not keys:
        raise ValueError("the histogram is empty")
    p = np.clip(np.array([probabilities[k] for k in keys], dtype=float), 0.0, None)
    total = p.sum()
    if not np.isclose(total, 1.0, atol=1e-3):
        raise ValueError(f"histogram probabilities add up to {total}, not 1")
    p = p / total
    if sample:
        drawn = (rng or np.random.default_rng()).multinomial(shots, p)
    else:
        drawn = np.rint(p * shots).astype(np.int64)
        drawn[int(np.argmax(p))] += shots - int(drawn.sum())  # rounding residue
    return {k: int(n) for k, n in zip(keys, drawn, strict=True) if n > 0}
