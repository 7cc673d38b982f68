"""The executor contract and LocalExecutor: values, shots, async API, metadata, errors."""

from __future__ import annotations

import asyncio
import pickle
import time

import numpy as np
import pennylane as qml
import pytest
from conftest import (
    FAIL_MARK,
    FlakyExecutor,
    assert_same_result,
    binomial_tol,
    exact_results,
)
from pennylane.tape import QuantumScript
from pydantic import ValidationError

import qfleet as qf
from qfleet.errors import ConfigError, ExecutorError, ExecutorTimeoutError, UnsupportedCircuitError
from qfleet.executors import BatchHandle, BatchResult, Capabilities, LocalExecutor


def tapes_batch(shots=None):
    """Three tapes with different measurement kinds (including a template to decompose)."""
    weights = np.linspace(0.1, 1.7, 2 * 3 * 3).reshape(2, 3, 3)
    return [
        QuantumScript(
            [qml.RX(0.7, 0), qml.CNOT([0, 1]), qml.RY(-0.4, 1)],
            [qml.expval(qml.Z(0) @ qml.Z(1)), qml.var(qml.X(1)), qml.probs(wires=[0, 1])],
            shots=shots,
        ),
        QuantumScript(
            [qml.StronglyEntanglingLayers(weights, wires=range(3))],
            [qml.expval(qml.Z(2)), qml.probs(wires=[0])],
            shots=shots,
        ),
        QuantumScript([qml.Hadamard(0), qml.RZ(0.3, 0)], [qml.expval(qml.X(0))], shots=shots),
    ]


class LocalCase:
    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def __repr__(self):
        return ",".join(f"{k}={v}" for k, v in self.kwargs.items())


LOCAL_CASES = [
    LocalCase(),
    LocalCase(device="lightning.qubit"),
    LocalCase(parallel="thread", workers=2),
    LocalCase(device="lightning.qubit", parallel="thread"),
]


# -- values ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", LOCAL_CASES, ids=repr)
def test_local_executor_exact_results_match_default_qubit(case):
    ex = LocalExecutor(**case.kwargs)
    tapes = tapes_batch()
    got = ex.run_all_circuits_sync(tapes)
    assert isinstance(got, BatchResult) and isinstance(got, tuple)
    assert len(got) == len(tapes)
    # lightning.qubit returns Python floats where default.qubit returns numpy's
    assert_same_result(tuple(got), tuple(exact_results(tapes)), atol=1e-10, strict_types=False)
    assert got.metadata.executor == "LocalExecutor"
    assert got.metadata.backend == case.kwargs.get("device", "default.qubit")
    assert got.metadata.num_circuits == 3


def test_process_pool_executor_matches_default_qubit():
    # Spawned workers are slow to start: one test covers process mode.
    ex = LocalExecutor(name="procs", parallel="process", workers=1, seed=17)
    tapes = tapes_batch()
    got = ex.run_all_circuits_sync(tapes)
    assert_same_result(tuple(got), tuple(exact_results(tapes)), atol=1e-10)
    assert (got.metadata.executor, got.metadata.num_circuits) == ("procs", 3)
    # Seeded sampling in the worker gives default.qubit's samples for the same seed.
    tape = QuantumScript([qml.RX(1.1, 0), qml.CNOT([0, 1])], [qml.sample(wires=[0, 1])], shots=40)
    sampled = ex.run_circuit_sync(tape)
    want = qml.execute([tape], qml.device("default.qubit", seed=17))[0]
    np.testing.assert_array_equal(sampled, want)
    # Also through the async API on the caller's own loop.
    assert np.isclose(asyncio.run(ex.run_circuit(tapes[2])), exact_results(tapes[2:])[0])


def test_single_tape_wrappers_return_the_tape_result():
    ex = LocalExecutor()
    tape = tapes_batch()[0]
    want = exact_results([tape])[0]
    assert_same_result(ex.run_circuit_sync(tape), want)
    assert_same_result(asyncio.run(ex.run_circuit(tape)), want)
    assert_same_result(ex.execute([tape])[0], want)


# -- shots -------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["default.qubit", "lightning.qubit"])
def test_tape_shots_are_used_when_executor_has_none(device):
    tape = QuantumScript(
        [qml.RX(1.2, 0), qml.CNOT([0, 1])],
        [qml.sample(wires=[0, 1]), qml.expval(qml.Z(1))],
        shots=123,
    )
    got = LocalExecutor(device=device, seed=3).run_circuit_sync(tape)
    want = qml.execute([tape], qml.device(device, wires=2, seed=3))[0]
    assert got[0].shape == (123, 2)
    assert_same_result(got, want)


