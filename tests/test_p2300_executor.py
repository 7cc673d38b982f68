"""Executor2300 against a real ``qfleet serve-2300`` process: counts, bit order, QNodes vs
default.qubit within shot noise, gradients, clusters, config, target restrictions."""

from __future__ import annotations

import pickle
import uuid

import numpy as np
import pennylane as qml
import pytest
from pennylane import numpy as pnp
from pennylane.tape import QuantumScript

import qfleet as qf
from qfleet.circuits.cqasm import to_cqasm3
from qfleet.errors import ExecutorTimeoutError, UnsupportedCircuitError
from qfleet.config import executor_classes
from qfleet.executor import Executor2300, LocalExecutor, QuantumCluster
from qfleet.sampling import ShotsWarning

pytest_plugins = ["p2300_support"]  # the emulator fixtures


def raw_request(*args, **kwargs):
    # imported late: pytest must import (and assert-rewrite) the plugin first
    from p2300_support import raw_request as impl

    return impl(*args, **kwargs)

SHOTS = 4000
# 5 sigma of a +-1 expectation value and of a probability estimated from SHOTS shots
EXPVAL_TOL = 5 / np.sqrt(SHOTS)
PROB_TOL = 5 * 0.5 / np.sqrt(SHOTS)


def test_bell_and_ghz_counts(emulator):
    ex = emulator.executor(shots=2000)
    bell = QuantumScript([qml.H(0), qml.CNOT([0, 1])], [qml.counts(wires=[0, 1])])
    ghz = QuantumScript([qml.H(0), qml.CNOT([0, 1]), qml.CNOT([1, 2])], [qml.counts(wires=[0, 1, 2])])
    counts_bell, counts_ghz = ex.execute([bell, ghz])
    assert set(counts_bell) == {"00", "11"} and sum(counts_bell.values()) == 2000
    assert set(counts_ghz) == {"000", "111"} and sum(counts_ghz.values()) == 2000
    for counts in (counts_bell, counts_ghz):
        assert abs(min(counts.values()) / 2000 - 0.5) < PROB_TOL * 2


def test_raw_data_length_and_bit_order(emulator):
    # The protocol: X on qubit 0 alone -> "...001" (rightmost is q[0]).
    program = to_cqasm3(QuantumScript([qml.X(0)], [qml.probs(wires=[0, 1, 2])]))
    sid = str(uuid.uuid4())
    assert raw_request(emulator.rep, {"session_id": sid, "command": "initialize"})["status"] == "success"
    try:
        reply = raw_request(
            emulator.rep,
            {
                "session_id": sid, "command": "execute",
                "payload": {"job_id": 1, "circuit": program.text, "number_of_shots": 37, "include_raw_data": True},
            },
        )  # fmt: skip
    finally:
        raw_request(emulator.rep, {"session_id": sid, "command": "terminate"})
    assert reply["status"] == "success", reply
    assert reply["payload"]["results"] == {"001": 37}
    assert reply["payload"]["raw_data"] == ["001"] * 37
    # ... and the executor turns it around: wire 0 first, as PennyLane does
    ex = emulator.executor(shots=50)
    probs = ex.run_circuit_sync(QuantumScript([qml.X(0)], [qml.probs(wires=[0, 1, 2])]))
    assert np.array_equal(probs, [0, 0, 0, 0, 1, 0, 0, 0])
    ex_raw = emulator.executor(shots=64, include_raw_data=True)
    samples = ex_raw.run_circuit_sync(
        QuantumScript([qml.H(0), qml.CNOT([0, 1]), qml.CNOT([1, 2])], [qml.sample(wires=[0, 1, 2])])
    )
    assert samples.shape == (64, 3)
    assert all(row in ([0, 0, 0], [1, 1, 1]) for row in samples.tolist())


def circuit(x, y):
    qml.RX(x, wires=0)
    qml.RY(y, wires=1)
    qml.CNOT(wires=[0, 1])
    qml.Hadamard(wires=2)
    qml.CRZ(0.3, wires=[2, 1])


def exact(measure, *args):
    qnode = qml.QNode(lambda *a: (circuit(*a), measure())[1], qml.device("default.qubit", wires=3))
    return qnode(*args)


