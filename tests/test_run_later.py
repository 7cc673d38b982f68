"""run_later: futures that are concurrent, awaitable, isolated from each other's failures."""

from __future__ import annotations

import asyncio
import concurrent.futures
import subprocess
import sys
import textwrap

import numpy as np
import pennylane as qml
import pytest
from conftest import FAIL_MARK, FlakyExecutor, assert_same_result, exact_qnode
from pennylane import numpy as pnp

import qfleet as qf
from qfleet import QFuture
from qfleet.errors import ExecutorError
from qfleet.executors import LocalExecutor


def func(x):
    qml.IQPEmbedding(features=x, wires=[0, 1])
    qml.Hadamard(wires=1)
    return qml.probs(wires=range(2))


def expval_func(x):
    qml.RX(x, wires=0)
    qml.CNOT(wires=[0, 1])
    return qml.expval(qml.Z(1))


def test_run_later_returns_futures_with_the_sync_values():
    electron = qf.qelectron(exact_qnode(func), executors=LocalExecutor())
    inputs = [[0.6, -1.57], [0.1, 0.2], [1.0, 2.0]]
    futures = [electron.run_later(x) for x in inputs]
    for fut, x in zip(futures, inputs):
        assert isinstance(fut, QFuture) and isinstance(fut, concurrent.futures.Future)
        want = exact_qnode(func)(x)
        assert_same_result(fut.result(10), want, atol=1e-12)
        assert_same_result(fut.result(), electron(x), atol=1e-12)  # same as the sync call
        assert fut.metadata.executor == "LocalExecutor" and fut.metadata.num_circuits == 1


def test_run_later_with_shots_matches_the_seeded_plain_qnode():
    shots = [100, (50, 2)]
    electron = qf.qelectron(
        qml.QNode(func, qml.device("default.qubit", wires=2), shots=shots),
        executors=LocalExecutor(seed=12, parallel="thread"),
    )
    plain = qml.QNode(func, qml.device("default.qubit", wires=2, seed=12), shots=shots)
    assert_same_result(electron.run_later([0.6, -1.57]).result(10), plain([0.6, -1.57]))


def test_eight_calls_are_in_flight_at_the_same_time():
    latency = 0.5
    electron = qf.qelectron(
        exact_qnode(func),
        executors=[
            LocalExecutor(name="r1", latency=latency),
            LocalExecutor(name="r2", latency=latency),
        ],
    )
    x = [0.6, -1.57]
    futures = [electron.run_later(x) for _ in range(8)]
    # run_later returns before the backend answers ...
    assert not any(f.done() for f in futures)
    want = exact_qnode(func)(x)
    for f in futures:
        np.testing.assert_allclose(f.result(30), want, atol=1e-12)
    # ... and all eight execution windows overlap: every batch was submitted before the
    # first one finished (serial execution would make them disjoint).
    metas = [f.metadata for f in futures]
    first_end = min(m.submitted_at + m.execution_time for m in metas)
    assert max(m.submitted_at for m in metas) < first_end
    assert all(m.execution_time >= latency for m in metas)
    assert [m.executor for m in metas] == ["r1", "r2"] * 4


def test_thread_parallel_executor_runs_batches_concurrently():
    executor = LocalExecutor(parallel="thread", workers=4, latency=0.3)
    electron = qf.qelectron(exact_qnode(expval_func), executors=executor)
    xs = [0.1 * i for i in range(4)]
    futures = [electron.run_later(x) for x in xs]
    for f, x in zip(futures, xs):
        assert np.isclose(f.result(30), np.cos(x), atol=1e-12)
    metas = [f.metadata for f in futures]
    first_end = min(m.submitted_at + m.execution_time for m in metas)
    assert max(m.submitted_at for m in metas) < first_end


def test_futures_are_awaitable_inside_a_running_loop():
    electron = qf.qelectron(exact_qnode(expval_func), executors=LocalExecutor(latency=0.05))
    xs = [0.3, 0.6, 0.9]

    async def main():
        results = await asyncio.gather(*(electron.run_later(x) for x in xs))
        single = await electron.run_later(1.2)
        # A sync call from inside the running loop (Jupyter) must not deadlock.
        sync = electron(1.5)
        return results, single, sync

    results, single, sync = asyncio.run(main())
    np.testing.assert_allclose(results, np.cos(xs), atol=1e-12)
    assert np.isclose(single, np.cos(1.2)) and np.isclose(sync, np.cos(1.5))


