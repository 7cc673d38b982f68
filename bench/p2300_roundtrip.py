"""Executor2300 on loopback against ``qfleet serve-2300`` (a separate process).

Prints (figures from issue 3):
- round trip of one 2300 request on loopback: ``get_static`` (no simulation) and ``execute``
  of a 2-qubit Bell circuit inside an initialized session (the protocol client alone);
- executor overhead: ``Executor2300.execute([tape])`` (translate, initialize, execute,
  terminate, results) and per circuit in a batch of 20, against calling qxelarator directly
  on the same cQASM in this process, as ratios;
- compiling for hardware-like chips (a 5-qubit line, a 7-qubit star; X90/mX90/Y90/mY90/Rz/CZ)
  with OpenSquirrel (``--compile``, no emulator needed): compile time per circuit uncached
  and cached (same structure, new angles), SWAPs routing added against the minimum (exact:
  the fewest SWAPs over every initial placement, gate order kept), two-qubit gates added.

Usage: python bench/p2300_roundtrip.py [--repeat N] [--shots 100 1000] [--compile]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

import pennylane as qml
import qxelarator
from pennylane.tape import QuantumScript

from qfleet.circuits.compile2300 import clear_cache, compile_for_target, logical_circuit
from qfleet.circuits.cqasm import CqasmTarget, to_cqasm3
from qfleet.executors import Executor2300
from qfleet.protocols.p2300.client import LazyPirateClient


def start_emulator() -> tuple[subprocess.Popen, str, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "qfleet.cli", "serve-2300", "--bind", "tcp://127.0.0.1:0",
         "--publish", "tcp://127.0.0.1:0", "--seed", "1"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    line = proc.stdout.readline()
    if "ready" not in line:
        proc.kill()
        raise SystemExit(f"serve-2300 did not start: {line!r}")
    words = line.split()
    return proc, words[words.index("REP") + 1], words[words.index("PUB") + 1]


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds of ``repeat`` calls (after 5 warm-up calls)."""
    for _ in range(5):
        fn()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


async def protocol_round_trips(address: str, circuit: str, shots: int, repeat: int) -> tuple[float, float]:
    client = LazyPirateClient(address, timeout=10, retries=0)
    session = str(uuid.uuid4())

    async def median(make_request) -> float:
        for _ in range(5):
            await make_request()
        samples = []
        for _ in range(repeat):
            started = time.perf_counter()
            reply = await make_request()
            samples.append(time.perf_counter() - started)
            assert reply.ok, reply.error_msg
        return statistics.median(samples)

    static = await median(lambda: client.request("get_static", session))
    await client.request("initialize", session)
    job = iter(range(1, 10**9))
    try:
        execute = await median(
            lambda: client.request(
                "execute", session,
                {"job_id": next(job), "circuit": circuit, "number_of_shots": shots},
            )  # fmt: skip
        )
    finally:
        await client.request("terminate", session)
        client.close()
    return static, execute


def minimum_swaps(pairs: list[tuple[int, int]], width: int, edges: set[tuple[int, int]], n: int) -> int:
    """Fewest SWAPs that make every pair adjacent when its turn comes (any initial
    placement; gates in their order): Dijkstra over placements between gates."""
    import heapq
    import itertools

    adjacent = {frozenset(e) for e in edges}
    undirected = sorted({tuple(sorted(e)) for e in edges})
    states = list(itertools.permutations(range(n), width))
    cost = dict.fromkeys(states, 0)
    for u, v in pairs:
        best = {s: cost.get(s, math.inf) for s in states}
        heap = [(c, s) for s, c in cost.items()]
        heapq.heapify(heap)
        while heap:
            c, state = heapq.heappop(heap)
            if c > best[state]:
                continue
            for a, b in undirected:
                moved = tuple(b if p == a else a if p == b else p for p in state)
                if c + 1 < best[moved]:
                    best[moved] = c + 1
                    heapq.heappush(heap, (c + 1, moved))
        cost = {s: c for s, c in best.items() if frozenset((s[u], s[v])) in adjacent}
    return min(cost.values())


