"""QuantumCluster: selectors, per-batch routing, pickling, bad input."""

from __future__ import annotations

import asyncio
import pickle
import random

import cloudpickle
import numpy as np
import pennylane as qml
import pytest

from conftest import assert_same_result, exact_qnode, exact_results
from pennylane import numpy as pnp
from pennylane.tape import QuantumScript
from pydantic import ValidationError

import qfleet as qf
from qfleet.cluster import CyclicSelector, RandomSelector
from qfleet.cluster.cluster import SelectorError
from qfleet.errors import QFleetError, UnsupportedCircuitError
from qfleet.executors import LocalExecutor


def members(*names, **kwargs):
    return [LocalExecutor(name=n, **kwargs) for n in names]


def tape(x=0.4):
    return QuantumScript([qml.RX(x, 0), qml.CNOT([0, 1])], [qml.expval(qml.Z(1))])


def energy(params):
    qml.RX(params[0], wires=0)
    qml.RY(params[1], wires=1)
    qml.CNOT(wires=[0, 1])
    qml.RZ(params[2], wires=1)
    return qml.expval(qml.PauliZ(0) @ qml.PauliX(1))


PARAMS = pnp.array([0.3, -0.8, 0.5], requires_grad=True)


def test_cyclic_order_across_calls():
    cluster = qf.QuantumCluster(executors=members("a", "b", "c"))
    seen = []
    for i in range(7):
        result = cluster.execute([tape(0.1 * i)])
        seen.append(result.metadata.executor)
        assert np.isclose(result[0], np.cos(0.1 * i), atol=1e-12)
    assert seen == ["a", "b", "c", "a", "b", "c", "a"]


def test_cyclic_order_through_a_qelectron_and_run_later():
    circuit = qf.qelectron(exact_qnode(energy), executors=members("a", "b"))
    assert isinstance(circuit.executor, qf.QuantumCluster)
    want = exact_qnode(energy)(PARAMS)
    order = []
    for _ in range(3):
        assert np.isclose(circuit(PARAMS), want, atol=1e-12)
        order.append(circuit.last_metadata.executor)
    futures = [circuit.run_later(PARAMS) for _ in range(3)]
    order += [f.result(10) is not None and f.metadata.executor for f in futures]
    assert order == ["a", "b", "a", "b", "a", "b"]


def test_cyclic_position_survives_pickling():
    cluster = qf.QuantumCluster(executors=members("a", "b", "c"))
    cluster.execute([tape()])  # -> a; next is b
    for dumps in (pickle.dumps, cloudpickle.dumps):
        copy = pickle.loads(dumps(cluster))
        assert copy.execute([tape()]).metadata.executor == "b"
        assert copy.execute([tape()]).metadata.executor == "c"
    # The copies advanced independently of the original.
    assert cluster.execute([tape()]).metadata.executor == "b"


def test_gradient_batch_stays_on_one_executor():
    cyclic = CyclicSelector()
    batches = []

    def recording(tapes, executors):
        chosen = cyclic(tapes, executors)
        batches.append((len(tapes), chosen.label))
        return chosen

    # parameter-shift: "best" would backprop through default.qubit, one traced batch
    qnode = exact_qnode(energy, diff_method="parameter-shift")
    circuit = qf.qelectron(qnode, executors=members("a", "b"), selector=recording)
    grad = qml.grad(circuit)(PARAMS)
    want = qml.grad(exact_qnode(energy, diff_method="backprop"))(PARAMS)
    np.testing.assert_allclose(grad, want, atol=1e-10)
    # autograd: the forward pass is one batch, then parameter-shift's 2 tapes per parameter
    # are one more batch, all on one executor (one job)
    assert batches == [(1, "a"), (2 * len(PARAMS), "b")]
    meta = circuit.last_metadata
    assert (meta.num_circuits, meta.executor) == (2 * len(PARAMS), "b")
    circuit(PARAMS)
    assert circuit.last_metadata.executor == "a"


