"""The ExecutionSession API on Executor2300, against a real ``qfleet serve-2300`` emulator."""

from __future__ import annotations

import math

import pytest

import qfleet as qf
from qfleet.jobs import JobStatus

pytest_plugins = ["p2300_support"]  # the emulator fixtures

QASM = (
    'OPENQASM 3.0; include "stdgates.inc"; input float t; qubit[1] q; bit[1] c; '
    "rx(t) q[0]; c = measure q;"
)
SHOTS = 4000


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("QFLEET_HOME", str(tmp_path / "qfleet-home"))


def test_session_on_executor_2300(emulator):
    ex = emulator.executor()
    assert not ex.capabilities.analytic  # shots only: estimates come from samples
    prefs = qf.ExecutionPreferences(num_shots=SHOTS, backend=ex)
    with qf.ExecutionSession(QASM, prefs) as es:
        for result, t in zip(es.sample([{"t": 0.5}, {"t": 2.0}]), (0.5, 2.0)):
            p = math.sin(t / 2) ** 2
            assert result.num_shots == SHOTS and set(result.counts) <= {"0", "1"}
            assert abs(result.probability("1") - p) < 5 * math.sqrt(max(p * (1 - p), 1 / SHOTS) / SHOTS)
        job = es.submit_estimate(qf.Pauli.I(0) + 2 * qf.Pauli.Z(0), {"t": 0.5})
        est = job.get_estimate_result(timeout_sec=60)
    assert est.num_shots == SHOTS
    assert abs(est.value - (1 + 2 * math.cos(0.5))) < 5 * 2 * math.sin(0.5) / math.sqrt(SHOTS)
    again = qf.ExecutionJob.from_id(job.id)
    assert again.status is JobStatus.COMPLETED and "Executor2300" in again.backend


def test_kill_9_with_three_durable_jobs_on_the_2300_loses_none(emulators):
    """A process running 3 durable jobs is killed (kill -9) while it holds the 2300's lock;
    this process recovers all three: the running one by unlocking the dead session
    (``attach``), the queued ones by running them."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    emu = emulators["slow"]  # 0.25 s per execute: the batches are still running at the kill
    code = textwrap.dedent(f"""
        import json, time
        import qfleet as qf
        ex = qf.executor.Executor2300(address={emu.rep!r}, subscribe_address={emu.pub!r}, timeout=5)
        es = qf.ExecutionSession({QASM!r}, qf.ExecutionPreferences(num_shots=500, backend=ex))
        jobs = [es.submit_sample([{{"t": 0.3 * k}} for k in range(1, 5)]) for _ in range(3)]
        print(json.dumps([j.id for j in jobs]), flush=True)
        time.sleep(120)
    """)
    victim = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    try:
        ids = json.loads(victim.stdout.readline())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and emu.dynamic()["execute"] == 0:
            time.sleep(0.05)
        while time.monotonic() < deadline and not emu.dynamic()["locked"]:
            time.sleep(0.02)
        assert emu.dynamic()["locked"]  # mid-batch: the dead process will hold the lock
    finally:
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
        victim.stdout.close()
    for job_id in ids:
        results = qf.ExecutionJob.from_id(job_id).get_batch_sample_result(timeout_sec=90)
        assert [r.num_shots for r in results] == [500] * 4
        for k, result in enumerate(results, start=1):
            p = math.sin(0.3 * k / 2) ** 2
            assert abs(result.probability("1") - p) < 5 * math.sqrt(max(p * (1 - p), 1 / 500) / 500)
        assert qf.ExecutionJob.from_id(job_id).status is JobStatus.COMPLETED
