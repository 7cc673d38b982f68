"""PennyLane's whole device test suite (``pl-device-test``) on ``qfleet.local`` pointed at each
cloud executor through its stand-in (tests/standins/, each its own process on 127.0.0.1, the
real SDK talking to it): QiskitExecutor on IBM Runtime (sampler, estimator), AzureExecutor
(IonQ, Quantinuum; with Azurite), ClassiqExecutor, QuantumInspireExecutor.

At --shots 10000, and --shots None for an executor that declares exact results (Classiq's
simulator). Unseeded, as a user runs it. CI runs a subset (tests/test_pl_suite_cloud.py).

    .venv/bin/python bench/pl_device_suite_cloud.py [name ...] [--shots 10000 --shots None]

names: ibm-sampler ibm-estimator azure-ionq azure-quantinuum classiq quantum-inspire
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))
from pl_suite import run_suite, table_row  # noqa: E402
from pl_suite_cloud import STACKS, running  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=" ".join(STACKS))
    parser.add_argument("--shots", action="append",
                        help="default: 10000, and None where the executor is exact")
    parser.add_argument("-k", dest="subset", help="pytest -k expression (default: all)")
    args = parser.parse_args(argv)
    unknown = set(args.names) - set(STACKS)
    if unknown:
        parser.error(f"unknown {sorted(unknown)}; choose from {list(STACKS)}")
    print(f"{'executor':18s} {'shots':>6s}  passed failed skipped xfailed  seconds", flush=True)
    for name in args.names or list(STACKS):
        with running(name) as stack:
            for shots in args.shots or stack.shots:
                started = time.perf_counter()
                with tempfile.TemporaryDirectory() as work:
                    counts, output = run_suite(stack.config_toml(), shots, Path(work),
                                               subset=args.subset, timeout=3600)
                failed = counts.get("failed", 0) + counts.get("error", 0)
                seconds = time.perf_counter() - started
                print(table_row(name, shots, counts, seconds, width=18), flush=True)
                if failed:
                    tail = [line for line in output.splitlines()
                            if line.startswith(("FAILED", "ERROR"))]
                    print("    " + "\n    ".join(tail[:60]), flush=True)
                    (Path(tempfile.gettempdir()) / f"pl-suite-{name}-{shots}.log").write_text(
                        output)


if __name__ == "__main__":
    main()
