"""PennyLane's whole device test suite (``pl-device-test``) on ``qfleet.local`` pointed at
BraketExecutor (SV1) through the Braket stand-in (tests/standins/braket_service.py) and
moto's S3 server, both started here as their own processes.

Every circuit is a Braket quantum task: CreateQuantumTask, polling, results.json from S3,
parsed by the SDK. Unseeded, as a user runs it. CI runs a subset of the same suite
(tests/test_pl_suite_braket_cloud.py).

    .venv/bin/python bench/pl_device_suite_braket_cloud.py [10000] [None]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))
from pl_suite import run_suite, table_row  # noqa: E402
from standins.braket_service import BraketStack  # noqa: E402


def main(shots_list: list[str]) -> None:
    with BraketStack() as stack:
        print(f"{'executor':28s} {'shots':>6s}  passed failed skipped xfailed  seconds tasks")
        for shots in shots_list or ["10000"]:
            stack.control("reset")
            started = time.perf_counter()
            with tempfile.TemporaryDirectory() as work:
                counts, output = run_suite(stack.config_toml(), shots, Path(work), timeout=3600)
            tasks = len(stack.jobs())
            failed = counts.get("failed", 0) + counts.get("error", 0)
            seconds = time.perf_counter() - started
            print(f"{table_row('BraketExecutor SV1 (stand-in)', shots, counts, seconds, 28)} "
                  f"{tasks:5d}", flush=True)
            if failed:
                tail = [line for line in output.splitlines() if line.startswith("FAILED")]
                print("    " + "\n    ".join(tail[:30]))


if __name__ == "__main__":
    main(sys.argv[1:])
