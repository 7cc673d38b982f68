"""Compiling for QuTech hardware with OpenSquirrel, end to end on ``qfleet serve-2300``
configured like hardware (native X90/mX90/Y90/mY90/Rz/CZ; a 5-qubit line and a 7-qubit
star, which also reports its own compiler passes): results in the user's wire order, within
5 sigma of default.qubit."""

from __future__ import annotations

import math

import numpy as np
import pennylane as qml
import pytest
from pennylane import numpy as pnp
from pennylane.tape import QuantumScript

import qfleet as qf
from qfleet.circuits.compile2300 import compile_for_target, logical_circuit
from qfleet.circuits.cqasm import CqasmTarget
from qfleet.errors import UnsupportedCircuitError

pytest_plugins = ["p2300_support"]

SHOTS = 20000
NATIVE = {"X90", "MX90", "Y90", "MY90", "RZ", "CZ"}
LINE5 = CqasmTarget(nqubits=5, pgs=NATIVE, topology={(i, i + 1) for i in range(4)})
STAR7 = CqasmTarget(nqubits=7, pgs=NATIVE, topology={(i, 3) for i in range(7) if i != 3})


def within_5_sigma(got, want, shots=SHOTS):
    got, want = np.asarray(got, float), np.asarray(want, float)
    sigma = np.sqrt(np.maximum(want * (1 - want), 1 / shots) / shots)
    assert np.all(np.abs(got - want) <= 5 * sigma), (got.round(4), want.round(4))


def exact(ops, wires):
    tape = QuantumScript(ops, [qml.probs(wires=wires)])
    return qml.execute([tape], qml.device("default.qubit"))[0]


def ghz(wires):
    return [qml.H(wires[0])] + [qml.CNOT([a, b]) for a, b in zip(wires, wires[1:], strict=False)]


def qft_ops(n):
    return [qml.PauliX(0), qml.Hadamard(n - 1), qml.QFT(wires=range(n))]


def random_ops(seed, n=5, depth=14):
    rng = np.random.default_rng(seed)
    ops = []
    for _ in range(depth):
        a, b = (int(x) for x in rng.choice(n, 2, replace=False))
        ops += [qml.RY(float(rng.uniform(0, 2 * np.pi)), a), qml.RZ(float(rng.uniform(0, 2 * np.pi)), b)]
        ops.append(qml.CNOT([a, b]) if rng.random() < 0.5 else qml.CZ([b, a]))
    return ops


#: name -> (gates, wires measured, shots). The emulator re-simulates every shot, so deep
#: circuits get fewer shots (the 5-sigma bound widens accordingly).
CIRCUITS = {
    # wire order deliberately not sorted: results must come back in it
    "ghz on wires 4, 0, 2 (non-neighbours)": (ghz([0, 2, 4]), [4, 0, 2], SHOTS),
    "qft 4": (qft_ops(4), [3, 1, 0, 2], 4000),
    "random 5-qubit": (random_ops(7, depth=8), [3, 0, 4, 1, 2], 2000),
}


@pytest.mark.parametrize(
    "chip, name",
    [(chip, name) for name in sorted(CIRCUITS) for chip in ("hw_line", "hw_star")
     if (chip, name) != ("hw_star", "random 5-qubit")],  # the slowest pair; star has QFT
)
def test_hardware_like_2300_matches_default_qubit(emulators, chip, name):
    ops, wires, shots = CIRCUITS[name]
    ex = emulators[chip].executor(shots=shots)
    if chip == "hw_line":
        ex.static()  # described: compiled on the caller's thread (else on the loop, as star)
    result = ex.execute([QuantumScript(ops, [qml.probs(wires=wires)])])
    within_5_sigma(result[0], exact(ops, wires), shots)
    report = result.metadata.compile
    assert report["circuits"] == 1 and report["seconds"] > 0
    if chip == "hw_star":  # it names its passes; mapping/routing/merging ran as told
        assert {"mapping:MIPMapper", "routing:AStarRouter", "decomposition:CNOT2CZDecomposer",
                "optimization:SingleQubitGatesMerger"} <= set(report["passes"])


def test_parameter_shift_gradient_on_a_line(emulators):
    shots = 5000
    ex = emulators["hw_line"].executor(shots=shots)

    def circuit(x):
        qml.RX(x[0], wires=0)
        qml.RY(x[1], wires=4)
        qml.CNOT(wires=[0, 4])  # the line's two ends: routed
        qml.RZ(x[2], wires=2)
        qml.CNOT(wires=[4, 2])
        return qml.expval(qml.PauliZ(2) @ qml.PauliZ(0))

    x = pnp.array([0.4, 1.1, -0.3], requires_grad=True)
    electron = qf.qelectron(executors=[ex])(qml.QNode(circuit, qml.device("default.qubit", wires=5), shots=shots))
    want = qml.grad(qml.QNode(circuit, qml.device("default.qubit", wires=5)))(x)
    got = qml.grad(electron)(x)
    # parameter shift: (E+ - E-)/2 with E of variance <= 1/SHOTS each
    assert np.all(np.abs(got - want) <= 5 * math.sqrt(2 / shots) / 2 + 1e-9), (got, want)
    report = electron.last_metadata.compile
    assert report["circuits"] == 6 and report["cached"] >= 5  # one structure, compiled once


