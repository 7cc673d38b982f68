"""QiskitExecutor in local testing mode (no account): Aer (noiseless) and fake_manila (noisy),
sampler and estimator paths, shot vectors, parameter-shift gradients in one Runtime job.

Every result is compared with default.qubit (exact). Tolerances: noiseless runs within
5 standard deviations of shot noise; fake_manila within shot noise plus a fixed allowance for
its gate, readout and dephasing errors. Seeds are fixed, so reruns give the same numbers.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pennylane as qml
import pytest
from pennylane import numpy as pnp
from pennylane.tape import QuantumScript

pytest.importorskip("qiskit_ibm_runtime")

import qfleet as qf  # noqa: E402
from qfleet.executors import QiskitExecutor  # noqa: E402
from qfleet.executors.ibm_runtime import ADAPTERS  # noqa: E402

SHOTS = 4000
#: Noise allowance for fake_manila. Measured (20000 shots, 3 seeds): |deviation| <= 0.03 for
#: Z-basis results and 0.16 for <X(2)> (a superposition that dephases during two CNOTs).
NOISE = 0.2


def sigma_expval(exact, shots):
    """Shot noise of an expectation value of a +-1-valued observable."""
    return np.sqrt(np.maximum(1 - np.asarray(exact) ** 2, 1 / shots) / shots)


def close(got, want, shots, sigmas=5.0, extra=0.0):
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    tol = sigmas * np.sqrt(np.maximum(np.abs(want) * (1 - np.abs(want)), 1 / shots) / shots) + extra
    if got.shape != want.shape or np.any(np.abs(got - want) > np.maximum(tol, 1e-9)):
        raise AssertionError(f"{got} != {want} within {tol}")


def ansatz(x):
    qml.RX(x[0], wires=0)
    qml.RY(x[1], wires=1)
    qml.CNOT(wires=[0, 1])
    qml.RZ(x[2], wires=2)
    qml.Hadamard(wires=2)
    qml.CNOT(wires=[1, 2])


X = pnp.array([0.4, 1.1, -0.6], requires_grad=True)


def measurements():
    return (
        qml.expval(qml.Z(0) @ qml.Z(1)),
        qml.expval(qml.X(2)),  # does not commute with the others: split into its own circuit
        qml.var(qml.Z(1)),
        qml.probs(wires=[0, 2]),
    )


def make(executor, func=None, shots=SHOTS):
    @qf.qelectron(executors=executor)
    @qml.qnode(qml.device("default.qubit", wires=3), shots=shots, diff_method="parameter-shift")
    def circuit(x):
        ansatz(x)
        return measurements() if func is None else func()

    return circuit


@qml.qnode(qml.device("default.qubit", wires=3))
def exact(x):
    ansatz(x)
    return measurements()


def check_all(got, want, shots, extra=0.0):
    assert isinstance(got, tuple) and len(got) == 4
    close(got[0], want[0], shots, extra=extra)
    close(got[1], want[1], shots, extra=extra)
    close(got[2], want[2], shots, extra=2 * extra + 0.03)  # var = 1 - <Z>^2: noise doubles
    assert np.shape(got[3]) == (4,) and np.isclose(np.sum(got[3]), 1)
    close(got[3], want[3], shots, extra=extra / 2)


def test_aer_noiseless_matches_default_qubit():
    circuit = make(QiskitExecutor(seed=7))
    check_all(circuit(X), exact(X), SHOTS)
    meta = circuit.last_metadata
    assert meta.backend == "aer_simulator" and len(meta.job_ids) == 1  # 2 circuits, 1 job


def test_fake_manila_noisy_matches_within_noise():
    circuit = make(QiskitExecutor(backend="fake_manila", seed=7))
    got = circuit(X)
    check_all(got, exact(X), SHOTS, extra=NOISE)
    # The noise is real: the result is not the noiseless one.
    assert not np.allclose(got[3], make(QiskitExecutor(seed=7))(X)[3], atol=1e-3)


def test_seeded_runs_repeat_exactly():
    a = make(QiskitExecutor(backend="fake_manila", seed=3))(X)
    b = make(QiskitExecutor(backend="fake_manila", seed=3))(X)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("backend", ["aer_simulator", "fake_manila"])
def test_estimator_expvals(backend):
    def observables():
        return (
            qml.expval(qml.Z(0) @ qml.Z(1)),
            qml.expval(qml.X(2)),
            qml.expval(qml.Hamiltonian([0.5, -0.8], [qml.Y(1), qml.Z(0) @ qml.X(2)])),
            qml.expval(qml.Hermitian(np.array([[1.0, 0.5], [0.5, -1.0]]), wires=1)),
        )

    ex = QiskitExecutor(device="estimator", channel="local", backend=backend, seed=5)
    got = make(ex, observables)(X)

    @qml.qnode(qml.device("default.qubit", wires=3))
    def want(x):
        ansatz(x)
        return observables()

    extra = 0.0 if backend == "aer_simulator" else NOISE
    # Sums of Pauli terms: noise adds up over the terms (norm of coefficients <= 1.3).
    for g, w, scale in zip(got, want(X), (1, 1, 1.3, 1.2)):
        assert np.ndim(g) == 0
        assert abs(g - w) <= scale * (5 * float(sigma_expval(0, SHOTS)) + extra), (g, w)


@pytest.mark.parametrize("device", ["local_sampler", "estimator"])
def test_result_structure_and_types_match_default_qubit(device):
    if device == "estimator":
        mps = [qml.expval(qml.Z(0)), qml.expval(qml.X(0) @ qml.Z(1))]
    else:
        mps = [qml.expval(qml.Z(0)), qml.var(qml.X(0)), qml.probs(wires=[0, 1]),
               qml.sample(wires=[1]), qml.counts(wires=[0])]
    ops = [qml.RX(0.3, 0), qml.CNOT([0, 1])]
    tapes = [QuantumScript(ops, mps, shots=50), QuantumScript(ops, mps[:1], shots=[20, 30])]
    got = QiskitExecutor(device=device, channel="local").execute(tapes)
    want = qml.execute(tapes, qml.device("default.qubit", seed=1))

    def same_shape(g, w):
        assert type(g) is type(w), (g, w)
        if isinstance(w, (tuple, list)):
            assert len(g) == len(w)
            for a, b in zip(g, w):
                same_shape(a, b)
        elif isinstance(w, np.ndarray):
            assert g.shape == w.shape and g.dtype.kind == w.dtype.kind

    same_shape(tuple(got), tuple(want))


def test_shot_vectors_sampler():
    shots = [(1000, 2), 3000]

    def obs():
        return qml.expval(qml.Z(0)), qml.probs(wires=[1]), qml.sample(wires=[0, 1])

    circuit = make(QiskitExecutor(seed=2), obs, shots=shots)
    got = circuit(X)
    reference = qml.set_shots(qml.QNode(lambda x: (ansatz(x), obs())[1],
                                        qml.device("default.qubit", wires=3, seed=1)), shots)(X)
    assert len(got) == len(reference) == 3
    exact_z = qml.QNode(lambda x: (ansatz(x), qml.expval(qml.Z(0)))[1],
                        qml.device("default.qubit", wires=3))(X)
    for got_bin, ref_bin, n in zip(got, reference, (1000, 1000, 3000)):
        assert len(got_bin) == 3
        close(got_bin[0], exact_z, n)
        assert np.shape(got_bin[1]) == np.shape(ref_bin[1]) == (2,)
        assert np.shape(got_bin[2]) == np.shape(ref_bin[2]) == (n, 2)
        assert set(np.unique(got_bin[2])) <= {0, 1}
        # the samples of a bin give its own expval: Z = 1 - 2 * mean(bit of wire 0)
        np.testing.assert_allclose(1 - 2 * got_bin[2][:, 0].mean(), got_bin[0])


def test_shot_vectors_estimator():
    circuit = make(QiskitExecutor(device="estimator", channel="local", seed=2),
                   lambda: qml.expval(qml.Z(0) @ qml.Z(1)), shots=[500, 2000])
    got = circuit(X)
    want = qml.QNode(lambda x: (ansatz(x), qml.expval(qml.Z(0) @ qml.Z(1)))[1],
                     qml.device("default.qubit", wires=3))(X)
    assert isinstance(got, tuple) and len(got) == 2
    close(got[0], want, 500)
    close(got[1], want, 2000)


def test_counts_measurement():
    circuit = make(QiskitExecutor(seed=4), lambda: qml.counts(wires=[0, 1]), shots=1000)
    counts = circuit(X)
    assert isinstance(counts, dict) and sum(counts.values()) == 1000
    assert set(counts) <= {"00", "01", "10", "11"}


class JobCounter:
    """Counts Runtime jobs (primitive runs) and their PUBs through the adapter."""

    def __init__(self, monkeypatch, name="v2"):
        self.jobs: list[int] = []
        adapter = ADAPTERS[name]
        for method in ("run_sampler", "run_estimator"):
            original = getattr(adapter, method)

            def counted(mode, options, pubs, _original=original):
                self.jobs.append(len(pubs))
                return _original(mode, options, pubs)

            monkeypatch.setattr(adapter, method, counted)


@pytest.mark.parametrize("device", ["local_sampler", "estimator"])
def test_parameter_shift_gradient_is_one_job(monkeypatch, device):
    counter = JobCounter(monkeypatch)
    ex = QiskitExecutor(device=device, channel="local", seed=9)
    circuit = make(ex, lambda: qml.expval(qml.Z(0) @ qml.Z(1) @ qml.X(2)), shots=SHOTS)
    grad = qml.grad(circuit)(X)
    # forward pass: 1 job; gradient: 2 shifted circuits per parameter, all in 1 job
    assert counter.jobs == [1, 2 * len(X)]
    assert len(circuit.last_metadata.job_ids) == 1

    want = qml.grad(qml.QNode(lambda x: (ansatz(x), qml.expval(qml.Z(0) @ qml.Z(1) @ qml.X(2)))[1],
                              qml.device("default.qubit", wires=3)))(X)
    # each component is (f(+) - f(-)) / 2 of two estimates: std <= 1/sqrt(2 * shots)
    np.testing.assert_allclose(grad, want, atol=5 / np.sqrt(2 * SHOTS))


def test_one_job_per_tape_when_single_job_is_off(monkeypatch):
    counter = JobCounter(monkeypatch)
    circuit = make(QiskitExecutor(single_job=False, seed=9, mode="batch"),
                   lambda: qml.expval(qml.Z(0) @ qml.Z(1) @ qml.X(2)), shots=500)
    qml.grad(circuit)(X)
    assert counter.jobs == [1] + [1] * (2 * len(X))
    assert len(circuit.last_metadata.job_ids) == 2 * len(X)


@pytest.mark.parametrize("mode", ["session", "batch", "job"])
@pytest.mark.parametrize("primitives", ["v2", "executor"])
def test_modes_and_primitive_apis(mode, primitives, monkeypatch):
    counter = JobCounter(monkeypatch, primitives)
    ex = QiskitExecutor(mode=mode, primitives=primitives, seed=1)
    tape = QuantumScript([qml.RX(0.9, 0)], [qml.expval(qml.Z(0))], shots=2000)
    got = ex.run_circuit_sync(tape)
    close(got, np.cos(0.9), 2000)
    assert counter.jobs == [1]


def test_run_later_and_batch_submit():
    ex = QiskitExecutor(seed=3)
    circuit = make(ex, lambda: qml.expval(qml.Z(0)), shots=1000)
    futures = [circuit.run_later(X * k) for k in (0.5, 1.0, 1.5)]
    for k, future in zip((0.5, 1.0, 1.5), futures):
        close(future.result(timeout=60), np.cos(0.4 * k), 1000)
        assert future.metadata.job_ids

    tapes = [QuantumScript([qml.RX(a, 0)], [qml.expval(qml.Z(0))], shots=1000) for a in (0.1, 2.0)]

    async def submit_then_get():
        handle = await ex.batch_submit(tapes)
        assert len(handle.job_ids) == 1 and handle.num_circuits == 2
        results = await ex.batch_get_results(handle)
        assert results.metadata.job_ids == handle.job_ids
        return results

    results = asyncio.run(submit_then_get())
    close(results, np.cos([0.1, 2.0]), 1000)


def test_cluster_with_a_local_simulator():
    cluster = [qf.executor.LocalExecutor(seed=1), QiskitExecutor(seed=1)]
    circuit = make(cluster, lambda: qml.expval(qml.Z(0)), shots=2000)
    first, second = circuit(X), circuit(X)
    assert circuit.last_metadata.backend == "aer_simulator"
    close(first, np.cos(0.4), 2000)
    close(second, np.cos(0.4), 2000)


# -- everyday circuits (tests/everyday.py) against default.qubit -------------------------------

from everyday import CASES, check_case  # noqa: E402

#: Cases the Estimator can run (expectation values only).
ESTIMATOR_CASES = ["state_vector_projector", "sparse_hamiltonian", "out_of_order_wires",
                   "identity_only"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_everyday_circuits_sampler(name):
    check_case(name, QiskitExecutor(seed=11), shots=20000)


@pytest.mark.parametrize("name", ESTIMATOR_CASES)
def test_everyday_circuits_estimator(name):
    check_case(name, QiskitExecutor(device="estimator", channel="local", seed=11), shots=20000)


def test_everyday_without_shots_uses_default_shots():
    # A shots-only backend: analytic tapes run with default_shots (the plan warns), so the
    # results are estimates within shot noise of the exact values.
    from everyday import run_case

    ex = QiskitExecutor(seed=11, options={"default_shots": 20000})
    got, want = run_case("out_of_order_wires", ex, shots=None)
    np.testing.assert_allclose(got, want, atol=5 / np.sqrt(20000))
    assert not np.allclose(got, want, atol=1e-9)
