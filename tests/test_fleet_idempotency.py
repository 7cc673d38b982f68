"""Idempotent submission (issue 16, item 6): a batch Azure Quantum accepted is never run twice,
under lost replies, retries, failover and a kill -9 with the call repeated in another process;
the same for IBM Runtime after a kill -9.

The real azure-quantum SDK talks to the Azure Quantum stand-in (tests/standins/azure_quantum.py),
whose ``drop_replies`` fault carries a request out and then closes the connection without its
reply; the real qiskit-ibm-runtime SDK to the IBM stand-in (tests/standins/ibm_runtime.py). The
stand-ins' own job lists are the count of executions.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pennylane as qml
import pytest
from pennylane.tape import QuantumScript
from standins.helpers import wait_for
from test_azure_executor import IONQ, executor, server, stack  # noqa: F401 - fixtures
from test_ibm_standin import API_KEY, standin  # noqa: F401 - fixtures
from test_ibm_standin import server as ibm  # noqa: F401 - fixtures

import qfleet as qf
from qfleet.cluster.idempotency import IdempotencyKeyError
from qfleet.cluster.ledger import Ledger
from qfleet.executors.idempotency import idempotent

SHOTS = 2000


def tapes(angle: float) -> list[QuantumScript]:
    return [
        QuantumScript([qml.RX(angle, 0)], [qml.expval(qml.Z(0))], shots=SHOTS),
        QuantumScript([qml.Hadamard(0), qml.CNOT([0, 1])], [qml.probs(wires=[0, 1])],
                      shots=SHOTS),
    ]


def check(result, angle: float) -> None:
    # ionq.simulator's exact probabilities, sampled to SHOTS counts: 5 sigma of shot noise
    assert abs(result[0] - np.cos(angle)) < 5 * np.sqrt((1 - np.cos(angle) ** 2 + 1e-3) / SHOTS)
    assert np.allclose(result[1], [0.5, 0, 0, 0.5], atol=5 * np.sqrt(0.25 / SHOTS))


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("QFLEET_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "fleet.sqlite3"


def test_ten_percent_dropped_replies_run_each_circuit_exactly_once(server, home):  # noqa: F811
    """Every tenth reply of the job and storage endpoints is lost after the service acted on
    it; calls are retried (by the SDK, then by the cluster under the batch's key), and every
    circuit still runs once: no job the service created is left over, none is cancelled.
    Identical calls without a key are distinct work and all run."""
    server.control("faults", {"drop_replies": {"path": "/jobs/|/storage/", "rate": 0.1,
                                               "seed": 5}})
    cluster = qf.QuantumCluster(executors=[executor(server, name="ionq")], retries=8,
                                backoff=0.01)
    calls = 10
    for n in range(calls):
        angle = 0.3 * (n % 2)  # the same two batches again and again: each call runs anew
        check(cluster.execute(tapes(angle)), angle)
    stats = server.control("stats")
    assert stats["dropped"] > 0
    jobs = stats["jobs"]
    assert len(jobs) == stats["creates"] == 2 * calls  # no duplicate execution
    assert all(job["status"] == "Succeeded" for job in jobs)


def test_a_lost_submit_reply_is_taken_back_not_run_again(server, home):  # noqa: F811
    """Every reply to a job creation is lost: the SDK's retry of the PUT finds the job (the
    id derives from the batch's key) and the executor takes it, with no cluster retry."""
    server.control("faults", {"drop_replies": {"method": "PUT", "path": "/jobs/", "rate": 1.0}})
    cluster = qf.QuantumCluster(executors=[executor(server, name="ionq")], retries=0)
    check(cluster.execute(tapes(0.7)), 0.7)
    stats = server.control("stats")
    assert stats["dropped"] == 2 and stats["creates"] == len(stats["jobs"]) == 2


def test_a_key_used_again_for_other_circuits_is_refused(server, home):  # noqa: F811
    cluster = qf.QuantumCluster(executors=[executor(server, name="ionq")])
    with idempotent("report-7"):
        check(cluster.execute(tapes(0.5)), 0.5)
        check(cluster.execute(tapes(0.5)), 0.5)  # the same call again: the same jobs
        with pytest.raises(IdempotencyKeyError, match="'report-7' was used before"):
            cluster.execute(tapes(0.9))
    assert len(server.jobs()) == 2
    with pytest.raises(IdempotencyKeyError, match="non-empty string"), idempotent(""):
        pass


def test_kill_9_mid_batch_then_the_call_repeated_elsewhere_reattaches(server, home):  # noqa: F811
    """A process submits a batch under its key and is killed -9 while Azure holds the jobs;
    another process repeats the call under the key (its selector picks the other member) and
    re-attaches to the recorded jobs on the member that accepted them."""
    server.control("faults", {"hold_jobs": True})
    code = f"""
        import pennylane as qml, qfleet as qf
        from qfleet.executors import AzureCredential, AzureExecutor
        from pennylane.tape import QuantumScript
        cred = AzureCredential(tenant_id={server.TENANT!r}, client_id={server.CLIENT_ID!r},
                               client_secret={server.CLIENT_SECRET!r},
                               resource_id={server.resource_id!r})
        def member(name):
            return AzureExecutor(backend_name={IONQ!r}, credentials=cred, location="eastus",
                                 arm_endpoint={server.base!r}, authority={server.base!r},
                                 seed=7, name=name)
        tapes = [QuantumScript([qml.RX(0.4, 0)], [qml.expval(qml.Z(0))], shots={SHOTS}),
                 QuantumScript([qml.Hadamard(0), qml.CNOT([0, 1])],
                               [qml.probs(wires=[0, 1])], shots={SHOTS})]
        cluster = qf.QuantumCluster(executors=[member("a"), member("b")])
        with qf.idempotent("nightly-42"):
            cluster.execute(tapes)
    """
    record = _kill_after_record(code, home, "nightly-42/0")
    assert record.member == "a" and len(record.job_ids) == 2
    held = {j["id"]: j["status"] for j in server.jobs()}
    assert held == dict.fromkeys(record.job_ids, "Waiting")  # accepted, not finished

    server.control("faults", {"hold_jobs": False})
    cluster = qf.QuantumCluster(executors=[executor(server, name="b"),
                                           executor(server, name="a")])  # cyclic: b first
    with idempotent("nightly-42"):
        result = cluster.execute(tapes(0.4))
    check(result, 0.4)
    assert result.metadata.executor == "a"
    assert sorted(result.metadata.job_ids) == sorted(record.job_ids)
    jobs = server.jobs()
    assert sorted(j["id"] for j in jobs) == sorted(record.job_ids)  # nothing submitted again
    assert all(j["status"] == "Succeeded" for j in jobs)


def _record(path: str) -> tuple[str, ...]:
    return Ledger(path).record_submission("race/0", "k", "m", [f"job-{os.getpid()}"]).job_ids


def test_concurrent_records_of_one_batch_agree_across_processes(home):
    """Processes racing to record the same batch all get the first record back."""
    home.parent.mkdir(parents=True)
    with multiprocessing.get_context("fork").Pool(4) as pool:
        winners = set(pool.map(_record, [str(home)] * 8))
    assert len(winners) == 1
    assert Ledger(home).submission("race/0").job_ids == winners.pop()


def test_a_failed_submission_retries_where_it_may_have_landed_not_elsewhere(server, home):  # noqa: F811
    """One circuit's job is created, the other's storage reply is lost: the batch's submission
    fails (transient). Its retry goes back to the member that may hold the job, under the same
    key (the same Azure job ids), and takes the created job over; failing over to the other
    member would leave that job running as a second execution."""
    server.control("faults", {"drop_replies": {"method": "POST", "path": "/storage/sasUri",
                                               "skip": 1, "count": 1}})
    cluster = qf.QuantumCluster(executors=[executor(server, name="a"), executor(server, name="b")],
                                retries=2, backoff=0.01)
    result = cluster.execute(tapes(1.1))
    check(result, 1.1)
    stats = server.control("stats")
    assert stats["dropped"] == 1
    assert cluster.health()["a"].failed == 1 and cluster.health()["b"].done == 0
    assert result.metadata.executor == "a"
    jobs = stats["jobs"]
    assert len(jobs) == stats["creates"] == 2 and sorted(result.metadata.job_ids) == sorted(
        j["id"] for j in jobs)
    assert all(job["status"] == "Succeeded" for job in jobs)


def _kill_after_record(code: str, home, batch: str):
    """Run ``code`` in a child process; kill -9 it once ``batch`` is recorded. The record."""
    victim = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        ledger = Ledger(home)
        assert wait_for(lambda: (home.exists() and ledger.submission(batch) is not None)
                        or victim.poll() is not None, timeout=120), "no submission recorded"
        record = ledger.submission(batch)
        assert record is not None, victim.stderr.read()[-3000:]
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        victim.stderr.close()
    return record


def test_ibm_runtime_kill_9_then_the_call_repeated_reattaches(ibm, home):  # noqa: F811
    """IBM Runtime takes no client-chosen handle, but once the job id is recorded a restarted
    call under the same key re-attaches to it: one Runtime job in all."""
    ibm.control("faults", {"hold_jobs": True})
    code = f"""
        import pennylane as qml, qfleet as qf
        from pennylane.tape import QuantumScript
        member = qf.executor.QiskitExecutor(device="sampler", backend="ibm_manila",
                                            token={API_KEY!r}, url={ibm.url!r}, seed=17)
        cluster = qf.QuantumCluster(executors=[member])
        with qf.idempotent("ibm-7"):
            cluster.execute([QuantumScript([qml.RX(0.4, 0)], [qml.expval(qml.Z(0))],
                                           shots={SHOTS})])
    """
    record = _kill_after_record(code, home, "ibm-7/0")
    assert [j["status"] for j in ibm.jobs()] == ["Queued"]  # accepted, held
    ibm.control("faults", {"hold_jobs": False})
    cluster = qf.QuantumCluster(executors=[ibm.executor()])
    with idempotent("ibm-7"):
        result = cluster.execute([QuantumScript([qml.RX(0.4, 0)], [qml.expval(qml.Z(0))],
                                                shots=SHOTS)])
    assert abs(result[0] - np.cos(0.4)) < 5 * np.sqrt((1 - np.cos(0.4) ** 2) / SHOTS)
    assert result.metadata.job_ids == record.job_ids
    jobs = ibm.jobs()
    assert [j["id"] for j in jobs] == list(record.job_ids)  # nothing submitted again
    assert [j["status"] for j in jobs] == ["Completed"]
