"""ClassiqExecutor and ExecutionSession on Classiq, through the real classiq SDK against the
Classiq stand-in (tests/standins/classiq_server.py, its own process on 127.0.0.1)."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import httpx
import numpy as np
import pennylane as qml
import pytest

os.environ.setdefault("CLASSIQ_TELEMETRY_MODE", "disabled")  # before classiq is imported
pytest.importorskip("classiq")

import qfleet as qf  # noqa: E402
from qfleet.executors.classiq import ClassiqExecutor  # noqa: E402
from qfleet.jobs import JobStatus  # noqa: E402
from everyday import CASES, check_case  # noqa: E402
from standins.classiq_server import PREFIX, Running  # noqa: E402

TOKEN = "classiq-test-token-8c1f"
QASM = (
    'OPENQASM 3.0; include "stdgates.inc"; input float t; qubit[1] q; bit[1] c; '
    "rx(t) q[0]; c = measure q;"
)
BELL = 'OPENQASM 2.0; include "qelib1.inc"; qreg q[2]; creg c[2]; rx(0.5) q[0]; cx q[0],q[1]; measure q -> c;'
H = qf.Pauli.I(0) + 2 * qf.Pauli.Z(0)


def p1(t):
    return math.sin(t / 2) ** 2


def tol(p, shots, sigmas=5):
    return sigmas * math.sqrt(max(p * (1 - p), 1 / shots) / shots)


@pytest.fixture(scope="module")
def standin():
    server = Running(token=TOKEN)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLASSIQ_HOST", server.url)
        mp.setenv("CLASSIQ_SKIP_CHECK_HOST", "1")
        mp.setenv("CLASSIQ_XCH_TOKEN", TOKEN)  # the plain SDK's credentials (exchange token)
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


def executor(standin, **kwargs):
    return ClassiqExecutor(host=standin.url, token=TOKEN, **kwargs)


# -- the stand-in against the real SDK ------------------------------------------------------


def test_standin_serves_the_real_sdk(standin):
    from classiq import ExecutionJob, ExecutionPreferences, ExecutionSession, Pauli, get_execution_jobs
    from classiq.interface.exceptions import ClassiqAPIError

    prefs = ExecutionPreferences(num_shots=4000, random_seed=3)
    with ExecutionSession(BELL, execution_preferences=prefs) as es:
        df = es.sample()
        assert set(df["bitstring"]) <= {"00", "11"} and df["counts"].sum() == 4000
        p11 = df.set_index("bitstring")["counts"].get("11", 0) / 4000
        assert abs(p11 - p1(0.5)) < tol(p1(0.5), 4000)

        exact = es.observe(Pauli.I(0) + 2 * Pauli.Z(0), estimate=False)
        assert exact.value == pytest.approx(1 + 2 * math.cos(0.5), abs=1e-12)
        sampled = es.observe(Pauli.Z(0) * Pauli.Z(1))
        assert sampled.value == pytest.approx(1.0)  # ZZ is +1 on a|00> + b|11>
        batch = es.observe([Pauli.Z(0), Pauli.X(1)], estimate=False)
        assert [r.value for r in batch] == pytest.approx([math.cos(0.5), 0.0], abs=1e-12)

        job = es.submit_sample()
        job.rename("bell")
        assert job.name == "bell"
        assert ExecutionJob.from_id(job.id).get_sample_result().num_shots == 4000

        standin.configure(delay=30)
        slow = es.submit_sample()
        slow.cancel()
        slow.poll()
        assert slow.status == "CANCELLED"
    listed = get_execution_jobs(limit=2)
    assert [j.id for j in listed] == [slow.id, job.id]  # newest first
    assert listed[1].name == "bell"
    requests = standin.state()["requests"]
    assert f"POST {PREFIX}/execution/sessions/openqasm" in requests
    assert any(r.endswith("/close") for r in requests)

    # requests are validated with classiq.interface models
    response = httpx.post(f"{standin.url}{PREFIX}/execution/sessions/openqasm",
                          json={"execution_preferences": {"num_shots": -1}},
                          headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 422
    assert "qasm" in response.json()["detail"] and "num_shots" in response.json()["detail"]
    # and the token is checked
    response = httpx.get(f"{standin.url}{PREFIX}/execution/jobs", headers={"Authorization": "Bearer x"})
    assert response.status_code == 401
    with pytest.raises(ClassiqAPIError, match="404"):
        ExecutionJob.from_id("00000000-0000-0000-0000-000000000000")


# -- the executor ---------------------------------------------------------------------------


def test_executor_runs_tapes(standin):
    ex = executor(standin, random_seed=11)
    assert ex.capabilities.analytic  # Classiq's simulator observes exactly
    tape = qml.tape.QuantumScript(
        [qml.RX(0.5, 0), qml.CNOT([0, 1])],
        [qml.probs(wires=[0, 1]), qml.expval(qml.X(0)), qml.counts(wires=[1])],
        shots=4000,
    )
    probs, x0, counts = ex.run_circuit_sync(tape)
    assert probs[1] == probs[2] == 0
    assert abs(probs[3] - p1(0.5)) < tol(p1(0.5), 4000)
    assert abs(x0) < 5 / math.sqrt(4000)
    assert sum(counts.values()) == 4000 and set(counts) <= {"0", "1"}

    exact = qml.tape.QuantumScript([qml.RY(0.3, 0), qml.RX(0.8, 1)],
                                   [qml.expval(qml.Z(0) + 2 * qml.X(0)), qml.expval(qml.Z(1))])
    values = ex.run_circuit_sync(exact)
    np.testing.assert_allclose(values, [math.cos(0.3) + 2 * math.sin(0.3), math.cos(0.8)], atol=1e-12)

    meta = ex.execute([exact, tape]).metadata
    assert meta.backend == "classiq:Classiq/simulator" and len(meta.job_ids) == 1 + 2

    # exact probs and var: observed Z strings / the observable and its square
    probs, var = ex.run_circuit_sync(qml.tape.QuantumScript(
        [qml.RY(0.7, 0)], [qml.probs(wires=0), qml.var(qml.X(0))]))
    np.testing.assert_allclose(probs, [math.cos(0.35) ** 2, math.sin(0.35) ** 2], atol=1e-12)
    assert var == pytest.approx(1 - math.sin(0.7) ** 2, abs=1e-12)
    # probs in an observable's eigenbasis; a circuit without gates
    px = ex.run_circuit_sync(qml.tape.QuantumScript([qml.RY(0.7, 0)], [qml.probs(op=qml.X(0))]))
    np.testing.assert_allclose(px, [(1 + math.sin(0.7)) / 2, (1 - math.sin(0.7)) / 2], atol=1e-12)
    assert ex.run_circuit_sync(qml.tape.QuantumScript([], [qml.expval(qml.X(0))])) == pytest.approx(0)
    with pytest.raises(qf.UnsupportedCircuitError, match="sample.. without shots"):
        ex.run_circuit_sync(qml.tape.QuantumScript([qml.H(0)], [qml.sample(wires=0)]))
    # per-shot samples come from Classiq's counts (shuffled by the sampling plan)
    samples = ex.run_circuit_sync(qml.tape.QuantumScript([qml.X(0)], [qml.sample(wires=0)], shots=10))
    assert samples.shape == (10, 1) and set(samples.ravel().tolist()) == {1}  # as default.qubit
    hardware = executor(standin, backend_preferences="ibm/ibm_torino")
    assert not hardware.capabilities.analytic and hardware.capabilities.default_shots == 2048
    assert executor(standin, backend_preferences="ibm/ibm_torino",
                    num_shots=100).capabilities.default_shots == 100
    # num_shots: tapes without shots are sampled
    sampled = executor(standin, num_shots=3000, random_seed=2).run_circuit_sync(
        qml.tape.QuantumScript([qml.RX(1.0, 0)], [qml.probs(wires=0)])
    )
    assert abs(sampled[1] - p1(1.0)) < tol(p1(1.0), 3000)


EVERYDAY_SHOTS = 4000


@pytest.mark.parametrize("shots", [EVERYDAY_SHOTS, None], ids=["shots", "exact"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_everyday_circuits_match_default_qubit(standin, name, shots):
    check_case(name, executor(standin, random_seed=17), shots=shots)


def test_bit_order_is_the_tapes_wire_order(standin):
    tape = qml.tape.QuantumScript([qml.X("b"), qml.X("c")],
                                  [qml.probs(wires=["a", "b", "c"]), qml.counts(wires=["c", "a"])],
                                  shots=50)
    probs, counts = executor(standin).run_circuit_sync(tape)
    assert probs[0b011] == 1 and counts == {"10": 50}
    exact = executor(standin).run_circuit_sync(tape.copy(shots=None, measurements=[
        qml.probs(wires=["c", "a", "b"])]))
    np.testing.assert_allclose(exact, np.eye(8)[0b101], atol=1e-12)


def test_broadcast_tape_runs_one_classiq_job_per_parameter_set(standin):
    ex = executor(standin, random_seed=3)
    tape = qml.tape.QuantumScript([qml.RX(np.array([0.1, 0.9, 2.1]), 0), qml.CNOT([0, 1])],
                                  [qml.expval(qml.Z(1)), qml.probs(wires=[0, 1])])
    result = ex.execute([tape, tape.copy(shots=2000)])
    assert len(result.metadata.job_ids) == 6
    (z_exact, p_exact), (z_sampled, p_sampled) = result
    assert p_exact.shape == p_sampled.shape == (3, 4)
    np.testing.assert_allclose(z_exact, np.cos([0.1, 0.9, 2.1]), atol=1e-12)
    np.testing.assert_allclose(z_sampled, np.cos([0.1, 0.9, 2.1]), atol=5 / math.sqrt(2000))


def test_qelectron_on_classiq(standin):
    ex = executor(standin, random_seed=5)

    @qf.qelectron(executors=ex)
    @qml.qnode(qml.device("default.qubit", wires=2), shots=5000)
    def circuit(x):
        qml.RY(x, wires=0)
        qml.CNOT(wires=[0, 1])
        return qml.expval(qml.Z(0) @ qml.Z(1)), qml.probs(wires=1)

    zz, probs = circuit(0.9)
    assert zz == pytest.approx(1.0)
    assert abs(probs[1] - p1(0.9)) < tol(p1(0.9), 5000)


def test_session_on_classiq(standin):
    before = set(standin.state()["sessions"])
    ex = executor(standin)
    prefs = qf.ExecutionPreferences(num_shots=2000, backend=ex, random_seed=21, job_name="cq")
    with qf.ExecutionSession(QASM, prefs) as es:
        assert es.executor.random_seed == 21
        res = es.sample({"t": 0.5})
        assert res.num_shots == 2000
        assert abs(res.probability("1") - p1(0.5)) < tol(p1(0.5), 2000)
        batch = es.sample([{"t": 0.5}, {"t": 2.5}])
        for r, t in zip(batch, (0.5, 2.5)):
            assert abs(r.probability("1") - p1(t)) < tol(p1(t), 2000)
        est = es.estimate(H, {"t": 0.5})  # exact: Classiq's statevector observe
        assert est.value == pytest.approx(1 + 2 * math.cos(0.5), abs=1e-12) and est.num_shots is None
        job = es.submit_estimate(H, [{"t": 0.5}, {"t": 0.6}])
        assert [r.value for r in job.get_batch_estimate_result()] == pytest.approx(
            [1 + 2 * math.cos(0.5), 1 + 2 * math.cos(0.6)], abs=1e-12
        )
    assert len(job.backend_job_ids) == 2
    remote = standin.state()["jobs"]
    assert all(remote[i] == "COMPLETED" for i in job.backend_job_ids)
    assert job.name == "cq" and "classiq:Classiq/simulator" in job.backend
    sessions = [s for i, s in standin.state()["sessions"].items() if i not in before]
    assert len(sessions) == 1 + 2 + 1 + 2 and all(s["closed"] for s in sessions)
    # each job's seed comes from the session's (Classiq's rule: 21 itself, then draws of
    # random.Random(21)); a batch job's Classiq sessions share their job's seed
    draws = random.Random(21)
    seeds = [21] + [draws.randint(0, 2**32 - 1) for _ in range(3)]
    expected = [seeds[0], seeds[1], seeds[1], seeds[2], seeds[3], seeds[3]]
    assert sorted(s["preferences"]["random_seed"] for s in sessions) == sorted(expected)
    assert {s["preferences"]["backend_preferences"]["backend_name"] for s in sessions} == {"simulator"}

    # transpilation and shots reach Classiq's execution preferences
    prefs = qf.ExecutionPreferences(num_shots=123, backend=ex, transpile_to_hardware="none")
    with qf.ExecutionSession(QASM, prefs) as es:
        assert es.sample({"t": 0.1}).num_shots == 123
    newest = list(standin.state()["sessions"].values())[-1]["preferences"]
    assert newest["transpile_to_hardware"] == "none" and newest["num_shots"] == 123

    # a cluster of Classiq and a local simulator: both exact, so the estimate is exact
    cluster = qf.QuantumCluster(executors=[ex, qf.LocalExecutor()])
    with qf.ExecutionSession(QASM, cluster) as es:
        for t in (0.2, 0.4):
            assert es.estimate(H, {"t": t}).value == pytest.approx(1 + 2 * math.cos(t), abs=1e-12)


def test_token_is_never_stored_or_shown(standin, tmp_path):
    ex = executor(standin)
    assert TOKEN not in repr(ex) and TOKEN not in str(ex)
    with qf.ExecutionSession(QASM, ex) as es:
        es.sample({"t": 0.3})
    store = (tmp_path / "qfleet-home" / "jobs.sqlite3").read_bytes()
    for path in (tmp_path / "qfleet-home").iterdir():  # the WAL too
        assert TOKEN.encode() not in path.read_bytes()
    assert TOKEN.encode() not in store and b"classiq-test-token" not in store

    # provider credentials inside backend preferences are hidden too
    ibm = ClassiqExecutor(backend_preferences={
        "backend_service_provider": "IBM Quantum", "backend_name": "ibm_torino",
        "access_token": "ibm-secret-123",
    })
    assert "ibm-secret-123" not in repr(ibm) and "ibm-secret-123" not in str(ibm)
    assert ibm._preferences(10).backend_preferences.access_token == "ibm-secret-123"
    from qfleet.jobs.job import executor_spec

    assert "ibm-secret-123" not in json.dumps(executor_spec(ibm))

    wrong = ClassiqExecutor(host=standin.url, token="not-the-token")
    with qf.ExecutionSession(QASM, wrong) as es:
        job = es.submit_sample({"t": 0.3})
        assert job.poll(timeout_sec=30) is JobStatus.FAILED
    assert "401" in job.error and "not-the-token" not in job.error


def test_cancel_reaches_classiq(standin):
    standin.configure(delay=30)
    with qf.ExecutionSession(QASM, executor(standin)) as es:
        job = es.submit_sample({"t": 0.5})
        deadline = time.monotonic() + 30
        while not qf.ExecutionJob.from_id(job.id).backend_job_ids and time.monotonic() < deadline:
            time.sleep(0.05)
        [remote_id] = qf.ExecutionJob.from_id(job.id).backend_job_ids
        job.cancel()
        assert job.status is JobStatus.CANCELLED
    deadline = time.monotonic() + 10
    while standin.state()["jobs"][remote_id] != "CANCELLED" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert standin.state()["jobs"][remote_id] == "CANCELLED"


def test_kill_9_then_reattached_by_classiq_job_id(standin, monkeypatch):
    standin.configure(delay=3)
    code = f"""
        import json, time
        import qfleet as qf
        ex = qf.executor.ClassiqExecutor(host={standin.url!r}, token={TOKEN!r}, random_seed=8)
        es = qf.ExecutionSession({QASM!r}, qf.ExecutionPreferences(num_shots=1500, backend=ex))
        job = es.submit_sample([{{"t": 1.1}}, {{"t": 2.2}}])
        print(json.dumps({{"id": job.id}}), flush=True)
        time.sleep(120)
    """
    victim = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=dict(os.environ),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        job_id = json.loads(victim.stdout.readline())["id"]
        job = qf.ExecutionJob.from_id(job_id)
        deadline = time.monotonic() + 30
        while not job.backend_job_ids and time.monotonic() < deadline:
            time.sleep(0.05)
            job._refresh()
        remote_ids = job.backend_job_ids
        assert len(remote_ids) == 2 and job.status is JobStatus.RUNNING
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        victim.stdout.close()
        victim.stderr.close()
    remote_before = standin.state()["jobs"]

    # This process takes the job over: the executor is rebuilt from the job store (no token
    # there), its token comes from the environment, and it re-attaches to the Classiq jobs.
    monkeypatch.setenv("QFLEET_CLASSIQEXECUTOR_TOKEN", TOKEN)
    results = qf.ExecutionJob.from_id(job_id).get_batch_sample_result(timeout_sec=60)
    for result, t in zip(results, (1.1, 2.2)):
        assert result.num_shots == 1500
        assert abs(result.probability("1") - p1(t)) < tol(p1(t), 1500)
    job = qf.ExecutionJob.from_id(job_id)
    assert job.attempts == 2 and job.backend_job_ids == remote_ids
    remote_after = standin.state()["jobs"]
    assert set(remote_after) == set(remote_before)  # no new Classiq job: re-attached
    assert all(remote_after[i] == "COMPLETED" for i in remote_ids)


def test_cancel_from_another_process(standin):
    standin.configure(delay=60)
    code = f"""
        import json
        import qfleet as qf
        ex = qf.executor.ClassiqExecutor(host={standin.url!r}, token={TOKEN!r})
        with qf.ExecutionSession({QASM!r}, ex) as es:
            job = es.submit_sample({{"t": 0.4}})
            print(json.dumps({{"id": job.id}}), flush=True)
            print(json.dumps({{"status": job.poll(timeout_sec=60).value}}), flush=True)
    """
    owner = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=dict(os.environ),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        job = qf.ExecutionJob.from_id(json.loads(owner.stdout.readline())["id"])
        deadline = time.monotonic() + 30
        while not job.backend_job_ids and time.monotonic() < deadline:
            time.sleep(0.05)
            job._refresh()
        [remote_id] = job.backend_job_ids
        started = time.monotonic()
        job.cancel()  # owned by the other (live) process
        assert standin.state()["jobs"][remote_id] == "CANCELLED"  # by id, at once
        assert json.loads(owner.stdout.readline()) == {"status": "CANCELLED"}
        assert owner.wait(30) == 0
        assert time.monotonic() - started < 20
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(10)
        owner.stdout.close()
        owner.stderr.close()
    assert qf.ExecutionJob.from_id(job.id).status is JobStatus.CANCELLED