def test_qnode_measurements_within_shot_noise(emulator):
    ex = emulator.executor()

    def measure():
        return (
            qml.expval(qml.Z(0) @ qml.Z(1)),
            qml.expval(qml.X(0)),  # does not commute with the others: split into 2 circuits
            qml.var(qml.Z(1)),
            qml.probs(wires=[0, 1]),
        )

    @qf.qelectron(executors=ex)
    @qml.qnode(qml.device("default.qubit", wires=3), shots=SHOTS)
    def electron(x, y):
        circuit(x, y)
        return measure()

    got = electron(0.4, 1.1)
    want = exact(measure, 0.4, 1.1)
    assert electron.last_metadata.executor == "Executor2300"
    assert len(electron.last_metadata.job_ids) == 2  # the X(2) measurement needs its own circuit
    assert abs(got[0] - want[0]) < EXPVAL_TOL and abs(got[1] - want[1]) < EXPVAL_TOL
    assert abs(got[2] - want[2]) < EXPVAL_TOL
    assert got[3].shape == (4,) and np.allclose(got[3], want[3], atol=PROB_TOL)


def test_sample_and_counts_structure_like_default_qubit(emulator):
    def measure():
        return qml.sample(wires=[0, 1]), qml.counts(wires=[0, 1]), qml.expval(qml.Z(0))

    dev = qml.device("default.qubit", wires=3, seed=5)
    plain = qml.set_shots(qml.QNode(lambda x, y: (circuit(x, y), measure())[1], dev), 500)
    electron = qf.qelectron(plain, executors=emulator.executor())
    got, ref = electron(0.4, 1.1), plain(0.4, 1.1)
    assert got[0].shape == ref[0].shape == (500, 2)
    assert set(got[1]) <= {"00", "01", "10", "11"} and sum(got[1].values()) == 500
    probs = exact(lambda: qml.probs(wires=[0, 1]), 0.4, 1.1)
    for key, count in got[1].items():
        assert abs(count / 500 - probs[int(key, 2)]) < 5 * 0.5 / np.sqrt(500)
    assert np.allclose(got[0].mean(axis=0), ref[0].mean(axis=0), atol=0.15)


def test_shot_vectors_with_raw_data(emulator):
    ex = emulator.executor(include_raw_data=True)

    @qml.qnode(qml.device("default.qubit", wires=2), shots=[100, (200, 2)])
    def plain(x):
        qml.RX(x, wires=0)
        return qml.expval(qml.Z(0)), qml.sample(wires=[0])

    result, reference = qf.qelectron(plain, executors=ex)(0.5), plain(0.5)
    assert isinstance(result, tuple) and len(result) == len(reference) == 3
    assert [r[1].shape for r in result] == [r[1].shape for r in reference] == [(100, 1), (200, 1), (200, 1)]
    for expval, samples in result:
        assert expval == pytest.approx(1 - 2 * samples.mean())


def test_parameter_shift_gradient(emulator):
    ex = emulator.executor()

    def energy(p):
        qml.RX(p[0], wires=0)
        qml.RY(p[1], wires=1)
        qml.CNOT(wires=[0, 1])
        return qml.expval(qml.PauliZ(0) @ qml.PauliZ(1))

    electron = qf.qelectron(
        qml.QNode(energy, qml.device("default.qubit", wires=2), shots=SHOTS), executors=ex
    )
    params = pnp.array([0.3, 0.4], requires_grad=True)
    grad = qml.grad(electron)(params)
    reference = qml.grad(qml.QNode(energy, qml.device("default.qubit", wires=2)))(params)
    assert np.allclose(grad, reference, atol=EXPVAL_TOL)
    assert electron.last_metadata is not None


def test_broadcasting(emulator):
    @qf.qelectron(executors=emulator.executor())
    @qml.qnode(qml.device("default.qubit", wires=1), shots=SHOTS)
    def electron(x):
        qml.RX(x, wires=0)
        return qml.expval(qml.Z(0))

    xs = np.array([0.0, 1.0, np.pi])
    assert np.allclose(electron(xs), np.cos(xs), atol=EXPVAL_TOL)


