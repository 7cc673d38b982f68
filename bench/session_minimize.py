"""ExecutionSession.minimize: what durability costs, what a resume costs, and
get_execution_actions over a store of many jobs.

Prints, measured in this run:
- per cost evaluation: a durable minimize (one job and two checkpoints per evaluation) vs
  scipy.optimize.minimize over a plain QNode on the same simulator (the same COBYLA run);
- resume: replaying k evaluations from the checkpoint (no job runs) vs running them;
- get_execution_actions(limit=50) with and without a filter over N jobs.

Usage: python bench/session_minimize.py [--evaluations 40] [--jobs 500]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import pennylane as qml
import scipy.optimize

import qfleet as qf
from qfleet.jobs import JobStore

QASM = (
    'OPENQASM 3.0; include "stdgates.inc"; input float t; qubit[1] q; bit[1] c; '
    "rx(t) q[0]; c = measure q;"
)


def plain_minimize(evaluations: int) -> tuple[float, int]:
    @qml.qnode(qml.device("default.qubit", wires=1))
    def energy(t):
        qml.RX(t, 0)
        return qml.expval(qml.Z(0))

    started = time.perf_counter()
    res = scipy.optimize.minimize(lambda x: float(energy(x[0])), [0.5], method="COBYLA",
                                  tol=1e-9, options={"maxiter": evaluations})
    return time.perf_counter() - started, int(res.nfev)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=40)
    parser.add_argument("--jobs", type=int, default=500)
    args = parser.parse_args()
    os.environ["QFLEET_HOME"] = tempfile.mkdtemp(prefix="qfleet-bench-")
    store = JobStore.default()

    with qf.ExecutionSession(QASM) as es:
        es.estimate(qf.Pauli.Z(0), {"t": 0.1})  # warm imports and caches
        started = time.perf_counter()
        job = es.submit_minimize(qf.Pauli.Z(0), {"t": 0.5}, args.evaluations, tolerance=1e-9)
        result = job.get_minimization_result()
        durable = time.perf_counter() - started
    plain, nfev = plain_minimize(args.evaluations)
    n = len(result)
    print(f"durable minimize: {n} evaluations, {durable / n * 1e3:.1f} ms each; plain "
          f"scipy+QNode: {nfev} evaluations, {plain / nfev * 1e3:.2f} ms each; "
          f"ratio {durable / n / (plain / nfev):.1f}x")

    # resume: cut the checkpoint back to k evaluations, hand the job back, time the rest
    log = json.loads(store.get(job.id)["checkpoint"])["evaluations"]
    k = n - 1
    store.update(job.id, {"status": "RUNNING", "ended_at": None, "results": None,
                          "checkpoint": json.dumps({"evaluations": log[:k], "pending": None}),
                          "owner_host": None, "owner_pid": None, "owner_started": None})
    started = time.perf_counter()
    again = qf.ExecutionJob.from_id(job.id).get_minimization_result()
    resumed = time.perf_counter() - started
    assert list(again) == list(result)
    print(f"resume replaying {k} of {n} evaluations: {resumed * 1e3:.0f} ms "
          f"(running them took ~{durable * k / n * 1e3:.0f} ms)")

    with qf.ExecutionSession(QASM, qf.ExecutionPreferences(num_shots=10, job_name="bulk")) as es:
        bulk = [es.submit_sample({"t": 0.001 * i}) for i in range(args.jobs)]
        for done in bulk:
            done.result()
    total = store.count()
    qf.get_execution_actions(limit=1)  # import pandas
    started = time.perf_counter()
    qf.get_execution_actions(limit=50)
    newest = time.perf_counter() - started
    started = time.perf_counter()
    frame = qf.get_execution_actions(limit=50, filters=qf.ExecutionJobFilters(name="nobody"))
    scan = time.perf_counter() - started
    assert frame.empty
    print(f"get_execution_actions over {total} jobs: newest 50 in {newest * 1e3:.0f} ms; a "
          f"filter matching none (reads every job) in {scan * 1e3:.0f} ms "
          f"({scan / total * 1e6:.0f} us per job)")


if __name__ == "__main__":
    main()
