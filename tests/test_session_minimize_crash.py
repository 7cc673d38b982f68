"""A minimization killed with kill -9 resumes in another process from its last finished
iteration, re-attaching the Classiq job that was in flight: no quantum job is paid twice.

The real classiq SDK talks to the Classiq stand-in (tests/standins/classiq_server.py, its own
process); the stand-in's job list is the backend's own count of jobs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

os.environ.setdefault("CLASSIQ_TELEMETRY_MODE", "disabled")  # before classiq is imported
pytest.importorskip("classiq")

from conftest import stored_checkpoint, wait_until
from standins.classiq_server import Running

import qfleet as qf
from qfleet.jobs import JobStatus, JobStore

TOKEN = "classiq-test-token-minimize"
QASM = (
    'OPENQASM 3.0; include "stdgates.inc"; input float t; qubit[1] q; bit[1] c; '
    "rx(t) q[0]; c = measure q;"
)
KILL_AFTER = 3  # finished evaluations before the kill
BUDGET = 8  # max_iteration


@pytest.fixture(scope="module")
def standin():
    server = Running(token=TOKEN)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLASSIQ_HOST", server.url)
        mp.setenv("CLASSIQ_SKIP_CHECK_HOST", "1")
        yield server
    server.stop()


@pytest.fixture(autouse=True)
def fresh(standin, tmp_path, monkeypatch):
    from classiq._internals import client as client_module

    import qfleet.executors.classiq as module

    monkeypatch.setenv("QFLEET_HOME", str(tmp_path / "qfleet-home"))
    standin.configure(delay=0.05)
    client_module.DEFAULT_CLIENT = None  # the SDK re-reads CLASSIQ_HOST
    module._installed = None
    return standin



def test_kill_9_mid_minimization_then_resumed_without_paying_twice(standin, monkeypatch):
    before = set(standin.state()["jobs"])
    code = f"""
        import json
        import qfleet as qf
        ex = qf.executor.ClassiqExecutor(host={standin.url!r}, token={TOKEN!r})
        es = qf.ExecutionSession({QASM!r}, qf.ExecutionPreferences(backend=ex, job_name="vqe"))
        job = es.submit_minimize(qf.Pauli.Z(0), {{"t": 0.5}}, max_iteration={BUDGET},
                                 tolerance=1e-4)
        print(json.dumps({{"id": job.id}}), flush=True)
        job.get_minimization_result()
    """
    victim = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)],
                              env={**os.environ, "PYTHONUNBUFFERED": "1"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = victim.stdout.readline()
        assert line, victim.stderr.read()[-3000:]
        job_id = json.loads(line)["id"]
        wait_until(lambda: len(stored_checkpoint(job_id).get("evaluations", [])) >= KILL_AFTER,
                   timeout=120.0)
        standin.configure(delay=2)  # from now on an evaluation stays in flight for 2 s

        def in_flight():
            state = stored_checkpoint(job_id)
            pending = state.get("pending")
            if not pending:
                return None
            row = JobStore.default().get(pending["job"])
            remote = json.loads(row["backend_job_ids"]) if row else []
            statuses = standin.state()["jobs"]
            if remote and all(statuses[r] in ("QUEUED", "RUNNING") for r in remote):
                return state, remote
            return None

        state, remote_in_flight = wait_until(in_flight, timeout=120.0)
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        victim.stdout.close()
        victim.stderr.close()
    finished = state["evaluations"]
    k = len(finished)
    assert k >= KILL_AFTER and state["pending"]["index"] == k
    assert qf.ExecutionJob.from_id(job_id).status is JobStatus.RUNNING  # nobody noticed yet
    standin.configure(delay=0.05)

    # This process takes the minimization over: it replays the k finished evaluations from
    # the checkpoint (no job), re-attaches evaluation k's Classiq job, and goes on.
    monkeypatch.setenv("QFLEET_CLASSIQEXECUTOR_TOKEN", TOKEN)
    result = qf.ExecutionJob.from_id(job_id).get_minimization_result(timeout_sec=120)
    job = qf.ExecutionJob.from_id(job_id)
    assert job.status is JobStatus.COMPLETED and job.attempts == 2
    assert list(result[:k]) == [(e["cost"], e["parameters"]) for e in finished]
    log = stored_checkpoint(job_id)["evaluations"]
    assert [e["resumed"] for e in log] == [False] * k + [True] + [False] * (len(log) - k - 1)
    assert log[k]["job"] == state["pending"]["job"]
    assert log[k]["backend_job_ids"] == remote_in_flight

    # the backend's own count: one Classiq job per evaluation, none run twice
    remote_ids = [r for e in log for r in e["backend_job_ids"]]
    assert len(remote_ids) == len(set(remote_ids)) == len(result)
    after = standin.state()["jobs"]
    assert sorted(set(after) - before) == sorted(remote_ids)
    assert all(after[r] == "COMPLETED" for r in remote_ids)
    # (that the replay retraces the uninterrupted run exactly: test_session_minimize.py)
