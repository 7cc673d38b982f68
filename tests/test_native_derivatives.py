"""A qelectron on a local simulator differentiates as the plain QNode of that simulator does.

Adjoint on lightning, backprop through default.qubit (on the caller's thread), "best"
resolving as on the plain QNode; values, gradients and their types equal the plain QNode's.
Remote backends keep parameter-shift, and a cluster routes a derivative batch only to the
members that compute it.
"""

from __future__ import annotations

import numpy as np
import pennylane as qml
import pytest
from pennylane import numpy as pnp
from pennylane.exceptions import QuantumFunctionError
from pennylane.tape import QuantumScript

import qfleet as qf
from qfleet.errors import UnsupportedCircuitError
from qfleet.executors import LocalExecutor
from qfleet.sampling.derivatives import Derivatives

SIMULATORS = ["default.qubit", "lightning.qubit"]
METHODS = ["best", "adjoint", "backprop", "parameter-shift"]
WIRES = 2


def layers(params):
    qml.StronglyEntanglingLayers(params, wires=range(WIRES))
    return qml.expval(qml.Z(0) @ qml.X(1))


SHAPE = qml.StronglyEntanglingLayers.shape(n_layers=1, n_wires=WIRES)
VALUES = np.random.default_rng(7).uniform(-np.pi, np.pi, SHAPE)


def pair(simulator: str, diff_method: str, executors=None, **kwargs):
    """(plain QNode, the same QNode as a qelectron) on ``simulator``."""

    def qnode():
        dev = qml.device(simulator, wires=WIRES)
        return qml.QNode(layers, dev, diff_method=diff_method, **kwargs)

    if executors is None:
        executors = LocalExecutor(device=simulator)
    return qnode(), qf.qelectron(qnode(), executors=executors)


def plain_supports(simulator: str, diff_method: str) -> bool:
    try:
        pair(simulator, diff_method)[0](pnp.array(VALUES))
    except QuantumFunctionError:
        return False
    return True


def assert_same(got, want, atol=1e-10):
    assert type(got) is type(want), f"{type(got).__name__} != {type(want).__name__}"
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=atol, rtol=0)


# -- autograd, jax (torch where installed): values, gradients, types ----------------------------


@pytest.mark.parametrize("diff_method", METHODS)
@pytest.mark.parametrize("simulator", SIMULATORS)
def test_autograd_gradient_and_types_equal_the_plain_qnode(simulator, diff_method):
    if not plain_supports(simulator, diff_method):
        pytest.skip(f"the plain QNode on {simulator} has no {diff_method}")
    plain, electron = pair(simulator, diff_method)
    trainable = pnp.array(VALUES, requires_grad=True)
    assert_same(electron(trainable), plain(trainable))
    assert_same(electron(VALUES), plain(VALUES))  # plain numpy input
    with qml.Tracker(electron.device) as tracker:
        grad = qml.grad(electron)(trainable)
    assert_same(grad, qml.grad(plain)(trainable))
    assert (
        qml.workflow.get_best_diff_method(electron)(trainable)
        == qml.workflow.get_best_diff_method(plain)(trainable)
    )
    resolved = qml.workflow.construct_execution_config(electron)(trainable).gradient_method
    want = qml.workflow.construct_execution_config(plain)(trainable).gradient_method
    assert resolved == want
    if resolved == "adjoint":  # the simulator's own pass: one derivative batch, no shifts
        assert tracker.totals.get("derivative_batches") == 1
    elif resolved == "backprop":  # the traced forward pass is the whole gradient
        assert tracker.totals["batches"] == 1 and tracker.totals["executions"] == 1
    else:  # parameter-shift: the forward batch, then every shifted tape in one batch
        assert tracker.totals["batches"] == 2 and tracker.totals["executions"] > 10