def test_int_shots_override_analytic_and_tape_shots():
    ex = LocalExecutor(shots=4000, seed=11)
    for tape_shots in (None, 10):
        tape = QuantumScript(
            [qml.RX(0.9, 0), qml.CNOT([0, 1])],
            [qml.probs(wires=[0, 1]), qml.sample(wires=[0])],
            shots=tape_shots,
        )
        probs, samples = ex.run_circuit_sync(tape)
        assert samples.shape[0] == 4000
        exact = exact_results([QuantumScript(tape.operations, [qml.probs(wires=[0, 1])])])[0]
        np.testing.assert_array_less(np.abs(probs - exact), binomial_tol(exact, 4000))
        # Sampled probabilities are multiples of 1/shots, exact ones are not.
        np.testing.assert_allclose(probs * 4000, np.round(probs * 4000), atol=1e-9)
    # Identical to default.qubit with the same seed and shots (first call of a fresh executor).
    tape = QuantumScript([qml.RY(0.5, 0)], [qml.sample(wires=[0])])
    np.testing.assert_array_equal(
        LocalExecutor(shots=50, seed=9).run_circuit_sync(tape),
        qml.execute([tape.copy(shots=50)], qml.device("default.qubit", seed=9))[0],
    )


def test_shot_vector_override_gives_partitioned_results():
    ex = LocalExecutor(shots=[100, (50, 2), 300], seed=5)
    tape = QuantumScript(
        [qml.RX(0.6, 0), qml.CNOT([0, 1])],
        [qml.expval(qml.Z(0)), qml.sample(wires=[1])],
        shots=7,
    )
    got = ex.run_circuit_sync(tape)
    reference = qml.device("default.qubit", seed=5)
    want = qml.execute([tape.copy(shots=[100, (50, 2), 300])], reference)[0]
    assert isinstance(got, tuple) and len(got) == 4
    assert [len(g[1]) for g in got] == [100, 50, 50, 300]
    assert_same_result(got, want)


@pytest.mark.parametrize(
    "shots, problem",
    [
        (-1, "-1"),
        (0, "got 0"),
        (1.5, "1.5"),
        (2.0, "2.0"),
        ("100", "'100'"),
        (True, "True"),
        ([100, -5], "[100, -5]"),
        ([100, 2.5], "2.5"),
    ],
)
def test_bad_shots_are_rejected_with_a_clear_error(shots, problem):
    with pytest.raises(ValidationError) as info:
        LocalExecutor(shots=shots)
    message = str(info.value)
    assert "shots must be None, a positive integer or a shot vector" in message
    assert problem in message
    assert isinstance(info.value, ValueError)


def test_valid_shot_specifications_are_accepted():
    assert LocalExecutor(shots=1).shots == 1
    assert LocalExecutor(shots=(100, 200)).shots == [100, 200]
    assert LocalExecutor(shots=[(10, 3)]).shots == [(10, 3)]
    assert LocalExecutor().shots is None


def test_unknown_device_and_bad_device_options():
    with pytest.raises(ValidationError, match="unknown PennyLane device 'no.such.device'") as info:
        LocalExecutor(device="no.such.device")
    assert "default.qubit" in str(info.value) and "lightning.qubit" in str(info.value)
    with pytest.raises(ValidationError, match="unknown PennyLane device 'qfleet.local'"):
        LocalExecutor(device="qfleet.local")  # would recurse into itself
    ex = LocalExecutor(name="opts", device_options={"bogus_option": 1})
    with pytest.raises(ConfigError, match=r"opts: default.qubit rejected device_options") as info:
        ex.run_circuit_sync(tapes_batch()[2])
    assert "['bogus_option']" in str(info.value)


def test_unknown_executor_field_is_rejected():
    with pytest.raises(ValidationError, match="devcie"):
        LocalExecutor(devcie="lightning.qubit")


def test_covalent_parallel_booleans():
    assert LocalExecutor(parallel=True).parallel == "thread"
    assert LocalExecutor(parallel=False).parallel is None


# -- async API and metadata ---------------------------------------------------------------