def test_a_failing_call_does_not_affect_the_others_in_flight():
    flaky = FlakyExecutor(name="flaky-backend", where="collect", delay=0.2)
    electron = qf.qelectron(exact_qnode(expval_func), executors=flaky)
    xs = [0.1, FAIL_MARK, 0.3, 0.4]
    futures = [electron.run_later(x) for x in xs]
    assert not any(f.done() for f in futures)
    with pytest.raises(ExecutorError) as info:
        futures[1].result(10)
    assert info.value.executor == "flaky-backend"
    assert "[flaky-backend] ConnectionError: lost the backend while waiting" in str(info.value)
    for i in (0, 2, 3):
        assert np.isclose(futures[i].result(10), np.cos(xs[i]), atol=1e-12)
    with pytest.raises(ExecutorError, match=r"\[flaky-backend\]"):
        electron(FAIL_MARK)

    async def awaited():
        return await electron.run_later(FAIL_MARK)

    with pytest.raises(ExecutorError, match="flaky-backend"):
        asyncio.run(awaited())


def test_failures_in_a_cluster_name_the_member():
    cluster = [LocalExecutor(name="healthy"), FlakyExecutor(name="broken", where="start")]
    electron = qf.qelectron(exact_qnode(expval_func), executors=cluster)
    first, second = electron.run_later(FAIL_MARK), electron.run_later(FAIL_MARK)
    assert np.isclose(first.result(10), np.cos(FAIL_MARK))  # healthy: no failure
    with pytest.raises(ExecutorError, match=r"^\[broken\] RuntimeError: backend rejected the job"):
        second.result(10)


def test_cancel_a_pending_call():
    electron = qf.qelectron(exact_qnode(expval_func), executors=LocalExecutor(latency=10))
    fut = electron.run_later(0.2)
    assert fut.cancel()
    with pytest.raises(concurrent.futures.CancelledError):
        fut.result(5)


def test_result_is_finished_once_and_cached():
    electron = qf.qelectron(exact_qnode(func), executors=LocalExecutor())
    fut = electron.run_later([0.6, -1.57])
    first = fut.result(10)
    assert fut.result() is first


def test_run_later_of_a_differentiable_qnode_returns_values():
    electron = qf.qelectron(exact_qnode(expval_func), executors=LocalExecutor())
    x = pnp.array(0.4, requires_grad=True)
    assert np.isclose(electron.run_later(x).result(10), np.cos(0.4), atol=1e-12)
    # the same QElectron still differentiates synchronously afterwards
    assert np.isclose(qml.grad(electron)(x), -np.sin(0.4), atol=1e-10)


def test_dispatcher_is_recreated_after_fork():
    if not hasattr(__import__("os"), "fork"):
        pytest.skip("needs os.fork")
    # In a fresh interpreter, so the fork does not copy pytest's threads and locks.
    script = textwrap.dedent(
        """
        import multiprocessing, numpy as np, pennylane as qml, qfleet as qf
        from qfleet.runtime import get_dispatcher

        @qf.qelectron(executors=qf.executor.LocalExecutor(latency=0.01))
        @qml.qnode(qml.device("default.qubit", wires=1))
        def circuit(x):
            qml.RX(x, 0)
            return qml.expval(qml.Z(0))

        parent_value = circuit.run_later(0.3).result(10)   # starts the parent's loop thread
        parent_dispatcher = get_dispatcher()

        def child(queue):
            value = circuit.run_later(0.7).result(10)
            queue.put((float(value), get_dispatcher() is not parent_dispatcher))

        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        proc = ctx.Process(target=child, args=(queue,))
        proc.start()
        value, fresh_loop = queue.get(timeout=60)
        proc.join(60)
        assert proc.exitcode == 0, proc.exitcode
        assert fresh_loop
        assert abs(value - np.cos(0.7)) < 1e-12 and abs(parent_value - np.cos(0.3)) < 1e-12
        print("fork-ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "fork-ok" in done.stdout
