"""QiskitExecutor without running circuits: fields, Covalent migration errors, options,
secrets, config files, the lazy ``ibm`` extra, and the tape -> qiskit translation."""

from __future__ import annotations

import pickle
import textwrap

import numpy as np
import pennylane as qml
import pytest
from pennylane.tape import QuantumScript
from pennylane.wires import Wires
from pydantic import ValidationError

pytest.importorskip("qiskit_ibm_runtime")

from qfleet.circuits.qiskit import (  # noqa: E402
    observable_to_sparse_pauli,
    samples_from_bit_array,
    tape_to_circuit,
)
from qfleet.errors import ConfigError, ExecutorError  # noqa: E402
from qfleet.config import executor_classes  # noqa: E402
from qfleet.executors import QiskitExecutor  # noqa: E402
from qfleet.executors.ibm import IBMAuthenticationError  # noqa: E402
from qfleet.executors.ibm_runtime import to_executor_error  # noqa: E402
from standins.helpers import run_without_extra  # noqa: E402

SECRET = "s3cr3t-IBM-cloud-api-key-0123456789"


@pytest.fixture
def config_file(tmp_path, monkeypatch):
    path = tmp_path / "qfleet.toml"
    monkeypatch.setenv("QFLEET_CONFIG", str(path))
    for key in [k for k in __import__("os").environ if k.startswith("QFLEET_QISKIT")]:
        monkeypatch.delenv(key)
    return path


# -- fields and migration from Covalent -------------------------------------------------------


def test_defaults_run_locally_on_aer():
    ex = QiskitExecutor()
    assert ex.is_local and ex.backend == "aer_simulator" and ex.device == "local_sampler"
    assert ex.single_job and ex.mode == "session" and ex.local_transpile
    assert ex.default_shots == 1024
    assert "QiskitExecutor" in executor_classes()


def test_fake_backend_is_local_testing_mode():
    ex = QiskitExecutor(device="sampler", backend="fake_manila")
    assert ex.is_local and ex._account() is None


@pytest.mark.parametrize(
    ("field", "hint"),
    [
        ("hub", "instance="),
        ("group", "instance="),
        ("project", "instance="),
        ("ibmqx_token", "token="),
        ("ibmqx_url", "url="),
        ("cloud_instance", "instance="),
    ],
)
def test_covalent_fields_say_what_to_use_instead(field, hint):
    with pytest.raises(ValidationError) as info:
        QiskitExecutor(**{field: "x"})
    message = str(info.value)
    assert repr(field) in message and hint in message


def test_old_channel_and_retired_simulator():
    with pytest.raises(ValidationError, match="ibm_quantum_platform"):
        QiskitExecutor(channel="ibm_quantum")
    with pytest.raises(ValidationError, match="retired.*aer_simulator.*fake_manila"):
        QiskitExecutor(device="sampler", backend="ibmq_qasm_simulator")


def test_local_sampler_cannot_name_a_real_backend():
    with pytest.raises(ValidationError, match="fake_brisbane.*device='sampler'"):
        QiskitExecutor(backend="ibm_brisbane")


def test_runtime_device_needs_a_backend():
    with pytest.raises(ValidationError, match="needs backend="):
        QiskitExecutor(device="sampler", token=SECRET)
    ex = QiskitExecutor(device="estimator", channel="local")
    assert ex.backend == "aer_simulator"


def test_unknown_option_is_named():
    with pytest.raises(ValidationError, match=r"unknown sampler option\(s\) \['colour'\]"):
        QiskitExecutor(options={"colour": "blue"})
    moved = r"optimization_level.*QiskitExecutor\(optimization_level"
    with pytest.raises(ValidationError, match=moved):
        QiskitExecutor(options={"optimization_level": 3})
    with pytest.raises(ValidationError, match="resilience_level.*device='estimator'"):
        QiskitExecutor(options={"resilience_level": 1})
    with pytest.raises(ValidationError, match="bar"):
        QiskitExecutor(options={"simulator": {"bar": 1}})
    ok = QiskitExecutor(device="estimator", channel="local", options={"resilience_level": 1})
    assert ok.options == {"resilience_level": 1}
    QiskitExecutor(options={"default_shots": 100, "twirling": {"enable_gates": False}})


def test_options_of_the_executor_primitives_are_checked_too():
    QiskitExecutor(primitives="executor", options={"default_shots": 100})
    with pytest.raises(ValidationError, match="colour"):
        QiskitExecutor(primitives="executor", options={"colour": 1})


@pytest.mark.parametrize("value", [60, "1h30m", "2m", "45s"])
def test_max_time_accepts_seconds_and_hms(value):
    assert QiskitExecutor(max_time=value).max_time == value