def test_async_api_inside_asyncio_run():
    ex = LocalExecutor(name="async-ex", latency=0.05)
    tapes = tapes_batch()
    want = tuple(exact_results(tapes))

    async def main():
        one = await ex.run_circuit(tapes[0])
        handle = await ex.batch_submit(tapes)
        assert isinstance(handle, BatchHandle)
        assert (handle.executor, handle.num_circuits) == ("async-ex", 3)
        results = await ex.batch_get_results(handle)
        everything = await ex.run_all_circuits(tapes)
        return one, handle, results, everything

    before = time.time()
    one, handle, results, everything = asyncio.run(main())
    assert_same_result(one, want[0])
    assert_same_result(tuple(results), want)
    assert_same_result(tuple(everything), want)
    meta = results.metadata
    assert (meta.executor, meta.backend, meta.num_circuits) == ("async-ex", "default.qubit", 3)
    assert meta.submitted_at == handle.submitted_at
    assert before <= meta.submitted_at <= time.time()
    assert meta.execution_time >= 0.05  # the latency is part of the batch's time


def test_sync_wrappers_from_inside_a_running_loop():
    # Jupyter runs a loop on the main thread: the sync wrappers must not use it.
    ex = LocalExecutor(latency=0.01)
    tape = tapes_batch()[0]

    async def main():
        return ex.run_circuit_sync(tape), ex.run_all_circuits_sync([tape, tape])

    one, both = asyncio.run(main())
    want = exact_results([tape])[0]
    assert_same_result(one, want)
    assert_same_result(tuple(both), (want, want))


def test_metadata_names_executor_and_class_name_default():
    tape = tapes_batch()[2]
    assert LocalExecutor().execute([tape]).metadata.executor == "LocalExecutor"
    meta = LocalExecutor(name="mine", device="lightning.qubit").execute([tape, tape]).metadata
    assert (meta.executor, meta.backend, meta.num_circuits) == ("mine", "lightning.qubit", 2)
    assert LocalExecutor(name="mine").label == "mine"


def test_executor_run_later_returns_future_with_results():
    ex = LocalExecutor(latency=0.05, name="later")
    tapes = tapes_batch()
    fut = ex.run_later(tapes)
    assert not fut.done()
    assert_same_result(tuple(fut.result(10)), tuple(exact_results(tapes)))
    assert fut.raw.metadata.executor == "later"


def test_max_concurrent_serialises_batches():
    # With max_concurrent=1 the batches' execution windows must not overlap.
    ex = LocalExecutor(latency=0.1, max_concurrent=1)
    tape = tapes_batch()[2]
    futures = [ex.run_later([tape]) for _ in range(4)]
    metas = sorted((f.result(10).metadata for f in futures), key=lambda m: m.submitted_at)
    for earlier, later in zip(metas, metas[1:]):
        assert later.submitted_at >= earlier.submitted_at + earlier.execution_time - 1e-3


def test_timeout_raises_typed_error_naming_executor():
    ex = LocalExecutor(name="slowpoke", latency=5, timeout=0.05)
    with pytest.raises(ExecutorTimeoutError, match=r"\[slowpoke\] no results after 0.05 s") as info:
        ex.run_circuit_sync(tapes_batch()[2])
    assert info.value.executor == "slowpoke" and info.value.transient
    assert isinstance(info.value, TimeoutError)


def test_cancelling_a_pending_batch():
    ex = LocalExecutor(latency=5)
    fut = ex.run_later([tapes_batch()[2]])
    assert fut.cancel()
    with pytest.raises(Exception) as info:
        fut.result(5)
    assert type(info.value).__name__ == "CancelledError"
    assert fut.cancelled()


# -- executors that fail ------------------------------------------------------------------


@pytest.mark.parametrize(
    "where, cause",
    [
        ("start", "RuntimeError: backend rejected the job"),
        ("collect", "ConnectionError: lost the backend"),
    ],
)
def test_failing_batch_names_executor_and_others_succeed(where, cause):
    ex = FlakyExecutor(name=f"flaky-{where}", where=where)
    good = [QuantumScript([qml.RX(x, 0)], [qml.expval(qml.Z(0))]) for x in (0.1, 0.2, 0.3)]
    bad = QuantumScript([qml.RX(FAIL_MARK, 0)], [qml.expval(qml.Z(0))])
    futures = [ex.run_later([good[0]]), ex.run_later([good[1], bad]), ex.run_later([good[2]])]
    with pytest.raises(ExecutorError) as info:
        futures[1].result(10)
    assert info.value.executor == f"flaky-{where}"
    assert str(info.value).startswith(f"[flaky-{where}] ")
    assert cause in str(info.value)
    for fut, tape in ((futures[0], good[0]), (futures[2], good[2])):
        assert np.isclose(fut.result(10)[0], exact_results([tape])[0], atol=1e-12)
        assert fut.raw.metadata.job_ids == ("job-1",)
    # The sync path reports the same error, and the executor keeps working afterwards.
    with pytest.raises(ExecutorError, match=cause):
        ex.run_all_circuits_sync([bad])
    assert np.isclose(ex.run_circuit_sync(good[1]), np.cos(0.2))


