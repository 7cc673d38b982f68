"""QuantumInspireExecutor against the Quantum Inspire stand-in (tests/standins/quantum_inspire.py):
what a batch costs in requests and seconds, and what compiling for a sparse chip adds.

- the reference QNode (3 observables, 2 circuits) on the QX emulator: seconds per call
  (median, p90) and HTTP requests per call;
- a parameter-shift gradient of it: one batch job, its jobs, requests and seconds;
- a GHZ state on non-neighbour wires and a 4-qubit QFT on ``Tuna-5`` (star) and
  ``Starmon-7`` (line): compile seconds per circuit uncached and cached (the same structure
  again, other angles), SWAPs added, and a lower bound on the SWAPs any routing needs (the
  best placement, each two-qubit gate's distance taken on its own).

Usage: python bench/quantum_inspire.py [--runs 10] [--shots 1000]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

import networkx as nx
import pennylane as qml
from pennylane import numpy as pnp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from standins.helpers import X, qnode  # noqa: E402
from standins.process import start_port, stop  # noqa: E402
from standins.quantum_inspire import TOKEN, backend_types  # noqa: E402

from qfleet.circuits import compile2300  # noqa: E402
from qfleet.executors import QuantumInspireExecutor  # noqa: E402


def requests_seen(base: str) -> int:
    import requests

    return len(requests.get(f"{base}/__standin__/stats", timeout=10).json()["requests"])


def ghz(wires):
    ops = [qml.H(wires[0])] + [qml.CNOT([a, b]) for a, b in itertools.pairwise(wires)]
    return qml.tape.QuantumScript(ops, [qml.probs(wires=wires)], shots=1000)


def qft(wires, angle):
    ops = [qml.RY(angle, w) for w in wires] + list(qml.QFT(wires=wires).decomposition())
    return qml.tape.QuantumScript(ops, [qml.probs(wires=wires)], shots=1000)


def fewest_swaps(tape, edges, nqubits) -> int:
    """A lower bound on the SWAPs any placement plus routing needs: over every initial
    placement, the least sum of (distance - 1) of each two-qubit gate's pair, each gate taken
    on its own (a SWAP shortens at most one pair's distance by one... or several; for the
    small circuits here this bound is what a good router reaches)."""
    graph = nx.Graph(edges)
    dist = dict(nx.all_pairs_shortest_path_length(graph))
    pairs = [tuple(op.wires) for op in tape.operations if len(op.wires) == 2]
    wires = list(tape.wires)
    best = None
    for placement in itertools.permutations(range(nqubits), len(wires)):
        where = dict(zip(wires, placement, strict=True))
        cost = sum(max(dist[where[a]][where[b]] - 1, 0) for a, b in pairs)
        best = cost if best is None else min(best, cost)
    return best or 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--shots", type=int, default=1000)
    args = parser.parse_args()
    process, port = start_port([sys.executable, str(REPO / "tests/standins/quantum_inspire.py"),
                                "--port", "0"], "the Quantum Inspire stand-in")
    base = f"http://127.0.0.1:{port}"
    try:
        ex = QuantumInspireExecutor(host=base, token=TOKEN)
        circuit = qnode(ex, shots=args.shots)
        circuit(X)  # warm: backend types, language, member id
        seconds, requests = [], []
        for _ in range(args.runs):
            before, started = requests_seen(base), time.perf_counter()
            circuit(X)
            seconds.append(time.perf_counter() - started)
            requests.append(requests_seen(base) - before)
        print(f"QNode call (2 circuits, {args.shots} shots): median "
              f"{statistics.median(seconds):.3f} s, p90 "
              f"{statistics.quantiles(seconds, n=10)[-1]:.3f} s, "
              f"{statistics.median(requests):.0f} requests")

        x = pnp.array(X, requires_grad=True)
        before, started = requests_seen(base), time.perf_counter()
        qml.grad(lambda v: qml.math.sum(qml.math.stack(circuit(v))))(x)
        print(f"gradient (forward + 12 shifted circuits, one batch job): "
              f"{time.perf_counter() - started:.3f} s, {requests_seen(base) - before} requests")

        for bt in backend_types()[1:]:
            ex = QuantumInspireExecutor(host=base, token=TOKEN, backend_type=bt["name"])
            target = ex.target(ex.backend_info())
            n = bt["nqubits"]
            circuits = {"GHZ": lambda angle, n=n: ghz([0, 2, n - 1]),
                        "QFT-4": lambda angle: qft([0, 1, 3, 4], angle)}
            for name, make in circuits.items():
                compile2300.clear_cache()
                started = time.perf_counter()
                out = compile2300.compile_for_target(make(0.3), target)
                uncached = time.perf_counter() - started
                started = time.perf_counter()
                again = compile2300.compile_for_target(make(0.7), target)  # same structure
                cached = time.perf_counter() - started
                minimum = fewest_swaps(make(0.3), [tuple(e) for e in bt["topology"]], n)
                result = ex.execute([make(0.3)])
                print(f"{bt['name']:>9} {name:6}: compile {uncached * 1000:7.1f} ms uncached, "
                      f"{cached * 1000:6.1f} ms cached (cached={again.cached}); SWAPs "
                      f"{out.swaps} (lower bound {minimum}); +{out.added_two_qubit_gates} "
                      f"two-qubit gates; run {result.metadata.execution_time:.3f} s")
    finally:
        stop(process)


if __name__ == "__main__":
    main()
