"""Covalent QElectron scripts run with only ``import covalent as ct`` changed to
``import qfleet as ct``; every QElectron name keeps working or says what to write instead.

The scripts follow Covalent's own QElectron tests (the decorator, explicit wrapping, a list
of executors becoming one QCluster, an explicit QCluster) on Covalent's executor names, and
compare with the plain QNode: same values (exact, or within shot noise) and result types.
BraketQubitExecutor (Amazon Braket's cloud) runs in tests/test_braket_cloud.py, against the
Braket stand-in.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pennylane as qml
import pytest

import qfleet as ct  # the one line a Covalent user changes

SHOTS = 3000


def _circuit(param):
    qml.RX(param, wires=0)
    qml.Hadamard(wires=1)
    qml.CNOT(wires=[0, 1])
    return qml.expval(qml.Y(0) @ qml.X(1)), qml.probs(wires=[0, 1])


def _plain(shots=None):
    return qml.QNode(_circuit, qml.device("default.qubit", wires=2), shots=shots)


def _executors():
    out = [ct.executor.Simulator(), ct.executor.Simulator(parallel="thread", workers=2)]
    try:
        import braket.devices  # noqa: F401

        out.append(ct.executor.LocalBraketQubitExecutor(backend="default", max_jobs=4))
    except ImportError:
        pass
    return out


def _check(qres, res, shots=None):
    """Same structure and types as the plain QNode; values exact or within shot noise."""
    assert isinstance(qres, type(res)) and len(qres) == len(res)
    for q, r in zip(qres, res, strict=True):
        assert isinstance(q, type(r)) and np.shape(q) == np.shape(r)
        tol = 1e-10 if shots is None else 5 / np.sqrt(shots)
        np.testing.assert_allclose(q, r, atol=tol)


@pytest.mark.parametrize("executor", _executors(), ids=lambda e: type(e).__name__)
def test_decorator_and_explicit_wrapper(executor):
    @ct.qelectron(executors=executor)
    @qml.qnode(qml.device("default.qubit", wires=2))
    def decorated(param):
        return _circuit(param)

    wrapped = ct.qelectron(_plain(), executors=executor)
    want = _plain()(0.5)
    _check(decorated(0.5), want)
    _check(wrapped(0.5), want)
    _check(wrapped.run_later(0.5).result(30), want)
    assert decorated.device.executors == [executor]


@pytest.mark.parametrize("executor", _executors(), ids=lambda e: type(e).__name__)
def test_list_of_executors_and_explicit_qcluster(executor):
    executors_list = [executor, copy.deepcopy(executor)]
    from_list = ct.qelectron(_plain(), executors=executors_list)
    assert len(from_list.device.executors) == 1
    assert isinstance(from_list.device.executors[0], ct.executor.QCluster)
    qcluster = ct.executor.QCluster(executors=executors_list)
    explicit = ct.qelectron(_plain(), executors=qcluster)
    assert explicit.device.executors == [qcluster]
    want = _plain()(0.5)
    for circuit in (from_list, explicit):
        _check(circuit(0.5), want)


def test_covalent_shots_none_means_exact_even_when_the_qnode_samples():
    sampled_qnode = _plain(shots=SHOTS)
    exact = ct.qelectron(sampled_qnode, executors=ct.executor.Simulator(shots=None))
    _check(exact(0.5), _plain()(0.5))  # to 1e-10: no sampling happened
    # left out (Covalent's -1): the QNode's shots, so probabilities are counts / SHOTS
    sampled = ct.qelectron(sampled_qnode, executors=ct.executor.Simulator())
    result = sampled(0.5)
    _check(result, _plain()(0.5), shots=SHOTS)
    np.testing.assert_allclose(result[1] * SHOTS, np.round(result[1] * SHOTS), atol=1e-9)
    assert ct.executor.Simulator(shots=-1).shots is None
    # an int overrides the QNode's shots, as in Covalent
    fixed = ct.qelectron(_plain(), executors=ct.executor.Simulator(shots=1000))
    probs = fixed(0.5)[1]
    np.testing.assert_allclose(probs * 1000, np.round(probs * 1000), atol=1e-9)


def test_local_braket_qubit_executor_with_covalents_fields():
    pytest.importorskip("braket.devices")
    ex = ct.executor.LocalBraketQubitExecutor(backend="braket_dm", shots=SHOTS, max_jobs=3)
    assert ex.device == "braket_dm" and ex.max_concurrent == 3
    circuit = ct.qelectron(_plain(), executors=ex)
    result = circuit(0.5)
    _check(result, _plain()(0.5), shots=SHOTS)
    np.testing.assert_allclose(result[1] * SHOTS, np.round(result[1] * SHOTS), atol=1e-9)
    exact = ct.qelectron(_plain(shots=100),
                         executors=ct.executor.LocalBraketQubitExecutor(shots=None))
    _check(exact(0.5), _plain()(0.5))
    with pytest.raises(ValueError, match="not a Braket local simulator"):
        ct.executor.LocalBraketQubitExecutor(backend="braket_ahs")
    with pytest.raises(ValueError, match="noise_model=/seed="):
        ct.executor.LocalBraketQubitExecutor(run_kwargs={"noise_model": "x"})


def test_qiskit_executor_warns_when_it_samples_for_a_qnode_without_shots():
    pytest.importorskip("qiskit_aer")
    ex = ct.executor.QiskitExecutor(device="local_sampler", seed=5)
    circuit = ct.qelectron(_plain(), executors=ex)
    with pytest.warns(ct.sampling.ShotsWarning, match="QiskitExecutor.*1024"):
        got = circuit(0.5)
    _check(got, _plain()(0.5), shots=1024)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ct.sampling.ShotsWarning)
        ct.qelectron(_plain(shots=500), executors=ex)(0.5)  # shots given: no warning


def test_ibmq_executor_imports_and_says_how_to_move():
    from qfleet.executor import IBMQExecutor
    from qfleet.executors.covalent_compat import RemovedExecutorError

    assert ct.executor.IBMQExecutor is IBMQExecutor
    with pytest.raises(RemovedExecutorError) as info:
        ct.executor.IBMQExecutor(backend="ibmq_qasm_simulator", ibmqx_token="t", shots=1024)
    message = str(info.value)
    assert "QiskitExecutor(device='sampler'" in message and "instance=" in message
    assert "local_sampler" in message and "migrating-from-covalent.md" in message
    assert isinstance(info.value, ct.errors.ConfigError)


@pytest.mark.parametrize("name,hint", [
    ("BaseQExecutor", "QuantumExecutor"),
    ("BaseThreadPoolQExecutor", "QuantumExecutor"),
    ("BaseProcessPoolQExecutor", "QuantumExecutor"),
    ("AsyncBaseQExecutor", "QuantumExecutor"),
    ("SyncBaseQExecutor", "QuantumExecutor"),
    ("BaseQCluster", "selector="),
    ("AsyncBaseQCluster", "run_later"),
])
def test_each_removed_name_gives_its_guiding_error(name, hint):
    with pytest.raises(AttributeError, match=hint) as info:
        getattr(ct.executor, name)
    assert "migrating-from-covalent.md" in str(info.value)
    assert not hasattr(ct.executor, "NoSuchExecutor")  # other names: a plain AttributeError


def test_covalent_names_pickle_with_their_meaning():
    cloudpickle = pytest.importorskip("cloudpickle")
    ex = ct.executor.Simulator(shots=None, name="exact")
    clone = cloudpickle.loads(cloudpickle.dumps(ex))
    assert clone.exact and clone.shots is None and clone.name == "exact"
    from qfleet.jobs.job import executor_from_spec, executor_spec

    assert executor_from_spec(executor_spec(ex)).exact


def test_migration_guides_worked_example_runs():
    """docs/migrating-from-covalent.md's worked example, less the lines that need AWS."""
    pytest.importorskip("braket.devices")
    from pathlib import Path

    guide = (Path(__file__).parents[1] / "docs" / "migrating-from-covalent.md").read_text()
    example = guide.split("## Worked example", 1)[1].split("```python", 1)[1].split("```")[0]
    local = example.split("\ncloud = ")[0]  # the cloud part needs AWS credentials
    namespace: dict = {}
    exec(compile(local, "migrating-from-covalent.md", "exec"), namespace)
    want = np.cos(1.1)  # <Z0 Z1> after the CNOT is <Z1> before it
    assert abs(namespace["circuit"](namespace["x"]) - want) < 1e-10
    assert abs(namespace["sampled"](namespace["x"]) - want) < 5 / np.sqrt(2000)
    assert isinstance(namespace["circuit"].device.executors[0], ct.executor.QCluster)