def test_executor_error_survives_pickling():
    err = ExecutorError("boom", executor="ibm-1", transient=True)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is ExecutorError
    assert (str(back), back.executor, back.transient) == ("[ibm-1] boom", "ibm-1", True)
    timeout = pickle.loads(pickle.dumps(ExecutorTimeoutError("late", executor="x")))
    assert isinstance(timeout, ExecutorTimeoutError) and str(timeout) == "[x] late"


class WrongCountExecutor(FlakyExecutor):
    async def collect(self, job):
        return list(job[1]) + [0.0]


def test_backend_returning_wrong_number_of_results():
    ex = WrongCountExecutor(name="short")
    with pytest.raises(ExecutorError, match=r"\[short\] backend returned 2 results for 1 circuits"):
        ex.run_circuit_sync(tapes_batch()[2])


class ShotsOnly(FlakyExecutor):
    @property
    def capabilities(self):
        return Capabilities(
            analytic=False, max_wires=2, measurements=frozenset({"expval", "probs"})
        )


def test_capability_checks_raise_unsupported_circuit_error():
    ex = ShotsOnly(name="hw")
    with pytest.raises(UnsupportedCircuitError, match="hw cannot run this circuit: it samples and no shots"):
        ex.run_circuit_sync(QuantumScript([qml.X(0)], [qml.expval(qml.Z(0))]))
    with pytest.raises(UnsupportedCircuitError, match="hw cannot run this circuit: the circuit uses 3 wires, it has 2"):
        ex.run_circuit_sync(
            QuantumScript([qml.Toffoli([0, 1, 2])], [qml.expval(qml.Z(0))], shots=10)
        )
    with pytest.raises(UnsupportedCircuitError, match=r"hw cannot run this circuit: it cannot return state\(\) \(it returns expval\(\), probs\(\)\)"):
        ex.run_circuit_sync(QuantumScript([qml.X(0)], [qml.state()], shots=10))
    # Executor shots satisfy the shots requirement.
    result = ShotsOnly(shots=20).run_circuit_sync(QuantumScript([qml.X(0)], [qml.probs(wires=0)]))
    assert result.shape == (2,)


def test_capabilities_union():
    a = Capabilities(analytic=True, max_wires=5, measurements=frozenset({"expval", "probs"}))
    b = Capabilities(analytic=False, max_wires=7, measurements=frozenset({"probs", "sample"}))
    either = a.union(b)
    assert (either.analytic, either.max_wires, either.measurements) == (
        True, 7, frozenset({"expval", "probs", "sample"})
    )
    assert a.union(Capabilities()).max_wires is None  # one member without a limit


# -- pickling and repr --------------------------------------------------------------------


@pytest.mark.parametrize("parallel", [None, "thread"])
def test_used_executor_pickles_without_runtime_state(parallel):
    ex = LocalExecutor(name="p", parallel=parallel, seed=4)
    tape = tapes_batch()[0]
    ex.run_circuit_sync(tape)  # creates simulators, pools, limits in the runtime cache
    assert ex._runtime
    back = pickle.loads(pickle.dumps(ex))
    assert back.model_dump() == ex.model_dump() and back._runtime == {}
    assert_same_result(back.run_circuit_sync(tape), exact_results([tape])[0])


def test_repr_shows_only_the_fields_that_were_set():
    text = repr(LocalExecutor(device="lightning.qubit", shots=100))
    assert text.startswith("LocalExecutor(")
    assert "device='lightning.qubit'" in text and "shots=100" in text
    assert "latency" not in text and "workers" not in text


def test_public_namespace_aliases():
    # Covalent's Simulator keeps its own shots=None (exact) meaning: a LocalExecutor subclass.
    assert issubclass(qf.executor.Simulator, LocalExecutor)
    assert qf.executor.QCluster is qf.QuantumCluster is qf.QCluster
    assert issubclass(qf.QuantumCluster, qf.QuantumExecutor)