def test_cluster_with_local_executors_and_run_later(emulator):
    cluster = QuantumCluster(executors=[emulator.executor(), LocalExecutor(seed=3)])

    @qf.qelectron(executors=cluster)
    @qml.qnode(qml.device("default.qubit", wires=3), shots=SHOTS)
    def electron(x, y):
        circuit(x, y)
        return qml.expval(qml.Z(0) @ qml.Z(1))

    want = exact(lambda: qml.expval(qml.Z(0) @ qml.Z(1)), 0.4, 1.1)
    used = set()
    for _ in range(2):
        assert abs(electron(0.4, 1.1) - want) < EXPVAL_TOL
        used.add(electron.last_metadata.executor)
    assert used == {"Executor2300", "LocalExecutor"}
    futures = [electron.run_later(0.4, 1.1) for _ in range(4)]  # batches queue on one 2300
    assert all(abs(f.result(timeout=60) - want) < EXPVAL_TOL for f in futures)


def test_config_section_and_qfleet_device(emulator, isolated_config):
    assert executor_classes()["Executor2300"] is Executor2300
    isolated_config.write_text(
        f'[qfleet]\nexecutors = ["Executor2300"]\n\n'
        f'[executors.Executor2300]\naddress = "{emulator.rep}"\nsubscribe_address = "{emulator.pub}"\n'
        f"timeout = 7.5\nretries = 1\n"
    )
    ex = Executor2300()
    assert (ex.address, ex.subscribe_address, ex.timeout, ex.retries) == (emulator.rep, emulator.pub, 7.5, 1)
    dev = qml.device("qfleet.local", wires=2)

    @qml.set_shots(shots=200)
    @qml.qnode(dev)
    def bell():
        qml.H(0)
        qml.CNOT([0, 1])
        return qml.probs(wires=[0, 1])

    probs = bell()
    assert probs[1] == probs[2] == 0 and abs(probs[0] - 0.5) < 0.2
    assert dev.last_metadata.executor == "Executor2300"


def test_pickled_executor_reconnects(emulator):
    ex = emulator.executor(shots=100)
    tape = QuantumScript([qml.X(1)], [qml.probs(wires=[0, 1])])
    ex.run_circuit_sync(tape)
    clone = pickle.loads(pickle.dumps(ex))
    assert clone.model_dump() == ex.model_dump() and clone._runtime == {}
    assert np.array_equal(clone.run_circuit_sync(tape), [0, 1, 0, 0])


def test_samples_only_analytic_tapes_use_default_shots_with_a_warning(emulator):
    # the contract: a shots-only backend runs analytic tapes with its default shots (warned)
    ex = emulator.executor(name="p2300-default-shots")
    assert ex.capabilities.analytic is False and ex.capabilities.default_shots == 1024
    with pytest.warns(ShotsWarning):
        result = ex.execute([QuantumScript([qml.X(0)], [qml.expval(qml.Z(0))])])
    assert result[0] == -1.0 and result.metadata.shots == (1024,)
    with pytest.raises(UnsupportedCircuitError, match="needs shots"):
        ex.execute([QuantumScript([qml.X(0)], [qml.sample(wires=[0])])])


def test_restricted_target_compiles_or_refuses_before_sending(emulators):
    emu = emulators["restricted"]  # 3 qubits in a line; X90, mX90, Y90, mY90, Rz, CZ
    ex = emu.executor(shots=SHOTS)
    static = ex.static()
    assert static.nqubits == 3 and set(static.pgs) == {"X90", "MX90", "Y90", "MY90", "RZ", "CZ"}
    before = emu.dynamic()
    with pytest.raises(UnsupportedCircuitError):  # 4 wires on 3 qubits
        ex.execute([QuantumScript([qml.H(w) for w in range(4)], [qml.probs()], shots=10)])
    after = emu.dynamic()
    assert (after["initialize"], after["execute"]) == (before["initialize"], before["execute"])
    # what fits runs, placed, routed and rewritten into the native gate set (the emulator
    # enforces both): CNOT on the line's ends included
    for ops in (
        [qml.H(0), qml.CNOT([0, 1]), qml.RX(0.7, 2), qml.CNOT([2, 1]), qml.T(0)],
        [qml.H(0), qml.CNOT([0, 2]), qml.RY(0.4, 1), qml.CNOT([1, 0]), qml.CNOT([2, 1])],
    ):
        got = ex.run_circuit_sync(QuantumScript(ops, [qml.probs(wires=[0, 1, 2])]))
        want = qml.execute([QuantumScript(ops, [qml.probs(wires=[0, 1, 2])])], qml.device("default.qubit"))[0]
        assert np.allclose(got, want, atol=PROB_TOL)  # an off-set gate would have failed it


