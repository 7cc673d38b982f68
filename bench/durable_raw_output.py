"""What storing raw output and finishing it when asked costs durable jobs (issue 11, item 7).

Durable jobs store the backend's raw output as JSON data when it arrives
(qfleet.jobs.raw_json) and finish it into results on the thread that asks. Measured per job,
median of N jobs on LocalExecutor (default.qubit, exact) and QiskitExecutor (local_sampler,
seeded, counts):

- submit -> result() in the same process (the finishing uses the preparation kept in memory);
- finishing from the store (a process that did not run the job: the stored tapes are
  prepared again for the runner), measured here by dropping the kept preparation;
- the size of the stored raw output and of the results that replace it.

Usage: python bench/durable_raw_output.py [--jobs N] [--shots S]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import qfleet as qf
from qfleet.executors import QiskitExecutor
from qfleet.jobs import job as job_module
from qfleet.jobs.store import JobStore

QASM = (
    'OPENQASM 3.0; include "stdgates.inc"; input float t; qubit[2] q; bit[2] c; '
    "rx(t) q[0]; cx q[0], q[1]; c = measure q;"
)
H = qf.Pauli.I(0) + 2 * qf.Pauli.Z(0) * qf.Pauli.Z(1)


def measure(executor, jobs: int, sample: bool) -> dict[str, float]:
    same, stored, raw_sizes, result_sizes = [], [], [], []
    store = JobStore.default()
    with qf.ExecutionSession(QASM, qf.ExecutionPreferences(backend=executor)) as es:
        for i in range(jobs):
            params = [{"t": 0.1 * i + 0.01 * k} for k in range(4)]
            started = time.perf_counter()
            job = es.submit_batch_sample(params) if sample else es.submit_batch_estimate(H, params)
            job.result()
            same.append(time.perf_counter() - started)

            job = es.submit_batch_sample(params) if sample else es.submit_batch_estimate(H, params)
            job.poll()
            raw_sizes.append(len(store.get(job.id)["raw_output"]))
            job_module._take_unfinished(job.id)  # as in a process that did not run it
            started = time.perf_counter()
            job.result()
            stored.append(time.perf_counter() - started)
            result_sizes.append(len(store.get(job.id)["results"]))
    return {
        "submit->result ms": 1000 * statistics.median(same),
        "finish from store ms": 1000 * statistics.median(stored),
        "raw_output bytes": statistics.median(raw_sizes),
        "results bytes": statistics.median(result_sizes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--shots", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["QFLEET_HOME"] = home
        rows = {
            "LocalExecutor estimate (exact)": measure(qf.LocalExecutor(), args.jobs, False),
            f"QiskitExecutor sample ({args.shots} shots)":
                measure(QiskitExecutor(seed=5, shots=args.shots), args.jobs, True),
        }
    for name, row in rows.items():
        print(f"{name:40s} " + "  ".join(f"{k}: {v:8.1f}" for k, v in row.items()))


if __name__ == "__main__":
    main()
