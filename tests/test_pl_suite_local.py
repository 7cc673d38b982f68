"""PennyLane's device suite (CI subset, see tests/pl_suite.py) on ``qfleet.local`` pointed
at lightning.qubit, a Dask cluster of simulators and a mixed cluster, through the config
file. The whole suite on every executor: ``bench/pl_device_suite.py``; the whole suite on
the default LocalExecutor runs in CI too (tests/test_pl_device_suite.py)."""

from __future__ import annotations

import pytest

from pl_suite import CI_SUBSET, run_suite

CONFIGS = {
    "lightning": (
        '[qfleet]\nexecutors = ["LocalExecutor"]\n'
        '[executors.LocalExecutor]\ndevice = "lightning.qubit"\n'
    ),
    "dask": (
        '[qfleet]\nexecutors = ["DaskExecutor"]\n'
        '[executors.DaskExecutor]\nn_workers = 1\ndevice = "default.qubit"\n'
    ),
    # Local + Qiskit (shots only) + Braket: exact tapes go to the exact members, sampled
    # ones to any member; every member must give default.qubit's answers. Seeded: three
    # of the suite's Hermitian tests allow less than one standard deviation of shot noise
    # at 10000 shots, so any unbiased sampler fails them for some seeds.
    "mixed_cluster": (
        '[qfleet]\nexecutors = ["LocalExecutor", "QiskitExecutor", "BraketLocalExecutor"]\n'
        'selector = "cyclic"\n'
        '[executors.LocalExecutor]\nseed = 14\n'
        '[executors.QiskitExecutor]\ndevice = "local_sampler"\nseed = 11\n'
        '[executors.BraketLocalExecutor]\nseed = 14\n'
    ),
}


@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    ("name", "shots"),
    [
        ("lightning", "None"),
        ("lightning", "10000"),
        ("dask", "10000"),
        ("mixed_cluster", "None"),
        ("mixed_cluster", "10000"),
    ],
)
def test_device_suite_subset(name, shots, tmp_path):
    counts, output = run_suite(CONFIGS[name], shots, tmp_path, subset=CI_SUBSET)
    assert counts.get("failed", 0) == 0 and counts.get("error", 0) == 0, (
        f"pl-device-test --shots {shots} on {name}: {counts}\n{output[-6000:]}"
    )
    # The subset selects ~70 tests; most run (skips: analytic-only or shots-only ones).
    assert counts.get("passed", 0) >= 40, (counts, output[-3000:])