def test_callable_selector_routes_per_batch():
    calls = []

    def by_batch_size(tapes, executors):
        calls.append(len(tapes))
        return executors[1] if len(tapes) > 1 else executors[0]

    circuit = qf.qelectron(
        exact_qnode(energy, diff_method="parameter-shift"),
        executors=members("single", "batch"),
        selector=by_batch_size,
    )
    value = circuit(PARAMS)
    assert circuit.last_metadata.executor == "single"
    grad = qml.grad(circuit)(PARAMS)
    assert (circuit.last_metadata.executor, circuit.last_metadata.num_circuits) == ("batch", 6)
    # called once per batch, with the whole batch: forward, then forward + gradient
    assert calls == [1, 1, 6]
    assert np.isclose(value, exact_qnode(energy)(PARAMS), atol=1e-12)
    np.testing.assert_allclose(
        grad, qml.grad(exact_qnode(energy, diff_method="backprop"))(PARAMS), atol=1e-10
    )


def test_random_selector_with_seed_is_repeatable():
    names = ["a", "b", "c"]
    expected_rng = random.Random(1234)
    expected = [expected_rng.choice(names) for _ in range(30)]

    def run(cluster):
        return [cluster.execute([tape()]).metadata.executor for _ in range(30)]

    first = run(qf.QuantumCluster(executors=members(*names), selector=RandomSelector(seed=1234)))
    second = run(qf.QuantumCluster(executors=members(*names), selector=RandomSelector(seed=1234)))
    assert first == second == expected
    assert set(first) == set(names)


def test_random_selector_by_name_uses_every_executor():
    cluster = qf.QuantumCluster(executors=members("a", "b", "c"), selector="random")
    # P(one executor never chosen in 60 draws) = 3 * (2/3)**60 ~ 1e-10
    seen = {cluster.execute([tape()]).metadata.executor for _ in range(60)}
    assert seen == {"a", "b", "c"}


def test_cluster_is_an_executor_with_async_api():
    cluster = qf.QuantumCluster(executors=members("a", "b", latency=0.01))
    tapes = [tape(0.2), tape(0.9)]
    want = tuple(exact_results(tapes))

    async def main():
        handle = await cluster.batch_submit(tapes)
        results = await cluster.batch_get_results(handle)
        one = await cluster.run_circuit(tapes[0])
        both = await cluster.run_all_circuits(tapes)
        return handle, results, one, both

    handle, results, one, both = asyncio.run(main())
    assert (handle.executor, handle.num_circuits) == ("a", 2)
    assert results.metadata.executor == "a"
    assert_same_result(tuple(results), want)
    assert_same_result(one, want[0])
    assert_same_result(tuple(both), want)
    assert both.metadata.executor == "a"  # a, b, a
    assert cluster.run_all_circuits_sync(tapes).metadata.executor == "b"


def test_cluster_shots_override_members():
    cluster = qf.QuantumCluster(executors=members("a", "b", seed=2), shots=30)
    t = QuantumScript([qml.RX(1.0, 0)], [qml.sample(wires=[0])])
    got = cluster.run_circuit_sync(t)
    assert len(got) == 30
    np.testing.assert_array_equal(
        got, qml.execute([t.copy(shots=30)], qml.device("default.qubit", seed=2))[0]
    )


def test_nested_clusters_route_through_both_levels():
    inner = qf.QuantumCluster(executors=members("a", "b"))
    outer = qf.QuantumCluster(executors=[inner, LocalExecutor(name="c")])
    seen = [outer.execute([tape()]).metadata.executor for _ in range(5)]
    assert seen == ["a", "c", "b", "c", "a"]


class _ProbsOnly(LocalExecutor):
    """A member that samples and returns only probabilities (like a small device)."""

    @property
    def capabilities(self):
        from qfleet.executors import Capabilities

        return Capabilities(
            analytic=False, max_wires=3, measurements=frozenset({"probs"}), default_shots=100
        )


