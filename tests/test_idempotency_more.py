"""Idempotent submission (issue 16, item 6) on Amazon Braket and the 2300.

Braket: the real amazon-braket-sdk talks to the Braket stand-in
(tests/standins/braket_service.py), whose ``drop_replies`` fault carries a request out and
then closes the connection without its reply; the stand-in's task list is the count of
executions. The 2300: the emulator (``--drop-rate``) counts the circuits it executes.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import numpy as np
import pennylane as qml
import pytest
from pennylane.tape import QuantumScript
from standins.helpers import wait_for
from test_braket_cloud import executor, server, stack  # noqa: F401 - fixtures

import qfleet as qf
from qfleet.cluster.ledger import Ledger
from qfleet.executors.idempotency import idempotent


def braket_tapes(angle: float) -> list[QuantumScript]:
    return [
        QuantumScript([qml.RX(angle, 0)], [qml.expval(qml.Z(0))]),
        QuantumScript([qml.Hadamard(0), qml.CNOT([0, 1])], [qml.probs(wires=[0, 1])]),
    ]


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("QFLEET_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "fleet.sqlite3"


def test_braket_ten_percent_dropped_replies_create_each_task_once(server, home):  # noqa: F811
    """Every tenth reply of the quantum-task endpoints (CreateQuantumTask, GetQuantumTask) is
    lost after the stand-in acted on it. botocore does not retry (max_retries=0), so the
    cluster retries the batch under its key: the same clientTokens give back the tasks
    Braket created, and a lost status reply leaves the tasks running for the retry to
    re-attach to. Exact SV1 results; every circuit is one task, none cancelled."""
    server.control("faults", {"drop_replies": {"path": "^/quantum-task", "rate": 0.1,
                                               "seed": 7}})
    cluster = qf.QuantumCluster(executors=[executor(server, max_retries=0)], retries=8,
                                backoff=0.01)
    calls = 10
    for n in range(calls):
        angle = 0.1 * n  # distinct batches: exact results of a batch seen before are cached
        result = cluster.execute(braket_tapes(angle))
        assert np.isclose(result[0], np.cos(angle))
        assert np.allclose(result[1], [0.5, 0, 0, 0.5])
    stats = server.control("stats")
    assert stats["dropped"] > 0
    assert any(r[0] == "POST" and r[2] == 0 for r in stats["requests"])  # a lost create
    jobs = stats["jobs"]
    assert len(jobs) == stats["creates"] == 2 * calls  # no duplicate execution
    assert all(job["status"] == "COMPLETED" for job in jobs)


def test_braket_every_create_reply_lost_takes_the_tasks_back(server, home):  # noqa: F811
    """Every CreateQuantumTask reply is lost once: the cluster's retry under the batch's key
    sends the same clientTokens and gets the created tasks, with no second copy."""
    server.control("faults", {"drop_replies": {"method": "POST", "path": "^/quantum-task$",
                                               "count": 2}})
    cluster = qf.QuantumCluster(executors=[executor(server, max_retries=0)], retries=2,
                                backoff=0.01)
    result = cluster.execute(braket_tapes(0.7))
    assert np.isclose(result[0], np.cos(0.7))
    stats = server.control("stats")
    assert stats["dropped"] == 2 and stats["creates"] == len(stats["jobs"]) == 2
    assert sorted(result.metadata.job_ids) == sorted(j["id"] for j in stats["jobs"])


def test_braket_kill_9_mid_batch_then_the_call_repeated_reattaches(server, home):  # noqa: F811
    """A process submits a batch under its key and is killed -9 while Braket holds the tasks
    (QUEUED); another process repeats the call under the key and re-attaches to the recorded
    task ARNs: one task per circuit in all, with the right values."""
    server.control("faults", {"hold_jobs": True})
    code = f"""
        import pennylane as qml, qfleet as qf
        from pennylane.tape import QuantumScript
        from qfleet.executors import BraketExecutor
        member = BraketExecutor(**{server.executor_fields!r}, max_retries=0)
        tapes = [QuantumScript([qml.RX(0.4, 0)], [qml.expval(qml.Z(0))]),
                 QuantumScript([qml.Hadamard(0), qml.CNOT([0, 1])], [qml.probs(wires=[0, 1])])]
        with qf.idempotent("braket-9"):
            qf.QuantumCluster(executors=[member]).execute(tapes)
    """
    victim = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        ledger = Ledger(home)
        assert wait_for(lambda: (home.exists() and bool(getattr(
            ledger.submission("braket-9/0"), "job_ids", ()))) or victim.poll() is not None,
            timeout=120), "no submission recorded"
        record = ledger.submission("braket-9/0")
        assert record is not None and len(record.job_ids) == 2, victim.stderr.read()[-3000:]
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        victim.stderr.close()
    assert [j["status"] for j in server.control("stats")["jobs"]] == ["QUEUED", "QUEUED"]

    server.control("faults", {"hold_jobs": False})
    cluster = qf.QuantumCluster(executors=[executor(server, max_retries=0)])
    with idempotent("braket-9"):
        result = cluster.execute(braket_tapes(0.4))
    assert np.isclose(result[0], np.cos(0.4)) and np.allclose(result[1], [0.5, 0, 0, 0.5])
    assert result.metadata.job_ids == record.job_ids
    stats = server.control("stats")
    assert stats["creates"] == 2 and sorted(j["id"] for j in stats["jobs"]) == sorted(
        record.job_ids)  # nothing submitted again
    assert all(j["status"] == "COMPLETED" for j in stats["jobs"])


# -- the 2300 -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lossy_2300():
    """A 2300 emulator that drops 10% of its replies after carrying the requests out."""
    pytest.importorskip("zmq")
    from p2300_support import Emulator

    emulator = Emulator("idempotency", ["--seed", "31", "--drop-rate", "0.1"])
    emulator.launch()
    try:
        yield emulator.wait_ready()
    finally:
        emulator.stop()


def test_2300_lost_execute_replies_never_run_a_circuit_twice(lossy_2300):
    """The lazy-pirate client resends an execute whose reply was lost with the same session
    and job id; the emulator answers it with the stored reply. Its own counter of circuits
    run equals the circuits submitted, and every result is right."""
    shots, batches, size = 2000, 8, 4
    ex = lossy_2300.executor(timeout=0.3, retries=12, shots=shots)
    before = lossy_2300.dynamic_through_drops(30)
    for b in range(batches):
        angles = [0.2 * (b * size + k) for k in range(size)]
        tapes = [QuantumScript([qml.RX(a, 0)], [qml.expval(qml.Z(0))], shots=shots)
                 for a in angles]
        results = ex.execute(tapes)
        bound = 5 * np.sqrt(np.maximum(1 - np.cos(angles) ** 2, 1e-3) / shots)  # 5 sigma
        assert np.all(np.abs(np.asarray(results) - np.cos(angles)) < bound)
    after = lossy_2300.dynamic_through_drops(30)
    assert after["executed"] - before["executed"] == batches * size  # each circuit ran once
    assert after["replayed"] - before["replayed"] > 0  # lost execute replies were resent
    assert after["execute"] - before["execute"] == (
        batches * size + after["replayed"] - before["replayed"])


def test_2300_session_answers_a_resent_execute_from_its_stored_reply():
    """The session's rule (sans-IO): the same (session, job id, circuit, shots) again gets the
    first reply back and counts as replayed, not executed; a failed execute is not stored, so
    sending it again runs it; another circuit under the same job id runs."""
    from qfleet.protocols.p2300 import messages as m
    from qfleet.protocols.p2300.messages import ExecuteResult
    from qfleet.protocols.p2300.session import ControlSession, ExecuteJob

    session = ControlSession(m.StaticData(nqubits=1, name="t", pgs=["X"], starttime=0))
    session.receive(m.request("initialize", "s"))
    x = "version 3.0\nqubit[1] q\nbit[1] b\nX q[0]\nb[0] = measure q[0]\n"
    request = m.request("execute", "s", {"job_id": 1, "circuit": x, "number_of_shots": 10})
    work = session.receive(request)
    assert isinstance(work, ExecuteJob)
    first = session.complete(work, ExecuteResult(job_id=1, results={"1": 10}))
    assert session.receive(request) == first  # resent after a lost reply: no second run
    assert (session.counts["executed"], session.counts["replayed"]) == (1, 1)

    failing = m.request("execute", "s", {"job_id": 2, "circuit": x, "number_of_shots": 5})
    failed = session.complete(session.receive(failing), "injected fault (transient)")
    assert b'"failure"' in failed
    assert isinstance(session.receive(failing), ExecuteJob)  # a failure is not replayed
    other = m.request("execute", "s", {"job_id": 1, "circuit": x, "number_of_shots": 20})
    assert isinstance(session.receive(other), ExecuteJob)  # other shots: other work
    assert (session.counts["executed"], session.counts["replayed"]) == (1, 1)
    assert session.dynamic()["executed"] == 1
