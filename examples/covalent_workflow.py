"""QElectrons inside a Covalent workflow: a parameter sweep dispatched to a Covalent server.

Needs ``pip install 'qfleet[covalent]'`` and a running server::

    covalent start          # http://localhost:48008, with a local dask cluster
    python examples/covalent_workflow.py

Each electron calls a qelectron-decorated QNode. Covalent cloudpickles the electron, and
with it the qelectron, its transforms and its executors' configuration, to a dask worker;
the QNode runs there on a qfleet cluster of two simulators. The second lattice starts all
points of the sweep with ``run_later`` inside one electron and gathers the futures.
Executor tokens (IBM, Classiq, ...) are never pickled: the worker takes them from its own
qfleet config file or ``QFLEET_<EXECUTOR>_TOKEN`` environment variables.

``--json`` prints the results as one JSON line (used by tests/test_covalent.py).
"""

from __future__ import annotations

import json
import sys

import covalent as ct
import numpy as np
import pennylane as qml

import qfleet as qf

XS = [float(x) for x in np.linspace(0.0, np.pi, 5)]


def ansatz(theta):
    qml.RY(theta, wires=0)
    qml.RY(theta / 2, wires=1)
    qml.CNOT(wires=[0, 1])
    qml.RX(0.3, wires=1)
    return qml.expval(qml.Z(0) @ qml.Z(1) - 0.4 * qml.X(0))


@qml.transforms.cancel_inverses
@qf.qelectron(
    executors=[
        qf.executor.LocalExecutor(name="default"),
        qf.executor.LocalExecutor(name="lightning", device="lightning.qubit"),
    ],
    name="sweep-point",
)
@qml.qnode(qml.device("default.qubit", wires=2))
def circuit(theta):
    return ansatz(theta)


@ct.electron
def evaluate(theta):
    """One sweep point, on a Covalent worker."""
    return float(circuit(theta))


@ct.electron
def evaluate_all_later(thetas):
    """All points at once: every run_later call starts work before any result is awaited."""
    futures = [circuit.run_later(theta) for theta in thetas]
    return [float(f.result()) for f in futures]


@ct.lattice
def sweep(thetas):
    return [evaluate(theta) for theta in thetas]


@ct.lattice
def sweep_later(thetas):
    return evaluate_all_later(thetas)


def main() -> None:
    as_json = "--json" in sys.argv[1:]
    runs = {
        "qfleet": ct.dispatch(sweep)(XS),
        "run_later": ct.dispatch(sweep_later)(XS),
    }
    results = {}
    for name, dispatch_id in runs.items():
        result = ct.get_result(dispatch_id, wait=True)
        if str(result.status) != "COMPLETED":
            raise SystemExit(
                f"{name}: dispatch {dispatch_id} ended {result.status}: {result.error}"
            )
        results[name] = result.result
    exact = qml.QNode(ansatz, qml.device("default.qubit", wires=2))
    results["default.qubit"] = [float(exact(x)) for x in XS]
    if as_json:
        print(json.dumps(results))
        return
    print(f"{'theta':>8} {'electrons':>12} {'run_later':>12} {'default.qubit':>14}")
    for row in zip(XS, results["qfleet"], results["run_later"], results["default.qubit"]):
        print("{:8.4f} {:12.6f} {:12.6f} {:14.6f}".format(*row))


if __name__ == "__main__":
    main()
