"""Runtime jobs per parameter-shift gradient of a 16-parameter circuit (issue 4).

QiskitExecutor(single_job=True) submits the whole gradient batch (2 x 16 = 32 shifted
circuits) as one Runtime job with 32 PUBs; Covalent's default was one job per circuit (32),
which is QiskitExecutor(single_job=False). Target: 1 job with single_job.

Counted two ways: the job ids qfleet reports for the gradient batch (local testing mode,
Aer), and the jobs the IBM Runtime stand-in (tests/standins/ibm_runtime.py) received
through the real QiskitRuntimeService (skip with --no-standin).

Usage: python bench/ibm_jobs_per_gradient.py [--shots N] [--no-standin]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pennylane as qml
from pennylane import numpy as pnp

import qfleet as qf
from qfleet.executors.ibm import close_sessions

STANDINS = Path(__file__).resolve().parents[1] / "tests" / "standins"
sys.path.insert(0, str(STANDINS))

from process import start_port, stop  # noqa: E402

WIRES, LAYERS = 4, 2
NUM_PARAMS = WIRES * LAYERS * 2  # RY and RZ per wire per layer: 16
STANDIN = STANDINS / "ibm_runtime.py"
API_KEY = "bench-api-key"


def circuit(params):
    for layer in range(LAYERS):
        for w in range(WIRES):
            qml.RY(params[layer, w, 0], wires=w)
            qml.RZ(params[layer, w, 1], wires=w)
        for w in range(WIRES):
            qml.CNOT(wires=[w, (w + 1) % WIRES])
    return qml.expval(qml.X(0) @ qml.Y(1) @ qml.X(2) @ qml.Z(3))


def gradient(executor, shots, params):
    """Returns (gradient, job ids of the gradient batch, seconds for qml.grad: the forward
    pass and the gradient batch)."""
    electron = qf.qelectron(
        qml.set_shots(
            qml.QNode(circuit, qml.device("default.qubit", wires=WIRES),
                      diff_method="parameter-shift"),
            shots,
        ),
        executors=executor,
    )
    electron(params)  # warm up: service, session, transpiler
    started = time.perf_counter()
    grad = qml.grad(electron)(params)
    seconds = time.perf_counter() - started
    return grad, electron.last_metadata.job_ids, seconds


def shifted_tapes(params) -> int:
    tape = qml.workflow.construct_tape(qml.QNode(circuit, qml.device("default.qubit")))(params)
    tapes, _ = qml.gradients.param_shift(tape)
    return len(tapes)


def start_standin():
    process, port = start_port([sys.executable, str(STANDIN), "--port", "0", "--api-key", API_KEY],
                               "the IBM stand-in")
    base = f"http://127.0.0.1:{port}"
    os.environ.update(IAM_URL=base, GLOBAL_SEARCH_URL=base, GLOBAL_CATALOG_URL=f"{base}/catalog")
    return process, base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, default=1000)
    parser.add_argument("--no-standin", action="store_true")
    args = parser.parse_args()

    angles = [[[0.1 * (i + 1) + 0.05 * j for j in range(2)] for i in range(WIRES)]
              for _ in range(LAYERS)]
    params = pnp.array(angles, requires_grad=True)
    assert params.size == NUM_PARAMS
    circuits = shifted_tapes(params)
    print(f"{NUM_PARAMS}-parameter circuit: parameter-shift gradient = {circuits} circuits, "
          f"{args.shots} shots each\n")

    rows = []
    for single in (True, False):
        ex = qf.executor.QiskitExecutor(single_job=single, seed=1)
        _, jobs, seconds = gradient(ex, args.shots, params)
        rows.append(("local (Aer)", single, len(jobs), seconds))

    process = None
    try:
        if not args.no_standin:
            import requests

            process, base = start_standin()
            for single in (True, False):
                ex = qf.executor.QiskitExecutor(
                    device="sampler", backend="ibm_manila", token=API_KEY, url=f"{base}/api/v1",
                    single_job=single, seed=1,
                )
                before = len(requests.get(f"{base}/__standin__/stats", timeout=10).json()["jobs"])
                _, jobs, seconds = gradient(ex, args.shots, params)
                received = requests.get(f"{base}/__standin__/stats", timeout=10).json()["jobs"]
                # qml.grad = warm-up call (1 job) + forward pass (1 job) + the gradient batch
                new = received[before + 2:]
                assert [job["id"] for job in new] == list(jobs), (new, jobs)
                assert sum(job["num_pubs"] for job in new) == circuits
                rows.append(("IBM Runtime stand-in", single, len(new), seconds))
    finally:
        close_sessions()
        if process is not None:
            stop(process)

    print(f"{'where':<22} {'single_job':>10} {'Runtime jobs':>13} {'gradient time':>14}")
    for where, single, jobs, seconds in rows:
        print(f"{where:<22} {str(single):>10} {jobs:>13} {seconds:>12.2f} s")
    print()
    for where in dict.fromkeys(r[0] for r in rows):
        one = next(r for r in rows if r[0] == where and r[1])
        many = next(r for r in rows if r[0] == where and not r[1])
        print(f"{where}: {many[2]} jobs -> {one[2]} job per gradient ({many[2] / one[2]:.0f}x "
              f"fewer jobs); gradient time {many[3]:.2f} s -> {one[3]:.2f} s")
    assert all(r[2] == 1 for r in rows if r[1]), "single_job must submit one job per gradient"


if __name__ == "__main__":
    main()
