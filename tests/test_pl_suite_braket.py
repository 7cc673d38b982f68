"""PennyLane's device suite (pl-device-test, CI subset) on qfleet.local with BraketLocalExecutor."""

from __future__ import annotations

import pytest
from pl_suite import CI_SUBSET, run_suite

pytest.importorskip("braket.devices")

CONFIG = (
    '[qfleet]\nexecutors=["BraketLocalExecutor"]\n'
    '[executors.BraketLocalExecutor]\ndevice="braket_sv"\nseed=14\n'
)
#: passed counts observed for the CI subset (floors: a drop means tests stopped running)
PASSED = {"10000": 127, "None": 141}


@pytest.mark.parametrize("shots", sorted(PASSED))
def test_pl_device_suite_ci_subset(shots, tmp_path):
    counts, output = run_suite(CONFIG, shots, tmp_path, subset=CI_SUBSET, timeout=600)
    assert counts.get("failed", 0) == 0 and counts.get("error", 0) == 0, output[-6000:]
    assert counts.get("passed", 0) >= PASSED[shots], counts