@pytest.mark.parametrize("value", [0, -5, "soon", ""])
def test_max_time_rejects_nonsense(value):
    with pytest.raises(ValidationError, match="max_time"):
        QiskitExecutor(max_time=value)


# -- secrets ----------------------------------------------------------------------------------


def test_token_never_shown_or_pickled(monkeypatch):
    ex = QiskitExecutor(device="sampler", backend="ibm_brisbane", token=SECRET, instance="inst")
    assert SECRET not in repr(ex) and SECRET not in str(ex)
    assert SECRET not in ex.model_dump_json()
    blob = pickle.dumps(ex)
    assert SECRET.encode() not in blob
    clone = pickle.loads(blob)
    assert clone.token is None and clone.backend == "ibm_brisbane" and clone.instance == "inst"
    # The worker side takes the token from its own environment/config.
    monkeypatch.setenv("QFLEET_QISKITEXECUTOR_TOKEN", "worker-token")
    assert clone.secret("token") == "worker-token"
    assert ex.secret("token") == SECRET


def test_errors_never_show_the_token():
    exc = RuntimeError(f"request failed for apikey {SECRET} (500 Server Error)")
    err = to_executor_error(exc, executor="ibm", secrets=[SECRET])
    assert SECRET not in str(err) and "**********" in str(err)
    assert isinstance(err, ExecutorError) and err.transient


def test_401_becomes_an_auth_error_naming_the_config_key():
    class Rejected(Exception):
        status_code = 401

    err = to_executor_error(Rejected("Unauthorized"), executor="ibm",
                            token_hint=QiskitExecutor()._token_hint())
    assert isinstance(err, IBMAuthenticationError) and not err.transient
    assert "QFLEET_QISKITEXECUTOR_TOKEN" in str(err) and "[executors.QiskitExecutor]" in str(err)


# -- config file ------------------------------------------------------------------------------


def test_config_section_with_nested_options(config_file):
    from qfleet.config import load_config, masked

    config_file.write_text(textwrap.dedent(f"""
        [executors.QiskitExecutor]
        backend = "fake_manila"
        seed = 11
        token = "{SECRET}"
        mode = "batch"

        [executors.QiskitExecutor.options]
        default_shots = 2000
        [executors.QiskitExecutor.options.twirling]
        enable_gates = false
    """))
    ex = QiskitExecutor()
    assert ex.backend == "fake_manila" and ex.seed == 11 and ex.mode == "batch"
    assert ex.options == {"default_shots": 2000, "twirling": {"enable_gates": False}}
    assert ex.default_shots == 2000
    assert ex.token.get_secret_value() == SECRET and SECRET not in repr(ex)
    assert QiskitExecutor(seed=1).seed == 1  # an explicit argument wins
    shown = masked(load_config())
    assert shown["executors"]["QiskitExecutor"]["token"] == "**********"


def test_config_with_an_unknown_option_names_it(config_file):
    config_file.write_text('[executors.QiskitExecutor.options]\ncolor = 1\n')
    with pytest.raises((ValidationError, ConfigError), match="color"):
        QiskitExecutor()


# -- the ibm extra is optional ------------------------------------------------------------------


def test_import_qfleet_without_the_ibm_extra():
    stdout = run_without_extra(
        ("qiskit", "qiskit_aer", "qiskit_ibm_runtime"), "qiskit",
        'QiskitExecutor(options={"default_shots": 10})',
        "qml.tape.QuantumScript([qml.H(0)], [qml.expval(qml.Z(0))], shots=10)")
    assert "ERROR" in stdout and "pip install 'qfleet[ibm]'" in stdout


# -- translation ------------------------------------------------------------------------------


def test_circuit_qubit_i_is_tape_wire_i():
    tape = QuantumScript([qml.X("b"), qml.CNOT(["b", "c"])], [qml.probs(wires=["a", "b", "c"])],
                         shots=10)
    circuit = tape_to_circuit(tape)
    assert list(tape.wires) == ["b", "c", "a"]
    assert circuit.num_qubits == 3 and circuit.num_clbits == 3
    ops = [(inst.operation.name, [circuit.find_bit(q).index for q in inst.qubits])
           for inst in circuit.data]
    assert ops[:2] == [("x", [0]), ("cx", [0, 1])]
    assert sorted(i for name, i in ops if name == "measure") == [[0], [1], [2]]
    bare = tape_to_circuit(tape, measure=False)
    assert bare.num_qubits == 3 and "measure" not in bare.count_ops()


def test_qiskit_samples_come_back_first_wire_first():
    from qiskit.primitives import StatevectorSampler

    from qfleet.circuits import result_from_samples

    tape = QuantumScript([qml.X("b")], [qml.sample(wires=["a", "b", "c"])], shots=4)
    result = StatevectorSampler(seed=1).run([tape_to_circuit(tape)], shots=4).result()[0]
    samples = samples_from_bit_array(result.data.c)
    np.testing.assert_array_equal(samples, [[1, 0, 0]] * 4)  # columns: tape.wires = b, a, c
    np.testing.assert_array_equal(result_from_samples(tape, samples), [[0, 1, 0]] * 4)


