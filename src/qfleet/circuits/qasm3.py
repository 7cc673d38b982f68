"""Tape -> OpenQASM 3.0 as Amazon Braket reads it (Braket's gate names, noise pragmas).

Braket's OpenQASM 3 uses its own gate names (``cnot``, not ``cx``; ``si``, not ``sdg``;
``phaseshift``, not ``p``) and ``#pragma braket ...`` lines for noise channels and result
types. Qubit ``q[i]`` is ``tape.wires[i]``, as in :func:`qfleet.circuits.to_openqasm2`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pennylane as qml
from pennylane.tape import QuantumScript

from qfleet.circuits.results import require_computational_basis
from qfleet.errors import UnsupportedCircuitError

#: PennyLane gate -> Braket OpenQASM 3 gate. Each pair has the same matrix, global phase
#: included (tests/test_braket.py checks every entry against Braket's own gate matrices).
BRAKET_GATES: dict[str, str] = {
    "Identity": "i",
    "Hadamard": "h",
    "PauliX": "x",
    "PauliY": "y",
    "PauliZ": "z",
    "S": "s",
    "Adjoint(S)": "si",
    "T": "t",
    "Adjoint(T)": "ti",
    "SX": "v",
    "Adjoint(SX)": "vi",
    "RX": "rx",
    "RY": "ry",
    "RZ": "rz",
    "PhaseShift": "phaseshift",
    "U3": "U",
    "CNOT": "cnot",
    "CY": "cy",
    "CZ": "cz",
    "SWAP": "swap",
    "ISWAP": "iswap",
    "PSWAP": "pswap",
    "ECR": "ecr",
    "ControlledPhaseShift": "cphaseshift",
    "IsingXX": "xx",
    "IsingYY": "yy",
    "IsingZZ": "zz",
    "IsingXY": "xy",
    "Toffoli": "ccnot",
    "CSWAP": "cswap",
}

#: PennyLane noise channel -> Braket noise pragma with the same Kraus operators. Other
#: channels go as ``kraus([...])`` pragmas (at most two qubits).
BRAKET_NOISE: dict[str, str] = {
    "DepolarizingChannel": "depolarizing",
    "BitFlip": "bit_flip",
    "PhaseFlip": "phase_flip",
    "AmplitudeDamping": "amplitude_damping",
    "PhaseDamping": "phase_damping",
}


def _number(value) -> str:
    return repr(float(value))


def _complex(value: complex) -> str:
    value = complex(value)
    if value.imag == 0:
        return repr(value.real)
    sign = "+" if value.imag >= 0 else "-"
    return f"{value.real!r}{sign}{abs(value.imag)!r}im"


def _matrix(m: np.ndarray) -> str:
    return "[" + ", ".join("[" + ", ".join(_complex(x) for x in row) + "]" for row in m) + "]"


def is_channel(op) -> bool:
    """Whether ``op`` is a noise channel (Kraus operators, no unitary matrix)."""
    return isinstance(op, qml.operation.Channel)


def to_openqasm3(
    tape: QuantumScript,
    *,
    measure: bool = True,
    result_pragmas: Sequence[str] = (),
    global_phase: bool = False,
) -> tuple[str, frozenset[int]]:
    """Braket OpenQASM 3.0 for ``tape``; returns (source, indices of the qubits it acts on).

    ``measure``: ``b[i] = measure q[i]`` for every tape wire (shots runs); the tape's
    measurements must then be in the computational basis (pass it through
    a :class:`qfleet.sampling.SamplingPlan`). ``result_pragmas``: lines such as
    ``"state_vector"`` appended as ``#pragma braket result ...`` (exact runs).
    ``global_phase``: keep GlobalPhase as ``gphase`` (only a state result can see it).
    Noise channels become ``#pragma braket noise`` lines (run them on braket_dm).

    Example:
        >>> to_openqasm3(QuantumScript([qml.H(0), qml.CNOT([0, 1])], [qml.probs()]))[0]
        'OPENQASM 3.0;\\nqubit[2] q;\\nbit[2] b;\\nh q[0];\\ncnot q[0], q[1];\\n...'
    """
    if measure:
        require_computational_basis(tape)
    gate_set = set(BRAKET_GATES) | {"GlobalPhase"}
    keep = [op for op in tape.operations if is_channel(op)]
    if keep:
        # decompose() cannot take channels apart; leave every channel as it is.
        gate_set |= {op.name for op in keep}
    if all(op.name in gate_set for op in tape.operations):
        decomposed = tape  # already Braket's gates (a sampling plan's circuit)
    else:
        [decomposed], _ = qml.transforms.decompose(tape, gate_set=gate_set)
    index = {wire: i for i, wire in enumerate(tape.wires)}
    lines = ["OPENQASM 3.0;", f"qubit[{len(tape.wires)}] q;"]
    if measure and tape.wires:
        lines.append(f"bit[{len(tape.wires)}] b;")
    used: set[int] = set()
    for op in decomposed.operations:
        targets = [index[w] for w in op.wires]
        qubits = ", ".join(f"q[{i}]" for i in targets)
        if isinstance(op, qml.GlobalPhase):
            if global_phase:
                # PennyLane's GlobalPhase(phi) is exp(-i phi); OpenQASM's gphase(g) exp(+i g).
                lines.append(f"gphase({_number(-op.data[0])});")
            continue
        used.update(targets)
        if is_channel(op):
            name = BRAKET_NOISE.get(op.name)
            if name is not None:
                args = ", ".join(_number(p) for p in op.data)
                lines.append(f"#pragma braket noise {name}({args}) {qubits}")
            else:
                if len(targets) > 2:
                    raise UnsupportedCircuitError(
                        f"{op.name} acts on {len(targets)} qubits; Braket's kraus noise "
                        f"takes at most 2"
                    )
                kraus = ", ".join(_matrix(np.asarray(k)) for k in op.kraus_matrices())
                lines.append(f"#pragma braket noise kraus({kraus}) {qubits}")
            continue
        name = BRAKET_GATES.get(op.name)
        if name is None:  # decompose() leaves what it cannot decompose
            raise UnsupportedCircuitError(
                f"{op.name} has no Braket gate and no decomposition into Braket's gates"
            )
        args = f"({', '.join(_number(p) for p in op.data)})" if op.data else ""
        lines.append(f"{name}{args} {qubits};")
    if measure:
        lines.extend(f"b[{i}] = measure q[{i}];" for i in range(len(tape.wires)))
    lines.extend(f"#pragma braket result {pragma}" for pragma in result_pragmas)
    return "\n".join(lines) + "\n", frozenset(used)