def test_cluster_accepts_what_any_member_runs_and_routes_only_to_capable_members():
    cluster = qf.QuantumCluster(executors=[LocalExecutor(name="full"), _ProbsOnly(name="small")])
    caps = cluster.capabilities
    assert (caps.analytic, caps.max_wires) == (True, None)
    # expval on 4 wires: only "full" can; every call lands there, whatever the cycle says.
    wide = QuantumScript(
        [qml.RX(0.3, 0), qml.CNOT([0, 3])], [qml.expval(qml.Z(3))], shots=50
    )
    seen = {cluster.execute([wide]).metadata.executor for _ in range(4)}
    assert seen == {"full"}
    # Exact probs: both could, but the exact member is preferred over the sampling one.
    exact = QuantumScript([qml.RX(0.3, 0)], [qml.probs(wires=0)])
    for _ in range(3):
        result = cluster.execute([exact])
        assert result.metadata.executor == "full"
        np.testing.assert_allclose(result[0], [np.cos(0.15) ** 2, np.sin(0.15) ** 2])


def test_cluster_refuses_a_batch_no_member_can_run_naming_each_reason():
    cluster = qf.QuantumCluster(executors=[_ProbsOnly(name="a"), _ProbsOnly(name="b")])
    tape = QuantumScript([qml.RX(0.3, 0)], [qml.expval(qml.Z(0))], shots=10)
    with pytest.raises(UnsupportedCircuitError) as info:
        cluster.execute([tape])
    message = str(info.value)
    assert "no member of QuantumCluster can run this batch" in message
    assert "a: it cannot return expval()" in message and "b: it cannot return expval()" in message


# -- bad input ----------------------------------------------------------------------------


def test_empty_executor_list():
    with pytest.raises(ValidationError, match="a QuantumCluster needs at least one executor"):
        qf.QuantumCluster(executors=[])
    with pytest.raises(ValidationError, match="at least one executor"):
        qf.qelectron(exact_qnode(energy), executors=[])


def test_unknown_selector_name_lists_the_valid_ones():
    with pytest.raises(ValidationError) as info:
        qf.QuantumCluster(executors=members("a"), selector="round-robin")
    message = str(info.value)
    assert "unknown selector 'round-robin'" in message
    assert "['cyclic', 'fastest', 'least_busy', 'random']" in message and "callable" in message
    with pytest.raises(ValidationError, match="unknown selector 'fast'"):
        qf.qelectron(exact_qnode(energy), executors=members("a", "b"), selector="fast")


def test_selector_returning_a_foreign_executor():
    outsider = LocalExecutor(name="a")  # equal to a member, but not one of them
    cluster = qf.QuantumCluster(executors=members("a", "b"), selector=lambda tapes, exs: outsider)
    with pytest.raises(SelectorError, match="which is not one of this cluster's executors") as info:
        cluster.execute([tape()])
    assert isinstance(info.value, QFleetError) and isinstance(info.value, ValueError)
    circuit = qf.qelectron(exact_qnode(energy), executors=cluster)
    with pytest.raises(SelectorError, match="must return an element of the list"):
        circuit(PARAMS)
    with pytest.raises(SelectorError):
        circuit.run_later(PARAMS)
    none_cluster = qf.QuantumCluster(executors=members("a"), selector=lambda tapes, exs: None)
    with pytest.raises(SelectorError, match="returned None"):
        none_cluster.execute([tape()])


def test_limits_belong_on_members_not_on_the_cluster():
    # timeout is allowed: on a cluster it bounds a whole batch, retries included.
    for field, value in (("max_concurrent", 2), ("rate", 1.0)):
        with pytest.raises(ValidationError, match=f"set {field} on the cluster's executors"):
            qf.QuantumCluster(executors=members("a"), **{field: value})


def test_non_executor_member_is_rejected():
    with pytest.raises(ValidationError, match="executors.0"):
        qf.QuantumCluster(executors=["default.qubit"])
