"""QiskitExecutor through the real ``QiskitRuntimeService`` against the IBM Runtime stand-in
(tests/standins/ibm_runtime.py, its own process on 127.0.0.1).

The SDK authenticates (IAM -> JWT), searches instances, lists backends, opens sessions,
submits V2 sampler/estimator jobs (RuntimeEncoder/QPY), polls and fetches results exactly as
against IBM Cloud. Fault switches on the stand-in cover failed jobs, 5xx answers and a wrong
API key.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pennylane as qml
import pytest
from pennylane.tape import QuantumScript

pytest.importorskip("qiskit_ibm_runtime")
requests = pytest.importorskip("requests")

from standins.helpers import (
    ANGLES,
    RY_QASM,
    X,
    assert_close,
    assert_reattached,  # noqa: E402
    exact,
    qnode,
    submit_then_kill,
    wait_for,
)
from standins.process import ControlChannel, start_port, stop  # noqa: E402

from qfleet.errors import ExecutorError, ExecutorTimeoutError  # noqa: E402
from qfleet.executors import QiskitExecutor  # noqa: E402
from qfleet.executors.ibm import IBMAuthenticationError, IBMJobError, close_sessions  # noqa: E402

STANDIN = Path(__file__).parent / "standins" / "ibm_runtime.py"
API_KEY = "standin-api-key-for-qfleet-tests"


class StandIn(ControlChannel):
    def __init__(self, port: int, process: subprocess.Popen):
        self.port, self.process = port, process
        self.base = f"http://127.0.0.1:{port}"
        self.url = f"{self.base}/api/v1"

    def executor(self, **kwargs) -> QiskitExecutor:
        kwargs = {"device": "sampler", "backend": "ibm_manila", "token": API_KEY,
                  "url": self.url, "seed": 17, **kwargs}
        return QiskitExecutor(**kwargs)


@pytest.fixture(scope="module")
def standin():
    try:
        process, port = start_port(
            [sys.executable, str(STANDIN), "--port", "0", "--api-key", API_KEY],
            "the IBM stand-in", timeout=120)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    patch = pytest.MonkeyPatch()
    base = f"http://127.0.0.1:{port}"
    patch.setenv("IAM_URL", base)  # IBM Cloud IAM (API key -> JWT)
    patch.setenv("GLOBAL_SEARCH_URL", base)  # instance search
    patch.setenv("GLOBAL_CATALOG_URL", f"{base}/catalog")  # instance plans
    try:
        yield StandIn(port, process)
    finally:
        close_sessions()
        patch.undo()
        stop(process)


@pytest.fixture
def server(standin):
    yield from standin.fresh(close_sessions)


@pytest.mark.parametrize("device", ["sampler", "estimator"])
def test_qnode_through_the_runtime_service(server, device):
    circuit = qnode(server.executor(device=device))
    assert_close(circuit(X), exact(X))
    assert_close(circuit(X * 0.5), exact(X * 0.5))
    meta = circuit.last_metadata
    assert meta.backend == "ibm_manila" and len(meta.job_ids) == 1
    stats = server.control("stats")
    jobs = {job["id"]: job for job in stats["jobs"]}
    assert meta.job_ids[0] in jobs and jobs[meta.job_ids[0]]["program"] == device
    assert all(job["status"] == "Completed" for job in jobs.values())
    # sampler: X(1) and Y(0) do not commute with Z(0)Z(1): 2 circuits (PUBs) in one job
    assert jobs[meta.job_ids[0]]["num_pubs"] == (2 if device == "sampler" else 1)
    # one session for both calls, kept open for the next one
    assert len(stats["sessions"]) == 1 and stats["sessions"][0]["accepting_jobs"]
    assert {job["session_id"] for job in jobs.values()} == {stats["sessions"][0]["id"]}


def test_gradient_is_one_runtime_job(server):
    circuit = qnode(server.executor(), shots=2000)
    cost = lambda x: qml.math.sum(qml.math.stack(circuit(x)))  # noqa: E731
    before = len(server.jobs())
    grad = qml.grad(cost)(X)
    jobs = server.jobs()[before:]
    # forward pass (2 PUBs) and the whole parameter-shift gradient: 2 * 3 shifts x 2 PUBs
    assert [job["num_pubs"] for job in jobs] == [2, 2 * len(X) * 2]
    assert all(shots == 2000 for job in jobs for shots in job["shots"])
    want = qml.grad(lambda x: qml.math.sum(qml.math.stack(exact(x))))(X)
    np.testing.assert_allclose(grad, want, atol=3 * 5 / np.sqrt(2 * 2000))


def test_batch_and_job_modes(server):
    qnode(server.executor(mode="batch"))(X)
    qnode(server.executor(mode="job", single_job=False))(X)
    stats = server.control("stats")
    assert [s["mode"] for s in stats["sessions"]] == ["batch"]
    # single_job=False: one job per tape (a forward pass is one tape, with 2 PUBs)
    assert [(job["session_id"] is None, job["num_pubs"]) for job in stats["jobs"]] == [
        (False, 2), (True, 2)]


def test_reattach_to_a_job_by_id(server):
    ex = server.executor()
    tape = QuantumScript([qml.RX(0.7, 0)], [qml.expval(qml.Z(0))], shots=1000)
    result = ex.execute([tape])
    job_id = result.metadata.job_ids[0]

    from qiskit_ibm_runtime import QiskitRuntimeService

    from qfleet.executors.ibm_runtime import verbatim_url_resolver

    fresh = QiskitRuntimeService(channel="ibm_quantum_platform", token=API_KEY, url=server.url,
                                 url_resolver=verbatim_url_resolver, instance="auto")
    job = fresh.job(job_id)
    assert job.job_id() == job_id and job.status() == "DONE"
    assert job.backend().name == "ibm_manila"
    counts = job.result()[0].data.c.get_counts()
    assert sum(counts.values()) == 1000
    z = sum((1 if bits[-1] == "0" else -1) * n for bits, n in counts.items()) / 1000
    assert z == pytest.approx(result[0])
    assert ex.service().job(job_id).status() == "DONE"


def test_job_states_seen_by_the_sdk(server):
    server.control("faults", {"hold_jobs": True, "job_delay": 1.0})
    ex = server.executor()
    tapes = [QuantumScript([qml.RX(0.3, 0)], [qml.expval(qml.Z(0))], shots=100)]

    async def submit():
        return await ex.batch_submit(tapes)

    handle = asyncio.run(submit())
    job = ex.service().job(handle.job_ids[0])
    assert job.status() == "QUEUED"
    server.control("faults", {"hold_jobs": False})
    assert wait_for(lambda: job.status() == "RUNNING", timeout=10)
    assert wait_for(lambda: job.status() == "DONE", timeout=10)

    server.control("faults", {"fail_jobs": ["boom"], "job_delay": 0.0})
    failed = asyncio.run(submit())
    assert wait_for(lambda: ex.service().job(failed.job_ids[0]).status() == "ERROR")
    assert "boom" in ex.service().job(failed.job_ids[0]).error_message()


def test_cancel_cancels_the_runtime_job(server):
    server.control("faults", {"hold_jobs": True})
    circuit = qnode(server.executor())
    future = circuit.run_later(X)
    assert wait_for(lambda: any(j["status"] == "Queued" for j in server.jobs()))
    assert future.cancel()
    assert wait_for(lambda: [j["status"] for j in server.jobs()] == ["Cancelled"])
    job_id = server.jobs()[0]["id"]
    assert circuit.executor.service().job(job_id).status() == "CANCELLED"


def test_cancelling_the_wait_cancels_the_runtime_job(server):
    server.control("faults", {"hold_jobs": True})
    ex = server.executor()
    tapes = [QuantumScript([qml.RX(0.3, 0)], [qml.expval(qml.Z(0))], shots=100)]

    async def submit_then_cancel():
        handle = await ex.batch_submit(tapes)  # returns once the Runtime job exists
        assert [j["id"] for j in server.jobs()] == list(handle.job_ids)
        waiting = asyncio.ensure_future(ex.batch_get_results(handle))
        await asyncio.sleep(0.3)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        return handle

    asyncio.run(submit_then_cancel())
    assert wait_for(lambda: [j["status"] for j in server.jobs()] == ["Cancelled"])


def test_timeout_cancels_the_runtime_job(server):
    server.control("faults", {"hold_jobs": True})
    circuit = qnode(server.executor(timeout=1.0))
    with pytest.raises(ExecutorTimeoutError):
        circuit(X)
    assert wait_for(lambda: [j["status"] for j in server.jobs()] == ["Cancelled"])


def test_failed_job_raises_with_the_server_message(server):
    reason = "Qubit 3 is out of calibration (stand-in failure)"
    server.control("faults", {"fail_jobs": [reason]})
    circuit = qnode(server.executor())
    with pytest.raises(IBMJobError) as info:
        circuit(X)
    job = server.jobs()[0]
    assert reason in str(info.value) and info.value.job_id == job["id"] == job["id"]
    assert job["status"] == "Failed" and not info.value.transient
    assert_close(circuit(X), exact(X))  # the next job runs normally


def test_5xx_answers_are_retried(server):
    server.control("faults", {"http_errors": [
        {"method": "POST", "path": "/api/v1/jobs", "codes": [500, 503]},
        {"method": "GET", "path": "/api/v1/jobs/[^/]+", "codes": [503, 500]},
    ]})
    circuit = qnode(server.executor())
    assert_close(circuit(X), exact(X))
    requests_seen = server.control("stats")["requests"]
    submits = [status for method, path, status in requests_seen
               if method == "POST" and path == "/api/v1/jobs"]
    assert submits == [500, 503, 200]
    polls = [status for method, path, status in requests_seen
             if method == "GET" and path.startswith("/api/v1/jobs/") and path.count("/") == 4]
    assert polls[:2] == [503, 500] and 200 in polls


def test_wrong_token_is_a_clear_auth_error(server):
    wrong = "definitely-not-the-right-key-42"
    circuit = qnode(server.executor(token=wrong))
    with pytest.raises(IBMAuthenticationError) as info:
        circuit(X)
    message = str(info.value)
    assert wrong not in message
    assert "token" in message and "QFLEET_QISKITEXECUTOR_TOKEN" in message
    assert "[executors.QiskitExecutor]" in message
    seen = [tuple(r) for r in server.control("stats")["requests"]]
    assert ("POST", "/identity/token", 401) in seen


def test_token_from_the_config_file(server, tmp_path, monkeypatch):
    config = tmp_path / "config.toml"
    config.write_text(f'[executors.QiskitExecutor]\ntoken = "{API_KEY}"\n')
    monkeypatch.setenv("QFLEET_CONFIG", str(config))
    ex = QiskitExecutor(device="estimator", backend="ibm_manila", url=server.url, seed=1)
    assert_close(qnode(ex)(X), exact(X))


def test_a_session_closed_on_the_server_is_reopened(server):
    ex = server.executor()
    qnode(ex)(X)
    assert len(server.control("stats")["sessions"]) == 1
    server.control("faults", {"expire_sessions": True})  # as when max_time runs out
    assert_close(qnode(ex)(X), exact(X))
    sessions = server.control("stats")["sessions"]
    assert len(sessions) == 2 and [s["accepting_jobs"] for s in sessions] == [False, True]


def test_sessions_are_closed(server):
    qnode(server.executor())(X)
    qnode(server.executor(mode="batch"))(X)
    assert close_sessions() == 2
    sessions = server.control("stats")["sessions"]
    assert len(sessions) == 2 and not any(s["accepting_jobs"] for s in sessions)


def test_sessions_close_at_interpreter_exit(standin):
    code = (
        "import pennylane as qml, qfleet as qf\n"
        f"ex = qf.executor.QiskitExecutor(device='sampler', backend='ibm_manila', "
        f"token={API_KEY!r}, url={standin.url!r})\n"
        "tape = qml.tape.QuantumScript([qml.H(0)], [qml.probs(wires=[0])], shots=10)\n"
        "print(ex.run_circuit_sync(tape))\n"
    )
    before = {s["id"] for s in standin.control("stats")["sessions"]}
    env = {**os.environ, "QFLEET_CONFIG": os.devnull}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stderr
    new = [s for s in standin.control("stats")["sessions"] if s["id"] not in before]
    assert len(new) == 1 and new[0]["state"] == "closed"


# -- re-attaching by Runtime job id ------------------------------------------------------------



@pytest.mark.parametrize("kind", ["sample", "estimate"])
def test_kill_9_then_reattached_by_runtime_job_ids(server, kind, tmp_path, monkeypatch):
    """A durable job whose process is killed after IBM accepted its Runtime jobs is taken
    over by another process, which re-attaches to those jobs by id: nothing is submitted
    again. ``estimate`` of I + 2Z + X on the sampler is two plan circuits per tape (Z and X
    bases); ``single_job=False`` makes one Runtime job per tape (parameter set)."""

    monkeypatch.setenv("QFLEET_HOME", str(tmp_path / "qfleet-home"))
    monkeypatch.setenv("QFLEET_CONFIG", os.devnull)
    server.control("faults", {"hold_jobs": True})  # the jobs stay queued until the kill
    shots = 3000
    submit = ("es.submit_sample(sets)" if kind == "sample" else
              "es.submit_estimate(qf.Pauli.I(0) + 2 * qf.Pauli.Z(0) + qf.Pauli.X(0), sets)")
    code = f"""
        import json, time
        import qfleet as qf
        ex = qf.executor.QiskitExecutor(device="sampler", backend="ibm_manila", token={API_KEY!r},
                                        url={server.url!r}, seed=17, single_job=False)
        es = qf.ExecutionSession({RY_QASM!r}, qf.ExecutionPreferences(num_shots={shots},
                                                                       backend=ex))
        sets = [{{"t": t}} for t in {ANGLES!r}]
        job = {submit}
        print(json.dumps({{"id": job.id}}), flush=True)
        time.sleep(300)
    """
    job_id, remote_ids = submit_then_kill(
        code, lambda: {j["id"]: j["status"] for j in server.jobs()}, "Queued",
        expected_jobs=len(ANGLES),
    )
    before = server.jobs()
    assert sorted(j["id"] for j in before) == sorted(remote_ids)
    assert [j["num_pubs"] for j in before] == [1 if kind == "sample" else 2] * len(ANGLES)

    # This process takes the job over. The executor is rebuilt from the job store, which
    # holds no token: it comes from the environment, as in a fresh process.
    monkeypatch.setenv("QFLEET_QISKITEXECUTOR_TOKEN", API_KEY)
    server.control("faults", {"hold_jobs": False, "job_delay": 1.0})  # still running at attach
    results = assert_reattached(job_id, kind, shots, remote_ids, server.jobs, "Completed")
    posts = [r for r in server.control("stats")["requests"]
             if r[0] == "POST" and r[1] == "/api/v1/jobs"]
    assert len(posts) == len(ANGLES)  # the victim's submissions only

    if kind == "sample":  # exactly the Runtime jobs' own counts, in order
        service = QiskitExecutor(device="sampler", backend="ibm_manila", url=server.url).service()
        for result, remote_id in zip(results, remote_ids, strict=True):
            counts = service.job(remote_id).result()[0].data.c.get_counts()
            assert result.counts == counts


def test_reattach_with_several_plan_circuits_and_runtime_jobs(server):
    """One broadcast tape measuring Z and X on an estimator with a shot vector: 2 parameter
    sets x 2 shot bins; the bins differ in precision, so they are two Runtime jobs. Another
    executor re-attaches by those ids and gets the same results; nothing is submitted."""
    tape = QuantumScript([qml.RY(np.array([0.3, 1.2]), 0)],
                         [qml.expval(qml.Z(0)), qml.expval(qml.X(0))], shots=[400, 1600])
    ex = server.executor(device="estimator")
    first = ex.execute([tape])
    assert len(first.metadata.job_ids) == 2
    assert [j["num_pubs"] for j in server.jobs()] == [2, 2]

    again = server.executor(device="estimator").results_of([tape], first.metadata.job_ids)
    assert again.metadata.job_ids == first.metadata.job_ids
    np.testing.assert_array_equal(np.asarray(again[0]), np.asarray(first[0]))
    assert len(server.jobs()) == 2

    # sampler: Z and X need two circuits (two PUBs), all in one Runtime job
    tapes = [QuantumScript([qml.RY(0.8, 0)], [qml.expval(qml.Z(0)), qml.expval(qml.X(0))],
                           shots=2000)]
    sampler = server.executor()
    first = sampler.execute(tapes)
    [remote_id] = first.metadata.job_ids
    assert server.jobs()[-1]["num_pubs"] == 2
    again = server.executor().results_of(tapes, [remote_id])
    np.testing.assert_array_equal(np.asarray(again[0]), np.asarray(first[0]))
    assert abs(again[0][0] - np.cos(0.8)) < 5 / np.sqrt(2000)
    assert len(server.jobs()) == 3

    with pytest.raises(ExecutorError, match="2 Runtime job ids for 1 jobs of this batch"):
        sampler.reattach(tapes, [remote_id, "extra"])
    with pytest.raises(ExecutorError, match="d0000000000000000000"):
        sampler.reattach(tapes, ["d0000000000000000000"])


def test_local_testing_mode_cannot_reattach():
    ex = QiskitExecutor(backend="aer_simulator")
    remote = QiskitExecutor(device="sampler", backend="ibm_manila", token=API_KEY)
    assert not ex.can_attach and remote.can_attach
    tape = QuantumScript([qml.RX(0.3, 0)], [qml.expval(qml.Z(0))], shots=100)
    with pytest.raises(ExecutorError, match=r"local testing mode.*cannot be re-attached"):
        ex.reattach([tape], ["some-id"])
