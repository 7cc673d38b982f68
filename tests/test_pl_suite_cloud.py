"""PennyLane's device suite (pl-device-test, a CI subset) on qfleet.local with each cloud
executor through its stand-in (tests/pl_suite_cloud.py: the stand-in in its own process on
127.0.0.1, the real SDK talking to it). The whole suite: ``bench/pl_device_suite_cloud.py``.

Each run starts pl-device-test, which imports PennyLane and collects the whole suite (about
10 s of CPU before the first test): the runs go concurrently, one test per executor and shots
reads its own run's counts.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest
from pl_suite import run_suite
from pl_suite_cloud import running

#: Every circuit is one or more cloud jobs (HTTP calls, polling, results through the SDK), so
#: the subset is small: an expectation of a Hermitian (diagonalised before sampling), samples,
#: probabilities after a two-qubit gate. The whole suite runs in the bench.
SUBSET = (
    "test_hermitian_expectation or test_sample_values"
    " or test_supported_gate_two_wires_no_parameters"
)
#: (executor stack, shots) -> passed count observed for its subset (floors: a drop means
#: tests stopped running). One run per translation path, to stay within CI's time: IBM's
#: Sampler (its Estimator returns expectation values only: tests/test_ibm_standin.py),
#: IonQ's JSON, Quantinuum's OpenQASM 2 (the path of Classiq's sampled circuits too),
#: Classiq's exact observe, Quantum Inspire's cQASM 3.
PASSED: dict[tuple[str, str], int] = {
    ("ibm-sampler", "10000"): 9,
    ("azure-ionq", "10000"): 9,
    ("azure-quantinuum", "10000"): 9,
    ("classiq", "None"): 5,
    ("quantum-inspire", "10000"): 9,
}
NEEDS = {
    "ibm": ("qiskit_ibm_runtime",),
    "azure": ("azure.quantum", "qiskit_aer", "cryptography"),
    "classiq": ("classiq",),
    "quantum": ("compute_api_client", "qxelarator"),
}


def _available(name: str) -> str | None:
    """Why the stack ``name`` can't run here (a missing optional SDK or Azurite), or None."""
    import importlib.util

    for module in NEEDS[name.split("-")[0]]:
        if importlib.util.find_spec(module.split(".")[0]) is None:
            return f"{module} is not installed"
    if name.startswith("azure"):
        from standins.azure_quantum import azurite_command

        if azurite_command() is None:
            reason = ("Azurite is not installed: run `npm ci --no-audit --no-fund` in the "
                      "repository root (Node.js >= 18)")
            if os.environ.get("CI"):
                pytest.fail(reason)
            return reason
    return None


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every stack started, its subset run in the background: (stack, shots) -> future of
    (counts, output), or the reason it can't run here."""
    names = sorted({name for name, _ in PASSED})
    missing = {name: _available(name) for name in names}
    with ExitStack() as stacks, ThreadPoolExecutor(len(PASSED)) as pool:
        started = {name: stacks.enter_context(running(name))
                   for name in names if missing[name] is None}
        futures: dict[tuple[str, str], Future | str] = {}
        for name, shots in PASSED:
            if name not in started:
                futures[name, shots] = str(missing[name])
                continue
            assert shots in started[name].shots  # "None" only where the executor is exact
            work: Path = tmp_path_factory.mktemp(f"{name}-{shots}")
            futures[name, shots] = pool.submit(
                run_suite, started[name].config_toml(), shots, work, subset=SUBSET, timeout=600)
        yield futures
        for future in futures.values():  # stop no stand-in under a running suite
            if isinstance(future, Future):
                future.exception()


@pytest.mark.parametrize(("name", "shots"), sorted(PASSED))
def test_pl_device_suite_ci_subset(runs, name, shots):
    run = runs[name, shots]
    if isinstance(run, str):
        pytest.skip(run)
    counts, output = run.result()
    assert counts.get("failed", 0) == 0 and counts.get("error", 0) == 0, output[-6000:]
    assert counts.get("passed", 0) >= PASSED[name, shots], counts
