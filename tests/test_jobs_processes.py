"""Durable jobs across processes: from_id elsewhere, a process that exits with a job in
flight, a process killed (kill -9) mid-job and its job recovered; the ``qfleet jobs`` CLI."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import qfleet as qf
from qfleet.cli import main as cli
from qfleet.jobs import JobStatus

QASM = (
    'OPENQASM 3.0; include "stdgates.inc"; input float t; qubit[1] q; bit[1] c; '
    "rx(t) q[0]; c = measure q;"
)
H = qf.Pauli.I(0) + 2 * qf.Pauli.Z(0)

PRELUDE = f"""
import json, sys, time
import qfleet as qf
QASM = {QASM!r}
"""


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("QFLEET_HOME", str(tmp_path / "qfleet-home"))
    return tmp_path / "qfleet-home"


def spawn(code: str) -> subprocess.Popen:
    """A Python process running ``code`` (after PRELUDE) with this test's environment."""
    return subprocess.Popen(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code)],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 120) -> list:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return [json.loads(line) for line in out.splitlines() if line.startswith(("{", "["))]


def p1(t):
    return math.sin(t / 2) ** 2


GATE = threading.Event()


class GatedExecutor(qf.LocalExecutor):
    """Holds its batches until the test opens GATE."""

    async def collect(self, job):
        await asyncio.to_thread(GATE.wait, 60)
        return await super().collect(job)


def test_from_id_across_processes():
    # A submits, waits and exits; this process reads the job by id
    writer = spawn("""
        ex = qf.LocalExecutor(seed=17)
        with qf.ExecutionSession(QASM, qf.ExecutionPreferences(num_shots=1000, backend=ex,
                                                               job_name="from-a")) as es:
            job = es.submit_sample({"t": 0.5})
            counts = job.get_sample_result().counts
        print(json.dumps({"id": job.id, "counts": counts}))
    """)
    # meanwhile this process submits a job that a reader process waits for
    GATE.clear()
    with qf.ExecutionSession(QASM, qf.ExecutionPreferences(backend=GatedExecutor())) as es:
        mine = es.submit_estimate(H, [{"t": 0.5}, {"t": 0.6}])
    # The first process to ask finishes the backend's raw output, so it builds the job's
    # executor again: the reader can import this module's GatedExecutor.
    reader = spawn(f"""
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        job = qf.ExecutionJob.from_id({mine.id!r})
        assert job.poll(timeout_sec=0.5).value in ("QUEUED", "RUNNING"), job.status
        print("waiting", flush=True)
        values = [r.value for r in job.get_batch_estimate_result()]
        print(json.dumps({{"values": values, "attempts": job.attempts}}))
    """)
    assert reader.stdout.readline().strip() == "waiting"
    GATE.set()
    [written] = finish(writer)
    job = qf.ExecutionJob.from_id(written["id"])
    assert job.status is JobStatus.COMPLETED and job.name == "from-a"
    assert job.get_sample_result().counts == written["counts"]
    assert abs(job.get_sample_result().probability("1") - p1(0.5)) < 0.04

    [read] = finish(reader)
    assert read["attempts"] == 1  # the reader waited for this (live) owner; no re-run
    assert read["values"] == [r.value for r in mine.get_batch_estimate_result()]
    assert read["values"] == pytest.approx([1 + 2 * math.cos(0.5), 1 + 2 * math.cos(0.6)], abs=1e-12)


def test_a_job_in_flight_at_exit_is_taken_over():
    quitter = spawn("""
        ex = qf.LocalExecutor(latency=1.0)
        es = qf.ExecutionSession(QASM, qf.ExecutionPreferences(num_shots=300, backend=ex))
        job = es.submit_sample({"t": 1.0})
        print(json.dumps({"id": job.id}))
        # exits at once: the job is handed back (owner cleared), not lost
    """)
    [out] = finish(quitter)
    job = qf.ExecutionJob.from_id(out["id"])
    assert job.status in (JobStatus.QUEUED, JobStatus.RUNNING)
    row = job._refresh()
    assert row["owner_pid"] is None
    result = job.get_sample_result(timeout_sec=60)
    assert result.num_shots == 300
    assert job.attempts == 2 and job.status is JobStatus.COMPLETED