@pytest.mark.parametrize(
    "observable",
    [
        qml.Z(0),
        qml.X(0) @ qml.Y(2),
        0.5 * qml.Z(1) + 0.25 * qml.X(0) @ qml.X(2) - 0.1 * qml.Identity(0),
        qml.Hamiltonian([0.3, -1.2], [qml.Y(1), qml.Z(0) @ qml.Z(2)]),
        qml.Hermitian(np.array([[2, 1 - 1j], [1 + 1j, -1]]), wires=2),
    ],
)
def test_observable_matrices_match(observable):
    wires = Wires([0, 1, 2])
    op = observable_to_sparse_pauli(observable, wires)
    # qiskit's matrices put qubit 0 last (little-endian): compare with reversed wire order.
    np.testing.assert_allclose(
        op.to_matrix(), qml.matrix(observable, wire_order=list(reversed(wires))), atol=1e-12
    )


def test_prepare_splits_non_commuting_measurements_and_groups_one_job():
    tapes = [
        QuantumScript([qml.RX(0.2, 0)], [qml.expval(qml.X(0)), qml.expval(qml.Z(0))]),
        QuantumScript([qml.RY(0.3, 1)], [qml.probs(wires=[1])], shots=500),
    ]
    with pytest.warns(UserWarning, match="1024 shots"):  # no shots -> default_shots, warned
        prepared = QiskitExecutor(name="ibm-prepare-test").prepare(tapes)
    assert prepared.plan.shots_used == (2048, 500)
    batch = prepared.payload
    assert len(batch.pubs) == 3 and [p.shots for p in batch.pubs] == [1024, 1024, 500]
    assert batch.outputs == ((0,), (1,), (2,))
    # single_job: one job per distinct shot count (mixed shots per job are deprecated)
    assert batch.jobs == ((0, 1), (2,))
    per_tape = QiskitExecutor(single_job=False, name="ibm-prepare-test").prepare(tapes).payload
    assert per_tape.jobs == ((0, 1), (2,))
    estimator = QiskitExecutor(device="estimator", channel="local", name="ibm-prepare-test")
    pubs = estimator.prepare(tapes[:1]).payload.pubs
    assert len(pubs) == 1 and len(pubs[0].observables) == 2  # no split: Pauli sums measured
    assert pubs[0].precision == pytest.approx(1 / 32)


def test_single_job_off_makes_one_job_per_tape():
    tapes = [QuantumScript([qml.RX(a, 0)], [qml.expval(qml.Z(0)), qml.expval(qml.X(0))],
                           shots=100) for a in (0.1, 0.2)]
    assert QiskitExecutor().prepare(tapes).payload.jobs == ((0, 1, 2, 3),)
    assert QiskitExecutor(single_job=False).prepare(tapes).payload.jobs == ((0, 1), (2, 3))


def test_estimator_expval_of_a_mid_circuit_measurement():
    ex = QiskitExecutor(device="estimator", channel="local", seed=3)
    m = qml.measure(0)
    tape = QuantumScript([qml.RX(1.0, 0), *m.measurements], [qml.expval(m)], shots=20000)
    got = ex.run_circuit_sync(tape)
    assert abs(got - np.sin(0.5) ** 2) < 5 * 0.5 / np.sqrt(20000)


def test_estimator_accepts_expval_only():
    ex = QiskitExecutor(device="estimator", channel="local")
    tape = QuantumScript([qml.H(0)], [qml.probs(wires=[0])], shots=100)
    with pytest.raises(ValueError, match="cannot return probs"):
        ex.run_circuit_sync(tape)


@pytest.mark.filterwarnings("ignore:.*only samples")  # analytic QNode: default_shots, warned
def test_a_qelectron_on_it_cloudpickles_without_the_token():
    cloudpickle = pytest.importorskip("cloudpickle")
    import qfleet as qf

    ex = QiskitExecutor(seed=4, token=SECRET, options={"default_shots": 300})

    @qf.qelectron(executors=ex)
    @qml.qnode(qml.device("default.qubit", wires=1))
    def circuit(x):
        qml.RX(x, wires=0)
        return qml.expval(qml.Z(0))

    circuit(0.2)  # per-process state (dispatcher, simulator) exists now
    blob = cloudpickle.dumps(circuit)
    assert SECRET.encode() not in blob
    clone = cloudpickle.loads(blob)
    assert clone.executor.token is None and clone.executor.default_shots == 300
    assert abs(clone(0.2) - np.cos(0.2)) < 5 / np.sqrt(300)