@pytest.mark.parametrize("diff_method", METHODS)
@pytest.mark.parametrize("simulator", SIMULATORS)
def test_jax_gradient_equals_the_plain_qnode(jax_x64, simulator, diff_method):
    jax = jax_x64
    if not plain_supports(simulator, diff_method):
        pytest.skip(f"the plain QNode on {simulator} has no {diff_method}")
    plain, electron = pair(simulator, diff_method, interface="jax")
    params = jax.numpy.array(VALUES)
    assert_same(electron(params), plain(params))
    assert_same(jax.grad(electron)(params), jax.grad(plain)(params))


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_jax_jit_of_a_qelectron(jax_x64, simulator):
    jax = jax_x64
    plain, electron = pair(simulator, "best", interface="jax")
    params = jax.numpy.array(VALUES)
    assert_same(jax.jit(electron)(params), jax.jit(plain)(params))
    assert_same(jax.jit(jax.grad(electron))(params), jax.jit(jax.grad(plain))(params))


@pytest.mark.parametrize("diff_method", ["best", "adjoint", "backprop"])
def test_torch_gradient_equals_the_plain_qnode(diff_method):
    torch = pytest.importorskip("torch")
    for simulator in SIMULATORS:
        if not plain_supports(simulator, diff_method):
            continue
        plain, electron = pair(simulator, diff_method, interface="torch")
        grads = []
        for qnode in (plain, electron):
            params = torch.tensor(VALUES, requires_grad=True, dtype=torch.float64)
            qnode(params).backward()
            grads.append(params.grad)
        np.testing.assert_allclose(grads[1].numpy(), grads[0].numpy(), atol=1e-10)


def test_second_derivatives_by_backprop():
    def scalar(x):
        qml.RX(x, wires=0)
        qml.RY(2 * x, wires=1)
        qml.CNOT(wires=[0, 1])
        return qml.expval(qml.Z(1))

    def qnode():
        return qml.QNode(scalar, qml.device("default.qubit", wires=2), max_diff=2)

    plain, electron = qnode(), qf.qelectron(qnode(), executors=LocalExecutor())
    x = pnp.array(0.4, requires_grad=True)
    assert_same(qml.grad(qml.grad(electron))(x), qml.grad(qml.grad(plain))(x))


# -- where the simulation runs -------------------------------------------------------------------


def test_adjoint_on_a_worker_thread():
    plain, electron = pair(
        "lightning.qubit", "adjoint", LocalExecutor(device="lightning.qubit", parallel="thread")
    )
    params = pnp.array(VALUES, requires_grad=True)
    assert_same(qml.grad(electron)(params), qml.grad(plain)(params))


def test_backprop_needs_the_callers_thread():
    # a worker thread cannot carry autograd's trace: adjoint, not backprop, is offered
    ex = LocalExecutor(parallel="thread")
    assert ex.capabilities.derivatives == frozenset({"adjoint"})
    assert LocalExecutor().capabilities.derivatives == frozenset({"adjoint", "backprop"})
    plain, electron = pair("default.qubit", "best", ex)
    params = pnp.array(VALUES, requires_grad=True)
    # the plain QNode backprops; the qelectron resolves "best" as default.qubit does when
    # it simulates on workers (max_workers): adjoint
    assert qml.workflow.get_best_diff_method(electron)(params) == "adjoint"
    with qml.Tracker(electron.device) as tracker:
        grad = qml.grad(electron)(params)
    np.testing.assert_allclose(grad, qml.grad(plain)(params), atol=1e-10, rtol=0)
    assert tracker.totals["derivative_batches"] == 1


def test_adjoint_through_dask():
    pytest.importorskip("distributed")
    ex = qf.executor.DaskExecutor(n_workers=1, processes=False, name="dask")
    try:
        assert ex.capabilities.derivatives == frozenset({"adjoint"})
        plain, electron = pair("lightning.qubit", "best", ex)
        params = pnp.array(VALUES, requires_grad=True)
        with qml.Tracker(electron.device) as tracker:
            grad = qml.grad(electron)(params)
        assert_same(grad, qml.grad(plain)(params))
        assert tracker.totals["derivative_batches"] == 1
        assert electron.last_metadata.executor == "dask"
        # several tapes, split over dask tasks, their cotangents with them
        tapes = [
            QuantumScript([qml.RX(x, 0), qml.CNOT([0, 1])], [qml.expval(qml.Z(1))])
            for x in (0.1, 0.2, 0.3, 0.4)
        ]
        request = Derivatives("adjoint", "lightning.qubit", "jacobian")
        jacobians = ex.execute(tapes, derivatives=request)
        np.testing.assert_allclose(np.ravel(jacobians), -np.sin([0.1, 0.2, 0.3, 0.4]), atol=1e-12)
        # Nothing to differentiate: no adjoint pipeline (default.qubit's fails on the scaled
        # operators of TrotterProduct, which the reference, backprop, runs).
        hamiltonian = qml.dot([0.25, 0.75], [qml.X(0), qml.Z(0)])

        def trotter():
            qml.Hadamard(0)
            qml.TrotterProduct(hamiltonian, time=2.4, order=2)
            return qml.probs()

        reference = qml.QNode(trotter, qml.device("default.qubit", wires=2))()
        on_dask = qml.QNode(trotter, qml.device("qfleet.local", wires=2, executors=ex))()
        np.testing.assert_allclose(on_dask, reference, atol=1e-12)
    finally:
        ex.close_sync()