def test_kill_9_mid_job_then_recovered_once_by_two_processes():
    victim = spawn("""
        ex = qf.LocalExecutor(latency=2.0, seed=4)
        es = qf.ExecutionSession(QASM, qf.ExecutionPreferences(num_shots=2000, backend=ex))
        job = es.submit_sample([{"t": 0.7}, {"t": 2.0}])
        print(json.dumps({"id": job.id}))
        time.sleep(120)
    """)
    line = victim.stdout.readline()
    job_id = json.loads(line)["id"]
    job = qf.ExecutionJob.from_id(job_id)
    deadline = time.monotonic() + 30
    while job.status is not JobStatus.RUNNING and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job.status is JobStatus.RUNNING
    assert job._row["owner_pid"] == victim.pid
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(10)
    victim.stdout.close()
    victim.stderr.close()
    assert job.status is JobStatus.RUNNING  # nobody has noticed yet

    # two processes ask for the result at the same time: one re-runs it, both get it
    code = f"""
        job = qf.ExecutionJob.from_id({job_id!r})
        results = job.get_batch_sample_result(timeout_sec=60)
        print(json.dumps([r.counts for r in results]))
    """
    readers = [spawn(code), spawn(code)]
    outputs = [finish(r)[0] for r in readers]
    assert outputs[0] == outputs[1]
    job = qf.ExecutionJob.from_id(job_id)
    assert job.status is JobStatus.COMPLETED
    assert job.attempts == 2  # re-run exactly once
    results = job.get_batch_sample_result()
    assert [r.counts for r in results] == outputs[0]
    for result, t in zip(results, (0.7, 2.0)):
        assert result.num_shots == 2000
        assert abs(result.probability("1") - p1(t)) < 5 * math.sqrt(0.25 / 2000)


# -- the CLI --------------------------------------------------------------------------------


def test_cli_jobs(capsys, tmp_path, monkeypatch):
    with qf.ExecutionSession(QASM, qf.ExecutionPreferences(num_shots=500, job_name="hist")) as es:
        sample = es.submit_sample([{"t": 0.5}, {"t": 2.0}])
        sample.result()
        estimate = es.submit_estimate(H, {"t": 0.5})
        estimate.result()
    slow = qf.ExecutionSession(QASM, qf.ExecutionPreferences(backend=qf.LocalExecutor(latency=30)))
    running = slow.submit_sample({"t": 0.1})

    def run(*argv):
        code = cli(["jobs", *argv])
        out = capsys.readouterr().out
        return code, out

    code, out = run("list")
    assert code == 0
    for job in (sample, estimate, running):
        assert job.id in out
    assert out.index(running.id) < out.index(estimate.id) < out.index(sample.id)
    code, out = run("list", "--offset", "1", "--limit", "1")
    assert estimate.id in out and sample.id not in out and running.id not in out

    code, out = run("show", sample.id)
    assert code == 0 and "COMPLETED" in out and "openqasm3" in out and '"t": 2.0' in out

    code, out = run("rename", sample.id, "calibration-7")
    assert code == 0 and qf.ExecutionJob.from_id(sample.id).name == "calibration-7"

    plot = tmp_path / "hist.png"
    code, out = run("result", sample.id, "--plot", str(plot))
    assert code == 0 and "bitstring" in out and "probability" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, out = run("result", estimate.id, "--plot", str(tmp_path / "est.png"))
    assert code == 0 and f"{1 + 2 * math.cos(0.5):.6f}"[:8] in out

    code, out = run("result", running.id, "--timeout", "0")
    assert code == 2 and "RUNNING" in out or "QUEUED" in out
    code, out = run("cancel", running.id)
    assert code == 0 and "CANCELLED" in out
    code, out = run("cancel", running.id)
    assert code == 2 and "already CANCELLED" in out
    code, out = run("show", "no-such-job")
    assert code == 2 and "no job 'no-such-job'" in out

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    code, out = run("result", sample.id, "--plot", str(tmp_path / "x.png"))
    assert code == 2 and "needs matplotlib" in out
