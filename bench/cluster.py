"""QuantumCluster figures (issue 7), measured in one run, printed as ratios.

- latency hiding: 256 circuits over k=4 executors with 50 ms latency and max_concurrent=4:
  wall / ideal, ideal = N x L / (k x max_concurrent); target <= 1.15
- least_busy vs cyclic when one executor is 5x slower: wall(cyclic) / wall(least_busy);
  target >= 2
- framework overhead per tape with a null executor over 10,000 tapes; target <= 50 us

Usage: python bench/cluster.py
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pennylane as qml

import qfleet as qf
from qfleet.executors import LocalExecutor, QuantumExecutor
from qfleet.runtime import get_dispatcher


class NullExecutor(QuantumExecutor):
    """Returns 0.0 per tape at once: what is left is qfleet's own cost."""

    async def submit(self, payload: Any) -> tuple[Any, tuple[str, ...]]:
        return len(payload), ()

    async def collect(self, job: int) -> Sequence[Any]:
        return (0.0,) * job


def tapes(n: int) -> list[qml.tape.QuantumScript]:
    return [qml.tape.QuantumScript([qml.RX(0.01 * i, 0)], [qml.expval(qml.Z(0))]) for i in range(n)]


def run_all_later(executor: QuantumExecutor, batch: list) -> tuple[float, list]:
    started = time.perf_counter()
    futures = [executor.run_later([t]) for t in batch]
    results = [f.result()[0] for f in futures]
    return time.perf_counter() - started, results


def latency_hiding(n: int = 256, k: int = 4, latency: float = 0.05, limit: int = 4) -> float:
    cluster = qf.QuantumCluster(
        executors=[LocalExecutor(name=f"e{i}", latency=latency, max_concurrent=limit) for i in range(k)],
        selector="least_busy",
    )
    run_all_later(cluster, tapes(8))  # warm up the dispatcher
    wall, results = run_all_later(cluster, tapes(n))
    assert np.allclose(results, np.cos(0.01 * np.arange(n)))
    ideal = n * latency / (k * limit)
    print(f"latency hiding: {n} circuits, k={k}, L={latency}s, max_concurrent={limit}: "
          f"wall {wall:.3f}s, ideal {ideal:.3f}s, ratio {wall / ideal:.3f} (target <= 1.15)")
    return wall / ideal


def slow_member(n: int = 64, latency: float = 0.02) -> float:
    def cluster(selector: str) -> qf.QuantumCluster:
        return qf.QuantumCluster(
            executors=[
                LocalExecutor(name="fast-1", latency=latency, max_concurrent=2),
                LocalExecutor(name="fast-2", latency=latency, max_concurrent=2),
                LocalExecutor(name="slow", latency=5 * latency, max_concurrent=2),
            ],
            selector=selector,
        )

    walls = {}
    for selector in ("cyclic", "least_busy"):
        walls[selector], results = run_all_later(cluster(selector), tapes(n))
        assert np.allclose(results, np.cos(0.01 * np.arange(n)))
    ratio = walls["cyclic"] / walls["least_busy"]
    print(f"one executor 5x slower, {n} circuits: cyclic {walls['cyclic']:.3f}s, "
          f"least_busy {walls['least_busy']:.3f}s, ratio {ratio:.2f} (target >= 2)")
    return ratio


def null_overhead(n: int = 10_000) -> float:
    """qfleet's cost per tape: one batch of n tapes, and n one-tape calls (sync, run_later)."""
    batch = tapes(n)
    direct = NullExecutor()
    cluster = qf.QuantumCluster(executors=[NullExecutor(name="a"), NullExecutor(name="b")])
    run_all_later(direct, batch[:100])
    for label, executor in (("executor", direct), ("cluster of 2", cluster)):
        started = time.perf_counter()
        assert len(executor.execute(batch)) == n
        per_tape_in_batch = (time.perf_counter() - started) / n
        started = time.perf_counter()
        for t in batch:
            executor.execute([t])
        sync = (time.perf_counter() - started) / n
        wall, _ = run_all_later(executor, batch)
        print(f"null {label}: {per_tape_in_batch * 1e6:.1f} us/tape in one {n}-tape batch "
              f"(target <= 50 us); per one-tape call: sync {sync * 1e6:.1f} us, run_later "
              f"{wall / n * 1e6:.1f} us")
    # What a one-tape sync call cannot avoid: handing a coroutine to the loop thread and back.
    async def nothing() -> None:
        return None

    dispatcher = get_dispatcher()
    started = time.perf_counter()
    for _ in range(2000):
        dispatcher.run(nothing())
    print(f"bare thread handoff to the dispatcher loop and back: "
          f"{(time.perf_counter() - started) / 2000 * 1e6:.1f} us (included in the calls above)")
    return per_tape_in_batch


if __name__ == "__main__":
    latency_hiding()
    slow_member()
    null_overhead()
