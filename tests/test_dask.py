"""DaskExecutor on real dask.distributed clusters of worker processes.

Two clusters: one the executor starts itself (``n_workers=2``), and one this module starts
and hands over by ``address`` (so the test can watch its workers and kill one mid-batch).
Results are compared with exact values (default.qubit, or circuits whose answer is known).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pennylane as qml
import pytest
from pennylane import numpy as pnp

pytest.importorskip("distributed")

import cloudpickle  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402

import qfleet as qf  # noqa: E402
from qfleet.errors import ExecutorError  # noqa: E402
from everyday import CASES, check_case  # noqa: E402
from qfleet.executors import DaskExecutor  # noqa: E402
from qfleet.executors import dask as dask_module  # noqa: E402
from qfleet.executors import local as local_module  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    """2 worker processes, 1 thread each, loopback only; warmed up (qfleet imported)."""
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None,
    ) as local, Client(local, set_as_default=False) as client:
        client.run(__import__, "qfleet.executors.dask")
        yield local, client
        # close qfleet's clients of this cluster first (else they try to reconnect)
        DaskExecutor(address=local.scheduler_address).close_sync()


def small_tape(x):
    return qml.tape.QuantumScript(
        [qml.RX(x, 0), qml.CNOT([0, 1]), qml.RY(x / 3, 1)],
        [qml.expval(qml.Z(0) @ qml.Z(1)), qml.probs(wires=[1])],
    )


def echo_tape(x, wires=18, layers=3):
    """A heavy circuit with a known answer: entangling layers, their inverse, then RX(x):
    <Z0> = cos(x)."""
    layer = []
    for i in range(layers):
        layer += [qml.RY(0.2 * i + 0.01 * w, w) for w in range(wires)]
        layer += [qml.CNOT([w, w + 1]) for w in range(wires - 1)]
    undo = [qml.adjoint(op) for op in reversed(layer)]
    return qml.tape.QuantumScript([*layer, *undo, qml.RX(x, 0)], [qml.expval(qml.Z(0))])


def test_own_local_cluster_runs_64_tapes_in_order():
    ex = DaskExecutor(n_workers=2)
    tapes = [small_tape(x) for x in np.linspace(-3, 3, 64)]
    try:
        results = ex.execute(tapes)
        # one LocalCluster, started once and shared by equal executors in this process
        again = DaskExecutor(n_workers=2).execute(tapes[:3])
        connections = [c for c in dask_module._connections.values() if c.cluster is not None]
        assert len(connections) == 1
    finally:
        ex.close_sync()
    want = qml.execute(tapes, qml.device("default.qubit"))
    assert len(results) == 64
    for got, exact in zip(results, want, strict=True):
        assert np.isclose(got[0], exact[0], atol=1e-10)
        np.testing.assert_allclose(got[1], exact[1], atol=1e-10)
    for got, exact in zip(again, want[:3]):
        assert np.isclose(got[0], exact[0], atol=1e-10)
    # chunked: two tasks per worker thread; the metadata names them
    assert results.metadata.num_circuits == 64
    assert len(results.metadata.job_ids) == 4
    assert results.metadata.backend == "dask:local:lightning.qubit"
    # simulated on the workers, not here (no simulator was created in this process)
    assert local_module._worker_simulators == {}


def test_address_qelectron_values_gradients_and_run_later(cluster):
    local, client = cluster
    ex = DaskExecutor(address=local.scheduler_address, device="default.qubit")

    def energy(params):
        qml.RX(params[0], wires=0)
        qml.RY(params[1], wires=1)
        qml.CNOT(wires=[0, 1])
        return qml.expval(qml.Z(0) @ qml.Z(1) + 0.3 * qml.X(1))

    circuit = qf.qelectron(qml.QNode(energy, qml.device("default.qubit", wires=2)), executors=ex)
    exact = qml.QNode(energy, qml.device("default.qubit", wires=2))
    params = pnp.array([0.4, -1.1], requires_grad=True)
    assert np.isclose(circuit(params), exact(params), atol=1e-10)
    np.testing.assert_allclose(qml.grad(circuit)(params), qml.grad(exact)(params), atol=1e-8)
    # "best": adjoint on the workers (default.qubit's own choice off the caller's thread),
    # the tape and its derivatives in one job
    assert circuit.last_metadata.num_circuits == 1
    futures = [circuit.run_later(pnp.array([x, 0.2])) for x in (0.1, 0.5, 0.9)]
    for x, future in zip((0.1, 0.5, 0.9), futures):
        assert np.isclose(future.result(60), exact(pnp.array([x, 0.2])), atol=1e-10)
    # the workers hold the simulators
    counts = client.run(lambda: len(__import__("qfleet.executors.local")
                                    .executors.local._worker_simulators))
    assert sum(counts.values()) >= 1


def test_seeded_shots_are_reproducible_and_within_shot_noise(cluster):
    local, _ = cluster
    tapes = [small_tape(x).copy(shots=4000) for x in np.linspace(0, 3, 12)]

    def make(seed):
        return DaskExecutor(address=local.scheduler_address, seed=seed, chunk_size=3)

    first, second, other = make(5).execute(tapes), make(5).execute(tapes), make(6).execute(tapes)
    exact = qml.execute([t.copy(shots=None) for t in tapes], qml.device("default.qubit"))
    for a, b, want in zip(first, second, exact):
        assert a[0] == b[0]
        np.testing.assert_array_equal(a[1], b[1])
        assert abs(a[0] - want[0]) < 5 * 2 / np.sqrt(4000)
    assert any(a[0] != c[0] for a, c in zip(first, other))


def test_worker_killed_mid_batch_tapes_are_rescheduled(cluster):
    local, client = cluster
    ex = DaskExecutor(address=local.scheduler_address, chunk_size=1)
    xs = np.linspace(0.1, 3.0, 20)
    tapes = [echo_tape(x) for x in xs]
    pids = client.run(os.getpid)
    victim = sorted(pids)[0]
    future = ex.run_later(tapes)
    deadline = time.monotonic() + 60
    running: list = []
    while time.monotonic() < deadline:
        running = [k for k in client.processing().get(victim, ()) if str(k).startswith("qfleet-")]
        if running:
            break
        time.sleep(0.02)
    assert running, "the victim worker never got a task"
    os.kill(pids[victim], signal.SIGKILL)
    assert not future.done()  # killed mid-batch
    results = future.result(timeout=180)
    np.testing.assert_allclose(results, np.cos(xs), atol=1e-8)
    # the task that was running there ran again elsewhere; the nanny restarted the worker
    client.wait_for_workers(2, timeout=60)
    assert pids[victim] not in client.run(os.getpid).values()


def _pending_qfleet_tasks(dask_scheduler):
    return sum(
        1 for ts in dask_scheduler.tasks.values()
        if str(ts.key).startswith("qfleet-")
        and ts.state in {"queued", "processing", "waiting", "no-worker"}
    )


def test_cancelled_future_cancels_its_dask_tasks(cluster):
    local, client = cluster
    ex = DaskExecutor(address=local.scheduler_address, chunk_size=1)
    future = ex.run_later([echo_tape(x, wires=20) for x in np.linspace(0.1, 1.0, 30)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(
        str(k).startswith("qfleet-") for keys in client.processing().values() for k in keys
    ):
        time.sleep(0.02)
    assert future.cancel()
    # 30 tasks of a few hundred ms on 2 workers would take seconds: cancelled, they go at once
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and client.run_on_scheduler(_pending_qfleet_tasks):
        time.sleep(0.05)
    assert client.run_on_scheduler(_pending_qfleet_tasks) == 0


FRESH = textwrap.dedent(
    """
    import json, sys
    import cloudpickle
    from pennylane import numpy as pnp
    import pennylane as qml

    circuit = cloudpickle.loads(open(sys.argv[1], "rb").read())
    params = pnp.array([0.3, 0.8], requires_grad=True)
    print(json.dumps({"value": float(circuit(params)),
                      "grad": [float(g) for g in qml.grad(circuit)(params)],
                      "backend": circuit.last_metadata.backend}))
    """
)


def test_pickled_qelectron_runs_on_the_cluster_from_a_fresh_process(cluster, tmp_path):
    local, _ = cluster

    @qml.transforms.cancel_inverses
    @qf.qelectron(executors=DaskExecutor(address=local.scheduler_address, chunk_size=2))
    @qml.qnode(qml.device("default.qubit", wires=2))
    def circuit(params):
        qml.Hadamard(0)
        qml.Hadamard(0)
        qml.RX(params[0], 0)
        qml.RY(params[1], 1)
        qml.CNOT([0, 1])
        return qml.expval(qml.Z(1))

    path = tmp_path / "circuit.pkl"
    path.write_bytes(cloudpickle.dumps(circuit))
    done = subprocess.run(
        [sys.executable, "-c", FRESH, str(path)], capture_output=True, text=True,
        timeout=120, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    a, b = 0.3, 0.8
    assert np.isclose(got["value"], np.cos(a) * np.cos(b), atol=1e-10)
    np.testing.assert_allclose(
        got["grad"], [-np.sin(a) * np.cos(b), -np.cos(a) * np.sin(b)], atol=1e-8
    )
    assert got["backend"].startswith(f"dask:{local.scheduler_address}")


def test_unreachable_scheduler_is_a_transient_executor_error():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ex = DaskExecutor(address=f"tcp://127.0.0.1:{port}", connect_timeout=2, name="nowhere")
    with pytest.raises(ExecutorError) as info:
        ex.execute([small_tape(0.1)])
    assert info.value.transient and info.value.executor == "nowhere"
    assert f"127.0.0.1:{port}" in str(info.value)


def test_config_only_in_the_pickle():
    ex = DaskExecutor(n_workers=2, device="default.qubit", chunk_size=8)
    ex._runtime["probe"] = object()
    clone = cloudpickle.loads(cloudpickle.dumps(ex))
    assert clone.model_dump() == ex.model_dump() and clone._runtime == {}


@pytest.mark.parametrize("name", sorted(CASES))
def test_everyday_circuits_match_default_qubit(cluster, name):
    """Broadcasting, mid-circuit measurements, Hermitian/Projector/SparseHamiltonian, gates
    without a decomposition, out-of-order wires, identity-only, wire labels: exactly as
    default.qubit, computed on the workers."""
    local, _ = cluster
    executor = DaskExecutor(address=local.scheduler_address, device="default.qubit")
    check_case(name, executor)
    if name != "sparse_hamiltonian":  # default.qubit has no shots path for it either
        check_case(name, DaskExecutor(address=local.scheduler_address, device="default.qubit",
                                      seed=5), shots=20_000)
