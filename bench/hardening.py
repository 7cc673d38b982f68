"""Hardening figures (issue 12): how fast a dead endpoint is reported, whether a script with
pending backend work exits, and what the data-only job store costs.

- Seconds until an unreachable backend (a closed port on 127.0.0.1) is reported, through the
  real SDKs: ClassiqExecutor(timeout=5) and without timeout, DaskExecutor(address=...) by
  default and with timeout=3, QiskitExecutor and AzureExecutor (timeout=10). The error's kind
  (transient: a cluster retries it elsewhere) is printed too.
- Seconds from "script end" to process exit with a pending Classiq ``run_later``.
- Job store: tapes -> JSON -> tapes per tape (vs pickle), and one verified backup of a store
  with N completed jobs.

Usage: python bench/hardening.py [--skip-sdks] [--jobs 200]
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings

os.environ.setdefault("CLASSIQ_TELEMETRY_MODE", "disabled")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def timed(label: str, make, tape) -> None:
    started = time.perf_counter()
    try:
        make().run_all_circuits_sync([tape])
        outcome = "no error?!"
    except Exception as exc:
        outcome = (f"{type(exc).__name__} transient={getattr(exc, 'transient', None)}: "
                   f"{str(exc)[:90]}")
    print(f"{label:<44} {time.perf_counter() - started:6.1f} s  {outcome}")


def unreachable() -> None:
    import pennylane as qml

    port = closed_port()
    tape = qml.tape.QuantumScript([qml.Hadamard(0)], [qml.counts(wires=[0])], shots=10)
    probs = qml.tape.QuantumScript([qml.Hadamard(0)], [qml.probs(wires=[0])])
    from qfleet.executors.classiq import ClassiqExecutor
    from qfleet.executors.dask import DaskExecutor

    ClassiqExecutor(host="http://127.0.0.1:1", token="t" * 24).prepare([tape])  # SDK imported
    host = f"http://127.0.0.1:{port}"
    timed("ClassiqExecutor(timeout=5)", lambda: ClassiqExecutor(host=host, token="t" * 24,
                                                               timeout=5), tape)
    timed("ClassiqExecutor() (default)", lambda: ClassiqExecutor(host=host, token="t" * 24), tape)
    timed("DaskExecutor(address) (default)",
          lambda: DaskExecutor(address=f"tcp://127.0.0.1:{port}"), probs)
    timed("DaskExecutor(address, timeout=3)",
          lambda: DaskExecutor(address=f"tcp://127.0.0.1:{port}", timeout=3), probs)
    from qfleet.executors.ibm import QiskitExecutor

    timed("QiskitExecutor(url=closed, timeout=10)", lambda: QiskitExecutor(
        device="sampler", backend="ibm_fez", token="x" * 44, url=host, timeout=10,
        instance="crn:v1:bluemix:public:quantum-computing:us-east:a/b:c::"), tape)
    from qfleet.executors.azure import AzureCredential, AzureExecutor

    https = f"https://127.0.0.1:{port}"
    credential = AzureCredential(
        tenant_id="72f988bf-86f1-41af-91ab-2d7cd011db47", client_id="c", client_secret="s" * 20,
        resource_id="/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg1/"
                    "providers/Microsoft.Quantum/Workspaces/ws1")
    timed("AzureExecutor(authority=closed, timeout=10)", lambda: AzureExecutor(
        backend_name="ionq.simulator", credentials=credential, location="eastus",
        arm_endpoint=https, authority=https, timeout=10), tape)


def exit_with_pending_run_later() -> None:
    port = closed_port()
    script = textwrap.dedent(f"""
        import logging, time, pennylane as qml
        logging.disable(logging.CRITICAL)
        from qfleet.executors.classiq import ClassiqExecutor
        ex = ClassiqExecutor(host="http://127.0.0.1:{port}", token="t" * 24)
        future = ex.run_later([qml.tape.QuantumScript([qml.Hadamard(0)],
                                                     [qml.counts(wires=[0])], shots=10)])
        print(time.time(), flush=True)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600)
    ended = time.time()
    end_of_script = float(proc.stdout.strip().splitlines()[-1])
    print(f"{'script end -> exit, pending Classiq run_later':<44} "
          f"{ended - end_of_script:6.1f} s  (rc {proc.returncode})")


def store(jobs: int) -> None:
    import pennylane as qml

    from qfleet.circuits.tape_json import tapes_from_json, tapes_to_json

    tape = qml.tape.QuantumScript(
        [qml.StronglyEntanglingLayers(qml.numpy.ones((3, 6, 3)), wires=range(6))],
        [qml.expval(qml.Hamiltonian([0.5] * 6, [qml.Z(i) @ qml.X((i + 1) % 6)
                                                for i in range(6)]))])
    runs = 200
    started = time.perf_counter()
    for _ in range(runs):
        text = tapes_to_json([tape])
        tapes_from_json(text)
    json_s = (time.perf_counter() - started) / runs
    started = time.perf_counter()
    for _ in range(runs):
        blob = pickle.dumps((tape,))
        pickle.loads(blob)
    pickle_s = (time.perf_counter() - started) / runs
    print(f"{'tape -> JSON -> tape (StronglyEntangling 6q)':<44} {json_s * 1e3:6.2f} ms "
          f"({len(text)} bytes; pickle {pickle_s * 1e3:.2f} ms, {len(blob)} bytes)")

    import qfleet as qf
    from qfleet.jobs.store import JobStore

    with tempfile.TemporaryDirectory() as home:
        os.environ["QFLEET_HOME"] = home
        program = ('OPENQASM 3.0; include "stdgates.inc"; input float t; qubit[2] q; '
                   "bit[2] c; rx(t) q[0]; cx q[0], q[1]; c = measure q;")
        prefs = qf.ExecutionPreferences(num_shots=100, backend=qf.LocalExecutor(seed=1))
        started = time.perf_counter()
        with qf.ExecutionSession(program, prefs) as es:
            submitted = [es.submit_sample({"t": 0.1 * i}) for i in range(jobs)]
            for job in submitted:
                job.result(timeout_sec=120)
        per_job = (time.perf_counter() - started) / jobs
        store = JobStore.default()
        started = time.perf_counter()
        store.backup()
        backup_s = time.perf_counter() - started
        size = store.path.stat().st_size
        print(f"{f'submit+result per job ({jobs} jobs)':<44} {per_job * 1e3:6.1f} ms")
        print(f"{f'verified backup of {jobs} jobs ({size // 1024} KiB)':<44} "
              f"{backup_s * 1e3:6.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-sdks", action="store_true")
    parser.add_argument("--jobs", type=int, default=200)
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    if not args.skip_sdks:
        unreachable()
        exit_with_pending_run_later()
    store(args.jobs)


if __name__ == "__main__":
    main()