def compile_report(repeat: int) -> None:
    import numpy as np

    native = {"X90", "MX90", "Y90", "MY90", "RZ", "CZ"}
    chips = {
        "line5": CqasmTarget(nqubits=5, pgs=native, topology={(i, i + 1) for i in range(4)}),
        "star7": CqasmTarget(nqubits=7, pgs=native, topology={(i, 3) for i in range(7) if i != 3}),
    }
    rng = np.random.default_rng(7)

    def random_ops(seed: int, angles: np.random.Generator) -> list:
        pick = np.random.default_rng(seed)
        ops = []
        for _ in range(8):
            a, b = (int(x) for x in pick.choice(5, 2, replace=False))
            ops += [qml.RY(float(angles.uniform(0, 6.28)), a), qml.RZ(float(angles.uniform(0, 6.28)), b)]
            ops.append(qml.CNOT([a, b]) if pick.random() < 0.5 else qml.CZ([b, a]))
        return ops

    circuits = {
        "GHZ on wires 0,2,4": lambda: [qml.H(0), qml.CNOT([0, 2]), qml.CNOT([2, 4])],
        "QFT 4 (X on 0, H on 3)": lambda: [qml.X(0), qml.RY(float(rng.uniform()), 3), qml.QFT(wires=range(4))],
        "random 5-qubit, 8 layers": lambda: random_ops(7, rng),
    }
    print("compile for hardware-like 2300s (OpenSquirrel MIP mapping + shortest-path routing;")
    print(f"qfleet decomposition + single-qubit merging), medians of {repeat}")
    print(f"{'circuit':28} {'chip':6} {'uncached ms':>11} {'cached ms':>10} {'swaps':>5} {'min':>4} "
          f"{'2q in':>5} {'2q added':>8}")  # fmt: skip
    for name, make in circuits.items():
        for chip, target in chips.items():
            tape = QuantumScript(make(), [qml.probs(wires=range(5 if "random" in name else 4 if "QFT" in name else 5))])
            uncached, cached = [], []
            for _ in range(repeat):
                clear_cache()
                started = time.perf_counter()
                out = compile_for_target(tape, target)
                uncached.append(time.perf_counter() - started)
                again = QuantumScript(make(), tape.measurements)  # new angles, same structure
                started = time.perf_counter()
                compile_for_target(again, target)
                cached.append(time.perf_counter() - started)
            logical = logical_circuit(tape)
            pairs, rename = [], list(range(logical.width))
            for gate, _, qubits in logical.ops:  # SWAPs are bookkeeping (as the compiler does)
                if gate == "SWAP":
                    a, b = qubits
                    rename[a], rename[b] = rename[b], rename[a]
                elif len(qubits) == 2:
                    pairs.append(tuple(rename[q] for q in qubits))
            best = minimum_swaps(pairs, logical.width, set(target.topology or ()), target.nqubits or 0)
            two_in = sum(len(q) == 2 for _, _, q in logical.ops)
            print(f"{name:28} {chip:6} {statistics.median(uncached) * 1e3:11.1f} "
                  f"{statistics.median(cached) * 1e3:10.2f} {out.swaps:5d} {best:4d} {two_in:5d} "
                  f"{out.added_two_qubit_gates:8d}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--shots", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--compile", action="store_true", help="only the compile figures")
    args = parser.parse_args()
    if args.compile:
        compile_report(min(args.repeat, 20))
        return

    proc, rep, pub = start_emulator()
    try:
        bell = QuantumScript([qml.H(0), qml.CNOT([0, 1])], [qml.probs(wires=[0, 1])])
        circuit = to_cqasm3(bell).text
        print(f"pennylane {qml.version()}; serve-2300 at {rep} (separate process, loopback)")
        print(f"circuit: 2-qubit Bell state, {args.repeat} repeats, medians\n")
        for shots in args.shots:
            tape = bell.copy(shots=shots)
            static_rt, execute_rt = asyncio.run(protocol_round_trips(rep, circuit, shots, args.repeat))
            seeds = iter(range(10**9))
            direct = timed(
                lambda: qxelarator.execute_string(circuit, iterations=shots, seed=next(seeds)),
                args.repeat,
            )
            ex = Executor2300(address=rep, subscribe_address=pub, timeout=10)
            one = timed(lambda: ex.execute([tape]), args.repeat)
            batch = timed(lambda: ex.execute([tape] * 20), max(args.repeat // 10, 10)) / 20
            print(f"shots={shots}")
            print(f"  round trip get_static (no simulation)      {static_rt * 1e3:8.3f} ms")
            print(f"  round trip execute (in a session)          {execute_rt * 1e3:8.3f} ms")
            print(f"  qxelarator.execute_string, in process      {direct * 1e3:8.3f} ms")
            print(f"  Executor2300.execute([tape]) (init+exec+term) {one * 1e3:5.3f} ms"
                  f"   ratio {one / direct:6.2f} x direct")
            print(f"  Executor2300, batch of 20, per circuit      {batch * 1e3:8.3f} ms"
                  f"   ratio {batch / direct:6.2f} x direct")
            print(f"  protocol execute round trip                                "
                  f"ratio {execute_rt / direct:6.2f} x direct\n")
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