def test_shots_only_executor_takes_analytic_qnodes_when_it_has_shots():
    # Hardware-like backends are shots-only; their executors usually carry the shots
    # (Covalent's QiskitExecutor(shots=1024)) while the QNode has none.
    def func(x):
        qml.RX(x, 0)
        return qml.expval(qml.Z(0)), qml.probs(wires=[0])

    qnode = qml.QNode(func, qml.device("default.qubit", wires=1))
    electron = qf.qelectron(qnode, executors=ShotsOnly(name="hw", shots=20000))
    expval, probs = electron(0.5)
    assert abs(expval - np.cos(0.5)) < 5 * np.sin(0.5) / np.sqrt(20000)
    np.testing.assert_allclose(probs * 20000, np.round(probs * 20000), atol=1e-9)  # sampled
    # Without shots anywhere, the executor says what is missing.
    bare = qf.qelectron(qnode, executors=ShotsOnly(name="hw"))
    with pytest.raises(UnsupportedCircuitError, match="hw cannot run this circuit: it samples and no shots"):
        bare(0.5)
    # Measurements the backend cannot return are still refused up front by the device.
    state = qf.qelectron(
        qml.QNode(lambda: qml.state(), qml.device("default.qubit", wires=1)),
        executors=ShotsOnly(name="hw", shots=100),
    )
    with pytest.raises(qml.exceptions.DeviceError, match="state"):
        state()


# -- sized simulator devices -----------------------------------------------------------------


def test_exact_batches_on_wires_0_to_n_run_on_a_device_of_n_wires():
    from qfleet.executors.local import sized_width

    ops = [qml.RY(0.3, 0), qml.CNOT([0, 1]), qml.RX(0.2, 2)]
    explicit = QuantumScript(ops, [qml.expval(qml.Z(2)), qml.probs(wires=[1, 0])])
    assert sized_width([explicit, QuantumScript(ops[:2], [qml.expval(qml.Z(1))])]) == 3
    implicit = QuantumScript(ops, [qml.probs()])  # over the device's wires: sized by the tape
    assert sized_width([implicit]) is None
    assert sized_width([explicit.copy(shots=100)]) is None  # the seed's stream stays one
    assert sized_width([QuantumScript([qml.RX(0.1, 0), qml.RX(0.1, 5)],
                                      [qml.expval(qml.Z(5))])]) is None  # not 0..n-1
    assert sized_width([QuantumScript([qml.RX(0.1, "a")], [qml.expval(qml.Z("a"))])]) is None
    m = qml.measure(0)
    assert sized_width([QuantumScript([qml.RX(0.4, 0), m.measurements[0], qml.RX(0.2, 1)],
                                      [qml.expval(qml.Z(1))])]) is None  # deferral adds wires
    wide = QuantumScript([qml.Hadamard(w) for w in range(21)], [qml.expval(qml.Z(20))])
    assert sized_width([wide]) is None


@pytest.mark.parametrize("device", ["default.qubit", "lightning.qubit"])
def test_sized_and_per_tape_devices_give_default_qubits_results(device):
    ex = LocalExecutor(device=device)
    tapes = [
        QuantumScript([qml.RY(0.1 * k, w) for w in range(4)] + [qml.CNOT([w, w + 1])
                      for w in range(3)], [qml.expval(qml.Z(0) @ qml.Z(3)), qml.state()])
        for k in range(1, 4)
    ]
    from pennylane.measurements import StateMP

    # state() names no wires: this batch runs sized by each tape; with its wires, on one
    # device of 4 wires (the results must be the same).
    every_wire = StateMP(wires=qml.wires.Wires(range(4)))
    named = [t.copy(measurements=[t.measurements[0], every_wire]) for t in tapes]
    reference = qml.execute(tapes, qml.device("default.qubit", wires=4))
    for got, want in zip(ex.execute(tapes), reference, strict=True):
        np.testing.assert_allclose(got[0], want[0], atol=1e-12)
        np.testing.assert_allclose(got[1], want[1], atol=1e-12)
    for got, want in zip(ex.execute(named), reference, strict=True):
        np.testing.assert_allclose(got[0], want[0], atol=1e-12)
        np.testing.assert_allclose(got[1], want[1], atol=1e-12)