def test_compile_caches_structure_and_reports_swaps():
    ops = [qml.H(0), qml.CNOT([0, 4]), qml.RX(0.3, 4), qml.CNOT([4, 2]), qml.CNOT([2, 1])]
    first = compile_for_target(QuantumScript(ops, [qml.probs()]), LINE5, use_cache=True)
    ops[2] = qml.RX(0.9, 4)  # same structure, another angle: mapping and routing reused
    second = compile_for_target(QuantumScript(ops, [qml.probs()]), LINE5)
    assert second.cached and second.qubits == first.qubits and second.text != first.text
    assert first.added_two_qubit_gates == 3 * first.swaps
    assert set(_gates(second.text)) <= {"X90", "mX90", "Y90", "mY90", "Rz", "CZ"}
    for line in second.text.splitlines():  # every CZ on an edge of the line
        if line.startswith("CZ"):
            a, b = (int(q.strip(" q[]")) for q in line[3:].split(","))
            assert abs(a - b) == 1, line
    # the placement maps results back: the wire order is the tape's
    assert len(set(second.qubits)) == 4 and second.wires == (0, 4, 2, 1)


def _gates(text):
    body = [line for line in text.splitlines()[5:] if line and not line.startswith("b[")]
    return [line.split("(")[0].split()[0] for line in body]


def test_ghz_on_a_line_needs_no_swap_when_placed_well():
    out = compile_for_target(QuantumScript(ghz([0, 2, 4]), [qml.probs()]), LINE5)
    assert out.swaps == 0 and out.added_two_qubit_gates == 0  # CNOT -> CZ, one for one


def test_compile_refuses_what_cannot_fit_with_a_reason():
    with pytest.raises(UnsupportedCircuitError, match="6 wires but the target has 5"):
        compile_for_target(QuantumScript([qml.H(w) for w in range(6)], [qml.probs()]), LINE5)
    with pytest.raises(UnsupportedCircuitError, match="not an OpenSquirrel pass"):
        compile_for_target(
            QuantumScript([qml.CNOT([0, 2])], [qml.probs()]), LINE5,
            {"mapping": [{"path": "os.system", "method": "map"}]},
        )
    with pytest.raises(UnsupportedCircuitError, match="no such class"):
        compile_for_target(
            QuantumScript([qml.CNOT([0, 2])], [qml.probs()]), LINE5,
            {"routing": [{"path": "opensquirrel.passes.router.NoSuchRouter", "method": "route"}]},
        )
    disconnected = CqasmTarget(nqubits=3, pgs=NATIVE, topology={(0, 1)})
    with pytest.raises(UnsupportedCircuitError, match="failed|connection"):
        compile_for_target(QuantumScript([qml.CNOT([0, 2]), qml.CNOT([1, 2])], [qml.probs()]), disconnected)


def test_cqasm_text_in_compiled_for_a_star():
    text = "version 3.0\nqubit[3] q\nbit[3] b\nH q[0]\nCNOT q[0], q[1]\nCNOT q[1], q[2]\nCNOT q[0], q[2]\nb = measure q\n"
    out = compile_for_target(text, STAR7)
    assert out.num_qubits == 7 and len(out.qubits) == 3
    assert logical_circuit(QuantumScript([qml.CNOT(["a", "b"])], [qml.probs()])).width == 2


def test_merged_single_qubit_runs_are_exact_up_to_a_global_phase():
    from qfleet.circuits.compile2300 import merge_single_qubit_runs

    names = ["H", "X", "Y", "Z", "S", "Sdag", "T", "Tdag", "X90", "mX90", "Y90", "mY90", "Rx", "Ry", "Rz"]
    to_pl = {"H": qml.H, "X": qml.X, "Y": qml.Y, "Z": qml.Z, "S": qml.S, "T": qml.T, "X90": qml.SX,
             "Rx": qml.RX, "Ry": qml.RY, "Rz": qml.RZ}  # fmt: skip
    rng = np.random.default_rng(3)

    def pl_op(name, params):
        if name in ("Sdag", "Tdag", "mX90"):
            return qml.adjoint({"Sdag": qml.S, "Tdag": qml.T, "mX90": qml.SX}[name](0))
        if name in ("Y90", "mY90"):
            return qml.RY(np.pi / 2 if name == "Y90" else -np.pi / 2, 0)
        return to_pl[name](*params, 0)

    for _ in range(40):
        gates = []
        for _ in range(int(rng.integers(1, 7))):
            name = str(rng.choice(names))
            params = (float(rng.uniform(-7, 7)),) if name in ("Rx", "Ry", "Rz") else ()
            gates.append((name, params, (0,)))
        merged = merge_single_qubit_runs(gates)
        assert len(merged) <= 3
        want = qml.matrix(qml.tape.QuantumScript([pl_op(n, p) for n, p, _ in gates]), wire_order=[0])
        got = qml.matrix(qml.tape.QuantumScript([pl_op(n, p) for n, p, _ in merged] or [qml.I(0)]), wire_order=[0])
        overlap = abs(np.trace(want.conj().T @ got)) / 2
        assert np.isclose(overlap, 1, atol=1e-9), (gates, merged)
