"""QElectrons for tests/test_pickling.py, built in a module of their own.

The test registers this module with ``cloudpickle.register_pickle_by_value`` and loads the
pickle in a fresh interpreter that cannot import it: everything must travel by value, as
when a workflow engine ships an electron to a worker.
"""

from __future__ import annotations

import pennylane as qml

import qfleet as qf


@qml.transform
def drop_identities(tape):
    """A user-defined transform (not importable by name on the worker)."""
    operations = [op for op in tape.operations if op.name != "Identity"]
    return [tape.copy(operations=operations)], lambda results: results[0]


def energy(params):
    qml.RX(params[0], wires=0)
    qml.RX(params[1], wires=0)  # merged with the one above by merge_rotations
    qml.Hadamard(wires=1)
    qml.Hadamard(wires=1)  # cancelled by cancel_inverses
    qml.Identity(wires=1)  # dropped by drop_identities
    qml.CNOT(wires=[0, 1])
    qml.RY(params[2], wires=1)
    return qml.expval(qml.Z(0) @ qml.X(1) + 0.3 * qml.Z(1))


def make_circuit(interface="auto"):
    """``energy`` as a transformed QElectron on a two-executor cluster."""

    @drop_identities
    @qml.transforms.merge_rotations
    @qml.transforms.cancel_inverses
    @qf.qelectron(
        executors=[
            qf.executor.LocalExecutor(name="a"),
            qf.executor.LocalExecutor(name="b", device="lightning.qubit"),
        ],
        name="pickled",
    )
    @qml.qnode(qml.device("default.qubit", wires=2), interface=interface)
    def circuit(params):
        return energy(params)

    return circuit
