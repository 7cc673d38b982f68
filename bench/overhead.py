"""qelectron sync call vs the plain QNode on the same simulator, and run_later concurrency.

Prints ratios measured in this run against the QNode as written (default diff_method: the
qelectron resolves it as the plain QNode does; targets from issues 2 and 13):
- 2 wires on default.qubit: qelectron / plain <= 1.10
- 20 wires on lightning.qubit: qelectron / plain <= 1.02
- 8 run_later calls on an executor with 0.5 s latency: ~1 x latency, not 8 x

Usage: python bench/overhead.py [--repeat N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import pennylane as qml
from pennylane import numpy as pnp

import qfleet as qf


def best_of(fn, args, number: int, repeat: int) -> float:
    """Median over ``repeat`` rounds of the mean time of ``number`` calls (seconds)."""
    fn(*args)  # warm caches on both sides
    rounds = []
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(number):
            fn(*args)
        rounds.append((time.perf_counter() - started) / number)
    return statistics.median(rounds)


def compare(label: str, device: str, wires: int, shots, number: int, repeat: int) -> float:
    def circuit(params):
        for w in range(wires):
            qml.RY(params[w], wires=w)
        for w in range(wires - 1):
            qml.CNOT(wires=[w, w + 1])
        return qml.expval(qml.PauliZ(0) @ qml.PauliZ(wires - 1))

    dev = qml.device(device, wires=wires)
    # The QNode as a user writes it; never a slowed-down baseline.
    plain = qml.set_shots(qml.QNode(circuit, dev), shots)
    electron = qf.qelectron(plain, executors=qf.executor.LocalExecutor(device=device))
    params = pnp.array([0.1 * (i + 1) for i in range(wires)], requires_grad=False)
    assert abs(float(plain(params)) - float(electron(params))) < (1e-9 if shots is None else 0.2)

    # Interleave to share any drift of the machine between the two sides.
    plain_times, electron_times = [], []
    for _ in range(repeat):
        plain_times.append(best_of(plain, (params,), number, 1))
        electron_times.append(best_of(electron, (params,), number, 1))
    t_plain, t_electron = statistics.median(plain_times), statistics.median(electron_times)
    ratio = t_electron / t_plain
    print(
        f"{label:<38} plain {t_plain * 1e3:9.3f} ms   qelectron {t_electron * 1e3:9.3f} ms"
        f"   ratio {ratio:5.3f}"
    )
    return ratio


def run_later_concurrency(latency: float = 0.5, calls: int = 8) -> float:
    @qml.qnode(qml.device("default.qubit", wires=2))
    def circuit(x):
        qml.RX(x, wires=0)
        return qml.expval(qml.PauliZ(0))

    electron = qf.qelectron(circuit, executors=qf.executor.LocalExecutor(latency=latency))
    electron.run_later(0.1).result()  # start the dispatcher outside the timing
    started = time.perf_counter()
    futures = [electron.run_later(0.1 * i) for i in range(calls)]
    values = [f.result() for f in futures]
    elapsed = time.perf_counter() - started
    assert all(abs(v - qml.math.cos(0.1 * i)) < 1e-9 for i, v in enumerate(values))
    print(
        f"run_later: {calls} calls x {latency} s latency finished in {elapsed:.3f} s "
        f"= {elapsed / latency:.2f} x latency (serial: {calls} x)"
    )
    return elapsed / latency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print(f"pennylane {qml.version()}, qfleet {qf.__version__}")
    compare("2 wires default.qubit, exact", "default.qubit", 2, None, 200, args.repeat)
    compare("2 wires default.qubit, 1024 shots", "default.qubit", 2, 1024, 200, args.repeat)
    compare("20 wires lightning.qubit, exact", "lightning.qubit", 20, None, 3, args.repeat)
    run_later_concurrency()


if __name__ == "__main__":
    main()
