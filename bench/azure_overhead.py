"""Submit-to-result latency of AzureExecutor vs the azure-quantum SDK's own
``target.submit`` + ``job.get_results`` on the same Azure Quantum stand-in (issue 5).

Both talk to the same local stand-in (tests/standins/azure_quantum.py, https with a
certificate made here) with Azurite holding the blobs, through the same kind of SDK
workspace (service principal, token cached after a warm-up call):

- SDK: ``target.submit(<OpenQASM 2 or IonQ JSON>, shots=...)`` then ``job.get_results()``;
  the circuit is already in the target's format and the result is the raw dict.
- qfleet: ``AzureExecutor.execute([tape])``: tape -> target format, submit, poll, download,
  counts -> PennyLane result, through qfleet's background event loop.

Reported: median and 90th percentile seconds per run and the ratio qfleet / SDK (below 1:
qfleet is faster). ``--batch N`` also times N circuits at once (qfleet submits and polls them
concurrently; the SDK loop submits them one after another, then collects).

Needs Azurite (``npm ci --no-audit --no-fund`` in the repository root).

Usage: python bench/azure_overhead.py [--runs 20] [--shots 1000] [--batch 8]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pennylane as qml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "standins"))

from azure_quantum import AzureStack  # noqa: E402

TARGETS = ("quantinuum.sim.h2-1e", "ionq.simulator")


def tape(shots: int, angle: float = 0.4) -> qml.tape.QuantumScript:
    return qml.tape.QuantumScript(
        [qml.RX(angle, 0), qml.RY(1.1, 1), qml.CNOT([0, 1])],
        [qml.expval(qml.Z(0) @ qml.Z(1))],
        shots=shots,
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--shots", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=8, help="circuits per batch run (0: skip)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder, AzureStack(Path(folder)) as stack:
        os.environ.update(stack.env)
        from azure.identity import ClientSecretCredential
        from azure.quantum import Workspace

        from qfleet.circuits import to_openqasm2
        from qfleet.circuits.ionq import to_ionq_circuit
        from qfleet.executors import AzureCredential, AzureExecutor

        credential = ClientSecretCredential(stack.TENANT, stack.CLIENT_ID, stack.CLIENT_SECRET,
                                            authority=stack.base,
                                            disable_instance_discovery=True)
        workspace = Workspace(resource_id=stack.resource_id, location="eastus",
                              credential=credential, arm_endpoint=stack.base)
        print(f"Azure Quantum stand-in at {stack.base}, Azurite at {stack.azurite}; "
              f"{args.runs} runs, {args.shots} shots\n")
        header = f"{'target':22} {'circuits':>8} {'SDK median':>11} {'qfleet median':>14} " \
                 f"{'SDK p90':>8} {'qfleet p90':>10} {'ratio':>6}"
        print(header)
        print("-" * len(header))
        for name in TARGETS:
            target = workspace.get_targets(name)
            executor = AzureExecutor(
                backend_name=name, location="eastus", arm_endpoint=stack.base,
                authority=stack.base, seed=1,
                credentials=AzureCredential(tenant_id=stack.TENANT, client_id=stack.CLIENT_ID,
                                            client_secret=stack.CLIENT_SECRET,
                                            resource_id=stack.resource_id))
            to_target = to_openqasm2 if name.startswith("quantinuum") else to_ionq_circuit

            def sdk_run(count: int) -> None:
                circuits = [to_target(tape(args.shots, 0.1 * i)) for i in range(count)]
                jobs = [target.submit(c, shots=args.shots) for c in circuits]
                with contextlib.redirect_stdout(io.StringIO()):  # get_results prints dots
                    for job in jobs:
                        job.get_results(timeout_secs=60)

            def qfleet_run(count: int) -> None:
                executor.execute([tape(args.shots, 0.1 * i) for i in range(count)])

            sizes = [1] + ([args.batch] if args.batch > 1 else [])
            for count in sizes:
                sdk_run(count)  # warm up: tokens, connections, target list
                qfleet_run(count)
                sdk_times, qfleet_times = [], []
                for _ in range(args.runs):  # interleaved, so drift hits both alike
                    started = time.perf_counter()
                    sdk_run(count)
                    sdk_times.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    qfleet_run(count)
                    qfleet_times.append(time.perf_counter() - started)
                sdk_median = statistics.median(sdk_times)
                qfleet_median = statistics.median(qfleet_times)
                print(f"{name:22} {count:>8} {sdk_median:>10.3f}s {qfleet_median:>13.3f}s "
                      f"{percentile(sdk_times, 0.9):>7.3f}s {percentile(qfleet_times, 0.9):>9.3f}s "
                      f"{qfleet_median / sdk_median:>6.2f}")
        workspace.close()


if __name__ == "__main__":
    main()
