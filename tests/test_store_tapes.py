"""Tapes as JSON data (qfleet.circuits.tape_json): round trips over a wide range of tapes,
and data that is not a tape (unknown or non-PennyLane class names, bad arrays) refused."""

from __future__ import annotations

import json

import numpy as np
import pennylane as qml
import pytest
from everyday import CASES
from pennylane.tape import QuantumScript

from qfleet.circuits.tape_json import (
    TapeCodecError,
    tapes_document,
    tapes_from_json,
    tapes_to_json,
)

H2 = np.array([[1.0, 1j], [-1j, -0.5]])


def _extra_tapes() -> dict[str, QuantumScript]:
    ops_common = [qml.Hadamard(0), qml.CNOT([0, 1]), qml.RY(0.3, 2)]
    weights = np.linspace(0.1, 1.7, 18).reshape(2, 3, 3)
    m0 = qml.measure(0)
    return {
        "templates": QuantumScript(
            [qml.IQPEmbedding([0.6, -1.57], wires=[0, 1]),
             qml.StronglyEntanglingLayers(weights, wires=[0, 1, 2]),
             qml.QFT(wires=[0, 1, 2]), qml.BasisState(np.array([1, 0]), wires=[3, 4])],
            [qml.probs(wires=[0, 1, 2])]),
        "modifiers": QuantumScript(
            [qml.adjoint(qml.RX(0.4, 0)), qml.ctrl(qml.RZ(0.2, 1), control=[0, 2],
                                                   control_values=[1, 0]),
             qml.pow(qml.S(1), 3), qml.exp(qml.X(0) @ qml.Y(1), 0.3j),
             qml.PauliRot(0.5, "XYZ", wires=[0, 1, 2]), qml.MultiRZ(0.1, wires=[0, 2])],
            [qml.expval(qml.Z(0)), qml.var(qml.X(1) @ qml.Z(2))]),
        "matrices": QuantumScript(
            [qml.QubitUnitary(qml.matrix(qml.Rot(0.1, 0.2, 0.3, 0)), wires=0),
             qml.StatePrep(np.array([1, 1j, 0, 0]) / np.sqrt(2), wires=[1, 2]),
             qml.GlobalPhase(0.25), qml.ControlledQubitUnitary(qml.matrix(qml.X(0)),
                                                              wires=[1, 0])],
            [qml.expval(qml.Hermitian(H2, wires=1)), qml.state()]),
        "hamiltonians": QuantumScript(
            ops_common,
            [qml.expval(qml.Hamiltonian([0.5, -1.25], [qml.Z(0), qml.X(0) @ qml.Y(1)])),
             qml.expval(qml.sum(qml.s_prod(2.0, qml.Z(2)), qml.prod(qml.X(0), qml.X(1)))),
             qml.expval(0.3 * qml.Z(0) + 0.7 * qml.Z(1) @ qml.Z(2))]),
        "sampling": QuantumScript(
            ops_common,
            [qml.counts(wires=[0, 1], all_outcomes=True), qml.sample(wires=[2]),
             qml.probs(op=qml.X(1)), qml.sample(qml.Y(0))],
            shots=[10, (5, 2)]),
        "density": QuantumScript(ops_common, [qml.density_matrix(wires=[0, 1]),
                                              qml.vn_entropy(wires=[0]), qml.purity([1])]),
        "mid_circuit_values": QuantumScript(
            [qml.RX(0.7, 0), m0.measurements[0], qml.ops.Conditional(m0 * 2 + 1 > 2,
                                                                   qml.RY(0.4, 1))],
            [qml.expval(m0), qml.probs(op=m0)]),
        "non_finite_and_complex": QuantumScript(
            [qml.RX(np.float32(0.5), "a"), qml.PhaseShift(np.nan, [("t", 1)])],
            [qml.expval(qml.Hermitian(np.diag([1 + 0j, -1]), wires="a"))]),
        "broadcast_with_trainable": QuantumScript(
            [qml.RX(qml.numpy.array([0.1, 0.2], requires_grad=True), 0), qml.RY(0.3, 0)],
            [qml.expval(qml.Z(0))], shots=100, trainable_params=[1]),
        "empty": QuantumScript([], []),
    }


def _everyday_tapes() -> dict[str, QuantumScript]:
    return {f"everyday-{name}": qml.tape.make_qscript(func)() for name, (func, _) in CASES.items()}


TAPES = {**_everyday_tapes(), **_extra_tapes()}
EXECUTABLE = {name for name in TAPES if name not in {"empty", "non_finite_and_complex"}}


def _results_equal(a, b) -> None:
    if isinstance(a, dict):
        assert a == b
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _results_equal(x, y)
    else:
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-12)


