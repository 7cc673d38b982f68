"""Run PennyLane's own device test suite (``pl-device-test``) on ``qfleet.local`` pointed at
one executor or cluster through a config file, in a subprocess; return pytest's counts.

Used by the per-executor suite tests (a representative subset in CI) and by
``bench/pl_device_suite.py`` (the whole suite, every executor).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

#: The CI subset: every test file of the suite is represented (measurements, gates,
#: templates, wires, tracker, gradients); ``-k`` expression for pytest.
CI_SUBSET = (
    "test_supported_gate_two_wires_no_parameters or test_supported_gate_single_wire_with_parameters"
    " or test_hermitian_expectation or test_projector_expectation or test_pauliz_expectation"
    " or test_tensor_hermitian or test_sample_values or test_counts_values or test_var"
    " or test_paulix_pauliy or test_probs or test_state_prep or test_wires"
    " or test_templates or test_tracker or test_broadcasting"
)


def _pl_device_test() -> str | None:
    script = Path(sys.executable).parent / "pl-device-test"
    return str(script) if script.exists() else shutil.which("pl-device-test")


def table_row(name: str, shots: str, counts: dict[str, int], seconds: float,
              width: int = 42) -> str:
    """One line of a bench table: passed, failed (errors counted in), skipped, xfailed and
    the seconds the run took."""
    failed = counts.get("failed", 0) + counts.get("error", 0)
    return (f"{name:{width}s} {shots:>6s}  {counts.get('passed', 0):6d} {failed:6d} "
            f"{counts.get('skipped', 0):7d} {counts.get('xfailed', 0):7d}  {seconds:7.0f}")


def summary(output: str) -> dict[str, int]:
    """pytest's final counts line ('389 passed, 45 skipped, 9 xfailed in 8s') as a dict."""
    lines = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed)", line)]
    if not lines:
        raise AssertionError(f"no pytest summary in the output:\n{output[-3000:]}")
    found = re.findall(r"(\d+) (passed|failed|skipped|xfailed|xpassed|errors?)", lines[-1])
    return {kind.rstrip("s") if kind.startswith("error") else kind: int(n) for n, kind in found}


def run_suite(
    config: str, shots: str, workdir: Path, subset: str | None = None, timeout: float = 1500
) -> tuple[dict[str, int], str]:
    """``pl-device-test --device qfleet.local --shots <shots>`` with ``config`` (TOML text)
    as the qfleet config; returns (counts, output)."""
    script = _pl_device_test()
    if script is None:
        raise RuntimeError("pl-device-test (PennyLane's device test CLI) is not installed")
    config_file = workdir / "qfleet.toml"
    config_file.write_text(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("QFLEET_")}
    env["QFLEET_CONFIG"] = str(config_file)
    # pl-device-test runs `pytest` from PATH: make it this environment's pytest.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    command = [
        script, "--device", "qfleet.local", "--shots", shots, "-q",
        "-p", "no:cacheprovider",  # the suite lives in site-packages: write no cache there
        "-rfE", "--maxfail=50",
    ]
    if subset:
        command += ["-k", subset]
    proc = subprocess.run(
        command, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout
    )
    output = proc.stdout + proc.stderr
    return summary(output), output
