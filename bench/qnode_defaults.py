"""qelectron vs the plain QNode as a user writes it: default settings (diff_method="best":
backprop on default.qubit, adjoint on lightning.qubit), forward and qml.grad, interleaved.

A qelectron still differentiates with parameter-shift (issue 13), so the gradient rows show
the gap native derivatives must close.

    .venv/bin/python bench/qnode_defaults.py
"""

from __future__ import annotations

import statistics
import time
import warnings

import pennylane as qml
from pennylane import numpy as pnp

import qfleet as qf

CASES = [
    ("default.qubit", 2, False),
    ("default.qubit", 2, True),
    ("lightning.qubit", 12, False),
    ("lightning.qubit", 12, True),
]


def compare(device: str, wires: int, grad: bool, rounds: int = 5) -> None:
    def circuit(params):
        qml.StronglyEntanglingLayers(params, wires=range(wires))
        return qml.expval(qml.Z(0))

    plain = qml.QNode(circuit, qml.device(device, wires=wires))  # the user's defaults
    electron = qf.qelectron(
        qml.QNode(circuit, qml.device(device, wires=wires)),
        executors=qf.executor.LocalExecutor(device=device),
    )
    shape = qml.StronglyEntanglingLayers.shape(n_layers=2, n_wires=wires)
    params = pnp.random.default_rng(0).random(shape, requires_grad=grad)

    def call(qnode):
        return qml.grad(qnode)(params) if grad else qnode(params)

    call(plain), call(electron)  # warm caches on both sides
    calls = 3 if grad else 30
    times: dict[str, list[float]] = {"plain": [], "qelectron": []}
    for _ in range(rounds):  # interleaved: drift of the machine hits both sides
        for label, qnode in (("plain", plain), ("qelectron", electron)):
            started = time.perf_counter()
            for _ in range(calls):
                call(qnode)
            times[label].append((time.perf_counter() - started) / calls)
    a, b = statistics.median(times["plain"]), statistics.median(times["qelectron"])
    kind = "qml.grad" if grad else "forward"
    print(
        f"{device:15s} {wires:2d} wires {kind:8s} plain {a * 1e3:8.2f} ms   "
        f"qelectron {b * 1e3:8.2f} ms   ratio {b / a:5.2f}"
    )


if __name__ == "__main__":
    warnings.simplefilter("ignore")  # parameter-shift fallback warnings
    for case in CASES:
        compare(*case)
