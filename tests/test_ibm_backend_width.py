"""QiskitExecutor checks a circuit's width against the IBM backend before anything is sent
(PennyLane's device suite found a 6-wire QuantumMonteCarlo sent to the 5-qubit ibm_manila,
where the transpiler failed with a bare TranspilerError)."""

from __future__ import annotations

import numpy as np
import pennylane as qml
import pytest
from pennylane.tape import QuantumScript

pytest.importorskip("qiskit_ibm_runtime")

from pl_suite_cloud import running

from qfleet.errors import UnsupportedCircuitError
from qfleet.executors import QiskitExecutor
from qfleet.executors.ibm import close_sessions

SHOTS = 4000


@pytest.fixture(scope="module")
def stack():
    with running("ibm-sampler") as started:
        yield started
    close_sessions()


def executor(stack, backend: str) -> QiskitExecutor:
    return QiskitExecutor(**{**stack.fields, "backend": backend, "seed": 11})


def ghz(wires: int) -> QuantumScript:
    ops = [qml.Hadamard(0)] + [qml.CNOT([i, i + 1]) for i in range(wires - 1)]
    return QuantumScript(ops, [qml.probs(wires=[0, wires - 1])], shots=SHOTS)


def test_a_circuit_wider_than_the_backend_is_refused_before_sending(stack):
    manila = executor(stack, "ibm_manila")
    jobs = len(stack.services.control("stats")["jobs"])
    with pytest.raises(UnsupportedCircuitError, match=r"6 qubits, backend 'ibm_manila' has 5"):
        manila.run_circuit_sync(ghz(6))
    assert len(stack.services.control("stats")["jobs"]) == jobs  # nothing was sent
    # the backend is known now: its width is a capability (routing skips it up front)
    assert manila.capabilities.max_wires == 5
    assert "6 wires" in manila.capabilities.why_not(ghz(6))


def test_the_same_circuit_runs_on_a_wide_enough_backend(stack):
    probs = executor(stack, "ibm_guadalupe").run_circuit_sync(ghz(6))
    want = np.array([0.5, 0.0, 0.0, 0.5])
    assert probs[1] == 0 and probs[2] == 0  # noiseless: GHZ ends are equal
    assert np.all(np.abs(probs - want) <= 5 * np.sqrt(0.25 / SHOTS)), probs
