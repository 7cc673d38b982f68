"""BraketExecutor through the real amazon-braket-sdk against a local Braket stand-in
(tests/standins/braket_service.py, its own process) whose task results live in S3 served by
moto's server mode (its own process).

The SDK signs every request (dummy credentials), creates quantum tasks with OpenQASM 3
programs (CreateQuantumTask), polls them (GetQuantumTask), reads the device (GetDevice) and
downloads ``results.json`` from S3, exactly as against AWS. The stand-in simulates with Braket's
own local simulators, so results are compared with default.qubit / default.mixed: exactly
(SV1, DM1 without shots) or within 5 sigma of shot noise.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pickle
import textwrap
from pathlib import Path

import numpy as np
import pennylane as qml
import pytest
from conftest import binomial_tol
from pennylane import numpy as pnp
from pennylane.tape import QuantumScript
from standins.helpers import (
    ANGLES,
    RY_QASM,
    X,
    assert_close,
    assert_reattached,
    exact,
    qnode,
    submit_then_kill,
    wait_for,
)

pytest.importorskip("braket.aws")
pytest.importorskip("moto")

from standins.braket_service import FORTE, BraketStack

import qfleet as qf
from qfleet.errors import ExecutorError, ExecutorTimeoutError
from qfleet.executors import BraketExecutor
from qfleet.executors.braket_cloud import (
    DM1,
    SV1,
    TN1,
    BraketAuthenticationError,
    BraketDeviceError,
    BraketTaskError,
    forget_sessions,
)

SHOTS = 4000


@pytest.fixture(scope="module")
def stack():
    started = BraketStack().start()
    try:
        yield started
    finally:
        forget_sessions()
        started.stop()


@pytest.fixture
def server(stack):
    yield from stack.fresh(forget_sessions)


def executor(stack, device=SV1, **kwargs) -> BraketExecutor:
    return BraketExecutor(**{**stack.executor_fields, "device_arn": device, **kwargs})


# -- every gate family vs default.qubit ---------------------------------------------------------


def _families():
    """One circuit per gate family: Braket-native one-qubit gates, rotations, two- and
    three-qubit gates, gates the plan decomposes, and a matrix fallback."""
    rng = np.random.default_rng(11)
    a = lambda: rng.uniform(-3, 3)  # noqa: E731
    prep = [qml.Hadamard(0), qml.RY(0.7, 1), qml.RX(1.1, 2)]
    return {
        "clifford+t": [*prep, qml.S(0), qml.T(1), qml.SX(2), qml.adjoint(qml.S(1)),
                              qml.adjoint(qml.T(2)), qml.adjoint(qml.SX(0)), qml.PauliX(1),
                              qml.PauliY(2), qml.PauliZ(0), qml.Hadamard(2)],
        "rotations": [*prep, qml.RX(a(), 0), qml.RY(a(), 1), qml.RZ(a(), 2),
                             qml.PhaseShift(a(), 0), qml.U3(a(), a(), a(), wires=1),
                             qml.Rot(a(), a(), a(), wires=2)],
        "two-qubit": [*prep, qml.CNOT([0, 1]), qml.CY([1, 2]), qml.CZ([2, 0]), qml.SWAP([0, 2]),
                             qml.ISWAP([1, 0]), qml.PSWAP(a(), [0, 1]), qml.ECR([2, 1]),
                             qml.ControlledPhaseShift(a(), [1, 2])],
        "ising": [*prep, qml.IsingXX(a(), [0, 1]), qml.IsingYY(a(), [1, 2]),
                         qml.IsingZZ(a(), [2, 0]), qml.IsingXY(a(), [0, 2])],
        "three-qubit": [*prep, qml.Toffoli([0, 1, 2]), qml.CSWAP([2, 0, 1]),
                               qml.MultiControlledX(wires=[1, 2, 0])],
        "decomposed": [*prep, qml.CRX(a(), [0, 1]), qml.CRot(a(), a(), a(), [1, 2]),
                              qml.SISWAP([0, 2]), qml.QFT(wires=[0, 1, 2])],
        "matrix": [*prep, qml.QubitUnitary(qml.matrix(qml.Rot(a(), a(), a(), 0) @
                                                      qml.CNOT([0, 1])), wires=[0, 1])],
    }


def _tapes(shots):
    return [QuantumScript(ops, [qml.probs(wires=[0, 1, 2])], shots=shots)
            for ops in _families().values()]


def test_every_gate_family_matches_default_qubit(server):
    want = [qml.execute([t], qml.device("default.qubit"))[0] for t in _tapes(None)]
    # SV1 exactly (shots=0, state vector), then SV1, TN1 and a QPU sampling
    got = executor(server).execute(_tapes(None))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, atol=1e-10)
    assert got.metadata.shots == (None,) * len(want)
    sampled = executor(server).execute(_tapes(SHOTS))
    for name, g, w in zip(_families(), sampled, want, strict=True):
        assert np.all(np.abs(g - w) <= binomial_tol(w, SHOTS)), (name, g, w)
    assert sampled.metadata.shots == (SHOTS,) * len(want)
    # TN1 and a QPU (shots only) on two of the families
    for device in (TN1, FORTE):
        result = executor(server, device).execute(_tapes(SHOTS)[2:4])
        for g, w in zip(result, want[2:4], strict=True):
            assert np.all(np.abs(g - w) <= binomial_tol(w, SHOTS)), (device, g, w)
    tasks = server.jobs()
    assert len(tasks) == 2 * len(want) + 4 and {t["status"] for t in tasks} == {"COMPLETED"}
    assert sorted({t["shots"] for t in tasks}) == [0, SHOTS]
    # results.json of every task is in the S3 bucket, under the task's output directory
    keys = set(server.objects())
    assert {f"{t['outputS3Directory']}/results.json" for t in tasks} <= keys


def test_dm1_runs_noise_channels_exactly_like_default_mixed(server):
    ops = [qml.Hadamard(0), qml.CNOT([0, 1]), qml.DepolarizingChannel(0.1, 0),
           qml.AmplitudeDamping(0.2, 1), qml.RX(0.4, 1)]
    tape = QuantumScript(ops, [qml.expval(qml.Z(0) @ qml.Z(1)), qml.probs(wires=[0, 1]),
                               qml.density_matrix(wires=[0, 1])])
    got = executor(server, DM1).run_circuit_sync(tape)
    want = qml.execute([tape], qml.device("default.mixed", wires=2))[0]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, atol=1e-10)


def test_qnode_samples_counts_and_shot_vectors(server):
    circuit = qnode(executor(server), shots=SHOTS)
    assert_close(circuit(X), exact(X), shots=SHOTS)
    tape = QuantumScript([qml.RX(1.0, "a"), qml.CNOT(["a", "b"])],
                         [qml.sample(wires=["b", "a"]), qml.counts(wires=["a"])],
                         shots=[300, 500])
    got = executor(server).run_circuit_sync(tape)
    for (samples, counts), shots in zip(got, (300, 500), strict=True):
        assert samples.shape == (shots, 2) and (samples[:, 0] == samples[:, 1]).all()
        assert sum(counts.values()) == shots


def test_parameter_shift_gradient_runs_as_one_batch(server):
    circuit = qnode(executor(server), shots=SHOTS)
    cost = lambda x: qml.math.sum(qml.math.stack(circuit(x)))  # noqa: E731
    grad = qml.grad(cost)(X)
    meta = circuit.last_metadata
    # the gradient's batch: 2 shifts x 3 parameters x 2 circuits (X(1), Y(0) vs Z(0)Z(1))
    assert meta.num_circuits == 2 * len(X) and len(meta.job_ids) == 2 * len(X) * 2
    assert len(server.jobs()) == 2 + 2 * len(X) * 2  # + the forward pass
    want = qml.grad(lambda x: qml.math.sum(qml.math.stack(exact(x))))(X)
    np.testing.assert_allclose(grad, want, atol=3 * 5 / np.sqrt(2 * SHOTS))


def test_exact_gradient_on_sv1(server):
    circuit = qnode(executor(server), shots=None)
    x = pnp.array([0.3, -0.8, 1.2], requires_grad=True)
    cost = lambda v: qml.math.sum(qml.math.stack(circuit(v)))  # noqa: E731
    want = qml.grad(lambda v: qml.math.sum(qml.math.stack(exact(v))))(x)
    np.testing.assert_allclose(qml.grad(cost)(x), want, atol=1e-10)


def test_max_parallel_bounds_concurrent_task_creation(server):
    server.control("faults", {"create_delay": 0.5})
    tapes = [QuantumScript([qml.RX(t, 0)], [qml.expval(qml.Z(0))], shots=100)
             for t in np.linspace(0, 1, 6)]
    executor(server, max_parallel=2).execute(tapes)
    assert server.control("stats")["peak_creates"] == 2
    server.control("reset")
    server.control("faults", {"create_delay": 0.5})
    executor(server, max_parallel=6).execute(tapes)
    assert server.control("stats")["peak_creates"] > 2


# -- job lifecycle ------------------------------------------------------------------------------


def test_batch_submit_then_reattach_by_task_arn(server):
    server.control("faults", {"hold_jobs": True})
    tapes = [QuantumScript([qml.RX(0.7, 0)], [qml.expval(qml.Z(0))], shots=2000),
             QuantumScript([qml.RY(0.2, 0)], [qml.probs(wires=[0])])]

    async def submit():
        return await executor(server).batch_submit(tapes)

    handle = asyncio.run(submit())
    tasks = server.jobs()
    assert sorted(t["id"] for t in tasks) == sorted(handle.job_ids)
    assert {t["status"] for t in tasks} == {"QUEUED"}  # accepted, held
    assert all(arn.startswith("arn:aws:braket:us-east-1:") for arn in handle.job_ids)

    forget_sessions()  # as in a new process
    server.control("faults", {"hold_jobs": False})
    results = executor(server).results_of(tapes, handle.job_ids)
    assert abs(results[0] - np.cos(0.7)) < 5 / np.sqrt(2000)
    np.testing.assert_allclose(results[1], [np.cos(0.1) ** 2, np.sin(0.1) ** 2], atol=1e-10)
    assert len(server.jobs()) == 2  # nothing was submitted again
    with pytest.raises(ExecutorError, match="3 Braket task ARNs for 2 jobs of this batch"):
        executor(server).reattach(tapes, [*handle.job_ids, "extra"])


def test_cancel_cancels_the_braket_tasks(server):
    server.control("faults", {"hold_jobs": True})
    circuit = qnode(executor(server))
    future = circuit.run_later(X)
    assert wait_for(lambda: len(server.jobs()) == 2)
    assert future.cancel()
    assert wait_for(lambda: [t["status"] for t in server.jobs()] == ["CANCELLED"] * 2)


def test_timeout_cancels_the_braket_tasks(server):
    server.control("faults", {"hold_jobs": True})
    with pytest.raises(ExecutorTimeoutError):
        qnode(executor(server, timeout=1.0))(X)
    assert wait_for(lambda: [t["status"] for t in server.jobs()] == ["CANCELLED"] * 2)


def test_failed_task_raises_braket_failure_reason_and_cancels_the_rest(server):
    reason = "Qubit 3 failed calibration (stand-in failure)"
    server.control("faults", {"fail_jobs": [{"message": reason}], "job_delay": 2.0})
    with pytest.raises(BraketTaskError) as info:
        qnode(executor(server))(X)
    error = info.value
    assert reason in str(error) and not error.transient
    statuses = {t["id"]: t["status"] for t in server.jobs()}
    assert statuses[error.task_arn] == "FAILED"
    assert wait_for(lambda: sorted(t["status"] for t in server.jobs()) == ["CANCELLED", "FAILED"])
    server.control("faults", {"job_delay": 0.0})
    assert_close(qnode(executor(server))(X), exact(X))  # the next batch runs normally


def test_throttling_429_is_retried(server):
    server.control("faults", {"http_errors": [
        {"method": "POST", "path": r"^/quantum-task$", "codes": [429, 429]},
        {"method": "GET", "path": r"^/quantum-task/", "codes": [429]},
    ]})
    tape = QuantumScript([qml.RX(0.5, 0)], [qml.expval(qml.Z(0))], shots=2000)
    result = executor(server).run_circuit_sync(tape)
    assert abs(result - np.cos(0.5)) < 5 / np.sqrt(2000)
    seen = server.control("stats")["requests"]
    creates = [status for method, path, status in seen if path == "/quantum-task"]
    polls = [status for method, path, status in seen
             if method == "GET" and path.startswith("/quantum-task/")]
    assert creates == [429, 429, 201] and polls[:2] == [429, 200]
    assert len(server.jobs()) == 1  # retried, not created twice


def test_throttling_that_outlasts_the_retries_is_a_transient_error(server):
    server.control("faults", {"http_errors": [
        {"method": "POST", "path": r"^/quantum-task$", "codes": [429] * 2}]})
    tape = QuantumScript([qml.RX(0.5, 0)], [qml.expval(qml.Z(0))], shots=100)
    with pytest.raises(ExecutorError, match=r"ThrottlingException.*after 1 retries") as info:
        executor(server, max_retries=1).run_circuit_sync(tape)
    assert info.value.transient and not isinstance(info.value, BraketAuthenticationError)


# -- credentials and secrets --------------------------------------------------------------------


def test_expired_credentials_are_a_clear_auth_error(server):
    server.control("faults", {"expire_credentials": True})
    with pytest.raises(BraketAuthenticationError) as info:
        qnode(executor(server))(X)
    message = str(info.value)
    assert "ExpiredTokenException" in message and "expired" in message
    assert "aws_session_token" in message and "aws sso login" in message
    assert server.SECRET_KEY not in message and server.SESSION_TOKEN not in message
    assert not info.value.transient and server.jobs() == []
    server.control("faults", {"expire_credentials": False})
    assert_close(qnode(executor(server))(X), exact(X))  # renewed credentials work again


def test_unknown_access_key_is_an_auth_error(server):
    ex = executor(server, aws_access_key_id="AKIAWRONGWRONGWRONG0")
    with pytest.raises(BraketAuthenticationError, match="UnrecognizedClientException"):
        ex.run_circuit_sync(QuantumScript([qml.H(0)], [qml.probs(wires=[0])]))


def test_no_secret_in_repr_logs_errors_or_pickles(server, caplog):
    cloudpickle = pytest.importorskip("cloudpickle")
    secrets = (server.SECRET_KEY, server.SESSION_TOKEN)
    ex = executor(server)
    assert not any(s in repr(ex) or s in str(ex) for s in secrets)
    caplog.set_level(logging.DEBUG, logger="qfleet")
    caplog.set_level(logging.DEBUG, logger="braket")
    circuit = qnode(ex)
    circuit(X)
    server.control("faults", {"expire_credentials": True})
    with pytest.raises(BraketAuthenticationError) as info:
        circuit(X)
    server.control("faults", {"expire_credentials": False})
    assert not any(s in caplog.text or s in str(info.value) for s in secrets)
    for blob in (pickle.dumps(ex), cloudpickle.dumps(circuit)):
        assert not any(s.encode() in blob for s in secrets)
    clone = cloudpickle.loads(cloudpickle.dumps(circuit))
    assert clone.executor.aws_secret_access_key is None  # comes from the worker's config
    from qfleet.jobs.job import executor_spec

    spec = json.dumps(executor_spec(ex))
    assert not any(s in spec for s in secrets) and server.ACCESS_KEY in spec


def test_config_section_supplies_the_secret(server, isolated_config):
    fields = dict(server.executor_fields)
    secret, token = fields.pop("aws_secret_access_key"), fields.pop("aws_session_token")
    isolated_config.write_text(textwrap.dedent(f"""
        [executors.BraketExecutor]
        aws_secret_access_key = "{secret}"
        aws_session_token = "{token}"
    """))
    ex = BraketExecutor(**fields)
    assert ex.aws_secret_access_key.get_secret_value() == secret and secret not in repr(ex)
    assert_close(qnode(ex)(X), exact(X))


def test_key_id_without_secret_is_a_config_error():
    from qfleet.errors import ConfigError

    ex = BraketExecutor(aws_access_key_id="AKIAONLYTHEKEYID0000", shots=10)
    with pytest.raises(ConfigError, match="aws_secret_access_key is not"):
        ex.run_circuit_sync(QuantumScript([qml.H(0)], [qml.probs(wires=[0])]))


# -- devices: status, queue, offline, unknown, capabilities, cost --------------------------------


def test_device_status_and_queue_depth(server):
    server.control("faults", {"queue_size": 17})
    status = executor(server).status()
    assert status.available and status.queue_length == 17 and status.executor == "BraketExecutor"
    details = executor(server, FORTE).device_status()
    assert details.type == "QPU" and details.provider == "IonQ" and details.status == "ONLINE"
    assert details.queue_depth == {"Normal": "17", "Priority": "0", "jobs": "0"}
    server.control("faults", {"device_status": {FORTE: "OFFLINE"}})
    offline = executor(server, FORTE).status()
    assert not offline.available and "OFFLINE" in offline.reason
    with pytest.raises(BraketDeviceError, match="offline") as info:
        executor(server, FORTE).run_circuit_sync(
            QuantumScript([qml.H(0)], [qml.probs(wires=[0])], shots=10))
    assert info.value.transient


def test_unknown_device_is_a_device_error(server):
    ex = executor(server, "arn:aws:braket:::device/quantum-simulator/amazon/nope")
    with pytest.raises(BraketDeviceError, match="not found"):
        ex.run_circuit_sync(QuantumScript([qml.H(0)], [qml.probs(wires=[0])], shots=10))
    with pytest.raises(ValueError, match="not a Braket device ARN"):
        BraketExecutor(device_arn="sv1")


def test_capabilities_per_device_and_shots_only_warning(server):
    assert executor(server).capabilities.max_wires == 34
    assert not executor(server, DM1).capabilities.exact_measurements & {"state"}
    tn1 = executor(server, TN1).capabilities
    assert not tn1.analytic and tn1.default_shots == 1000
    # TN1 only samples: an analytic expval runs with 1000 shots and says so
    with pytest.warns(qf.sampling.ShotsWarning, match="1000"):
        got = executor(server, TN1).run_circuit_sync(
            QuantumScript([qml.RX(0.3, 0)], [qml.expval(qml.Z(0))]))
    assert abs(got - np.cos(0.3)) < 5 / np.sqrt(1000)
    assert server.jobs()[0]["shots"] == 1000


def test_cost_estimate_in_metadata(server):
    ex = executor(server, FORTE, price={"per_task": 0.3, "per_shot": 0.001})
    result = ex.execute([QuantumScript([qml.RX(0.3, 0)], [qml.expval(qml.Z(0)),
                                                           qml.expval(qml.X(0))], shots=500)])
    # two tasks (Z and X bases) of 500 shots each
    assert result.metadata.cost == pytest.approx(2 * 0.3 + 1000 * 0.001)
    assert executor(server).execute(
        [QuantumScript([qml.H(0)], [qml.probs(wires=[0])])]).metadata.cost is None


# -- Covalent's BraketQubitExecutor, only the import changed -------------------------------------


def test_covalent_braket_qubit_executor_script(server, monkeypatch):
    import boto3
    from braket.aws import AwsSession

    import qfleet as ct  # was: import covalent as ct

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", server.s3)  # boto3's own way to another S3
    boto = boto3.Session(aws_access_key_id=server.ACCESS_KEY,
                         aws_secret_access_key=server.SECRET_KEY,
                         aws_session_token=server.SESSION_TOKEN, region_name="us-east-1")
    session = AwsSession(boto, braket_client=boto.client("braket", endpoint_url=server.base))
    ex = ct.executor.BraketQubitExecutor(
        device_arn="arn:aws:braket:::device/quantum-simulator/amazon/sv1", shots=None,
        poll_timeout_seconds=60, poll_interval_seconds=0.2, max_connections=10, max_retries=3,
        max_jobs=4, aws_session=session, parallel=True, max_parallel=None,
        run_kwargs={"tags": {"team": "qfleet"}},
        s3_destination_folder=(server.BUCKET, "covalent"),
    )

    def func(x):
        qml.RX(x, wires=0)
        qml.Hadamard(wires=1)
        qml.CNOT(wires=[0, 1])
        return qml.expval(qml.Y(0) @ qml.X(1)), qml.probs(wires=[0, 1])

    plain = qml.QNode(func, qml.device("default.qubit", wires=2), shots=1000)
    circuit = ct.qelectron(plain, executors=ex)
    got, want = circuit(0.5), qml.QNode(func, qml.device("default.qubit", wires=2))(0.5)
    assert isinstance(got, type(want))  # Covalent's shots=None: exact, whatever the QNode's
    for g, w in zip(got, want, strict=True):
        assert isinstance(g, type(w))
        np.testing.assert_allclose(g, w, atol=1e-10)
    assert circuit.device.executors == [ex] and ex.max_parallel == 4 and ex.timeout == 60
    tasks = server.jobs()
    assert {t["shots"] for t in tasks} == {0} and all(t["tags"] == {"team": "qfleet"}
                                                       for t in tasks)
    assert all(t["outputS3Directory"].startswith("covalent/") for t in tasks)
    blob = pickle.dumps(ex)
    assert server.SECRET_KEY.encode() not in blob and server.SESSION_TOKEN.encode() not in blob


# -- kill -9, then re-attached by task ARN ------------------------------------------------------


def test_kill_9_then_reattached_by_task_arn(server, tmp_path, monkeypatch):
    """A durable job whose process is killed after Braket accepted its tasks is taken over
    by this process, which re-attaches to those tasks by ARN: nothing is submitted again,
    and no secret is in the job store."""
    home = tmp_path / "qfleet-home"
    monkeypatch.setenv("QFLEET_HOME", str(home))
    monkeypatch.setenv("QFLEET_CONFIG", os.devnull)
    server.control("faults", {"hold_jobs": True})  # the tasks stay queued until the kill
    shots = 3000
    code = f"""
        import json, time
        import qfleet as qf
        ex = qf.executor.BraketExecutor(**{server.executor_fields!r})
        es = qf.ExecutionSession({RY_QASM!r}, qf.ExecutionPreferences(num_shots={shots},
                                                                       backend=ex))
        job = es.submit_sample([{{"t": t}} for t in {ANGLES!r}])
        print(json.dumps({{"id": job.id}}), flush=True)
        time.sleep(300)
    """
    job_id, remote_ids = submit_then_kill(
        code, lambda: {t["id"]: t["status"] for t in server.jobs()}, "QUEUED",
        expected_jobs=len(ANGLES))

    # This process takes the job over: the secret comes from its own config file.
    config = tmp_path / "config.toml"
    config.write_text(textwrap.dedent(f"""
        [executors.BraketExecutor]
        aws_secret_access_key = "{server.SECRET_KEY}"
        aws_session_token = "{server.SESSION_TOKEN}"
    """))
    monkeypatch.setenv("QFLEET_CONFIG", str(config))
    forget_sessions()
    server.control("faults", {"hold_jobs": False, "job_delay": 1.0})  # still running at attach
    assert_reattached(job_id, "sample", shots, remote_ids, server.jobs, "COMPLETED")
    stored = b"".join(p.read_bytes() for p in Path(home).rglob("*") if p.is_file())
    assert remote_ids[0].encode() in stored  # the store holds the task ARNs...
    assert server.SECRET_KEY.encode() not in stored  # ...and no secret
    assert server.SESSION_TOKEN.encode() not in stored
