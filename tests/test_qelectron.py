"""@qelectron: a sync call returns what the plain QNode returns; gradients; QNode plumbing."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pennylane as qml
import pytest
from conftest import assert_same_result, exact_qnode
from pennylane import numpy as pnp
from pennylane.exceptions import WireError
from pennylane.tape import QuantumScript

import qfleet as qf
from qfleet import QElectron, QFleetDevice
from qfleet.executors import LocalExecutor

# -- measurement kinds ----------------------------------------------------------------------

MEASUREMENTS = {
    "expval": (lambda: qml.expval(qml.Z(0) @ qml.X(1)), None),
    "var": (lambda: qml.var(qml.Y(1)), None),
    "probs": (lambda: qml.probs(wires=[1, 0]), None),
    "state": (lambda: qml.state(), None),
    "density_matrix": (lambda: qml.density_matrix(wires=[1]), None),
    "multiple": (
        lambda: (qml.expval(qml.Z(0)), qml.var(qml.X(1)), qml.probs(wires=[0, 1])),
        None,
    ),
    "expval-shots": (lambda: qml.expval(qml.Z(0) @ qml.Z(1)), 500),
    "probs-shots": (lambda: qml.probs(wires=[0, 1]), 500),
    "sample": (lambda: qml.sample(wires=[0, 1]), 25),
    "sample-obs": (lambda: qml.sample(qml.Z(0) @ qml.Z(1)), 25),
    "counts": (lambda: qml.counts(wires=[0, 1]), 200),
    "counts-obs": (lambda: qml.counts(qml.Z(1)), 200),
    "multiple-shots": (
        lambda: (qml.expval(qml.Z(0)), qml.probs(wires=[1]), qml.counts(wires=[0])),
        300,
    ),
    "shot-vector": (lambda: (qml.expval(qml.Z(0)), qml.sample(wires=[1])), [10, (20, 2), 30]),
    "shot-vector-single": (lambda: qml.probs(wires=[0, 1]), [100, 100, 50]),
}


def make_func(measure):
    def circuit(x, y):
        qml.RX(x, wires=0)
        qml.CNOT(wires=[0, 1])
        qml.RY(y, wires=1)
        qml.IsingXX(0.4, wires=[0, 1])
        return measure()

    return circuit


@pytest.mark.parametrize("device", ["default.qubit", "lightning.qubit"])
@pytest.mark.parametrize("kind", list(MEASUREMENTS))
def test_sync_call_returns_what_the_plain_qnode_returns(kind, device):
    measure, shots = MEASUREMENTS[kind]
    func = make_func(measure)
    plain = qml.QNode(func, qml.device(device, wires=2, seed=21), shots=shots)
    electron = qf.qelectron(
        qml.QNode(func, qml.device("default.qubit", wires=2), shots=shots),
        executors=LocalExecutor(device=device, seed=21),
    )
    x, y = 0.7, -1.1
    want = plain(x, y)
    got = electron(x, y)
    # Same seed, same simulator: the very same samples, so every value matches exactly.
    assert_same_result(got, want, atol=1e-10)
    assert electron.last_metadata.backend == device
    assert electron.last_metadata.num_circuits == 1


def test_values_with_shots_are_within_shot_noise_of_exact():
    func = make_func(lambda: (qml.expval(qml.Z(0) @ qml.Z(1)), qml.probs(wires=[0, 1])))
    exact_e, exact_p = exact_qnode(func)(0.7, -1.1)
    electron = qf.qelectron(
        qml.QNode(func, qml.device("default.qubit", wires=2), shots=20000),
        executors=[LocalExecutor(seed=1), LocalExecutor(device="lightning.qubit", seed=2)],
    )
    for _ in range(2):  # one call on each executor
        e, p = electron(0.7, -1.1)
        assert abs(e - exact_e) < 5 * np.sqrt((1 - exact_e**2) / 20000)
        assert np.all(np.abs(p - exact_p) < 5 * np.sqrt(exact_p * (1 - exact_p) / 20000) + 1e-3)


def test_decorator_and_call_forms_and_names():
    dev = qml.device("default.qubit", wires=2)

    @qf.qelectron(executors=LocalExecutor(), name="my-circuit", description="a test")
    @qml.qnode(dev)
    def decorated(x):
        qml.RX(x, 0)
        return qml.expval(qml.Z(0))

    called = qf.qelectron(qml.QNode(decorated.func, dev), executors=LocalExecutor())
    for electron in (decorated, called):
        assert isinstance(electron, QElectron) and isinstance(electron, qml.QNode)
        assert isinstance(electron.device, QFleetDevice)
        assert np.isclose(electron(0.25), np.cos(0.25), atol=1e-12, rtol=0)
    assert (decorated.qelectron_name, decorated.description) == ("my-circuit", "a test")
    assert called.qelectron_name == "decorated" and called.description is None
    assert "my-circuit" in repr(decorated)


def test_executors_default_to_a_local_executor():
    electron = qf.qelectron(exact_qnode(make_func(lambda: qml.expval(qml.Z(1)))))
    assert isinstance(electron.executor, LocalExecutor)
    assert np.isclose(electron(0.3, 0.2), exact_qnode(electron.func)(0.3, 0.2), atol=1e-12)


def test_qelectron_rejects_non_qnodes():
    with pytest.raises(TypeError, match="qelectron expects a PennyLane QNode"):
        qf.qelectron(lambda x: x, executors=LocalExecutor())


def test_original_qnode_is_left_alone():
    original = exact_qnode(make_func(lambda: qml.expval(qml.Z(0))))
    qf.qelectron(original, executors=LocalExecutor())
    assert original.device.name == "default.qubit"
    assert not isinstance(original, QElectron)


# -- wires ----------------------------------------------------------------------------------


def test_wires_the_device_lacks_raise_wire_error():
    dev = qml.device("default.qubit", wires=["a", "b"])

    def func(x):
        qml.RX(x, wires="a")
        qml.CNOT(wires=["a", "c"])
        return qml.expval(qml.Z("c"))

    electron = qf.qelectron(qml.QNode(func, dev), executors=LocalExecutor())
    with pytest.raises(WireError, match=r"wires not found on the device: \{'c'\}"):
        electron(0.1)
    with pytest.raises(WireError, match="qfleet.local"):
        electron.run_later(0.1)
    too_many = qf.qelectron(
        qml.QNode(lambda: qml.probs(wires=[0, 1, 2]), qml.device("default.qubit", wires=2)),
        executors=LocalExecutor(),
    )
    with pytest.raises(WireError, match="not found on the device"):
        too_many()


def test_wire_labels_are_kept():
    dev = qml.device("default.qubit", wires=["anc", 7])

    def func(x):
        qml.RX(x, wires=7)
        qml.CNOT(wires=[7, "anc"])
        return qml.probs(wires=["anc"]), qml.expval(qml.Z(7))

    electron = qf.qelectron(qml.QNode(func, dev), executors=LocalExecutor())
    assert_same_result(electron(0.9), qml.QNode(func, dev)(0.9))


# -- gradients ------------------------------------------------------------------------------


def energy(params):
    qml.RX(params[0], wires=0)
    qml.RY(params[1], wires=1)
    qml.CNOT(wires=[0, 1])
    qml.RZ(params[2], wires=0)
    qml.RX(params[2], wires=1)
    return qml.expval(qml.PauliY(0) @ qml.PauliZ(1) + 0.5 * qml.X(1))


PARAMS = pnp.array([0.3, -0.8, 1.1], requires_grad=True)


@pytest.mark.parametrize(
    "diff_method, atol",
    [("best", 1e-10), ("parameter-shift", 1e-10), ("finite-diff", 1e-5)],
)
def test_autograd_gradients_through_the_cluster(diff_method, atol):
    electron = qf.qelectron(
        exact_qnode(energy, diff_method=diff_method),
        executors=[LocalExecutor(name="a"), LocalExecutor(name="b", device="lightning.qubit")],
    )
    reference = exact_qnode(energy, diff_method="backprop")
    np.testing.assert_allclose(electron(PARAMS), reference(PARAMS), atol=1e-12)
    grad = qml.grad(electron)(PARAMS)
    np.testing.assert_allclose(grad, qml.grad(reference)(PARAMS), atol=atol, rtol=0)
    assert grad.shape == (3,)
    assert electron.last_metadata.num_circuits > 1  # the gradient's tapes, one batch


def test_best_resolves_as_on_the_plain_qnode():
    # default.qubit on the caller's thread: backprop, one traced tape
    electron = qf.qelectron(exact_qnode(energy), executors=LocalExecutor())
    qml.grad(electron)(PARAMS)
    assert electron.last_metadata.num_circuits == 1
    # a cluster whose members differentiate with different simulators: parameter-shift,
    # 2 tapes per trainable parameter (RZ and RX share params[2]: 4 tapes)
    mixed = qf.qelectron(
        exact_qnode(energy),
        executors=[LocalExecutor(), LocalExecutor(device="lightning.qubit")],
    )
    qml.grad(mixed)(PARAMS)
    assert mixed.last_metadata.num_circuits == 2 * 4


def test_jacobian_of_vector_output():
    def func(params):
        qml.RX(params[0], 0)
        qml.CRY(params[1], wires=[0, 1])
        return qml.probs(wires=[0, 1])

    params = pnp.array([0.4, 1.3], requires_grad=True)
    electron = qf.qelectron(exact_qnode(func), executors=LocalExecutor())
    want = qml.jacobian(exact_qnode(func, diff_method="backprop"))(params)
    np.testing.assert_allclose(qml.jacobian(electron)(params), want, atol=1e-10)


def test_gradient_with_shots_is_within_shot_noise():
    electron = qf.qelectron(
        qml.QNode(energy, qml.device("default.qubit", wires=2), shots=20000),
        executors=LocalExecutor(seed=8),
    )
    grad = qml.grad(electron)(PARAMS)
    want = qml.grad(exact_qnode(energy, diff_method="backprop"))(PARAMS)
    # each parameter-shift term has std <= 1.5/sqrt(shots) * sqrt(2)/2 per shifted pair
    np.testing.assert_allclose(grad, want, atol=0.06)
    assert not np.allclose(grad, want, atol=1e-6)  # really sampled


@pytest.mark.parametrize(
    "requested, executor",
    [
        ("backprop", LocalExecutor(device="lightning.qubit")),  # lightning has adjoint only
        ("adjoint", LocalExecutor(shots=100)),  # executor shots: no exact derivatives
    ],
)
def test_device_gradients_fall_back_to_parameter_shift_with_a_warning(requested, executor):
    with pytest.warns(UserWarning, match=f"diff_method='{requested}'.*using 'parameter-shift'"):
        electron = qf.qelectron(exact_qnode(energy, diff_method=requested), executors=executor)
    assert electron.diff_method == "parameter-shift"
    if executor.shots:
        return  # sampled: the gradient is checked against shot noise elsewhere
    grad = qml.grad(electron)(PARAMS)
    np.testing.assert_allclose(
        grad, qml.grad(exact_qnode(energy, diff_method="backprop"))(PARAMS), atol=1e-10
    )
    assert electron.last_metadata.num_circuits == 8


def test_no_warning_for_supported_methods():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        qf.qelectron(exact_qnode(energy, diff_method="parameter-shift"), executors=LocalExecutor())
        qf.qelectron(exact_qnode(energy), executors=LocalExecutor())


@pytest.mark.parametrize("interface", ["jax", "auto"])
def test_jax_value_and_gradient(jax_x64, interface):
    jax = jax_x64
    jnp = jax.numpy
    params = jnp.array([0.3, -0.8, 1.1])
    electron = qf.qelectron(
        exact_qnode(energy, interface=interface),
        executors=[LocalExecutor(name="a"), LocalExecutor(name="b", device="lightning.qubit")],
    )
    reference = exact_qnode(energy, interface="jax", diff_method="backprop")
    value = electron(params)
    assert isinstance(value, jax.Array)
    np.testing.assert_allclose(value, reference(params), atol=1e-12)
    grad = jax.grad(electron)(params)
    assert isinstance(grad, jax.Array) and grad.shape == (3,)
    np.testing.assert_allclose(grad, jax.grad(reference)(params), atol=1e-10)
    # jax's JVP runs the forward tape and the 8 shifted tapes as one batch
    assert electron.last_metadata.num_circuits == 1 + 8


def test_jax_jit(jax_x64):
    jax = jax_x64
    params = jax.numpy.array([0.3, -0.8, 1.1])
    electron = qf.qelectron(exact_qnode(energy, interface="jax"), executors=LocalExecutor())
    reference = exact_qnode(energy, interface="jax", diff_method="backprop")
    np.testing.assert_allclose(jax.jit(electron)(params), reference(params), atol=1e-12)
    np.testing.assert_allclose(
        jax.jit(jax.grad(electron))(params), jax.grad(reference)(params), atol=1e-10
    )


# -- shots, transforms, update ----------------------------------------------------------------


def test_set_shots_keeps_the_qelectron():
    func = make_func(lambda: (qml.sample(wires=[0, 1]), qml.expval(qml.Z(0))))
    electron = qf.qelectron(
        qml.QNode(func, qml.device("default.qubit", wires=2)), executors=LocalExecutor(seed=4)
    )
    shot = qml.set_shots(electron, shots=40)
    assert isinstance(shot, QElectron) and shot.shots.total_shots == 40
    assert shot.executor is electron.executor
    plain = qml.QNode(func, qml.device("default.qubit", wires=2, seed=4), shots=40)
    assert_same_result(shot(0.5, 0.2), plain(0.5, 0.2))
    assert_same_result(shot.run_later(0.5, 0.2).result(10), plain(0.5, 0.2))
    vector = qml.set_shots(electron, shots=[5, 15])
    assert [len(r[0]) for r in vector(0.5, 0.2)] == [5, 15]
    # The decorator form too.
    analytic = qml.set_shots(shots=None)(shot)
    assert isinstance(analytic, QElectron)
    with pytest.raises(qml.exceptions.DeviceError, match="sample"):
        analytic(0.5, 0.2)  # sample() needs shots: the shots really were removed


def test_executor_shots_override_qnode_shots():
    func = make_func(lambda: qml.sample(wires=[0]))
    electron = qf.qelectron(
        qml.QNode(func, qml.device("default.qubit", wires=2), shots=10),
        executors=LocalExecutor(shots=33, seed=6),
    )
    got = electron(0.5, 0.2)
    assert len(got) == 33
    plain = qml.QNode(func, qml.device("default.qubit", wires=2, seed=6), shots=33)
    np.testing.assert_array_equal(got, plain(0.5, 0.2))


# Records the tapes each executor receives, to see which operations reach the backend.
RECEIVED: list[list[str]] = []


class RecordingExecutor(LocalExecutor):
    def translate(self, tapes):
        RECEIVED.append([op.name for t in tapes for op in t.operations])
        return super().translate(tapes)

    def translate_derivatives(self, tapes, derivatives):
        RECEIVED.append([op.name for t in tapes for op in t.operations])
        return super().translate_derivatives(tapes, derivatives)


def redundant(x):
    qml.Hadamard(0)
    qml.Hadamard(0)
    qml.RX(x, wires=1)
    qml.RX(0.5, wires=1)
    qml.CNOT(wires=[1, 0])
    return qml.expval(qml.Z(0))


@pytest.mark.parametrize(
    "transform, kept",
    [
        (qml.transforms.cancel_inverses, ["RX", "RX", "CNOT"]),
        (qml.transforms.merge_rotations, ["Hadamard", "Hadamard", "RX", "CNOT"]),
    ],
)
def test_transforms_keep_the_qelectron_and_run_on_the_executor(transform, kept):
    electron = qf.qelectron(exact_qnode(redundant), executors=RecordingExecutor(name="rec"))
    transformed = transform(electron)
    assert isinstance(transformed, QElectron)
    x = pnp.array(0.3, requires_grad=True)
    want = exact_qnode(redundant)(x)
    RECEIVED.clear()
    assert np.isclose(transformed(x), want, atol=1e-12)
    assert RECEIVED == [kept]
    assert np.isclose(transformed.run_later(x).result(10), want, atol=1e-12)
    np.testing.assert_allclose(
        qml.grad(transformed)(x), qml.grad(exact_qnode(redundant, diff_method="backprop"))(x),
        atol=1e-10,
    )


def test_stacked_transforms_as_decorators():
    @qml.transforms.merge_rotations
    @qml.transforms.cancel_inverses
    @qf.qelectron(executors=RecordingExecutor())
    @qml.qnode(qml.device("default.qubit", wires=2))
    def circuit(x):
        return redundant(x)

    assert isinstance(circuit, QElectron)
    RECEIVED.clear()
    assert np.isclose(circuit(0.3), exact_qnode(redundant)(0.3), atol=1e-12)
    assert RECEIVED == [["RX", "CNOT"]]


def test_update_keeps_the_qelectron_and_its_executor():
    executor = qf.QuantumCluster(executors=[LocalExecutor(name="a"), LocalExecutor(name="b")])
    electron = qf.qelectron(exact_qnode(energy), executors=executor)
    updated = electron.update(diff_method="finite-diff")
    assert isinstance(updated, QElectron) and updated.diff_method == "finite-diff"
    assert updated.executor is executor
    np.testing.assert_allclose(
        qml.grad(updated)(PARAMS),
        qml.grad(exact_qnode(energy, diff_method="backprop"))(PARAMS),
        atol=1e-5,
    )
    assert np.isclose(updated.run_later(PARAMS).result(10), exact_qnode(energy)(PARAMS))
    # A new plain device keeps the executors (wires from the new device).
    wider = electron.update(device=qml.device("default.qubit", wires=3))
    assert isinstance(wider, QElectron) and isinstance(wider.device, QFleetDevice)
    assert wider.executor is executor and len(wider.device.wires) == 3
    assert np.isclose(wider(PARAMS), exact_qnode(energy)(PARAMS), atol=1e-12)
    copied = copy.copy(electron)
    assert isinstance(copied, QElectron) and copied.qelectron_name == electron.qelectron_name


# -- the plugin device and Covalent-style code -------------------------------------------------


def test_plugin_device():
    dev = qml.device("qfleet.local", wires=2)
    assert isinstance(dev, QFleetDevice) and dev.name == "qfleet.local"
    assert isinstance(dev.executor, LocalExecutor)
    func = make_func(lambda: (qml.expval(qml.Z(0)), qml.probs(wires=[0, 1])))
    assert_same_result(qml.QNode(func, dev)(0.4, 0.9), exact_qnode(func)(0.4, 0.9))
    assert dev.last_metadata.executor == "LocalExecutor"
    grad = qml.grad(qml.QNode(energy, dev))(PARAMS)
    np.testing.assert_allclose(
        grad, qml.grad(exact_qnode(energy, diff_method="backprop"))(PARAMS), atol=1e-10
    )
    assert dev.last_metadata.num_circuits == 1  # backprop, as on default.qubit
    # shots are set on the QNode, as for any PennyLane 0.45 device
    sampled = qml.set_shots(qml.QNode(func, dev), shots=100)(0.4, 0.9)
    assert np.isclose(sampled[1].sum(), 1.0) and np.allclose(sampled[1] * 100 % 1, 0)


def test_device_with_explicit_executors_and_direct_execute():
    dev = QFleetDevice(wires=2, executors=[LocalExecutor(name="x"), LocalExecutor(name="y")])
    tapes = [QuantumScript([qml.RX(0.2, 0)], [qml.expval(qml.Z(0))])] * 2
    results = dev.execute(tapes)
    assert isinstance(results, tuple) and np.allclose(results, np.cos(0.2))
    assert dev.last_metadata.executor == "x" and dev.last_metadata.num_circuits == 2
    dev.execute(tapes)
    assert dev.last_metadata.executor == "y"
    assert "QFleetDevice" in repr(dev)


def test_covalent_style_script_runs_with_import_qfleet_as_ct():
    import qfleet as ct

    qexecutor = ct.executor.Simulator(parallel="thread", shots=None)

    @ct.qelectron(executors=qexecutor, name="covalent-style")
    @qml.qnode(qml.device("default.qubit", wires=2))
    def circuit(x):
        qml.IQPEmbedding(features=x, wires=[0, 1])
        qml.Hadamard(wires=1)
        return qml.probs(wires=range(2))

    cluster = ct.executor.QCluster(
        executors=[ct.executor.Simulator(name="s1"), ct.executor.Simulator(name="s2")],
        selector="cyclic",
    )
    clustered = ct.qelectron(circuit, executors=cluster)
    x = [0.6, -1.57]
    want = exact_qnode(circuit.func)(x)
    np.testing.assert_allclose(circuit(x), want, atol=1e-12)
    assert [np.allclose(clustered(x), want) for _ in range(2)] == [True, True]
    np.testing.assert_allclose(circuit.run_later(x).result(10), want, atol=1e-12)
    futures = [clustered.run_later(x) for _ in range(2)]
    assert [f.metadata.executor for f in futures if f.result(10) is not None] == ["s1", "s2"]
