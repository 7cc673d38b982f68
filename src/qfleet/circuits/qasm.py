"""Tape -> OpenQASM 2.0 for text-circuit backends (qiskit, Quantinuum, Classiq, ...)."""

from __future__ import annotations

import pennylane as qml
from pennylane.io.to_openqasm import OPENQASM_GATES
from pennylane.tape import QuantumScript

from qfleet.circuits.results import require_computational_basis

#: PennyLane gates with a qelib1.inc equivalent; everything else is decomposed into these.
QASM2_GATES = frozenset(OPENQASM_GATES) - {"GlobalPhase"}


def to_openqasm2(tape: QuantumScript, precision: int | None = None) -> str:
    """OpenQASM 2.0 for ``tape``, measuring every tape wire: ``c[i] = measure q[i]`` for
    ``tape.wires[i]``.

    The tape's measurements must already be in the computational basis (pass it through
    :class:`qfleet.sampling.SamplingPlan`). Global phases are dropped: they change no
    measurement.

    Example:
        >>> to_openqasm2(QuantumScript([qml.H(0), qml.CNOT([0, 1])], [qml.probs()]))
        'OPENQASM 2.0;\\ninclude "qelib1.inc";\\nqreg q[2];\\ncreg c[2];\\nh q[0];\\n...'
    """
    require_computational_basis(tape)
    [decomposed], _ = qml.transforms.decompose(tape, gate_set=QASM2_GATES | {"GlobalPhase"})
    operations = [op for op in decomposed.operations if not isinstance(op, qml.GlobalPhase)]
    plain = QuantumScript(operations, decomposed.measurements, shots=tape.shots)
    return qml.to_openqasm(
        plain, wires=tape.wires, rotations=False, measure_all=True, precision=precision
    )
