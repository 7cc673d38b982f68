"""BraketLocalExecutor: Amazon Braket's local simulators through OpenQASM 3, offline.

Exact runs are compared with default.qubit / default.mixed to 1e-10; shots runs with a
seed against shot-noise bounds; noise against its closed form.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pennylane as qml
import pytest
from conftest import binomial_tol
from everyday import CASES, check_case
from pennylane import numpy as pnp
from pydantic import ValidationError

pytest.importorskip("braket.devices")

import qfleet as qf  # noqa: E402
from qfleet.circuits.qasm3 import BRAKET_GATES, to_openqasm3  # noqa: E402
from qfleet.errors import UnsupportedCircuitError  # noqa: E402
from qfleet.executors import BraketLocalExecutor  # noqa: E402

QS = qml.tape.QuantumScript


def _gate(name, rng):
    if name.startswith("Adjoint("):
        cls = getattr(qml, name[len("Adjoint(") : -1])
        return qml.adjoint(cls(wires=range(cls.num_wires)))
    cls = getattr(qml, name)
    wires = cls.num_wires if isinstance(cls.num_wires, int) else 1
    return cls(*rng.uniform(-3, 3, cls.num_params), wires=range(wires))


def test_every_braket_gate_matches_pennylane_including_global_phase():
    rng = np.random.default_rng(7)
    ex = BraketLocalExecutor()
    tapes, names = [], []
    for name in BRAKET_GATES:
        op = _gate(name, rng)
        n = len(op.wires)
        prep = [qml.RY(a, w) for w, a in enumerate(rng.uniform(0, 3, n))]
        prep += [qml.RZ(a, w) for w, a in enumerate(rng.uniform(0, 3, n))]
        tape = QS([*prep, op], [qml.state()])
        source, _ = to_openqasm3(tape, measure=False, result_pragmas=["state_vector"])
        assert f"\n{BRAKET_GATES[name]}" in source, (name, source)  # emitted, not decomposed
        tapes.append(tape)
        names.append(name)
    got = ex.execute(tapes)
    want = qml.execute(tapes, qml.device("default.qubit"))
    for name, g, w in zip(names, got, want):
        np.testing.assert_allclose(g, w, atol=1e-10, err_msg=name)


def test_cx_is_cnot_and_wires_map_in_tape_order():
    tape = QS([qml.H("a"), qml.CNOT(["a", 7]), qml.S(7)], [qml.probs(wires=["a", 7])], shots=10)
    source, used = to_openqasm3(tape)
    assert "cnot q[0], q[1];" in source and "cx" not in source
    assert source.endswith("b[0] = measure q[0];\nb[1] = measure q[1];\n")
    assert used == {0, 1}


def test_exact_results_match_default_qubit():
    tapes = [
        QS(
            [qml.RX(0.4, "x"), qml.CNOT(["x", 2]), qml.RY(0.3, "idle-after")],
            [qml.expval(qml.Z("x") @ qml.Z(2)), qml.probs(wires=["x", 2]),
             qml.var(qml.X("idle-after")), qml.state()],
        ),
        # a wire no gate touches (Braket simulates only the others)
        QS([qml.RX(0.4, 0), qml.Identity(3)], [qml.density_matrix([0, 3]), qml.purity([0]),
                                               qml.probs(), qml.expval(qml.Y(0) + 0.5 * qml.X(3))]),
        QS([qml.RX(0.4, 0), qml.CNOT([0, 1])], [qml.vn_entropy([0]), qml.mutual_info([0], [1])]),
        # broadcasting
        QS(
            [qml.RX(np.array([0.1, 0.5, 2.0]), 0), qml.IsingXY(0.3, [0, 1])],
            [qml.expval(qml.Y(0))],
        ),
        # gates Braket lacks are decomposed; global phases kept for qml.state()
        QS([qml.CRX(0.7, [0, 1]), qml.MultiRZ(0.4, [0, 1, 2]), qml.QFT([0, 1, 2])], [qml.state()]),
    ]
    got = BraketLocalExecutor().execute(tapes)
    want = qml.execute(tapes, qml.device("default.qubit"))
    for g, w in zip(got, want, strict=True):
        for a, b in zip(g if isinstance(g, tuple) else [g], w if isinstance(w, tuple) else [w]):
            np.testing.assert_allclose(a, b, atol=1e-10)


def test_density_matrix_simulator_runs_pennylane_channels_like_default_mixed():
    ops = [
        qml.H(0), qml.CNOT([0, 1]),
        qml.DepolarizingChannel(0.1, 0), qml.AmplitudeDamping(0.2, 1),
        qml.GeneralizedAmplitudeDamping(0.1, 0.3, 0),  # no Braket name: a kraus pragma
        qml.PhaseDamping(0.15, 1), qml.BitFlip(0.05, 0), qml.PhaseFlip(0.07, 1),
        qml.RY(0.4, 1),
    ]
    measurements = [qml.expval(qml.Z(0) @ qml.Z(1)), qml.density_matrix([0, 1]), qml.purity([0, 1])]
    tape = QS(ops, measurements)
    source, _ = to_openqasm3(tape, measure=False, result_pragmas=["density_matrix"])
    assert "#pragma braket noise depolarizing(0.1) q[0]" in source
    assert "#pragma braket noise kraus(" in source
    got = BraketLocalExecutor(device="braket_dm").execute([tape])[0]
    want = qml.execute([tape], qml.device("default.mixed", wires=2))[0]
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, atol=1e-10)


def test_qnode_on_braket_sv_with_shots_and_seed_is_within_shot_noise():
    def circuit(x):
        qml.RX(x, 0)
        qml.CNOT([0, 1])
        qml.RY(0.5, 1)
        return qml.expval(qml.Z(0) @ qml.X(1)), qml.probs(wires=[0, 1]), qml.var(qml.Y(1))

    shots = 20000
    exact = qml.QNode(circuit, qml.device("default.qubit", wires=2))(0.8)
    make = lambda seed: qf.qelectron(  # noqa: E731
        qml.set_shots(qml.QNode(circuit, qml.device("default.qubit", wires=2)), shots),
        executors=BraketLocalExecutor(seed=seed),
    )
    got, again, other = make(11)(0.8), make(11)(0.8), make(12)(0.8)
    assert abs(got[0] - exact[0]) < 5 / np.sqrt(shots)
    assert np.all(np.abs(got[1] - exact[1]) < binomial_tol(exact[1], shots))
    assert abs(got[2] - exact[2]) < 5 * 2 / np.sqrt(shots)
    # seeded: reproducible, and a different seed gives different samples
    np.testing.assert_array_equal(got[1], again[1])
    assert not np.array_equal(got[1], other[1])


def test_shot_vectors_samples_and_counts():
    tape = QS(
        [qml.X(0), qml.H(1)],
        [qml.sample(wires=[0, 1]), qml.counts(wires=[0]), qml.expval(qml.Z(0))],
        shots=[100, 300],
    )
    (first, second) = BraketLocalExecutor(seed=1).execute([tape])[0]
    assert first[0].shape == (100, 2) and second[0].shape == (300, 2)
    assert set(first[0][:, 0]) == {1} and first[1] == {"1": 100} and second[2] == -1.0


def test_depolarizing_noise_model_shrinks_z_towards_zero():
    tape = QS([qml.X(0)], [qml.expval(qml.Z(0))])
    noiseless = BraketLocalExecutor(device="braket_dm").execute([tape])[0]
    assert np.isclose(noiseless, -1.0)
    for p in (0.05, 0.2):
        noisy = BraketLocalExecutor(device="braket_dm", noise_model={"depolarizing": p})
        assert np.isclose(noisy.execute([tape])[0], -(1 - 4 * p / 3), atol=1e-10)
    # with shots (seeded) too
    noisy = BraketLocalExecutor(device="braket_dm", noise_model={"depolarizing": 0.2},
                                shots=20000, seed=3)
    assert abs(noisy.execute([tape])[0] - -(1 - 0.8 / 3)) < 5 / np.sqrt(20000)


def test_braket_noise_model_object_is_kept_as_config():
    from braket.circuits.gates import X
    from braket.circuits.noise_model import GateCriteria, NoiseModel
    from braket.circuits.noises import BitFlip

    model = NoiseModel().add_noise(BitFlip(0.25), GateCriteria(X))
    ex = BraketLocalExecutor(device="braket_dm", noise_model=model)
    assert ex.noise_model == model.to_dict()
    tapes = [QS([qml.X(0)], [qml.expval(qml.Z(0))]), QS([qml.H(0)], [qml.expval(qml.X(0))])]
    z, x = ex.execute(tapes)
    assert np.isclose(z, -0.5)  # bit flip after every X gate: <Z> = -(1 - 2p)
    assert np.isclose(x, 1.0)  # H is not an X gate: no noise


def test_gradient_of_a_qelectron_on_braket():
    def energy(params):
        qml.RX(params[0], 0)
        qml.RY(params[1], 1)
        qml.CNOT([0, 1])
        return qml.expval(qml.Z(0) @ qml.Z(1) - 0.2 * qml.X(1))

    circuit = qf.qelectron(
        qml.QNode(energy, qml.device("default.qubit", wires=2)),
        executors=BraketLocalExecutor(),
    )
    exact = qml.QNode(energy, qml.device("default.qubit", wires=2))
    params = pnp.array([0.3, -0.6], requires_grad=True)
    assert np.isclose(circuit(params), exact(params), atol=1e-10)
    np.testing.assert_allclose(qml.grad(circuit)(params), qml.grad(exact)(params), atol=1e-8)
    assert np.isclose(circuit.run_later(params).result(30), exact(params), atol=1e-10)


def test_process_pool_mode_gives_the_same_results():
    tapes = [QS([qml.RX(x, 0), qml.CNOT([0, 1])], [qml.expval(qml.Z(1))]) for x in (0.1, 0.9)]
    ex = BraketLocalExecutor(parallel="process", workers=1, name="pooled")
    results = ex.execute(tapes)
    np.testing.assert_allclose(results, np.cos([0.1, 0.9]), atol=1e-10)
    assert results.metadata.executor == "pooled" and results.metadata.backend == "braket:braket_sv"
    ex._runtime["pool"].shutdown()


def test_what_braket_cannot_run_is_refused_before_running():
    with pytest.raises(ValidationError, match="braket_dm"):
        BraketLocalExecutor(noise_model={"depolarizing": 0.1})
    with pytest.raises(ValidationError, match="unknown noise"):
        BraketLocalExecutor(device="braket_dm", noise_model={"dephasing": 0.1})
    dm = BraketLocalExecutor(device="braket_dm")
    # braket_dm has no state vector: qml.state() is not among its exact measurements
    with pytest.raises(UnsupportedCircuitError, match=r"cannot return state\(\)"):
        dm.execute([QS([qml.X(0)], [qml.state()])])
    with pytest.raises(UnsupportedCircuitError, match=r"cannot return state\(\)"):
        BraketLocalExecutor().execute([QS([qml.X(0)], [qml.state()], shots=10)])
    with pytest.raises(UnsupportedCircuitError, match="13"):
        dm.execute([QS([qml.X(w) for w in range(14)], [qml.expval(qml.Z(0))])])
    # noise channels run natively on braket_dm only
    assert dm.supports_operation(qml.DepolarizingChannel(0.1, 0))
    assert not BraketLocalExecutor().supports_operation(qml.DepolarizingChannel(0.1, 0))


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("device", ["braket_sv", "braket_dm"])
@pytest.mark.parametrize("shots", [None, 20000])
def test_everyday_circuits_match_default_qubit(name, device, shots):
    check_case(name, BraketLocalExecutor(device=device, seed=5), shots)


def test_wires_first_used_out_of_order_keep_their_qubits():
    # q[i] = tape.wires[i] = [1, 0] here: the state and every result must stay in wire order
    tape = QS([qml.RY(0.5, 1), qml.RX(0.3, 0)],
              [qml.expval(qml.Z(0)), qml.expval(qml.Z(1)), qml.probs(wires=[0, 1]),
               qml.measurements.StateMP(wires=[0, 1])])  # qml.state() as the device sends it
    want = qml.execute([tape], qml.device("default.qubit"))[0]
    for ex in (BraketLocalExecutor(), BraketLocalExecutor(parallel="process", workers=1)):
        got = ex.execute([tape])[0]
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-10)
        ex._runtime.get("pool") and ex._runtime["pool"].shutdown()
    dm = QS(tape.operations, [qml.density_matrix([0, 1]), qml.expval(qml.Z(0))])
    got = BraketLocalExecutor(device="braket_dm").execute([dm])[0]
    for a, b in zip(got, qml.execute([dm], qml.device("default.qubit"))[0], strict=True):
        np.testing.assert_allclose(a, b, atol=1e-10)


def test_idle_wires_and_shot_vectors_through_the_plan():
    # wire 2 is only measured (Braket does not simulate it); one output per planned circuit
    tape = QS([qml.X(0)], [qml.expval(qml.X(0)), qml.expval(qml.Z(0)), qml.probs(wires=[2])],
              shots=[(500, 2)])
    ex = BraketLocalExecutor(seed=2)
    prepared = ex.prepare([tape])
    assert prepared.num_outputs == len(prepared.plan.circuits) == 2  # X and Z split
    for x, z, probs in ex.execute([tape])[0]:
        assert abs(x) < 5 / np.sqrt(500) and z == -1.0 and probs[0] == 1.0


def test_optional_sdks_are_imported_lazily():
    code = (
        "import sys, qfleet; "
        "print(sorted(m for m in ('braket', 'distributed', 'covalent') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
