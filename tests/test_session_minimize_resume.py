"""A minimization whose code the job store does not keep (a Python cost function, a
PennyLane program) resumes when the user supplies that code again:
``qf.ExecutionJob.from_id(id).resume(cost_function=f, program=qnode)``. The code is checked
against the stored run first; code that does not match is refused, changing nothing.

The kill -9 test runs the minimization in a child process on LocalExecutor; the job store's
child jobs (one per cost evaluation, ``parent_id`` = the minimization) are the count of
quantum jobs run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pennylane as qml
import pytest
from conftest import stored_checkpoint, wait_until

import qfleet as qf
from qfleet.jobs import JobStatus, JobStore, MinimizeResumeError
from qfleet.jobs.minimize import ResumeMismatchError

QASM = (
    'OPENQASM 3.0; include "stdgates.inc"; input float t; qubit[1] q; bit[1] c; '
    "rx(t) q[0]; c = measure q;"
)
COST_SOURCE = "def cost(bits):\n    return -1.0 if bits == '1' else 0.5\n"
namespace: dict = {}
exec(COST_SOURCE, namespace)  # the very function the child process defines
cost = namespace["cost"]
BUDGET = 12
KILL_AFTER = 4


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("QFLEET_HOME", str(tmp_path / "qfleet-home"))



def children(job_id: str) -> list[str]:
    frame = qf.get_execution_actions(limit=10_000)
    return sorted(frame[frame.parent_id == job_id].id)


def test_kill_9_then_resume_with_the_same_cost_function():
    executor = qf.LocalExecutor(latency=0.1)  # an evaluation stays in flight for 0.1 s
    with qf.ExecutionSession(QASM, executor) as es:
        whole = es.minimize(cost, {"t": 0.5}, max_iteration=BUDGET, tolerance=1e-6)
    assert len(whole) == BUDGET

    code = COST_SOURCE + textwrap.dedent(f"""
        import json
        import qfleet as qf
        es = qf.ExecutionSession({QASM!r}, qf.LocalExecutor(latency=0.1))
        job = es.submit_minimize(cost, {{"t": 0.5}}, max_iteration={BUDGET}, tolerance=1e-6)
        print(json.dumps({{"id": job.id}}), flush=True)
        job.get_minimization_result()
    """)
    victim = subprocess.Popen([sys.executable, "-c", code],
                              env={**os.environ, "PYTHONUNBUFFERED": "1"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = victim.stdout.readline()
        assert line, victim.stderr.read()[-3000:]
        job_id = json.loads(line)["id"]
        wait_until(lambda: len(stored_checkpoint(job_id).get("evaluations", [])) >= KILL_AFTER)
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        victim.stdout.close()
        victim.stderr.close()
    state = stored_checkpoint(job_id)
    finished = state["evaluations"]
    k = len(finished)
    assert KILL_AFTER <= k < BUDGET
    ran_before = children(job_id)
    assert len(ran_before) in (k, k + 1)  # plus the evaluation in flight, if submitted

    # another function is refused, naming both costs, and changes nothing
    job = qf.ExecutionJob.from_id(job_id)
    with pytest.raises(ResumeMismatchError, match=r"gives .* but the stored cost is") as info:
        job.resume(cost_function=lambda bits: -1.0 if bits == "1" else 0.25)
    assert repr(finished[-1]["cost"]) in str(info.value)
    assert job.status is JobStatus.RUNNING and job.attempts == 1
    assert stored_checkpoint(job_id) == state

    # the same function: the k finished evaluations are replayed, not run again
    result = job.resume(cost_function=cost).get_minimization_result(timeout_sec=60)
    assert list(result) == list(whole)  # as if it had never been interrupted
    assert job.status is JobStatus.COMPLETED and job.attempts == 2
    log = stored_checkpoint(job_id)["evaluations"]
    assert [e["job"] for e in log[:k]] == [e["job"] for e in finished]
    assert set(ran_before) <= set(children(job_id))
    assert len(children(job_id)) == len(result) == BUDGET  # one job per evaluation, no repeat


def test_without_the_code_it_says_how_to_resume_and_resumes_after_failing():
    store = JobStore.default()
    with qf.ExecutionSession(QASM) as es:
        job = es.submit_minimize(cost, {"t": 0.5}, max_iteration=8)
        whole = job.get_minimization_result()
    log = stored_checkpoint(job.id)["evaluations"]
    # as a crash after evaluation 3 leaves it
    store.update(job.id, {"status": "RUNNING", "ended_at": None, "results": None,
                          "checkpoint": json.dumps({"evaluations": log[:3], "pending": None}),
                          "owner_host": None, "owner_pid": None, "owner_started": None})
    with pytest.raises(qf.jobs.JobFailedError, match=r"\.resume\(cost_function=\.\.\.\)"):
        qf.ExecutionJob.from_id(job.id).get_minimization_result(timeout_sec=30)
    count = store.count()
    resumed = qf.ExecutionJob.from_id(job.id).resume(cost_function=cost)
    assert list(resumed.get_minimization_result(timeout_sec=30)) == list(whole)
    assert store.count() - count == len(whole) - 3
    # a finished minimization has nothing to resume; a cancelled one does not resume
    assert resumed.resume(cost_function=cost).status is JobStatus.COMPLETED
    store.update(job.id, {"status": "CANCELLED"})
    with pytest.raises(MinimizeResumeError, match="cancelled"):
        resumed.resume(cost_function=cost)


def test_a_pennylane_program_resumes_with_the_same_qnode():
    dev = qml.device("default.qubit", wires=1)

    @qml.qnode(dev)
    def circuit(t):
        qml.RX(t, wires=0)
        return qml.expval(qml.PauliZ(0))

    @qml.qnode(dev)
    def other(t):
        qml.RX(2 * t, wires=0)
        return qml.expval(qml.PauliZ(0))

    store = JobStore.default()
    with qf.ExecutionSession(circuit) as es:
        job = es.submit_minimize(qf.Pauli.Z(0), {"t": 0.5}, max_iteration=10, tolerance=1e-6)
        whole = job.get_minimization_result()
    log = stored_checkpoint(job.id)["evaluations"]
    store.update(job.id, {"status": "RUNNING", "ended_at": None, "results": None,
                          "checkpoint": json.dumps({"evaluations": log[:4], "pending": None}),
                          "owner_host": None, "owner_pid": None, "owner_started": None})
    again = qf.ExecutionJob.from_id(job.id)
    with pytest.raises(MinimizeResumeError, match=r"\.resume\(program=\.\.\.\)"):
        again.resume()  # the bound circuits in the store do not rebuild a parametric program
    with pytest.raises(ResumeMismatchError, match="the circuit that ran is"):
        again.resume(program=other)
    with pytest.raises(ResumeMismatchError, match="resume it without cost_function"):
        again.resume(program=circuit, cost_function=qf.Pauli.X(0))
    assert again.status is JobStatus.RUNNING and again.attempts == 1
    count = store.count()
    result = again.resume(program=circuit).get_minimization_result(timeout_sec=30)
    assert list(result) == list(whole)
    assert store.count() - count == len(whole) - 4
