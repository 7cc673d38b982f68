"""Client side of tests/test_covalent.py: dispatches lattices to the test's Covalent server.

Run as a script (``python covalent_driver.py SECRET``) in the server's environment; prints
one JSON line with the results. Everything here runs as ``__main__``, so Covalent
cloudpickles the electrons, and the qelectrons they call, by value: the Covalent workers
cannot import this file. ``ansatz`` is importable for the test's own default.qubit
reference (this module imports covalent only in ``main``).
"""

from __future__ import annotations

import json
import sys

import pennylane as qml

WIRES = 2
XS = [0.1, 0.7, 1.3]


def ansatz(x):
    qml.RX(x, wires=0)
    qml.RX(x / 2, wires=0)  # merged with the RX above by merge_rotations
    qml.RY(2 * x, wires=1)
    qml.CNOT(wires=[0, 1])
    return qml.expval(qml.Z(0) @ qml.Z(1) + 0.5 * qml.X(1))


def main(secret: str) -> None:
    import covalent as ct

    import qfleet as qf

    @qml.transforms.merge_rotations
    @qf.qelectron(
        executors=[
            qf.executor.LocalExecutor(name="local-a"),
            qf.executor.LocalExecutor(name="local-b", device="lightning.qubit"),
        ],
        name="covalent-ansatz",
    )
    @qml.qnode(qml.device("default.qubit", wires=WIRES))
    def circuit(x):
        return ansatz(x)

    # Its token must not travel: the worker takes one from its own environment.
    ibm = qf.executor.QiskitExecutor(token=secret, instance="my-instance", seed=3)

    @ct.electron
    def energy(x):
        return float(circuit(x))

    @ct.electron
    def energy_and_gradient(x):
        from pennylane import numpy as pnp

        param = pnp.array(x, requires_grad=True)
        return [float(circuit(param)), float(qml.grad(circuit)(param))]

    @ct.electron
    def energies_later(xs):
        futures = [circuit.run_later(x) for x in xs]  # all started before any is awaited
        return [float(f.result(60)) for f in futures]

    @ct.electron
    def worker_token(executor):
        import os

        token = executor.secret("token")
        return {
            "pickled_token_is_none": executor.token is None,
            "instance": executor.instance,
            "token_from_worker_env": token == os.environ["QFLEET_QISKITEXECUTOR_TOKEN"],
        }

    @ct.lattice
    def sync_workflow(xs):
        return [energy(x) for x in xs]

    @ct.lattice
    def later_workflow(xs):
        return energies_later(xs), energy_and_gradient(xs[1])

    @ct.lattice
    def token_workflow(executor):
        return worker_token(executor)

    ids = {
        "sync": ct.dispatch(sync_workflow)(XS),
        "later": ct.dispatch(later_workflow)(XS),
        "token": ct.dispatch(token_workflow)(ibm),
    }
    out = {}
    for name, dispatch_id in ids.items():
        result = ct.get_result(dispatch_id, wait=True)
        out[name] = {
            "status": str(result.status),
            "result": result.result,
            "error": str(result.error) if result.error else None,
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
