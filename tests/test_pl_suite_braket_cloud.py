"""PennyLane's device suite (pl-device-test, CI subset) on qfleet.local with BraketExecutor
(SV1) through the Braket stand-in and moto's S3 server. The whole suite:
``bench/pl_device_suite_braket_cloud.py``."""

from __future__ import annotations

import pytest
from pl_suite import run_suite

pytest.importorskip("braket.aws")
pytest.importorskip("moto")

from standins.braket_service import BraketStack

#: Smaller than pl_suite.CI_SUBSET: every circuit here is a Braket task (HTTP calls, a
#: results.json of 10000 shots in S3 parsed by the SDK). Expectations, samples, gates, the
#: tracker (a gradient test runs dozens of tasks); the whole suite runs in the bench.
SUBSET = (
    "(test_pauliz_expectation or test_sample_values or test_probs or test_tracker"
    " or test_supported_gate_single_wire_no_parameters)"
    " and not TestGradients and not projector_multi"
)
#: passed counts observed for the subset (floors: a drop means tests stopped running)
PASSED = {"10000": 11}


@pytest.fixture(scope="module")
def stack():
    with BraketStack() as started:
        yield started


@pytest.mark.parametrize("shots", sorted(PASSED))
def test_pl_device_suite_ci_subset(stack, shots, tmp_path):
    counts, output = run_suite(stack.config_toml(), shots, tmp_path, subset=SUBSET,
                               timeout=600)
    assert counts.get("failed", 0) == 0 and counts.get("error", 0) == 0, output[-6000:]
    assert counts.get("passed", 0) >= PASSED[shots], counts
