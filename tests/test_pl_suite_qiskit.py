"""PennyLane's device test suite (pl-device-test, the CI subset) on qfleet.local with the
QiskitExecutor in local testing mode (Aer sampler, seeded)."""

from __future__ import annotations

import pytest

pytest.importorskip("qiskit_ibm_runtime")

from pl_suite import CI_SUBSET, run_suite  # noqa: E402

CONFIG = (
    '[qfleet]\nexecutors=["QiskitExecutor"]\n'
    '[executors.QiskitExecutor]\ndevice="local_sampler"\nseed=11\n'
)
#: Passed in the CI subset at 10000 shots when this test was written.
MIN_PASSED = 127


@pytest.mark.timeout(900)
def test_pl_device_suite_ci_subset_on_local_sampler(tmp_path):
    counts, output = run_suite(CONFIG, "10000", tmp_path, subset=CI_SUBSET)
    assert counts.get("failed", 0) == 0 and counts.get("error", 0) == 0, output[-6000:]
    assert counts.get("passed", 0) >= MIN_PASSED, counts
