"""Every executor kind, clusters and qelectrons on them cloudpickle into a fresh process.

Workflow engines (Covalent, dask) ship executors to workers with cloudpickle: the
configuration travels, tokens (SecretStr) never do (the worker takes them from its own
config file or environment), and per-process resources (pools, sockets, clusters) are
never pickled. All pickles are loaded by one fresh interpreter (one start, not one per
kind), which also runs what can run offline.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap

import cloudpickle
import numpy as np
import pennylane as qml
import pytest

import qfleet as qf
from qfleet.executors import (
    AzureCredential,
    AzureExecutor,
    BraketLocalExecutor,
    ClassiqExecutor,
    DaskExecutor,
    Executor2300,
    LocalExecutor,
    QiskitExecutor,
)

SECRET = "tok-3f9a1c-never-pickle-me"
AZURE_WORKSPACE = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/"
    "Microsoft.Quantum/Workspaces/ws"
)
WORKER_TOKEN = "token-from-the-worker-env"
TAPE = qml.tape.QuantumScript(
    [qml.RX(0.4, 0), qml.CNOT([0, 1]), qml.RY(-0.2, 1)],
    [qml.expval(qml.Z(0) @ qml.Z(1)), qml.probs(wires=[1])],
)


def _braket_transformed():
    @qml.transforms.merge_rotations
    @qf.qelectron(
        executors=[BraketLocalExecutor(name="sv"), LocalExecutor(name="local")],
        name="braket-cluster",
    )
    @qml.qnode(qml.device("default.qubit", wires=2))
    def circuit(x):
        qml.RX(x, 0)
        qml.RX(x, 0)
        qml.CNOT([0, 1])
        return qml.expval(qml.Z(1))

    return circuit


def executors():
    """kind -> (object, whether the fresh process runs TAPE on it)."""
    return {
        "LocalExecutor": (LocalExecutor(name="loc", device="lightning.qubit", seed=3), True),
        "QuantumCluster": (
            qf.QuantumCluster(
                executors=[LocalExecutor(name="a"), BraketLocalExecutor(name="b")],
                selector="cyclic",
            ),
            True,
        ),
        "DaskExecutor": (
            DaskExecutor(address="tcp://127.0.0.1:8786", device="default.qubit", chunk_size=4),
            False,  # needs a scheduler; tests/test_dask.py runs one through a pickle
        ),
        "BraketLocalExecutor": (
            BraketLocalExecutor(device="braket_dm", noise_model={"depolarizing": 0.01}),
            True,
        ),
        "Executor2300": (Executor2300(address="tcp://127.0.0.1:5999", shots=100, retries=1), False),
        "QiskitExecutor": (
            QiskitExecutor(device="sampler", backend="ibm_brisbane", token=SECRET,
                           instance="crn:inst"),
            False,
        ),
        "ClassiqExecutor": (
            ClassiqExecutor(backend_preferences="classiq/simulator", token=SECRET,
                            host="https://classiq.example", num_shots=500),
            False,
        ),
        "AzureExecutor": (
            AzureExecutor(
                backend_name="quantinuum.sim.h1-1e",
                location="eastus",
                credentials=AzureCredential(
                    tenant_id="tenant", client_id="client", client_secret=SECRET,
                    resource_id=AZURE_WORKSPACE,
                ),
            ),
            False,
        ),
    }


WORKER = textwrap.dedent(
    """
    import base64, json, sys
    import cloudpickle
    import numpy as np

    blobs = json.load(open(sys.argv[1]))
    tape = cloudpickle.loads(base64.b64decode(blobs.pop("__tape__")))
    electron = cloudpickle.loads(base64.b64decode(blobs.pop("__electron__")))
    out = {}
    for kind, (blob, runs) in blobs.items():
        obj = cloudpickle.loads(base64.b64decode(blob))
        info = {"type": type(obj).__name__, "config": obj.model_dump(mode="json")}
        token = getattr(obj, "token", "no-field")
        info["token"] = None if token is None else ("no-field" if token == "no-field" else "set")
        if "token" in type(obj).model_fields:
            info["worker_token"] = obj.secret("token")
        if runs:
            result = obj.execute([tape])[0]
            info["result"] = [float(result[0]), [float(p) for p in result[1]]]
        out[kind] = info
    out["__electron__"] = {
        "type": type(electron).__name__,
        "value": float(electron(0.3)),
        "names": [t.tape_transform.__name__ for t in electron.compile_pipeline],
    }
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """Pickle everything here; load and use it in one fresh interpreter."""
    tmp = tmp_path_factory.mktemp("pickles")
    originals = executors()
    blobs = {kind: cloudpickle.dumps(obj) for kind, (obj, _) in originals.items()}
    payload = {
        kind: [base64.b64encode(b).decode(), originals[kind][1]] for kind, b in blobs.items()
    }
    payload["__tape__"] = base64.b64encode(cloudpickle.dumps(TAPE)).decode()
    payload["__electron__"] = base64.b64encode(cloudpickle.dumps(_braket_transformed())).decode()
    path = tmp / "pickles.json"
    path.write_text(json.dumps(payload))
    env = {k: v for k, v in os.environ.items() if not k.startswith("QFLEET_") and k != "PYTHONPATH"}
    env.update(
        QFLEET_CONFIG=str(tmp / "none.toml"),
        QFLEET_QISKITEXECUTOR_TOKEN=WORKER_TOKEN,
        QFLEET_CLASSIQEXECUTOR_TOKEN=WORKER_TOKEN,
    )
    done = subprocess.run(
        [sys.executable, "-c", WORKER, str(path)],
        capture_output=True, text=True, cwd=tmp, env=env, timeout=180,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return originals, blobs, json.loads(done.stdout.strip().splitlines()[-1])


def reference():
    return qml.execute([TAPE], qml.device("default.qubit"))[0]


@pytest.mark.parametrize("kind", list(executors()))
def test_executor_round_trips_into_a_fresh_process(fresh, kind):
    originals, blobs, out = fresh
    original, runs = originals[kind]
    got = out[kind]
    assert got["type"] == kind
    want = original.model_dump(mode="json")
    # secrets are the fields that do not travel
    if "token" in want:
        assert want["token"] is not None
        want["token"] = None
    if kind == "AzureExecutor":
        assert want["credentials"]["client_secret"] is not None
        want["credentials"]["client_secret"] = None
    assert got["config"] == want
    if runs:
        expval, probs = reference()
        atol = 0.05 if kind == "BraketLocalExecutor" else 1e-10  # that one is noisy
        assert np.isclose(got["result"][0], expval, atol=atol)
        np.testing.assert_allclose(got["result"][1], probs, atol=atol)


@pytest.mark.parametrize("kind", ["QiskitExecutor", "ClassiqExecutor", "AzureExecutor"])
def test_secrets_are_not_pickled(fresh, kind):
    originals, blobs, out = fresh
    original, _ = originals[kind]
    secret = original.credentials.client_secret if kind == "AzureExecutor" else original.token
    assert secret.get_secret_value() == SECRET  # still here, in this process
    assert SECRET.encode() not in blobs[kind]
    assert SECRET.encode() not in cloudpickle.dumps(qf.QuantumCluster(executors=[original]))


@pytest.mark.parametrize("kind", ["QiskitExecutor", "ClassiqExecutor"])
def test_tokens_come_from_the_worker_config(fresh, kind):
    _, _, out = fresh
    assert out[kind]["token"] is None
    assert out[kind]["worker_token"] == WORKER_TOKEN


def test_per_process_resources_are_not_pickled():
    ex = BraketLocalExecutor(parallel="process", workers=1)
    ex._runtime["pool"] = object()  # what _pool() keeps: must not travel
    clone = cloudpickle.loads(cloudpickle.dumps(ex))
    assert clone._runtime == {} and clone.model_dump() == ex.model_dump()


def test_transformed_qelectron_on_braket_cluster_round_trips(fresh):
    _, _, out = fresh
    got = out["__electron__"]
    exact = qml.QNode(
        lambda x: (qml.RX(2 * x, 0), qml.CNOT([0, 1]), qml.expval(qml.Z(1)))[-1],
        qml.device("default.qubit", wires=2),
    )
    assert got["type"] == "QElectron"
    assert np.isclose(got["value"], exact(0.3), atol=1e-10)
    assert got["names"] == ["merge_rotations"]


def test_secrets_nested_in_fields_stay_out_of_pickles():
    import pickle

    from qfleet.executors import ClassiqExecutor

    executor = ClassiqExecutor(
        backend_preferences={
            "backend_service_provider": "Azure Quantum",
            "backend_name": "ionq.simulator",
            "location": "eastus",
            "client_secret": "nested-s3cret-value",
        },
        token="top-level-t0ken",
    )
    data = pickle.dumps(executor)
    assert b"nested-s3cret-value" not in data and b"top-level-t0ken" not in data
    restored = pickle.loads(data)
    assert restored.token is None
    assert restored.backend_preferences["client_secret"] is None
    assert restored.backend_preferences["location"] == "eastus"
    # the original keeps its secrets
    assert executor.backend_preferences["client_secret"].get_secret_value() == "nested-s3cret-value"
