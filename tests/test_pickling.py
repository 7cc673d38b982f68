"""QElectrons (with transforms) cloudpickle into a fresh process and work the same there."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap

import cloudpickle
import numpy as np
import pennylane as qml
import pytest
import qelectron_pickle_helper as helper
from conftest import exact_qnode
from pennylane import numpy as pnp

import qfleet as qf
from qfleet import QElectron
from qfleet.executors import BatchResult, LocalExecutor, RunMetadata

PARAMS = [0.3, -0.8, 1.1]

WORKER = textwrap.dedent(
    """
    import json, sys
    import cloudpickle
    import pennylane as qml
    from pennylane import numpy as pnp

    try:
        import qelectron_pickle_helper  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("the helper module must not be importable in the worker")

    with open(sys.argv[1], "rb") as fh:
        circuit = cloudpickle.load(fh)
    params = pnp.array(json.loads(sys.argv[2]), requires_grad=True)
    value = circuit(params)
    first = circuit.last_metadata.executor
    grad = qml.grad(circuit)(params)
    later = circuit.run_later(params).result(30)
    print(json.dumps({
        "type": type(circuit).__name__,
        "value": float(value),
        "grad": [float(g) for g in grad],
        "later": float(later),
        "first_executor": first,
        "grad_batch": [circuit.last_metadata.executor, circuit.last_metadata.num_circuits],
    }))
    """
)


@pytest.fixture
def by_value():
    cloudpickle.register_pickle_by_value(helper)
    yield
    cloudpickle.unregister_pickle_by_value(helper)


def run_worker(tmp_path, obj, params):
    path = tmp_path / "electron.pkl"
    path.write_bytes(cloudpickle.dumps(obj))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", WORKER, str(path), json.dumps(params)],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # not tests/: the helper module is not importable there
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_transformed_qelectron_gives_same_value_and_gradient_in_a_fresh_process(
    tmp_path, by_value
):
    circuit = helper.make_circuit()
    params = pnp.array(PARAMS, requires_grad=True)
    reference = exact_qnode(helper.energy, diff_method="backprop")
    want_value, want_grad = reference(params), qml.grad(reference)(params)
    # Here, before pickling: one call moves the cyclic selector to executor "b".
    assert np.isclose(circuit(params), want_value, atol=1e-12)
    assert circuit.last_metadata.executor == "a"

    got = run_worker(tmp_path, circuit, PARAMS)

    assert got["type"] == "QElectron"
    assert np.isclose(got["value"], want_value, atol=1e-12)
    assert np.isclose(got["later"], want_value, atol=1e-12)
    np.testing.assert_allclose(got["grad"], want_grad, atol=1e-10)
    assert got["first_executor"] == "b"  # the cyclic position travelled with the pickle
    # the transforms ran in the worker: merge_rotations leaves 2 trainable gates, so the
    # gradient batch has 2 * 2 shifted tapes (params[0] and params[1] feed one RX)
    assert got["grad_batch"][1] == 4


def test_cloudpickle_round_trip_in_process_keeps_everything(by_value):
    circuit = helper.make_circuit()
    copy = cloudpickle.loads(cloudpickle.dumps(circuit))
    assert isinstance(copy, QElectron)
    assert copy.qelectron_name == "pickled"
    assert [e.label for e in copy.executor.executors] == ["a", "b"]
    params = pnp.array(PARAMS, requires_grad=True)
    np.testing.assert_allclose(copy(params), circuit(params), atol=1e-12)
    np.testing.assert_allclose(qml.grad(copy)(params), qml.grad(circuit)(params), atol=1e-10)
    names = [t.tape_transform.__name__ for t in copy.compile_pipeline]
    assert names == [t.tape_transform.__name__ for t in circuit.compile_pipeline]
    assert names == ["cancel_inverses", "merge_rotations", "drop_identities"]


def test_jax_qelectron_pickles(by_value, jax_x64):
    jax = jax_x64
    circuit = helper.make_circuit(interface="jax")
    copy = cloudpickle.loads(cloudpickle.dumps(circuit))
    params = jax.numpy.array(PARAMS)
    reference = exact_qnode(helper.energy, interface="jax", diff_method="backprop")
    np.testing.assert_allclose(jax.grad(copy)(params), jax.grad(reference)(params), atol=1e-10)


def test_pennylane_transforms_pickle_by_name():
    # Importable transforms travel as their name and come back as the same object.
    for transform in (qml.transforms.cancel_inverses, qml.transforms.merge_rotations):
        assert pickle.loads(pickle.dumps(transform)) is transform
        assert cloudpickle.loads(cloudpickle.dumps(transform)) is transform


def test_batch_results_and_metadata_pickle():
    result = LocalExecutor(name="x").execute(
        [qml.tape.QuantumScript([qml.RX(0.5, 0)], [qml.expval(qml.Z(0))])]
    )
    back = pickle.loads(pickle.dumps(result))
    assert isinstance(back, BatchResult) and isinstance(back.metadata, RunMetadata)
    assert back.metadata == result.metadata and back.metadata.executor == "x"
    assert np.isclose(back[0], np.cos(0.5))


def test_cluster_pickles_with_callable_selector():
    def last(tapes, executors):
        return executors[-1]

    cluster = qf.QuantumCluster(
        executors=[LocalExecutor(name="a"), LocalExecutor(name="z")], selector=last
    )
    copy = cloudpickle.loads(cloudpickle.dumps(cluster))
    tape = qml.tape.QuantumScript([qml.RX(0.5, 0)], [qml.expval(qml.Z(0))])
    result = copy.execute([tape])
    assert result.metadata.executor == "z" and np.isclose(result[0], np.cos(0.5))