# -- remote backends and mixed clusters ----------------------------------------------------------


def braket():
    pytest.importorskip("braket.devices")
    return qf.executor.BraketLocalExecutor(name="braket")


def test_remote_backends_keep_parameter_shift():
    plain, electron = pair("lightning.qubit", "best", braket())
    params = pnp.array(VALUES, requires_grad=True)
    assert qml.workflow.get_best_diff_method(electron)(params) == "parameter-shift"
    with qml.Tracker(electron.device) as tracker:
        grad = qml.grad(electron)(params)
    np.testing.assert_allclose(grad, qml.grad(plain)(params), atol=1e-10, rtol=0)
    # the forward batch, then every shifted tape in one batch
    assert tracker.totals["batches"] == 2 and tracker.totals["executions"] > 10


def test_a_mixed_cluster_routes_derivative_batches_to_members_that_compute_them():
    local = LocalExecutor(device="lightning.qubit", name="lightning")
    cluster = qf.QuantumCluster(executors=[braket(), local], selector="cyclic")
    assert cluster.capabilities.derivatives == frozenset({"adjoint"})
    plain, electron = pair("lightning.qubit", "best", cluster)
    params = pnp.array(VALUES, requires_grad=True)
    for _ in range(3):
        with qml.Tracker(electron.device) as tracker:
            grad = qml.grad(electron)(params)
        assert_same(grad, qml.grad(plain)(params))
        assert tracker.totals["derivative_batches"] == 1
        assert electron.last_metadata.executor == "lightning"
    # results-only batches still go to every member in turn
    ran_on = set()
    for _ in range(2):
        np.testing.assert_allclose(electron(VALUES), plain(VALUES), atol=1e-10)
        ran_on.add(electron.last_metadata.executor)
    assert ran_on == {"braket", "lightning"}
    # a derivative batch no member can compute names each member's reason
    tape = QuantumScript([qml.RX(0.3, 0)], [qml.expval(qml.Z(0))])
    only_remote = qf.QuantumCluster(executors=[braket(), braket()])
    request = Derivatives("adjoint", "lightning.qubit", "jacobian")
    with pytest.raises(UnsupportedCircuitError, match="does not compute adjoint"):
        only_remote.execute([tape], derivatives=request)
    # ...and one prepared for another simulator goes to none either
    request = Derivatives("adjoint", "default.qubit", "jacobian")
    with pytest.raises(UnsupportedCircuitError, match=r"prepared for default\.qubit"):
        cluster.execute([tape], derivatives=request)


def test_members_of_different_simulators_differentiate_by_parameter_shift():
    cluster = qf.QuantumCluster(
        executors=[LocalExecutor(), LocalExecutor(device="lightning.qubit")]
    )
    assert cluster.capabilities.derivatives == frozenset()
    same = qf.QuantumCluster(
        executors=[LocalExecutor(name="a"), LocalExecutor(name="b", parallel="thread")]
    )
    # default.qubit on both: adjoint anywhere, backprop on the caller's-thread member only
    assert same.capabilities.derivatives == frozenset({"adjoint", "backprop"})
    plain, electron = pair("default.qubit", "best", same)
    params = pnp.array(VALUES, requires_grad=True)
    for _ in range(2):
        assert_same(qml.grad(electron)(params), qml.grad(plain)(params))
        assert electron.last_metadata.executor == "a"
