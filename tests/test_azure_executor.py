"""AzureExecutor through the real azure-quantum SDK against a local Azure Quantum stand-in
(tests/standins/azure_quantum.py: https on 127.0.0.1 with a certificate made here) and Azurite
(the Azure Storage emulator, from the repository's package.json: ``npm ci``).

The SDK signs in with a service principal (Entra ID token endpoint), asks ARM for the
workspace, reads providerStatus, gets SAS URIs, uploads the input blobs to Azurite, creates
jobs, polls them and downloads the result blobs, exactly as against Azure.
"""

from __future__ import annotations

import asyncio
import json
import os
import textwrap
import time

import numpy as np
import pennylane as qml
import pytest
from everyday import CASES, check_case
from pennylane.tape import QuantumScript
from standins.azure_quantum import AzureStack, azurite_command
from standins.helpers import (
    ANGLES,
    RY_QASM,
    SHOTS,
    X,
    assert_close,
    assert_reattached,
    exact,
    qnode,
    run_without_extra,
    submit_then_kill,
    wait_for,
)

from qfleet.circuits.ionq import (
    IONQ_GATES,
    counts_from_probabilities,
    histogram_bitstrings,
    to_ionq_circuit,
)
from qfleet.circuits.qasm import QASM2_GATES
from qfleet.errors import ConfigError, ExecutorError, ExecutorTimeoutError
from qfleet.executors import AzureCredential, AzureExecutor
from qfleet.executors.azure import (
    AzureAuthenticationError,
    AzureJobError,
    AzureTargetError,
    forget_workspaces,
)

QUANTINUUM, IONQ = "quantinuum.sim.h2-1e", "ionq.simulator"
RESOURCE_ID = (f"/subscriptions/{AzureStack.SUBSCRIPTION}/resourceGroups/rg/providers/"
               f"Microsoft.Quantum/Workspaces/ws")