@pytest.mark.parametrize("shots", [None, 200, [10, (5, 2)]], ids=["exact", "200", "vector"])
@pytest.mark.parametrize("name", sorted(TAPES))
def test_round_trip_is_equal_and_runs_the_same(name, shots):
    tape = TAPES[name]
    if shots is not None and name != "sampling":
        tape = tape.copy(shots=shots)
    if shots is None and name == "sampling":
        pytest.skip("qml.sample/qml.counts need shots")
    text = tapes_to_json([tape, tape])
    json.loads(text)  # plain JSON: no NaN literals, no objects
    assert "NaN" not in text
    back, again = tapes_from_json(text)
    comparable = "mid_circuit" not in name and name != "non_finite_and_complex"  # NaN != NaN
    if comparable:
        assert qml.equal(back, again)
    assert back.shots == tape.shots
    assert back.trainable_params == tape.trainable_params
    assert [type(op) for op in back.operations] == [type(op) for op in tape.operations]
    assert [type(m) for m in back.measurements] == [type(m) for m in tape.measurements]
    assert [op.wires for op in back.operations] == [op.wires for op in tape.operations]
    if comparable:
        assert qml.equal(back, tape, check_interface=False, check_trainability=False), name
    exact_only = {"density", "matrices", "everyday-sparse_hamiltonian"}
    if name in EXECUTABLE and not (tape.shots and name in exact_only):
        dev = qml.device("default.qubit", seed=11)
        dev2 = qml.device("default.qubit", seed=11)
        _results_equal(qml.execute([tape], dev, mcm_method="deferred")[0],
                       qml.execute([back], dev2, mcm_method="deferred")[0])


def test_non_finite_values_and_dtypes_survive():
    tape = TAPES["non_finite_and_complex"]
    (back,) = tapes_from_json(tapes_to_json([tape]))
    assert np.isnan(back.operations[1].data[0])
    assert back.operations[0].data[0].dtype == np.float32
    assert back.measurements[0].obs.data[0].dtype == np.complex128
    assert back.operations[1].wires.labels == (("t", 1),)


class WithCallback(qml.operation.Operation):
    """A user's gate with a Python function among its hyperparameters."""

    num_wires = 1

    def __init__(self, wires, callback, matrix=None):
        self._hyperparameters = {"callback": callback, "matrix": matrix}
        super().__init__(wires=wires)

    @property
    def has_matrix(self):
        return self.hyperparameters["matrix"] is not None

    def matrix(self, wire_order=None):
        return self.hyperparameters["matrix"]


def test_a_gate_with_a_matrix_but_no_data_form_is_kept_as_its_matrix():
    gate = WithCallback(0, callback=print, matrix=qml.matrix(qml.RY(0.8, 0)))
    tape = QuantumScript([gate], [qml.expval(qml.Z(0))])
    (back,) = tapes_from_json(tapes_to_json([tape]))
    assert isinstance(back.operations[0], qml.QubitUnitary)
    assert qml.execute([back], qml.device("default.qubit"))[0] == pytest.approx(np.cos(0.8))


def test_a_tape_that_cannot_be_data_is_recorded_as_unavailable():
    tape = QuantumScript([WithCallback(0, callback=print)], [qml.expval(qml.Z(0))])
    with pytest.raises(TapeCodecError, match="builtin_function_or_method"):
        tapes_to_json([tape])
    with pytest.raises(TapeCodecError, match=r"circuits were not stored: .*builtin_function"):
        tapes_from_json(tapes_document([tape]))


def _doc(ops: list) -> str:
    return json.dumps({"format": "qfleet.tapes", "version": 1, "tapes": [
        {"operations": ops, "measurements": [], "shots": None, "trainable_params": []}]})


def _rx(**overrides) -> dict:
    node = {"type": "RX", "module": "pennylane.ops.qubit.parametric_ops_single_qubit",
            "meta": {"tuple": [{"wires": [0]}, {"tuple": []}]},
            "children": [{"leaf": 0.5}]}
    return {**node, **overrides}


@pytest.mark.parametrize("node, message", [
    (_rx(type="system", module="os"), "'system' is not a PennyLane"),
    (_rx(type="Popen", module="subprocess"), "'Popen' is not a PennyLane"),
    (_rx(type="QuantumScript"), "'QuantumScript' is not a PennyLane"),
    (_rx(type="__class__"), "not a PennyLane"),
    (_rx(children=[{"leaf": {"array": "object", "shape": [1], "data": [1]}}]), "dtype object"),
    (_rx(children=[{"leaf": {"array": "float64", "shape": [3], "data": [1]}}]), "shape"),
    (_rx(children=[{"leaf": {"eval": "__import__('os')"}}]), "unknown tag 'eval'"),
    (_rx(children=[{"leaf": {"float": "1e400x"}}]), "expected a number"),
    (_rx(children=[]), "malformed"),
    (_rx(meta=[1, 2]), "untagged list"),
    ("RX(0.5)", "expected an operator"),
])
def test_data_that_is_not_a_tape_is_refused(node, message):
    with pytest.raises(TapeCodecError, match=message):
        tapes_from_json(_doc([node]))


@pytest.mark.parametrize("text, message", [
    ("", "not valid JSON"), ("[]", "not qfleet tapes"), ('{"format": "x"}', "not qfleet tapes"),
    ('{"format": "qfleet.tapes", "version": 99, "tapes": []}', "version 99"),
    ('{"format": "qfleet.tapes", "version": 1, "tapes": {}}', "no list of tapes"),
    ("[" * 100000 + "]" * 100000, "not valid JSON|nested too deeply|not qfleet tapes"),
])
def test_documents_that_are_not_tapes_are_refused(text, message):
    with pytest.raises(TapeCodecError, match=message):
        tapes_from_json(text)


def test_deeply_nested_operator_data_is_refused_not_a_crash():
    depth = 5000
    node = ('{"type": "Adjoint", "module": "x", "meta": {"tuple": []}, "children": [' * depth
            + '{"leaf": 0.5}' + "]}" * depth)
    text = _doc([]).replace('"operations": []', f'"operations": [{node}]')
    with pytest.raises(TapeCodecError, match=r"not valid JSON|nested too deeply"):
        tapes_from_json(text)
