"""Tape -> cQASM 3.0: every program parses with libqasm, and qxelarator's final state equals
PennyLane's (up to a global phase), for the full gate set and for restricted targets."""

from __future__ import annotations

import math

import numpy as np
import pennylane as qml
import pytest
from pennylane.tape import QuantumScript

from qfleet.circuits.cqasm import CQASM3_GATES, CqasmTarget, native_gates, to_cqasm3
from qfleet.errors import UnsupportedCircuitError
from qfleet.sampling import Capabilities, SamplingPlan

cq = pytest.importorskip("cqasm.v3x")
qxelarator = pytest.importorskip("qxelarator")

NATIVE = CqasmTarget(pgs={"X90", "mX90", "Y90", "mY90", "Rz", "CZ"})
TARGETS = {
    "all gates": None,
    "native X90/Y90/Rz/CZ": NATIVE,
    "rx ry cnot": CqasmTarget(pgs={"RX", "RY", "CNOT"}),
    "h rz cnot": CqasmTarget(pgs={"h", "rz", "cnot"}),
    "paulis + native": CqasmTarget(pgs={"X", "Y", "Z", "X90", "MX90", "Y90", "MY90", "RZ", "CZ"}),
}


def analyze(text: str):
    """libqasm's program; fails the test with libqasm's messages when it does not parse."""
    program = cq.Analyzer().analyze_string(text)  # a fresh Analyzer per program
    assert not isinstance(program, list), f"libqasm rejected:\n{text}\n{program}"
    return program


def qx_state(text: str, num_qubits: int) -> np.ndarray:
    """qxelarator's final state of ``text`` without its measurements, as a PennyLane state
    vector (wire 0 most significant)."""
    body = "\n".join(
        line for line in text.splitlines() if "measure" not in line and not line.startswith("bit[")
    )
    result = qxelarator.execute_string(body, iterations=1, seed=1)
    assert hasattr(result, "state"), result
    psi = np.zeros(2**num_qubits, dtype=complex)
    for key, amplitude in result.state.items():  # key: q[n-1]...q[0]
        psi[int(key[::-1], 2)] = complex(amplitude)
    return psi


def same_up_to_phase(a: np.ndarray, b: np.ndarray) -> bool:
    k = int(np.argmax(abs(b)))
    phase = a[k] / b[k]
    return abs(abs(phase) - 1) < 1e-7 and np.allclose(a, phase * b, atol=1e-7)


def pl_state(ops, num_qubits: int) -> np.ndarray:
    return qml.matrix(QuantumScript(ops), wire_order=range(num_qubits))[:, 0]


GATE_ZOO = [
    qml.Hadamard(0), qml.PauliX(1), qml.PauliY(2), qml.PauliZ(0), qml.S(1), qml.adjoint(qml.S(2)),
    qml.T(0), qml.adjoint(qml.T(1)), qml.SX(2), qml.adjoint(qml.SX(0)), qml.RX(0.3, 1),
    qml.RY(-1.2, 2), qml.RZ(2.5, 0), qml.PhaseShift(0.7, 1), qml.CNOT([0, 1]), qml.CZ([1, 2]),
    qml.SWAP([0, 2]), qml.ControlledPhaseShift(0.9, [2, 0]), qml.Rot(0.1, 0.2, 0.3, wires=1),
    qml.CRX(0.4, wires=[0, 1]), qml.Toffoli([0, 1, 2]), qml.IsingXX(0.3, [0, 2]),
    qml.U3(0.1, 0.2, 0.3, wires=0), qml.PauliRot(0.3, "XY", wires=[0, 1]), qml.ISWAP([1, 2]),
    qml.RX(math.pi / 2, 1), qml.RY(-math.pi / 2, 0), qml.RZ(math.pi, 2), qml.RZ(1e-7, 2),
    qml.QubitUnitary(qml.matrix(qml.Hadamard(0) @ qml.S(0)), wires=2), qml.GlobalPhase(0.4),
]  # fmt: skip


@pytest.mark.parametrize("target", list(TARGETS.values()), ids=list(TARGETS))
def test_gate_zoo_state_matches_pennylane(target):
    tape = QuantumScript(GATE_ZOO, [qml.probs(wires=[0, 1, 2])])
    program = to_cqasm3(tape, target)
    analyze(program.text)
    assert same_up_to_phase(qx_state(program.text, 3), pl_state(GATE_ZOO, 3))
    if target is not None:
        used = {line.split()[0].split("(")[0] for line in program.text.splitlines()[5:] if line and "measure" not in line}
        assert {g.upper() for g in used} <= target.pgs, used


@pytest.mark.parametrize("seed", range(4))
def test_templates_and_random_circuits(seed):
    rng = np.random.default_rng(seed)
    weights = rng.uniform(0, 2 * np.pi, qml.StronglyEntanglingLayers.shape(2, 3))
    ops = [
        *qml.StronglyEntanglingLayers(weights, wires=range(3)).decomposition(),
        *qml.QFT(wires=range(3)).decomposition(),
        qml.GroverOperator(wires=range(3)),
        qml.RandomLayers(rng.uniform(0, 2, (1, 5)), wires=range(3), seed=seed),
    ]
    tape = QuantumScript(ops, [qml.probs(wires=range(3))])
    for target in (None, NATIVE):
        program = to_cqasm3(tape, target)
        analyze(program.text)
        assert same_up_to_phase(qx_state(program.text, 3), pl_state(ops, 3))


