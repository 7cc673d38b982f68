"""Shared post-processing: computational-basis samples / counts -> PennyLane results.

The oracle is computed independently from the same samples with numpy, and checked against
default.qubit's exact values within shot noise.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pennylane as qml
import pytest
from conftest import binomial_tol, exact_results
from pennylane.tape import QuantumScript

from qfleet.circuits import (
    result_from_samples,
    samples_from_counts,
)
from qfleet.errors import UnsupportedCircuitError

OPS = [qml.RX(0.7, 0), qml.CNOT([0, 1]), qml.RY(0.4, 1), qml.Hadamard(2), qml.CRZ(0.3, [2, 0])]
WIRES = [0, 1, 2]


def draw_samples(shots, seed=5):
    """Per-shot computational-basis samples of OPS (columns in WIRES order)."""
    tape = QuantumScript(OPS, [qml.sample(wires=WIRES)], shots=shots)
    return np.asarray(qml.execute([tape], qml.device("default.qubit", seed=seed))[0])


def oracle(measurement, rows):
    """The expected result of ``measurement`` on sample ``rows``, computed by hand."""
    bits = {w: rows[:, i] for i, w in enumerate(WIRES)}
    z = {w: 1 - 2 * bits[w] for w in WIRES}
    if measurement == "expval Z0":
        return z[0].mean()
    if measurement == "expval Z0Z2":
        return (z[0] * z[2]).mean()
    if measurement == "var Z1":
        return 1 - z[1].mean() ** 2
    if measurement == "probs 1,0":
        index = 2 * bits[1] + bits[0]
        return np.bincount(index, minlength=4) / len(rows)
    if measurement == "counts 0,2":
        return dict(Counter(f"{a}{b}" for a, b in zip(bits[0], bits[2])))
    if measurement == "sample 2,1":
        return np.stack([bits[2], bits[1]], axis=1)
    raise AssertionError(measurement)


MEASUREMENTS = {
    "expval Z0": lambda: qml.expval(qml.Z(0)),
    "expval Z0Z2": lambda: qml.expval(qml.Z(0) @ qml.Z(2)),
    "var Z1": lambda: qml.var(qml.Z(1)),
    "probs 1,0": lambda: qml.probs(wires=[1, 0]),
    "counts 0,2": lambda: qml.counts(wires=[0, 2]),
    "sample 2,1": lambda: qml.sample(wires=[2, 1]),
}


def assert_matches(got, want):
    if isinstance(want, dict):
        assert {str(k): int(v) for k, v in got.items()} == want
    else:
        np.testing.assert_allclose(np.asarray(got).reshape(np.shape(want)), want, atol=1e-12)
        assert np.shape(got) == np.shape(want) or np.ndim(want) == 0


@pytest.mark.parametrize("shots", [400, [100, (50, 2), 200]])
def test_result_from_samples_matches_a_hand_computed_oracle(shots):
    names = list(MEASUREMENTS)
    tape = QuantumScript(OPS, [MEASUREMENTS[n]() for n in names], shots=shots)
    samples = draw_samples(tape.shots.total_shots)
    got = result_from_samples(tape, samples)
    if tape.shots.has_partitioned_shots:
        bins = list(tape.shots.bins())
        assert isinstance(got, tuple) and len(got) == len(bins)
    else:
        bins, got = [(0, tape.shots.total_shots)], (got,)
    for (lower, upper), per_bin in zip(bins, got):
        assert isinstance(per_bin, tuple) and len(per_bin) == len(names)
        for name, value in zip(names, per_bin):
            assert_matches(value, oracle(name, samples[lower:upper]))


def test_result_from_samples_has_default_qubits_structure():
    tape = QuantumScript(
        OPS,
        [qml.expval(qml.Z(0)), qml.probs(wires=[0, 1]), qml.sample(wires=[2])],
        shots=[30, 40],
    )
    got = result_from_samples(tape, draw_samples(70))
    want = qml.execute([tape], qml.device("default.qubit", seed=1))[0]
    assert type(got) is type(want) and len(got) == len(want)
    for g_bin, w_bin in zip(got, want):
        assert type(g_bin) is type(w_bin)
        for g, w in zip(g_bin, w_bin):
            assert type(g) is type(w) and np.shape(g) == np.shape(w)
    single = QuantumScript(OPS, [qml.probs(wires=[0, 1])], shots=50)
    got_single = result_from_samples(single, draw_samples(50))
    assert isinstance(got_single, np.ndarray) and got_single.shape == (4,)


def test_sampled_values_agree_with_exact_within_shot_noise():
    shots = 20000
    tape = QuantumScript(
        OPS, [qml.probs(wires=WIRES), qml.expval(qml.Z(0) @ qml.Z(1))], shots=shots
    )
    probs, expval = result_from_samples(tape, draw_samples(shots, seed=3))
    exact_probs, exact_expval = exact_results([tape])[0]
    np.testing.assert_array_less(np.abs(probs - exact_probs), binomial_tol(exact_probs, shots))
    assert abs(expval - exact_expval) < 5 * np.sqrt((1 - exact_expval**2) / shots)


def test_wire_order_of_samples_follows_tape_wires():
    # Tape wires in first-use order: "b" first, then "a".
    tape = QuantumScript(
        [qml.X("b"), qml.Identity("a")], [qml.probs(wires=["a"]), qml.probs(wires=["b"])], shots=10
    )
    assert list(tape.wires) == ["b", "a"]
    samples = np.tile([[1, 0]], (10, 1))  # columns: b=1, a=0
    prob_a, prob_b = result_from_samples(tape, samples)
    np.testing.assert_allclose(prob_a, [1.0, 0.0])
    np.testing.assert_allclose(prob_b, [0.0, 1.0])


def test_measurements_without_wires_cover_all_tape_wires():
    tape = QuantumScript(
        [qml.X("b"), qml.Identity("a")], [qml.probs(), qml.counts()], shots=8
    )
    assert list(tape.wires) == ["b", "a"]
    samples = np.tile([[1, 0]], (8, 1))  # columns in tape.wires order: b, a
    probs, counts = result_from_samples(tape, samples)
    # the circuit is deterministic: default.qubit gives the same, with the same wire order
    want_probs, want_counts = qml.execute([tape], qml.device("default.qubit"))[0]
    np.testing.assert_allclose(probs, want_probs)
    assert {str(k): int(v) for k, v in counts.items()} == {
        str(k): int(v) for k, v in want_counts.items()
    }


# -- errors ---------------------------------------------------------------------------------


def test_analytic_tapes_are_rejected():
    tape = QuantumScript(OPS, [qml.expval(qml.Z(0))])
    with pytest.raises(UnsupportedCircuitError, match="this backend samples; set shots"):
        result_from_samples(tape, draw_samples(10))


def test_wrong_number_of_shots():
    tape = QuantumScript(OPS, [qml.expval(qml.Z(0))], shots=10)
    with pytest.raises(ValueError, match="backend returned 9 samples for 10 shots"):
        result_from_samples(tape, draw_samples(9))


def test_samples_from_counts_preserves_the_histogram():
    counts = {"011": 3, "100": 5, "111": 0}
    samples = samples_from_counts(counts, 3, rng=np.random.default_rng(0))
    assert samples.shape == (8, 3) and samples.dtype == np.int64
    assert Counter("".join(map(str, row)) for row in samples) == {"011": 3, "100": 5}
    assert samples_from_counts({}, 2).shape == (0, 2)
    with pytest.raises(ValueError, match="bitstrings have 3 bits, expected 2"):
        samples_from_counts(counts, 2)
