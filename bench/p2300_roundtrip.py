"""Executor2300 on loopback against ``qfleet serve-2300`` (a separate process).

Prints (figures from issue 3):
- round trip of one 2300 request on loopback: ``get_static`` (no simulation) and ``execute``
  of a 2-qubit Bell circuit inside an initialized session (the protocol client alone);
- executor overhead: ``Executor2300.execute([tape])`` (translate, initialize, execute,
  terminate, results) and per circuit in a batch of 20, against calling qxelarator directly
  on the same cQASM in this process, as ratios.

Usage: python bench/p2300_roundtrip.py [--repeat N] [--shots 100 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

import pennylane as qml
import qxelarator
from pennylane.tape import QuantumScript

from qfleet.circuits.cqasm import to_cqasm3
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--shots", type=int, nargs="+", default=[100, 1000])
    args = parser.parse_args()

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
