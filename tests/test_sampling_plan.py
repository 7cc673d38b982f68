"""The sampling plan on its own: a counts-only 'backend' (default.qubit sampling the plan's
circuits, seeded) must give default.qubit's exact answers within shot noise."""

from __future__ import annotations

import numpy as np
import pennylane as qml
import pytest
from pennylane.tape import QuantumScript

from everyday import CASES
from qfleet.circuits.qasm import QASM2_GATES
from qfleet.errors import UnsupportedCircuitError
from qfleet.sampling import (
    SAMPLING_MEASUREMENTS,
    Capabilities,
    Counts,
    Samples,
    SamplingPlan,
    ShotsWarning,
)

CAPS = Capabilities(
    analytic=False,
    native_gates=QASM2_GATES,
    measurements=SAMPLING_MEASUREMENTS,
    mid_circuit_measurements=False,
    default_shots=50_000,
)


def _sampled(plan: SamplingPlan, seed: int = 3):
    device = qml.device("default.qubit", seed=seed)
    outputs = []
    for circuit in plan.circuits:
        assert all(op.name in QASM2_GATES | {"GlobalPhase"} for op in circuit.operations)
        assert [type(mp) for mp in circuit.measurements] == [qml.measurements.SampleMP]
        samples = np.asarray(device.execute(circuit)).reshape(circuit.shots.total_shots, -1)
        outputs.append(Samples(samples))
    return plan.results(outputs)


def _flat(value):
    if isinstance(value, (tuple, list)):
        return np.concatenate([_flat(v) for v in value])
    return np.atleast_1d(np.asarray(value, dtype=float)).ravel()


@pytest.mark.parametrize("name", sorted(CASES))
def test_everyday_circuits_from_samples_match_default_qubit(name):
    func, wires = CASES[name]
    tape = qml.tape.make_qscript(func)()
    exact = qml.QNode(func, qml.device("default.qubit", wires=wires))()
    [got] = _sampled(SamplingPlan.build([tape.copy(shots=50_000)], CAPS))
    np.testing.assert_allclose(_flat(got), _flat(exact), atol=5 * 3 / np.sqrt(50_000))


def test_identity_only_still_runs_the_circuit_once():
    tape = QuantumScript([qml.RX(0.3, 0)], [qml.expval(qml.Identity(0))], shots=100)
    plan = SamplingPlan.build([tape], CAPS)
    assert len(plan.circuits) == 1 and plan.circuits[0].operations
    assert plan.results([Counts({"0": 1})]) == (1.0,)
    # A gate the backend cannot run fails even though nothing is measured.
    caps = CAPS.model_copy(update={"native_gates": frozenset({"RY"})})
    with pytest.raises(UnsupportedCircuitError, match="RX"):
        SamplingPlan.build([tape], caps)


def test_analytic_tape_on_shots_only_backend_warns_once_and_reports_shots():
    caps = CAPS.model_copy(update={"default_shots": 777})
    tape = QuantumScript([qml.RX(0.3, 0)], [qml.expval(qml.Z(0))])
    with pytest.warns(ShotsWarning, match="only samples: analytic measurements run with 777 shots"):
        plan = SamplingPlan.build([tape], caps, executor="hw-777")
    assert plan.shots_used == (777,)
    assert plan.circuits[0].shots.total_shots == 777
    with pytest.raises(UnsupportedCircuitError, match=r"sample\(\) needs shots"):
        SamplingPlan.build([QuantumScript([], [qml.sample(wires=0)])], caps)


def test_shot_vectors_and_samples_from_a_histogram():
    tape = QuantumScript([qml.X(0)], [qml.sample(qml.Z(0)), qml.probs(wires=0)], shots=[3, 5])
    plan = SamplingPlan.build([tape], CAPS, seed=1)
    [result] = plan.results([Counts({"1": 8}) for _ in plan.circuits])
    assert len(result) == 2
    np.testing.assert_array_equal(result[0][0], [-1, -1, -1])
    np.testing.assert_array_equal(result[1][1], [0.0, 1.0])


def test_postselection_needs_native_mid_circuit_measurements():
    def func():
        qml.Hadamard(0)
        qml.measure(0, postselect=1)
        return qml.expval(qml.Z(0))

    tape = qml.tape.make_qscript(func)().copy(shots=100)
    with pytest.raises(UnsupportedCircuitError, match="postselection"):
        SamplingPlan.build([tape], CAPS)


def test_raw_output_count_must_match_the_circuits():
    tape = QuantumScript([qml.X(0)], [qml.expval(qml.Z(0)), qml.expval(qml.X(0))], shots=10)
    plan = SamplingPlan.build([tape], CAPS)
    assert len(plan.circuits) == 2
    with pytest.raises(ValueError, match="got 1 outputs for 2 circuits"):
        plan.results([Counts({"1": 10})])
