"""The ExecutionSession API on Executor2300, against a real ``qfleet serve-2300`` emulator."""

from __future__ import annotations

import math

import pytest

import qfleet as qf
from qfleet.jobs import JobStatus

pytest_plugins = ["p2300_support"]  # the emulator fixtures

QASM = (
    'OPENQASM 3.0; include "stdgates.inc"; input float t; qubit[1] q; bit[1] c; '
    "rx(t) q[0]; c = measure q;"
)
SHOTS = 4000


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("QFLEET_HOME", str(tmp_path / "qfleet-home"))


def test_session_on_executor_2300(emulator):
    ex = emulator.executor()
    assert not ex.capabilities.analytic  # shots only: estimates come from samples
    prefs = qf.ExecutionPreferences(num_shots=SHOTS, backend=ex)
    with qf.ExecutionSession(QASM, prefs) as es:
        for result, t in zip(es.sample([{"t": 0.5}, {"t": 2.0}]), (0.5, 2.0)):
            p = math.sin(t / 2) ** 2
            assert result.num_shots == SHOTS and set(result.counts) <= {"0", "1"}
            assert abs(result.probability("1") - p) < 5 * math.sqrt(max(p * (1 - p), 1 / SHOTS) / SHOTS)
        job = es.submit_estimate(qf.Pauli.I(0) + 2 * qf.Pauli.Z(0), {"t": 0.5})
        est = job.get_estimate_result(timeout_sec=60)
    assert est.num_shots == SHOTS
    assert abs(est.value - (1 + 2 * math.cos(0.5))) < 5 * 2 * math.sin(0.5) / math.sqrt(SHOTS)
    again = qf.ExecutionJob.from_id(job.id)
    assert again.status is JobStatus.COMPLETED and "Executor2300" in again.backend
