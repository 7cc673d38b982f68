"""Tape -> qiskit ``QuantumCircuit``, observables -> ``SparsePauliOp``, qiskit samples back.

No pennylane-qiskit (it pins qiskit<=2.3 and does not work with PennyLane 0.45): circuits go
through OpenQASM 2 (:func:`qfleet.circuits.to_openqasm2`), which every qiskit can load.

Conventions (the same as :mod:`qfleet.circuits.qasm`): qubit ``i`` and clbit ``i`` are
``tape.wires[i]``. Qiskit orders bitstrings little-endian (clbit 0 rightmost);
:func:`samples_from_bit_array` returns rows first wire first, as
:func:`qfleet.circuits.result_from_samples` expects.

qiskit is imported lazily: importing this module needs no ``ibm`` extra, calling it does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pennylane as qml
from pennylane.tape import QuantumScript
from pennylane.wires import Wires

from qfleet.circuits.qasm import to_openqasm2
from qfleet.errors import UnsupportedCircuitError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from qiskit import QuantumCircuit
    from qiskit.quantum_info import SparsePauliOp

#: Name of the classical register :func:`to_openqasm2` writes (``creg c[n]``).
CREG = "c"


def tape_to_circuit(tape: QuantumScript, *, measure: bool = True) -> QuantumCircuit:
    """A qiskit circuit for ``tape``: qubit ``i`` is ``tape.wires[i]``.

    ``measure=True`` (sampling backends): the tape's measurements must be diagonal (a
    sampling plan's circuit: one ``qml.sample`` of all its wires); every tape wire is measured,
    ``c[i] <- q[i]``. ``measure=False`` (Estimator): the circuit has no measurements and the
    tape's measurements are ignored; their observables go separately
    (:func:`observable_to_sparse_pauli`).

    Example:
        >>> tape = QuantumScript([qml.H(0), qml.CNOT([0, 1])], [qml.probs()], shots=100)
        >>> tape_to_circuit(tape).count_ops()
        OrderedDict([('measure', 2), ('h', 1), ('cx', 1)])
    """
    from qiskit import qasm2

    if not measure:
        # to_openqasm2 checks the measurements are diagonal: give it none, keep all wires.
        tape = QuantumScript(tape.operations, [qml.probs(wires=tape.wires)], shots=tape.shots)
    qasm = to_openqasm2(tape)
    circuit = qasm2.loads(qasm, custom_instructions=qasm2.LEGACY_CUSTOM_INSTRUCTIONS)
    if not measure:
        circuit.remove_final_measurements(inplace=True)
    return circuit


def observable_to_sparse_pauli(observable: Any, wires: Wires) -> SparsePauliOp:
    """``observable`` as a ``SparsePauliOp`` on ``len(wires)`` qubits (qubit ``i`` = ``wires[i]``).

    Pauli words, sums, products, Hamiltonians and ``qml.Hermitian`` (decomposed into Paulis)
    are supported. Call on the caller's thread: decomposing builds PennyLane operators.

    Example:
        >>> observable_to_sparse_pauli(qml.X(0) @ qml.Z(2) + 0.5 * qml.Y(1), Wires([0, 1, 2]))
        SparsePauliOp(['ZIX', 'IYI'], coeffs=[1. +0.j, 0.5+0.j])
    """
    from qiskit.quantum_info import SparsePauliOp

    sentence = observable.pauli_rep
    if sentence is None:
        try:
            matrix = qml.matrix(observable, wire_order=observable.wires)
        except Exception as exc:  # no matrix: nothing to decompose
            raise UnsupportedCircuitError(
                f"cannot express {observable} as Pauli operators for the Estimator; use "
                f"Pauli words, sums of them or qml.Hermitian, or device='sampler'"
            ) from exc
        sentence = qml.pauli_decompose(matrix, wire_order=observable.wires, pauli=True)
    index = {wire: i for i, wire in enumerate(wires)}
    missing = [w for w in observable.wires if w not in index]
    if missing:
        raise UnsupportedCircuitError(f"{observable} acts on wires {missing} outside the circuit")
    terms = []
    for word, coeff in sentence.items():
        coeff = complex(coeff)
        if abs(coeff.imag) > 1e-12:
            raise UnsupportedCircuitError(f"{observable} is not Hermitian (complex coefficient)")
        terms.append(("".join(word.values()), [index[w] for w in word], coeff.real))
    if not terms:
        terms.append(("", [], 0.0))
    return SparsePauliOp.from_sparse_list(terms, num_qubits=len(wires))


def samples_from_bit_array(bit_array: Any) -> np.ndarray:
    """Per-shot samples (shots x bits, clbit 0 first = ``tape.wires[0]`` first) from a qiskit
    ``BitArray`` (``pub_result.data.c``), keeping the shot order.

    Numpy only (no PennyLane objects): safe on any thread.
    """
    samples = np.asarray(bit_array.to_bool_array(order="little"), dtype=np.int8)
    return samples.reshape(-1, bit_array.num_bits)