def test_async_api_on_the_callers_own_loops(emulator):
    import asyncio

    ex = emulator.executor(shots=300)
    tapes = [QuantumScript([qml.X(0)], [qml.probs(wires=[0])]), QuantumScript([], [qml.probs(wires=[0])])]

    async def submit_then_get():
        handle = await ex.batch_submit(tapes)
        assert handle.job_ids and handle.num_circuits == 2
        return await ex.batch_get_results(handle)

    for _ in range(2):  # a new loop each time: a new connection, the old one closed
        first, second = asyncio.run(submit_then_get())
        assert np.array_equal(first, [0, 1]) and np.array_equal(second, [1, 0])
    assert sum(1 for k in ex._runtime if k[0] == "connection") == 1
    assert asyncio.run(ex.run_circuit(tapes[0]))[1] == 1


def test_import_qfleet_without_pyzmq_and_a_clear_error(monkeypatch):
    import sys

    import qfleet.protocols.p2300 as p2300

    for name in [n for n in sys.modules if n == "zmq" or n.startswith("zmq.") or n == "qfleet.protocols.p2300.client"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "zmq", None)
    monkeypatch.delattr(p2300, "client", raising=False)
    ex = Executor2300(shots=10, timeout=0.2, retries=0)  # configuring needs no pyzmq
    with pytest.raises(ImportError, match=r"qfleet\[qutech\]"):
        ex.execute([QuantumScript([qml.X(0)], [qml.probs(wires=[0])])])


def test_histogram_stands_in_for_raw_data(emulator):
    ex = emulator.executor(shots=[50, 150], include_raw_data=True)
    static = ex.static().model_copy(update={"supports_raw_data": False})
    ex._store_static(static)  # a 2300 without shot memory
    payload = ex.prepare([QuantumScript([qml.H(0)], [qml.sample(wires=[0])])]).payload
    assert payload.raw_data is False
    first, second = ex.run_circuit_sync(QuantumScript([qml.H(0)], [qml.sample(wires=[0])]))
    assert first.shape == (50, 1) and second.shape == (150, 1)
    assert 0.2 < np.concatenate([first, second]).mean() < 0.8


@pytest.mark.parametrize("name", sorted(__import__("everyday").CASES))
def test_everyday_circuits_within_shot_noise(emulator, name):
    from everyday import check_case

    check_case(name, emulator.executor(), shots=20000)


def test_analytic_qnode_runs_with_default_shots_and_warns(emulator):
    # shots-only: an analytic QNode runs with default_shots (1024), with a warning
    device = qf.QFleetDevice(wires=1, executors=emulator.executor(name="p2300-analytic-qnode"))
    qnode = qml.QNode(lambda: (qml.RX(0.3, wires=0), qml.expval(qml.Z(0)))[1], device)
    with pytest.warns(ShotsWarning):
        value = qnode()
    assert abs(value - np.cos(0.3)) < 5 / np.sqrt(1024)


def test_jobs_longer_than_the_timeout_wait_while_2300_publishes_executing(emulators):
    emu = emulators["slow"]  # 0.25 s per execute, longer than timeout * (retries + 1)
    tapes = [QuantumScript([qml.X(0)], [qml.probs(wires=[0])], shots=10)] * 2
    ex = emu.executor(timeout=0.1, retries=0)
    assert [list(r) for r in ex.execute(tapes)] == [[0, 1], [0, 1]]
    # without the state socket a late reply is a lost one
    deaf = Executor2300(address=emu.rep, subscribe_address=None, timeout=0.1, retries=0)
    with pytest.raises(ExecutorTimeoutError):
        deaf.execute(tapes)
