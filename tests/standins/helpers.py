"""Test helpers shared by the executor tests that run against the stand-ins (not product): the
reference QNode, its exact values and a shot-noise bound, polling, and the check that a cloud
executor works without its extra installed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import numpy as np
import pennylane as qml
from pennylane import numpy as pnp

SHOTS = 4000


def ansatz(x):
    qml.RX(x[0], wires=0)
    qml.RY(x[1], wires=1)
    qml.CNOT(wires=[0, 1])
    qml.RZ(x[2], wires=1)
    qml.Hadamard(wires=1)


def observables():
    return qml.expval(qml.Z(0) @ qml.Z(1)), qml.expval(qml.X(1)), qml.expval(qml.Y(0))


X = pnp.array([0.4, 1.1, -0.6], requires_grad=True)


def qnode(executor, shots=SHOTS):
    import qfleet as qf

    @qf.qelectron(executors=executor)
    @qml.qnode(qml.device("default.qubit", wires=2), shots=shots, diff_method="parameter-shift")
    def circuit(x):
        ansatz(x)
        return observables()

    return circuit


@qml.qnode(qml.device("default.qubit", wires=2))
def exact(x):
    ansatz(x)
    return observables()


def assert_close(got, want, shots=SHOTS):
    tol = 5 * np.sqrt(np.maximum(1 - np.asarray(want) ** 2, 1 / shots) / shots)
    assert np.all(np.abs(np.asarray(got) - np.asarray(want)) <= tol), (got, want, tol)


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def run_without_extra(blocked: tuple[str, ...], prefix: str, executor: str, tape: str) -> str:
    """Run, in a fresh interpreter where the ``blocked`` modules cannot be imported, an executor
    (``qfleet.executor.<executor>``) on ``tape``; check that importing qfleet and building the
    executor loaded no module starting with ``prefix``. Returns stdout: ``ERROR <message>``
    where running raised ConfigError."""
    code = textwrap.dedent(f"""
        import sys
        for name in {blocked!r}:
            sys.modules[name] = None          # as if not installed
        import pennylane as qml
        import qfleet
        from qfleet.errors import ConfigError
        ex = qfleet.executor.{executor}
        assert not [m for m in sys.modules if m.startswith({prefix!r}) and sys.modules[m]]
        tape = {tape}
        try:
            ex.run_circuit_sync(tape)
        except ConfigError as exc:
            print("ERROR", exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


# -- kill -9 of a process running a durable job, for the re-attach tests --------------------

#: A one-parameter OpenQASM 3 program for durable jobs, and the parameter sets it runs.
RY_QASM = (
    'OPENQASM 3.0; include "stdgates.inc"; input float t; qubit[1] q; bit[1] c; '
    "ry(t) q[0]; c = measure q;"
)
ANGLES = (0.7, 2.0)


def ry_reference(kind: str, t: float) -> float:
    """default.qubit's exact value: P(1) for sample jobs, <I + 2 Z + X> for estimate jobs."""

    @qml.qnode(qml.device("default.qubit", wires=1))
    def circuit():
        qml.RY(t, 0)
        if kind == "sample":
            return qml.probs(wires=0)
        return qml.expval(qml.Identity(0) + 2 * qml.Z(0) + qml.X(0))

    out = circuit()
    return float(out[1] if kind == "sample" else out)


def submit_then_kill(
    code: str, held_statuses, held: str, *, expected_jobs: int
) -> tuple[str, list[str]]:
    """Run ``code`` (it prints {"id": <qfleet job id>}) in a child process, wait until the
    stand-in holds its ``expected_jobs`` backend jobs (``held_statuses()`` maps backend job id
    -> status; each must be ``held``) and the job store has their ids, then kill -9 the
    child. Returns (qfleet job id, backend job ids)."""
    import json
    import os
    import signal

    import qfleet as qf
    from qfleet.jobs import JobStatus

    victim = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)],
                              env={**os.environ, "PYTHONUNBUFFERED": "1"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = victim.stdout.readline()
        assert line, victim.stderr.read()[-3000:] if victim.poll() is not None else "no output"
        job_id = json.loads(line)["id"]
        job = qf.ExecutionJob.from_id(job_id)
        deadline = time.monotonic() + 120
        while not job.backend_job_ids and time.monotonic() < deadline and victim.poll() is None:
            time.sleep(0.1)
            job = qf.ExecutionJob.from_id(job_id)
        remote_ids = job.backend_job_ids
        assert len(remote_ids) == expected_jobs, (remote_ids, victim.poll())
        assert job.status is JobStatus.RUNNING
        statuses = held_statuses()
        assert all(statuses[i] == held for i in remote_ids)  # accepted, not finished
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        victim.stdout.close()
        victim.stderr.close()
    return job_id, remote_ids


def assert_reattached(job_id: str, kind: str, shots: int, remote_ids, list_jobs, done: str):
    """The durable job ``job_id`` (taken over by this process) returns default.qubit's values
    within shot noise, as its second attempt on the same backend jobs, and the stand-in
    (``list_jobs()``: its jobs as dicts) holds no job but those, all ``done``. Returns the
    job's results."""
    import qfleet as qf
    from qfleet.jobs import JobStatus

    job = qf.ExecutionJob.from_id(job_id)
    if kind == "sample":
        results = job.get_batch_sample_result(timeout_sec=120)
        got = [r.probability("1") for r in results]
        assert [r.num_shots for r in results] == [shots] * len(ANGLES)
    else:
        results = job.get_batch_estimate_result(timeout_sec=120)
        got = [r.value for r in results]
    for value, t in zip(got, ANGLES, strict=True):
        want = ry_reference(kind, t)
        # P(1): binomial noise; I + 2Z + X: two independent bases, |2Z| and |X| <= 2 and 1
        sigma = np.sqrt(0.25 / shots) if kind == "sample" else np.sqrt((4 + 1) / shots)
        assert abs(value - want) < 5 * sigma, (value, want)
    job = qf.ExecutionJob.from_id(job_id)
    assert job.status is JobStatus.COMPLETED
    assert job.attempts == 2 and job.backend_job_ids == remote_ids
    after = list_jobs()
    assert sorted(j["id"] for j in after) == sorted(remote_ids)  # nothing submitted again
    assert all(j["status"] == done for j in after)
    return results