def test_program_layout_and_measurements():
    tape = QuantumScript([qml.H(0), qml.CNOT([0, 1]), qml.RX(1e-5, 1)], [qml.probs()])
    program = to_cqasm3(tape)
    assert program.text == (
        "version 3.0\n\nqubit[2] q\nbit[2] b\n\nH q[0]\nCNOT q[0], q[1]\nRx(1.0e-05) q[1]\n\n"
        "b[0] = measure q[0]\nb[1] = measure q[1]\n"
    )
    semantic = analyze(program.text)
    assert [v.name for v in semantic.variables] == ["q", "b"]
    assert (program.qubits, program.num_qubits) == ((0, 1), 2)


def test_every_gate_name_parses():
    for name, (arity, nparams) in CQASM3_GATES.items():
        params = "(0.5)" if nparams else ""
        args = ", ".join(f"q[{i}]" for i in range(arity))
        analyze(f"version 3.0\nqubit[2] q\n{name}{params} {args}\n")


def test_wire_labels():
    # integer wires within nqubits are physical qubits
    program = to_cqasm3(QuantumScript([qml.X(3)], [qml.probs(wires=[3])]), CqasmTarget(nqubits=5))
    assert (program.qubits, program.num_qubits) == ((3,), 4)
    assert program.bits_for_wires("1000") == "1"
    # other labels are numbered in tape order
    program = to_cqasm3(QuantumScript([qml.X("b"), qml.CNOT(["b", "a"])], [qml.probs()]))
    assert program.wires == ("b", "a") and program.qubits == (0, 1)
    assert "X q[0]\nCNOT q[0], q[1]" in program.text
    assert program.bits_for_wires("10") == "01"  # q[1]=1 (wire "a"), q[0]=0 (wire "b")
    # integers beyond nqubits fall back to numbering
    program = to_cqasm3(QuantumScript([qml.X(7)], [qml.probs()]), CqasmTarget(nqubits=2))
    assert program.qubits == (0,) and program.num_qubits == 1


def test_measurement_basis_and_split():
    tape = QuantumScript([qml.RY(0.4, 0)], [qml.expval(qml.X(0)), qml.expval(qml.Z(0))], shots=10)
    with pytest.raises(UnsupportedCircuitError, match="computational basis"):
        to_cqasm3(tape)
    caps = Capabilities(analytic=False, native_gates=native_gates(CqasmTarget()),
                        mid_circuit_measurements=False)
    plan = SamplingPlan.build([tape], caps)
    assert len(plan.circuits) == 2  # X and Z do not commute
    for circuit in plan.circuits:
        analyze(to_cqasm3(circuit).text)


@pytest.mark.parametrize(
    "tape, target, match",
    [
        (QuantumScript([qml.CNOT([0, 2])], [qml.probs()]),
         CqasmTarget(nqubits=3, topology={(0, 1), (1, 2)}), "no connection between qubits 0 and 2"),
        (QuantumScript([qml.H(w) for w in range(4)], [qml.probs()]), CqasmTarget(nqubits=3), "3 qubits"),
        (QuantumScript([qml.H("a"), qml.H("b")], [qml.probs()]), CqasmTarget(nqubits=1), "1 qubits"),
        (QuantumScript([qml.CNOT([0, 1])], [qml.probs()]), CqasmTarget(pgs={"X", "Rz"}), "gate set"),
        (QuantumScript([qml.H(0)], [qml.probs()]), CqasmTarget(pgs={"CZ"}), "gate set"),
        (QuantumScript([qml.RX(float("nan"), 0)], [qml.probs()]), None, "finite"),
    ],
)  # fmt: skip
def test_target_restrictions_raise_before_sending(tape, target, match):
    with pytest.raises(UnsupportedCircuitError, match=match):
        to_cqasm3(tape, target)


def test_topology_either_direction_and_decomposed_swap():
    line = CqasmTarget(nqubits=3, topology={(0, 1), (1, 2)}, pgs=NATIVE.pgs)
    tape = QuantumScript([qml.H(0), qml.CNOT([1, 0]), qml.SWAP([2, 1])], [qml.probs()])
    program = to_cqasm3(tape, line)
    analyze(program.text)
    assert same_up_to_phase(qx_state(program.text, 3), pl_state(tape.operations, 3))


def test_mid_circuit_measurement_rejected():
    m0 = qml.measure(0)
    tape = QuantumScript([qml.H(0), m0.measurements[0]], [qml.probs(wires=[0])])
    with pytest.raises(UnsupportedCircuitError, match="mid-circuit"):
        to_cqasm3(tape)


def test_zero_wire_tape_still_declares_a_qubit():
    program = to_cqasm3(QuantumScript([], []))
    assert "qubit[1] q" in program.text
    analyze(program.text)


def test_target_from_static_payload():
    target = CqasmTarget.from_static({"nqubits": 2, "pgs": ["X", "CZ"], "topology": [[0, 1]]})
    assert target.nqubits == 2 and target.allows("x") and not target.allows("H")
    assert target.connected(1, 0) and CqasmTarget.from_static({"nqubits": 2, "pgs": [], "topology": []}).pgs is None
