"""ExecutionSession, ExecutionJob and the job store, in one process (issue 6).

Values are checked against exact ones: P(1) = sin^2(t/2) within shot noise (seeded), and
estimates exactly (statevector) where the backend can compute them exactly.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time

import numpy as np
import pennylane as qml
import pytest

import qfleet as qf
from qfleet.circuits.programs import (
    MissingParameterError,
    ParameterError,
    ProgramError,
    UnknownParameterError,
)
from qfleet.jobs import (
    JobAlreadyFinishedError,
    JobCancelledError,
    JobNotFinishedError,
    JobNotFoundError,
    JobStatus,
    JobStore,
    JobStoreError,
    JobStoreLockedError,
    ObservableError,
    ResultKindError,
    SessionClosedError,
)

QASM = (
    'OPENQASM 3.0; include "stdgates.inc"; input float t; qubit[1] q; bit[1] c; '
    "rx(t) q[0]; c = measure q;"
)
H = qf.Pauli.I(0) + 2 * qf.Pauli.Z(0)


def p1(t):
    return math.sin(t / 2) ** 2


def tol(p, shots, sigmas=5):
    return sigmas * math.sqrt(max(p * (1 - p), 1 / shots) / shots)


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """A fresh job store per test."""
    monkeypatch.setenv("QFLEET_HOME", str(tmp_path / "qfleet-home"))
    return tmp_path / "qfleet-home"


def check_sample(result, t, shots):
    assert result.num_shots == shots
    assert sum(result.counts.values()) == shots
    assert set(result.counts) <= {"0", "1"}
    assert abs(result.probability("1") - p1(t)) < tol(p1(t), shots)


# -- the example of the issue, on the default backend ---------------------------------------


def test_issue_example_on_the_default_local_simulator(home):
    prefs = qf.ExecutionPreferences(num_shots=1000, random_seed=7)
    with qf.ExecutionSession(QASM, preferences=prefs) as es:
        assert isinstance(es.executor, qf.LocalExecutor)
        res = es.sample({"t": 0.5})
        check_sample(res, 0.5, 1000)
        df = res.dataframe
        assert list(df.columns) == ["bitstring", "counts", "probability"]
        assert df["counts"].sum() == 1000
        assert df["probability"].sum() == pytest.approx(1.0)
        assert list(df["counts"]) == sorted(df["counts"], reverse=True)

        batch = es.sample([{"t": 0.5}, {"t": 0.6}])
        assert [r.parameters for r in batch] == [{"t": 0.5}, {"t": 0.6}]
        for r, t in zip(batch, (0.5, 0.6)):
            check_sample(r, t, 1000)

        job = es.submit_sample({"t": 0.5})
        assert isinstance(job.id, str) and job.status in set(JobStatus)
        check_sample(job.get_sample_result(), 0.5, 1000)

        # exact on a statevector backend, whatever num_shots is
        est = es.estimate(H, {"t": 0.5})
        assert est.value == pytest.approx(1 + 2 * math.cos(0.5), abs=1e-12)
        assert est.num_shots is None and float(est) == est.value

        ejob = es.submit_estimate(H, [{"t": 0.5}, {"t": 0.6}])
        values = [r.value for r in ejob.get_batch_estimate_result()]
        np.testing.assert_allclose(values, [1 + 2 * math.cos(0.5), 1 + 2 * math.cos(0.6)], atol=1e-12)

    # the same job, looked up again; listed newest first
    again = qf.ExecutionJob.from_id(job.id)
    assert again.status is JobStatus.COMPLETED
    saved = again.result(timeout_sec=30)
    assert len(saved) == 1 and saved[0].name == "result"
    assert saved[0].value_type == "ExecutionDetails"
    assert saved[0].value.counts == job.get_sample_result().counts
    listed = qf.get_execution_jobs(offset=0, limit=50)
    ids = [j.id for j in listed]
    assert ids[0] == ejob.id and ids[2] == job.id  # the estimate in between is ids[1]
    assert len(listed) == 5 and all(j.status is JobStatus.COMPLETED for j in listed)
    assert (home / "jobs.sqlite3").exists()


def test_seed_makes_sessions_repeatable():
    def run():
        prefs = qf.ExecutionPreferences(num_shots=500, random_seed=123)
        with qf.ExecutionSession(QASM, prefs) as es:
            return [es.sample({"t": t}).counts for t in (0.3, 1.2)]

    assert run() == run()


def test_estimate_on_a_shots_only_backend_is_within_shot_noise():
    # default.qubit with shots on the executor: the estimate comes from samples
    ex = qf.LocalExecutor(seed=5, shots=20000)
    with qf.ExecutionSession(QASM, qf.ExecutionPreferences(backend=ex)) as es:
        est = es.estimate(H, {"t": 0.7})
    exact = 1 + 2 * math.cos(0.7)
    assert est.value != pytest.approx(exact, abs=1e-9)
    assert abs(est.value - exact) < 5 * 2 * math.sin(0.7) / math.sqrt(20000)


def test_observables_pauli_algebra_qiskit_and_pennylane():
    two = (
        'OPENQASM 3.0; include "stdgates.inc"; input float a; input float b; qubit[2] q; '
        "ry(a) q[0]; ry(b) q[1]; cx q[0], q[1];"
    )
    params = {"a": 0.4, "b": 1.1}

    @qml.qnode(qml.device("default.qubit", wires=2))
    def reference(obs):
        qml.RY(0.4, 0)
        qml.RY(1.1, 1)
        qml.CNOT([0, 1])
        return qml.expval(obs)

    from qiskit.quantum_info import SparsePauliOp

    h = 0.5 * qf.Pauli.X(0) * qf.Pauli.Z(1) - qf.Pauli.Y(1) + 3
    with qf.ExecutionSession(two) as es:
        assert es.estimate(h, params).value == pytest.approx(
            reference(0.5 * qml.X(0) @ qml.Z(1) - qml.Y(1) + 3 * qml.Identity(0)), abs=1e-12
        )
        # qiskit labels are little-endian: "ZX" is X on qubit 0, Z on qubit 1
        op = SparsePauliOp.from_list([("ZX", 0.5), ("YI", -1.0)])
        assert es.estimate(op, params).value == pytest.approx(
            reference(0.5 * qml.X(0) @ qml.Z(1) - qml.Y(1)), abs=1e-12
        )
        assert es.estimate(qml.Z(0) @ qml.Z(1), params).value == pytest.approx(
            reference(qml.Z(0) @ qml.Z(1)), abs=1e-12
        )
    # Pauli products on one index follow the Pauli algebra
    assert qf.Pauli.X(0) * qf.Pauli.Y(0) == 1j * qf.Pauli.Z(0)
    assert qf.Pauli.Z(2) * qf.Pauli.Z(2) == qf.Pauli.I(0)
    assert (qf.Pauli.Z(0) - qf.Pauli.Z(0)).terms == {}


def test_program_kinds_pennylane_qnode_and_qiskit():
    from qiskit.circuit import Parameter, QuantumCircuit

    def qfunc(t, phase=0.0):
        qml.RX(t, wires=0)
        qml.PhaseShift(phase, wires=0)
        qml.CNOT(wires=[0, 1])

    theta = Parameter("t")
    qc = QuantumCircuit(2, 2)
    qc.rx(theta, 0)
    qc.cx(0, 1)
    qc.measure([0, 1], [0, 1])

    qnode = qml.QNode(qfunc, qml.device("default.qubit", wires=[0, 1]))
    prefs = qf.ExecutionPreferences(num_shots=2000, random_seed=3)
    for program in (qfunc, qnode, qc):
        with qf.ExecutionSession(program, prefs) as es:
            res = es.sample({"t": 1.0})
            assert set(res.counts) <= {"00", "11"}
            assert abs(res.probability("11") - p1(1.0)) < tol(p1(1.0), 2000)
            zz = es.estimate(qf.Pauli.Z(0) * qf.Pauli.Z(1), {"t": 1.0})
            assert zz.value == pytest.approx(1.0, abs=1e-12)
            z1 = es.estimate(qf.Pauli.Z(1), {"t": 1.0})
            assert z1.value == pytest.approx(math.cos(1.0), abs=1e-12)


def test_bitstring_order_follows_the_programs_language():
    # OpenQASM: classical bit 0 rightmost; only qubit 0 is flipped -> "01"
    qasm = 'OPENQASM 2.0; include "qelib1.inc"; qreg q[2]; creg c[2]; x q[0]; measure q -> c;'
    with qf.ExecutionSession(qasm, qf.ExecutionPreferences(num_shots=10)) as es:
        assert es.sample().counts == {"01": 10}
    # measurement into other classical bits: q[0] -> c[2], q[1] unmeasured -> "100"
    qasm = 'OPENQASM 2.0; include "qelib1.inc"; qreg q[2]; creg c[3]; x q[0]; x q[1]; measure q[0] -> c[2];'
    with qf.ExecutionSession(qasm, qf.ExecutionPreferences(num_shots=10)) as es:
        assert es.sample().counts == {"100": 10}

    # PennyLane: first wire first, as qml.counts writes them
    def flip_first():
        qml.X(0)
        qml.Identity(1)

    with qf.ExecutionSession(flip_first, qf.ExecutionPreferences(num_shots=10)) as es:
        assert es.sample().counts == {"10": 10}


def test_session_on_a_cluster():
    cluster = qf.QuantumCluster(executors=[qf.LocalExecutor(), qf.LocalExecutor(device="lightning.qubit")])
    prefs = qf.ExecutionPreferences(num_shots=4000, backend=cluster, random_seed=9)
    with qf.ExecutionSession(QASM, prefs) as es:
        assert isinstance(es.executor, qf.QuantumCluster)
        assert [e.seed for e in es.executor.executors] == [9, 9]  # the seed reaches members
        results = es.sample([{"t": t} for t in (0.2, 0.9, 2.0)])
        for r, t in zip(results, (0.2, 0.9, 2.0)):
            check_sample(r, t, 4000)
        for t in (0.2, 2.5):  # two batches: both members take one (cyclic)
            assert es.estimate(H, {"t": t}).value == pytest.approx(1 + 2 * math.cos(t), abs=1e-10)
        job = es.submit_estimate(H, [{"t": 0.1}, {"t": 0.2}])
        assert [r.value for r in job.get_batch_estimate_result()] == pytest.approx(
            [1 + 2 * math.cos(0.1), 1 + 2 * math.cos(0.2)], abs=1e-10
        )
        assert "QuantumCluster" in job.backend


def test_backend_by_config_name(isolated_config):
    isolated_config.write_text('[executors.LocalExecutor]\ndevice = "lightning.qubit"\n')
    with qf.ExecutionSession(QASM, qf.ExecutionPreferences(backend="LocalExecutor")) as es:
        assert es.executor.device == "lightning.qubit"
        assert es.estimate(H, {"t": 0.3}).value == pytest.approx(1 + 2 * math.cos(0.3), abs=1e-10)
    with pytest.raises(qf.ConfigError, match="unknown backend 'NoSuchExecutor'"):
        qf.ExecutionSession(QASM, qf.ExecutionPreferences(backend="NoSuchExecutor"))


# -- jobs: status, timeouts, cancel, rename, paging -------------------------------------------


def slow_session(latency=1.5, **prefs):
    return qf.ExecutionSession(
        QASM, qf.ExecutionPreferences(backend=qf.LocalExecutor(latency=latency), **prefs)
    )


def test_submit_returns_at_once_and_result_timeouts_do_not_hang():
    with slow_session(latency=1.5, num_shots=100) as es:
        started = time.monotonic()
        job = es.submit_sample({"t": 0.5})
        assert time.monotonic() - started < 1.0
        assert job.status in (JobStatus.QUEUED, JobStatus.RUNNING)
        started = time.monotonic()
        with pytest.raises(JobNotFinishedError, match="at one poll"):
            job.result(timeout_sec=0)
        assert job.poll(timeout_sec=0) in (JobStatus.QUEUED, JobStatus.RUNNING)
        with pytest.raises(JobNotFinishedError, match="after 0.2 s"):
            job.result(timeout_sec=0.2)
        assert time.monotonic() - started < 1.0
        assert job.poll() is JobStatus.COMPLETED
        assert job.result(timeout_sec=0)[0].value.num_shots == 100
        assert job.end_time >= job.start_time


def test_cancel_a_running_job_and_a_finished_one():
    with slow_session(latency=30, num_shots=100) as es:
        job = es.submit_sample({"t": 0.5})
        assert job.poll(timeout_sec=0.3) is not JobStatus.COMPLETED
        started = time.monotonic()
        job.cancel()
        assert job.status is JobStatus.CANCELLED
        assert job.poll(timeout_sec=5) is JobStatus.CANCELLED
        assert time.monotonic() - started < 5
        with pytest.raises(JobCancelledError):
            job.result(timeout_sec=0)
        with pytest.raises(JobAlreadyFinishedError, match="already CANCELLED"):
            job.cancel()
    with qf.ExecutionSession(QASM) as es:
        done = es.submit_sample({"t": 0.5})
        done.result()
        with pytest.raises(JobAlreadyFinishedError, match="already COMPLETED"):
            done.cancel()
        assert done.status is JobStatus.COMPLETED


def test_a_job_whose_driver_ended_without_a_record_is_run_again():
    from qfleet.jobs.job import current_owner

    with qf.ExecutionSession(QASM, qf.ExecutionPreferences(num_shots=50)) as es:
        job = es.submit_sample({"t": 0.5})
        job.result()
    # as if the final write had been lost: RUNNING, owned by this process, nothing running
    host, pid, started = current_owner()
    JobStore.default().update(job.id, {"status": "RUNNING", "results": None, "owner_host": host,
                                       "owner_pid": pid, "owner_started": started})
    assert job.get_sample_result(timeout_sec=30).num_shots == 50
    assert job.attempts == 2


def test_rename_and_job_name():
    with qf.ExecutionSession(QASM, qf.ExecutionPreferences(job_name="first")) as es:
        job = es.submit_sample({"t": 0.1})
    assert job.name == "first"
    job.rename("calibration-7")
    assert qf.ExecutionJob.from_id(job.id).name == "calibration-7"
    with pytest.raises(ValueError):
        job.rename("")


def test_paging_over_120_jobs():
    with qf.ExecutionSession(QASM, qf.ExecutionPreferences(num_shots=10)) as es:
        ids = [es.submit_sample({"t": 0.01 * i}).id for i in range(120)]
    newest_first = ids[::-1]
    assert [j.id for j in qf.get_execution_jobs()] == newest_first[:50]  # default limit 50
    pages = [qf.get_execution_jobs(offset=o, limit=50) for o in (0, 50, 100)]
    assert [len(p) for p in pages] == [50, 50, 20]
    assert [j.id for p in pages for j in p] == newest_first
    assert [j.id for j in qf.get_execution_jobs(offset=37, limit=7)] == newest_first[37:44]
    assert qf.get_execution_jobs(offset=120) == []
    for job in qf.get_execution_jobs(offset=110, limit=10):
        assert job.result(timeout_sec=30)[0].value.num_shots == 10
    with pytest.raises(ValueError):
        qf.get_execution_jobs(offset=-1)


def test_result_getters_check_the_kind():
    with qf.ExecutionSession(QASM) as es:
        sample = es.submit_sample([{"t": 0.1}, {"t": 0.2}])
        estimate = es.submit_estimate(H, {"t": 0.1})
    with pytest.raises(ResultKindError, match="get_batch_sample_result"):
        sample.get_sample_result()
    with pytest.raises(ResultKindError, match="estimate job"):
        estimate.get_sample_result()
    with pytest.raises(ResultKindError, match="sample job"):
        sample.get_estimate_result()
    assert len(sample.get_batch_sample_result()) == 2
    assert len(estimate.get_batch_estimate_result()) == 1


def test_jobs_from_many_threads():
    # each thread its own session; tapes are built on each caller's thread
    errors, values = [], {}

    def work(i):
        try:
            with qf.ExecutionSession(QASM) as es:
                values[i] = es.estimate(H, {"t": 0.1 * i}).value
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, v in values.items():
        assert v == pytest.approx(1 + 2 * math.cos(0.1 * i), abs=1e-12)


# -- bad input ------------------------------------------------------------------------------


def test_bad_parameters():
    with qf.ExecutionSession(QASM) as es:
        with pytest.raises(UnknownParameterError, match=r"unknown parameter\(s\) \['x'\].*\['t'\]"):
            es.sample({"x": 0.5})
        with pytest.raises(MissingParameterError, match=r"missing value\(s\).*\['t'\]"):
            es.sample({})
        with pytest.raises(MissingParameterError):
            es.submit_estimate(H)
        with pytest.raises(ParameterError, match="real number"):
            es.sample({"t": "half"})
        with pytest.raises(ParameterError, match="list of dicts"):
            es.sample([{"t": 0.1}, 0.2])
        with pytest.raises(ParameterError, match="empty list"):
            es.sample([])
    plain = 'OPENQASM 2.0; include "qelib1.inc"; qreg q[1]; creg c[1]; h q[0]; measure q -> c;'
    with qf.ExecutionSession(plain, qf.ExecutionPreferences(num_shots=100)) as es:
        with pytest.raises(UnknownParameterError, match="has no parameters"):
            es.sample({"t": 0.5})
        assert sum(es.sample().counts.values()) == 100
    # bad input raises before any job is made
    assert qf.get_execution_jobs() != [] and all(
        j.status is JobStatus.COMPLETED for j in qf.get_execution_jobs()
    )


def test_bad_programs_and_observables():
    with pytest.raises(ProgramError, match="OPENQASM"):
        qf.ExecutionSession("h q[0];")
    with pytest.raises(ProgramError, match="cannot read OpenQASM 3"):
        qf.ExecutionSession("OPENQASM 3.0; qubit[1] q; nosuchgate q[0];")
    with pytest.raises(ProgramError, match="cannot run a int"):
        qf.ExecutionSession(42)
    with qf.ExecutionSession(QASM) as es:
        with pytest.raises(ObservableError, match=r"index\(es\) \[3\].*1 qubit"):
            es.estimate(qf.Pauli.Z(3), {"t": 0.1})
        with pytest.raises(ObservableError, match="cannot estimate a str"):
            es.estimate("Z0", {"t": 0.1})
        with pytest.raises(ObservableError, match="Hermitian"):
            es.estimate(1j * qf.Pauli.Z(0), {"t": 0.1})
    with pytest.raises(ObservableError):
        qf.Pauli.Z(-1)
    es.close()
    with pytest.raises(SessionClosedError):
        es.sample({"t": 0.1})


def test_unknown_job_id():
    with pytest.raises(JobNotFoundError, match="no job 'nope'"):
        qf.ExecutionJob.from_id("nope")
    with pytest.raises(LookupError):  # JobNotFoundError is a LookupError
        qf.ExecutionJob.from_id("00000000-0000-0000-0000-000000000000")


def test_corrupt_job_store(home):
    home.mkdir(parents=True)
    (home / "jobs.sqlite3").write_bytes(b"this is not a database" * 100)
    with pytest.raises(JobStoreError, match="corrupt.*move it aside"):
        with qf.ExecutionSession(QASM) as es:
            es.sample({"t": 0.1})
    with pytest.raises(JobStoreError, match="corrupt"):
        qf.get_execution_jobs()


def test_locked_job_store(home, monkeypatch):
    monkeypatch.setenv("QFLEET_JOBSTORE_TIMEOUT", "0.2")
    JobStore.default().check()  # create it
    other = sqlite3.connect(home / "jobs.sqlite3", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        with qf.ExecutionSession(QASM) as es:
            with pytest.raises(JobStoreLockedError, match="locked by another process"):
                es.submit_sample({"t": 0.1})
        assert time.monotonic() - started < 5
    finally:
        other.execute("ROLLBACK")
        other.close()
    with qf.ExecutionSession(QASM) as es:  # usable again once the lock is gone
        assert es.sample({"t": 0.1}).num_shots == 2048


class ExplodingBackend(qf.LocalExecutor):
    async def collect(self, job):
        job.cancel()  # LocalExecutor's job is a task (the latency sleep)
        raise RuntimeError("the backend exploded")


class UnpreparedBackend(qf.LocalExecutor):
    def translate(self, tapes):
        raise qf.UnsupportedCircuitError("this backend takes no circuits")


def test_failed_jobs_are_reported():
    with qf.ExecutionSession(QASM, ExplodingBackend()) as es:
        job = es.submit_sample({"t": 0.1})
        assert job.poll(timeout_sec=10) is JobStatus.FAILED
        assert "the backend exploded" in job.error
        with pytest.raises(qf.jobs.JobFailedError, match="the backend exploded"):
            job.result()
        with pytest.raises(qf.jobs.JobFailedError):
            es.estimate(H, {"t": 0.1})
    # failing while preparing: the error is raised at once, and the job is kept as FAILED
    with qf.ExecutionSession(QASM, UnpreparedBackend()) as es:
        with pytest.raises(qf.UnsupportedCircuitError, match="takes no circuits"):
            es.submit_sample({"t": 0.1})
    failed = qf.get_execution_jobs(limit=1)[0]
    assert failed.status is JobStatus.FAILED
    assert "takes no circuits" in failed.error