# -- the stack: Azurite + the stand-in ---------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    pytest.importorskip("azure.quantum")
    pytest.importorskip("qiskit_aer")
    pytest.importorskip("cryptography")
    if azurite_command() is None or not (os.environ.get("AZURITE_BLOB") or _has_node()):
        message = ("Azurite is not installed: run `npm ci --no-audit --no-fund` in the "
                   "repository root (Node.js >= 18)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    started = AzureStack(tmp_path_factory.mktemp("azure-stack")).start()
    patch = pytest.MonkeyPatch()
    for key, value in started.env.items():
        patch.setenv(key, value)
    for key in ("AZURE_QUANTUM_CONNECTION_STRING", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_ID",
                "AZURE_TENANT_ID", "AZURE_AUTHORITY_HOST"):
        patch.delenv(key, raising=False)
    try:
        yield started
    finally:
        forget_workspaces()
        patch.undo()
        started.stop()


def _has_node() -> bool:
    import shutil

    return shutil.which("node") is not None


@pytest.fixture
def server(stack):
    yield from stack.fresh(forget_workspaces)


def credential(stack, **kwargs) -> AzureCredential:
    fields = {"tenant_id": stack.TENANT, "client_id": stack.CLIENT_ID,
              "client_secret": stack.CLIENT_SECRET, "resource_id": stack.resource_id, **kwargs}
    return AzureCredential(**fields)


def executor(stack, target=IONQ, **kwargs) -> AzureExecutor:
    fields = {"backend_name": target, "credentials": credential(stack), "location": "eastus",
              "arm_endpoint": stack.base, "authority": stack.base, "seed": 7, **kwargs}
    return AzureExecutor(**fields)


# -- both targets vs default.qubit ------------------------------------------------------------


@pytest.mark.parametrize("target,fmt", [(QUANTINUUM, "honeywell.openqasm.v1"),
                                        (IONQ, "ionq.circuit.v1")])
def test_qnode_on_each_target_matches_default_qubit(server, target, fmt):
    circuit = qnode(executor(server, target))
    assert_close(circuit(X), exact(X))
    assert_close(circuit(X * 0.5), exact(X * 0.5))
    meta = circuit.last_metadata
    assert meta.backend == target and meta.executor == "AzureExecutor"
    # X(1) and Y(0) do not commute with Z(0)Z(1): two circuits, one Azure job each
    assert len(meta.job_ids) == 2
    jobs = {job["id"]: job for job in server.jobs()}
    assert set(meta.job_ids) <= set(jobs) and len(jobs) == 4
    for job_id in meta.job_ids:
        job = jobs[job_id]
        assert job["target"] == target and job["inputDataFormat"] == fmt
        assert job["status"] == "Succeeded" and job["inputParams"]["shots"] == SHOTS
        assert job["name"] == "qfleet" and job["tags"] == ["qfleet"]


@pytest.mark.parametrize("target", [QUANTINUUM, IONQ])
def test_samples_counts_probs_and_shot_vectors_have_default_qubits_structure(server, target):
    ex = executor(server, target)
    ops = [qml.RX(0.3, "a"), qml.RY(1.2, "b"), qml.CNOT(["a", "b"])]
    tape = QuantumScript(ops, [qml.sample(wires=["b", "a"]), qml.counts(wires=["a"]),
                               qml.probs(wires=["a", "b"]), qml.expval(qml.X("b"))],
                         shots=[300, 500])
    got = ex.run_circuit_sync(tape)
    want = qml.execute([tape], qml.device("default.qubit", seed=3))[0]
    assert isinstance(got, tuple) and len(got) == 2
    for got_bin, want_bin, shots in zip(got, want, (300, 500)):
        samples, counts, probs, x = got_bin
        assert samples.shape == want_bin[0].shape == (shots, 2) and samples.dtype.kind == "i"
        assert sum(counts.values()) == shots and set(counts) <= {"0", "1"}
        assert probs.shape == (4,) and np.isclose(probs.sum(), 1)
        exact_probs = qml.execute([tape.copy(shots=None, measurements=[
            qml.probs(wires=["a", "b"])])], qml.device("default.qubit"))[0]
        assert np.all(np.abs(probs - exact_probs) < 5 * np.sqrt(0.25 / shots) + 1e-9)
        assert abs(x) <= 1.0 and isinstance(x, np.floating)
        # sample columns are (b, a): b = 1 only where probability allows
        p_b1 = np.mean(samples[:, 0])
        assert abs(p_b1 - (exact_probs[1] + exact_probs[3])) < 5 * np.sqrt(0.25 / shots)


def test_gradient(server):
    circuit = qnode(executor(server, IONQ), shots=3000)
    cost = lambda x: qml.math.sum(qml.math.stack(circuit(x)))  # noqa: E731
    before = len(server.jobs())
    grad = qml.grad(cost)(X)
    jobs = server.jobs()[before:]
    # forward pass (2 circuits) + parameter shift: 2 shifts x 3 parameters x 2 circuits
    assert len(jobs) == 2 + 2 * len(X) * 2
    assert all(job["status"] == "Succeeded" for job in jobs)
    want = qml.grad(lambda x: qml.math.sum(qml.math.stack(exact(x))))(X)
    np.testing.assert_allclose(grad, want, atol=3 * 5 / np.sqrt(2 * 3000))


# -- everyday circuits (broadcasting, mid-circuit measurements, Hermitian, ...) ---------------

EVERYDAY_SHOTS = 4000


@pytest.mark.parametrize("target", [QUANTINUUM, IONQ])
@pytest.mark.parametrize("name", sorted(CASES))
def test_everyday_circuits_match_default_qubit(server, target, name):
    check_case(name, executor(server, target), shots=EVERYDAY_SHOTS)


@pytest.mark.parametrize("target", [QUANTINUUM, IONQ])
def test_bit_order_is_the_tapes_wire_order(server, target):
    tape = QuantumScript([qml.X("b"), qml.X("c")],
                         [qml.probs(wires=["a", "b", "c"]), qml.counts(wires=["c", "a"]),
                          qml.sample(wires=["b", "a"])], shots=50)
    probs, counts, samples = executor(server, target).run_circuit_sync(tape)
    assert probs[0b011] == 1 and counts == {"10": 50}
    assert samples.shape == (50, 2) and (samples == [1, 0]).all()


def test_broadcast_tape_runs_one_job_per_parameter_set(server):
    tape = QuantumScript([qml.RX(np.array([0.1, 0.9, 2.1]), 0), qml.CNOT([0, 1])],
                         [qml.expval(qml.Z(1)), qml.probs(wires=[0, 1])], shots=2000)
    for target in (QUANTINUUM, IONQ):
        result = executor(server, target).execute([tape])
        assert len(result.metadata.job_ids) == 3
        z1, probs = result[0]
        assert z1.shape == (3,) and probs.shape == (3, 4)
        np.testing.assert_allclose(z1, np.cos([0.1, 0.9, 2.1]), atol=5 / np.sqrt(2000))


def test_reattach_by_job_ids_with_several_circuits_per_tape(server):
    ex = executor(server, QUANTINUUM)
    tapes = [QuantumScript([qml.RX(np.array([0.3, 1.2]), 0)],
                           [qml.expval(qml.Z(0)), qml.expval(qml.X(0))], shots=1000)]
    first = ex.execute(tapes)
    assert len(first.metadata.job_ids) == 4  # 2 parameter sets x 2 bases
    again = executor(server, QUANTINUUM).results_of(tapes, first.metadata.job_ids)
    np.testing.assert_allclose(np.asarray(again[0]), np.asarray(first[0]))
    assert len(server.jobs()) == 4


# -- job lifecycle ----------------------------------------------------------------------------


def test_batch_submit_returns_once_the_jobs_exist_and_reattaches_by_id(server):
    server.control("faults", {"hold_jobs": True})
    ex = executor(server, QUANTINUUM)
    tapes = [QuantumScript([qml.RX(0.7, 0)], [qml.expval(qml.Z(0))], shots=1000),
             QuantumScript([qml.RY(0.2, 0)], [qml.probs(wires=[0])], shots=500)]

    async def submit():
        return await ex.batch_submit(tapes)

    handle = asyncio.run(submit())
    jobs = server.jobs()
    assert sorted(job["id"] for job in jobs) == sorted(handle.job_ids)
    assert all(job["status"] == "Waiting" for job in jobs)

    # Another executor in a "new process" (no workspace cached) picks the jobs up by id.
    forget_workspaces()
    fresh = executor(server, QUANTINUUM)
    server.control("faults", {"hold_jobs": False})
    results = fresh.results_of(tapes, handle.job_ids)
    assert results.metadata.job_ids == handle.job_ids
    assert abs(results[0] - np.cos(0.7)) < 5 / np.sqrt(1000)
    assert results[1].shape == (2,)
    assert abs(results[1][0] - np.cos(0.1) ** 2) < 5 * 0.5 / np.sqrt(500)
    assert len(server.jobs()) == 2  # nothing was submitted again

    with pytest.raises(ExecutorError, match="3 Azure job ids for 2 jobs of this batch"):
        fresh.reattach(tapes, [*handle.job_ids, "extra"])


def test_cancel_cancels_the_azure_jobs(server):
    server.control("faults", {"hold_jobs": True})
    circuit = qnode(executor(server, IONQ))
    future = circuit.run_later(X)
    assert wait_for(lambda: len(server.jobs()) == 2)
    assert future.cancel()
    assert wait_for(lambda: [j["status"] for j in server.jobs()] == ["Cancelled"] * 2)
    job_id = server.jobs()[0]["id"]
    assert str(circuit.executor.workspace().get_job(job_id).details.status) in (
        "Cancelled", "JobStatus.CANCELLED")


def test_timeout_cancels_the_azure_jobs(server):
    server.control("faults", {"hold_jobs": True})
    circuit = qnode(executor(server, QUANTINUUM, timeout=1.0))
    with pytest.raises(ExecutorTimeoutError):
        circuit(X)
    assert wait_for(lambda: [j["status"] for j in server.jobs()] == ["Cancelled"] * 2)


def test_failed_job_raises_with_the_service_message(server):
    message = "Error compiling the circuit: qubit 3 is out of calibration (stand-in failure)"
    server.control("faults", {"fail_jobs": [{"code": "QuantinuumCompileError",
                                             "message": message}],
                              "job_delay": 2.0})
    circuit = qnode(executor(server, QUANTINUUM))
    with pytest.raises(AzureJobError) as info:
        circuit(X)
    error = info.value
    assert message in str(error) and "QuantinuumCompileError" in str(error)
    assert error.code == "QuantinuumCompileError" and not error.transient
    jobs = {job["id"]: job for job in server.jobs()}
    assert jobs[error.job_id]["status"] == "Failed"
    # the other job of the batch was cancelled, not left running
    assert wait_for(lambda: sorted(j["status"] for j in server.jobs()) == ["Cancelled", "Failed"])
    server.control("faults", {"job_delay": 0.0})
    assert_close(circuit(X), exact(X))  # the next batch runs normally


# -- credentials ------------------------------------------------------------------------------


def test_wrong_client_secret_is_a_clear_auth_error(server):
    wrong = "definitely-not-the-client-secret-42"
    circuit = qnode(executor(server, credentials=credential(server, client_secret=wrong)))
    with pytest.raises(AzureAuthenticationError) as info:
        circuit(X)
    message = str(info.value)
    assert "AADSTS7000215" in message and "Invalid client secret" in message
    assert wrong not in message and server.CLIENT_SECRET not in message
    assert "[executors.AzureExecutor.credentials]" in message and not info.value.transient
    assert server.jobs() == []


def test_expired_client_secret_is_a_clear_auth_error(server):
    server.control("faults", {"expire_secret": True})
    with pytest.raises(AzureAuthenticationError, match="AADSTS7000222.*expired") as info:
        qnode(executor(server))(X)
    assert "Certificates & secrets" in str(info.value)
    server.control("faults", {"expire_secret": False})
    assert_close(qnode(executor(server))(X), exact(X))  # a renewed secret works again


def test_connection_string_with_the_workspace_api_key(server):
    ex = AzureExecutor(backend_name=QUANTINUUM, connection_string=server.connection_string,
                       quantum_endpoint=server.base + "/")
    assert server.API_KEY not in repr(ex)
    assert_close(qnode(ex)(X), exact(X))
    tokens = [r for r in server.control("stats")["requests"] if "oauth2" in r[1]]
    assert tokens == []  # the API key, no Entra ID token

    wrong = server.connection_string.replace(server.API_KEY, "wrong-key-0123456789")
    bad = AzureExecutor(backend_name=QUANTINUUM, connection_string=wrong,
                        quantum_endpoint=server.base + "/")
    with pytest.raises(AzureAuthenticationError, match="Access keys") as info:
        qnode(bad)(X)
    assert "wrong-key-0123456789" not in str(info.value)


def test_azure_credential_chain_with_resource_id(server, monkeypatch):
    # DefaultAzureCredential -> EnvironmentCredential (the variables an `az login`-less CI uses)
    monkeypatch.setenv("AZURE_TENANT_ID", server.TENANT)
    monkeypatch.setenv("AZURE_CLIENT_ID", server.CLIENT_ID)
    monkeypatch.setenv("AZURE_CLIENT_SECRET", server.CLIENT_SECRET)
    ex = AzureExecutor(backend_name=IONQ, resource_id=server.resource_id,
                       arm_endpoint=server.base, authority=server.base, seed=1)
    assert_close(qnode(ex)(X), exact(X))


def test_no_workspace_is_a_config_error():
    ex = AzureExecutor(backend_name=IONQ, shots=10)
    tape = QuantumScript([qml.H(0)], [qml.expval(qml.Z(0))])
    with pytest.raises(ConfigError, match="resource_id=.*az login"):
        ex.run_circuit_sync(tape)


# -- targets ----------------------------------------------------------------------------------


@pytest.mark.parametrize("target,problem,transient", [
    ("ionq.qpu.aria-1", "is unavailable now", True),
    ("rigetti.sim.qvm", "takes only formats qfleet does not send", False),
    ("ionq.qpu.forte-1", "is not in workspace 'qfleet-ws'", False),
])
def test_unusable_target_lists_the_usable_ones(server, target, problem, transient):
    with pytest.raises(AzureTargetError) as info:
        qnode(executor(server, target))(X)
    error = info.value
    assert problem in str(error) and error.transient is transient
    assert error.usable == ("ionq.simulator", "quantinuum.sim.h2-1e", "quantinuum.sim.h2-1sc")
    assert "usable targets in this workspace: ionq.simulator, quantinuum.sim.h2-1e" in str(error)
    assert server.jobs() == []


# -- throttling and outages -------------------------------------------------------------------


def test_429_and_503_with_retry_after_are_retried(server):
    workspace = r"/workspaces/qfleet-ws"
    server.control("faults", {"http_errors": [
        {"method": "PUT", "path": workspace + r"/jobs/[^/]+$", "codes": [429, 503],
         "retry_after": 1},
        {"method": "GET", "path": workspace + r"/jobs/[^/]+$", "codes": [503], "retry_after": 1},
        {"method": "POST", "path": workspace + r"/storage/sasUri$", "codes": [429],
         "retry_after": 1},
    ]})
    ex = executor(server, IONQ)
    tape = QuantumScript([qml.RX(0.5, 0)], [qml.expval(qml.Z(0))], shots=2000)
    started = time.monotonic()
    result = ex.run_circuit_sync(tape)
    assert time.monotonic() - started >= 2.0  # Retry-After was honoured
    assert abs(result - np.cos(0.5)) < 5 / np.sqrt(2000)
    seen = server.control("stats")["requests"]
    puts = [status for method, path, status in seen if method == "PUT"]
    polls = [status for method, path, status in seen if method == "GET" and "/jobs/" in path]
    sas = [status for method, path, status in seen if path.endswith("/storage/sasUri")]
    assert puts == [429, 503, 200] and polls[:2] == [503, 200] and sas[:2] == [429, 200]


def test_a_service_that_stays_unavailable_is_a_transient_error(server):
    server.control("faults", {"http_errors": [
        {"method": "POST", "path": r"/storage/sasUri$", "codes": [503] * 11, "retry_after": 0},
    ]})
    tape = QuantumScript([qml.RX(0.5, 0)], [qml.expval(qml.Z(0))], shots=100)
    with pytest.raises(ExecutorError, match="503") as info:
        executor(server).run_circuit_sync(tape)
    assert info.value.transient and not isinstance(info.value, AzureAuthenticationError)


# -- configuration, pickling ------------------------------------------------------------------


def test_config_section_with_credentials_table(server, isolated_config):
    from qfleet.config import load_config, masked

    isolated_config.write_text(textwrap.dedent(f"""
        [executors.AzureExecutor]
        backend_name = "{QUANTINUUM}"
        location = "East US"
        arm_endpoint = "{server.base}"
        authority = "{server.base}"

        [executors.AzureExecutor.credentials]
        tenant_id = "{server.TENANT}"
        client_id = "{server.CLIENT_ID}"
        client_secret = "{server.CLIENT_SECRET}"
        resource_id = "{server.resource_id}"
    """))
    ex = AzureExecutor()
    assert ex.backend_name == QUANTINUUM and ex.location == "eastus"
    assert ex.credentials.client_secret.get_secret_value() == server.CLIENT_SECRET
    assert server.CLIENT_SECRET not in repr(ex)
    shown = masked(load_config())["executors"]["AzureExecutor"]
    assert shown["credentials"]["client_secret"] == "**********"
    assert shown["credentials"]["client_id"] == server.CLIENT_ID
    assert AzureExecutor(backend_name=IONQ).backend_name == IONQ  # an explicit argument wins
    assert_close(qnode(ex)(X), exact(X))


def test_a_qelectron_cloudpickles_without_secrets(server, monkeypatch):
    cloudpickle = pytest.importorskip("cloudpickle")
    circuit = qnode(executor(server, IONQ))
    circuit(X)  # per-process state (workspace, token) exists now
    blob = cloudpickle.dumps(circuit)
    assert server.CLIENT_SECRET.encode() not in blob
    clone = cloudpickle.loads(blob)
    assert clone.executor.credentials.client_secret is None
    monkeypatch.setenv("AZURE_CLIENT_SECRET", server.CLIENT_SECRET)  # where the secret lives
    forget_workspaces()
    assert_close(clone(X), exact(X))

    conn = AzureExecutor(backend_name=IONQ, connection_string=server.connection_string)
    assert server.API_KEY.encode() not in cloudpickle.dumps(conn)


def test_invalid_configuration_is_rejected_with_the_fix():
    with pytest.raises(ValueError, match="not an Azure Quantum workspace resource ID"):
        AzureExecutor(backend_name=IONQ, resource_id="/subscriptions/x/my-workspace")
    with pytest.raises(ValueError, match="not both"):
        AzureExecutor(backend_name=IONQ, connection_string="x", credentials=AzureCredential(
            tenant_id="t", client_id="c", client_secret="s", resource_id=RESOURCE_ID))
    with pytest.raises(ValueError, match="shots on the QNode"):
        AzureExecutor(backend_name=IONQ, input_params={"shots": 10})
    with pytest.raises(ValueError, match="needs shots"):
        AzureExecutor(backend_name=IONQ).run_circuit_sync(
            QuantumScript([qml.H(0)], [qml.sample(wires=[0])]))
    caps = AzureExecutor(backend_name=IONQ).capabilities
    assert not caps.analytic and caps.max_wires == 29 and "state" not in caps.measurements
    # shots-only: analytic tapes run with Azure's default shots (the plan warns)
    assert caps.default_shots == 500 and not caps.mid_circuit_measurements
    assert caps.native_gates == IONQ_GATES
    assert AzureExecutor(backend_name=QUANTINUUM).capabilities.native_gates == QASM2_GATES


def test_import_qfleet_without_the_azure_extra():
    stdout = run_without_extra(
        ("azure",), "azure.",
        f'AzureExecutor(backend_name="ionq.simulator", shots=10, resource_id="{RESOURCE_ID}")',
        "qml.tape.QuantumScript([qml.H(0)], [qml.expval(qml.Z(0))])")
    assert "ERROR" in stdout and "pip install 'qfleet[azure]'" in stdout


# -- translation (no service) -----------------------------------------------------------------


def _random_tape(seed: int) -> QuantumScript:
    rng = np.random.default_rng(seed)
    ops = [qml.Hadamard(0), qml.Rot(*rng.uniform(-3, 3, 3), wires=1), qml.CRY(0.7, [0, 2]),
           qml.PhaseShift(rng.uniform(-3, 3), wires=2), qml.IsingXX(0.4, [1, 2]),
           qml.adjoint(qml.S(0)), qml.SX(1), qml.Toffoli([0, 1, 2]), qml.CZ([2, 0]),
           qml.U3(*rng.uniform(-3, 3, 3), wires=0), qml.SWAP([0, 1]), qml.IsingZZ(1.1, [0, 2]),
           qml.MultiControlledX(wires=[2, 0, 1]), qml.QFT(wires=[0, 1, 2])]
    rng.shuffle(ops)
    return QuantumScript(ops, [qml.probs(wires=[2, 0, 1])])


@pytest.mark.parametrize("seed", range(4))
def test_ionq_circuit_has_default_qubits_probabilities(seed):
    pytest.importorskip("qiskit")
    from standins.azure_quantum import run_ionq  # the stand-in's own reading of IonQ's format

    tape = _random_tape(seed)
    circuit = to_ionq_circuit(tape)
    assert circuit["qubits"] == 3 and circuit["gateset"] == "qis"
    histogram = run_ionq(circuit, 1, exact=True)["histogram"]
    probabilities = histogram_bitstrings(histogram, 3)  # qubit i = tape.wires[i]
    want = qml.execute([tape], qml.device("default.qubit"))[0]
    got = np.zeros(8)
    position = [list(tape.wires).index(w) for w in (2, 0, 1)]  # the probs' wire order
    for bits, p in probabilities.items():
        got[int("".join(bits[i] for i in position), 2)] += p
    np.testing.assert_allclose(got, want, atol=1e-10)


def test_histograms_become_counts():
    assert histogram_bitstrings({"1": 0.25, "6": 0.75}, 3) == {"100": 0.25, "011": 0.75}
    exact_counts = counts_from_probabilities({"00": 0.3333, "11": 0.6667}, 3, sample=False)
    assert exact_counts == {"00": 1, "11": 2}
    drawn = counts_from_probabilities({"0": 0.5, "1": 0.5}, 1000, sample=True,
                                      rng=np.random.default_rng(1))
    assert sum(drawn.values()) == 1000 and 400 < drawn["0"] < 600
    with pytest.raises(ValueError, match="add up to"):
        counts_from_probabilities({"0": 0.2}, 10, sample=True)


def test_ionq_translation_needs_computational_basis_measurements():
    from qfleet.errors import UnsupportedCircuitError

    with pytest.raises(UnsupportedCircuitError, match="computational basis"):
        to_ionq_circuit(QuantumScript([qml.H(0)], [qml.expval(qml.X(0))]))


def test_ionq_hardware_histogram_is_turned_back_into_its_counts(server):
    server.control("faults", {"availability": {"ionq.qpu.aria-1": "Available"}})
    ex = executor(server, "ionq.qpu.aria-1")
    tape = QuantumScript([qml.RX(1.0, 0), qml.CNOT([0, 1])], [qml.counts(wires=[0, 1])],
                         shots=777)
    result = ex.execute([tape])
    counts = result[0]
    job = ex.workspace().get_job(result.metadata.job_ids[0])
    histogram = json.loads(job.download_data(job.details.output_data_uri))["histogram"]
    # hardware: probabilities are counts / shots; qfleet recovers exactly those counts
    want = {format(int(k), "02b")[::-1]: round(p * 777) for k, p in histogram.items()}
    assert {k: int(v) for k, v in counts.items()} == want and sum(counts.values()) == 777


# -- kill -9, then re-attached by Azure job id ----------------------------------------------



@pytest.mark.parametrize("kind,target", [("sample", QUANTINUUM), ("estimate", IONQ)])
def test_kill_9_then_reattached_by_azure_job_ids(server, kind, target, tmp_path, monkeypatch):
    """A durable job whose process is killed after Azure accepted its jobs is taken over by
    another process, which re-attaches to those jobs by id: nothing is submitted again.
    ``estimate`` of I + 2Z + X is two circuits per parameter set (Z and X bases), one Azure
    job each."""

    monkeypatch.setenv("QFLEET_HOME", str(tmp_path / "qfleet-home"))
    monkeypatch.setenv("QFLEET_CONFIG", os.devnull)
    server.control("faults", {"hold_jobs": True})  # the jobs stay waiting until the kill
    shots = 3000
    submit = ("es.submit_sample(sets)" if kind == "sample" else
              "es.submit_estimate(qf.Pauli.I(0) + 2 * qf.Pauli.Z(0) + qf.Pauli.X(0), sets)")
    code = f"""
        import json, time
        import qfleet as qf
        from qfleet.executors import AzureCredential
        cred = AzureCredential(tenant_id={server.TENANT!r}, client_id={server.CLIENT_ID!r},
                               client_secret={server.CLIENT_SECRET!r},
                               resource_id={server.resource_id!r})
        ex = qf.executor.AzureExecutor(backend_name={target!r}, credentials=cred,
                                       location="eastus", arm_endpoint={server.base!r},
                                       authority={server.base!r}, seed=7)
        es = qf.ExecutionSession({RY_QASM!r}, qf.ExecutionPreferences(num_shots={shots},
                                                                       backend=ex))
        sets = [{{"t": t}} for t in {ANGLES!r}]
        job = {submit}
        print(json.dumps({{"id": job.id}}), flush=True)
        time.sleep(300)
    """
    per_set = 1 if kind == "sample" else 2
    job_id, remote_ids = submit_then_kill(
        code, lambda: {j["id"]: j["status"] for j in server.jobs()}, "Waiting",
        expected_jobs=per_set * len(ANGLES),
    )
    assert sorted(j["id"] for j in server.jobs()) == sorted(remote_ids)

    # This process takes the job over. The executor is rebuilt from the job store, which
    # holds no secret: the service principal comes from this process's config file. (The
    # whole credentials table, not only client_secret: the job store drops `credentials`
    # altogether today, see test_job_store_spec_keeps_the_azure_credentials_but_the_secret.)
    config = tmp_path / "config.toml"
    config.write_text(textwrap.dedent(f"""
        [executors.AzureExecutor.credentials]
        tenant_id = "{server.TENANT}"
        client_id = "{server.CLIENT_ID}"
        client_secret = "{server.CLIENT_SECRET}"
        resource_id = "{server.resource_id}"
    """))
    monkeypatch.setenv("QFLEET_CONFIG", str(config))
    forget_workspaces()
    server.control("faults", {"hold_jobs": False, "job_delay": 1.0})  # still running at attach
    assert_reattached(job_id, kind, shots, remote_ids, server.jobs, "Succeeded")


def test_job_store_spec_keeps_the_azure_credentials_but_the_secret(monkeypatch):
    from qfleet.jobs.job import executor_from_spec, executor_spec

    monkeypatch.setenv("QFLEET_CONFIG", os.devnull)
    cred = AzureCredential(tenant_id="tenant-1", client_id="client-1", client_secret="s3cret",
                           resource_id=RESOURCE_ID)
    ex = AzureExecutor(backend_name=IONQ, credentials=cred, location="eastus")
    spec = executor_spec(ex)
    assert "s3cret" not in json.dumps(spec)
    rebuilt = executor_from_spec(spec)
    assert rebuilt.credentials is not None
    assert (rebuilt.credentials.tenant_id, rebuilt.credentials.client_id,
            rebuilt.credentials.resource_id) == ("tenant-1", "client-1", RESOURCE_ID)
    assert rebuilt.credentials.client_secret is None
