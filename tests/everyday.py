"""Circuits PennyLane users write every day, checked on any executor against default.qubit.

``check_everyday(executor, shots)`` runs each case through a QNode on ``qfleet.local``
pointed at ``executor`` and compares with default.qubit's exact values: exactly (1e-6)
without shots, within 5 sigma of shot noise with them (bounds from the exact values).
"""

from __future__ import annotations

import warnings

import numpy as np
import pennylane as qml
from scipy.sparse import csr_matrix

from qfleet.pennylane.device import QFleetDevice

_BELL = np.array([1, 0, 0, 1]) / np.sqrt(2)
_HERM = np.array([[1.0, 1j, 0, 0], [-1j, 2.0, 0, 0.5], [0, 0, -1.0, 0], [0, 0.5, 0, 0.5]])


def _broadcasting():
    qml.RX(np.array([0.1, 0.9, 2.1]), wires=0)
    qml.CNOT([0, 1])
    return qml.expval(qml.Z(1)), qml.probs(wires=[0, 1])


def _mid_circuit():
    qml.RX(1.1, wires=0)
    m = qml.measure(0)
    qml.cond(m, qml.RY)(0.7, wires=1)
    qml.Hadamard(2)
    return qml.expval(qml.Z(1)), qml.probs(wires=[2])


def _observables():
    qml.RX(0.4, wires=0)
    qml.RY(0.9, wires=1)
    qml.CNOT([0, 1])
    qml.RY(0.3, wires=2)
    return (
        qml.expval(qml.Hermitian(_HERM, wires=[0, 1])),
        qml.expval(qml.Projector(np.array([1, 0]), wires=2)),
        qml.var(qml.X(2)),
    )


def _state_projector():
    qml.Hadamard(0)
    qml.CNOT([0, 1])
    qml.RX(0.3, wires=1)
    return qml.expval(qml.Projector(_BELL, wires=[0, 1]))


def _sparse_hamiltonian():
    qml.RX(0.6, wires=0)
    qml.RY(0.2, wires=1)
    matrix = qml.matrix(qml.Z(0) @ qml.X(1) + 0.5 * qml.Y(0), wire_order=[0, 1])
    return qml.expval(qml.SparseHamiltonian(csr_matrix(matrix), wires=[0, 1]))


def _block_encode():
    qml.Hadamard(0)
    qml.BlockEncode(np.array([[0.2, 0.3], [0.1, 0.4]]), wires=[0, 1])
    qml.DoubleExcitationPlus(0.4, wires=[0, 1, 2, 3])
    return qml.probs(wires=[0, 1])


def _out_of_order():
    qml.RY(0.5, wires=1)
    qml.RX(0.3, wires=0)
    return qml.expval(qml.Z(0)), qml.expval(qml.Z(1))


def _identity_only():
    qml.RX(0.3, wires=0)
    return qml.expval(qml.Identity(0))


def _wire_labels():
    qml.Hadamard("a")
    qml.CRX(0.8, wires=["a", "anc"])
    return qml.expval(qml.Z("anc")), qml.probs(wires=["a"])


#: name -> (quantum function, wires of the device)
CASES = {
    "broadcasting": (_broadcasting, 2),
    "mid_circuit_measurement": (_mid_circuit, 3),
    "hermitian_projector_var": (_observables, 3),
    "state_vector_projector": (_state_projector, 2),
    "sparse_hamiltonian": (_sparse_hamiltonian, 2),
    "block_encode_double_excitation_plus": (_block_encode, 4),
    "out_of_order_wires": (_out_of_order, 2),
    "identity_only": (_identity_only, 1),
    "wire_labels": (_wire_labels, ["a", "anc"]),
}


def _flat(result) -> np.ndarray:
    if isinstance(result, (tuple, list)):
        return np.concatenate([_flat(r) for r in result])
    return np.atleast_1d(np.asarray(result, dtype=float)).ravel()


def run_case(name: str, executor, shots=None):
    """(qfleet's result, default.qubit's exact result) for case ``name``."""
    func, wires = CASES[name]
    exact = qml.QNode(func, qml.device("default.qubit", wires=wires))()
    qnode = qml.QNode(func, QFleetDevice(wires=wires, executors=executor), shots=shots)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a shots-only executor warns about its own shots
        return qnode(), exact


def check_case(name: str, executor, shots=None, sigmas: float = 5.0) -> None:
    """Assert case ``name`` on ``executor`` matches default.qubit (see module docstring)."""
    got, exact = run_case(name, executor, shots)
    assert isinstance(got, tuple) == isinstance(exact, tuple), (got, exact)
    got_flat, want = _flat(got), _flat(exact)
    assert got_flat.shape == want.shape, (name, got, exact)
    if not shots:
        np.testing.assert_allclose(got_flat, want, atol=1e-6, err_msg=name)
        return
    # Every value here is an average of quantities bounded by 3 in absolute value
    # (eigenvalues of the observables above): 5 sigma of that over the shots.
    tolerance = sigmas * 3.0 / np.sqrt(shots)
    np.testing.assert_allclose(got_flat, want, atol=tolerance, err_msg=name)
