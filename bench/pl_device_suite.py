"""PennyLane's whole device test suite (``pl-device-test``) on ``qfleet.local`` pointed at
every offline executor, at --shots 10000 and (for executors with exact results) None.

Unseeded, as a user runs it. With a fixed seed, two Hermitian tests
(test_multi_mode_hermitian_expectation, TestTensorExpval::test_hermitian) fail for many seeds
on every sampler, plain default.qubit included (7 of seeds 1..10): a seed reused per circuit
correlates the shot noise of the circuits one observable is split into. Nightly-style:
about 40 minutes on 2 cores (the 2300 emulator simulates the large templates slowly: 1001 s).
CI runs a representative subset of the same suite per executor (tests/test_pl_suite_*.py)
and the whole suite on the default LocalExecutor (tests/test_pl_device_suite.py).

    .venv/bin/python bench/pl_device_suite.py [name ...]
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from pl_suite import run_suite, table_row


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _section(name: str, fields: dict[str, object]) -> str:
    lines = [f"[executors.{name}]"]
    lines += [f"{k} = {v!r}".replace("'", '"') for k, v in fields.items()]
    return "\n".join(lines) + "\n"


def configs(rep: str, pub: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """name -> (config TOML, shots settings to run)."""

    def one(cls: str, **fields: object) -> str:
        return f'[qfleet]\nexecutors = ["{cls}"]\n' + _section(cls, fields)

    return {
        "LocalExecutor default.qubit": (one("LocalExecutor"), ("10000", "None")),
        "LocalExecutor lightning.qubit": (
            one("LocalExecutor", device="lightning.qubit"), ("10000", "None")),
        "DaskExecutor": (
            one("DaskExecutor", n_workers=1, device="default.qubit"), ("10000", "None")),
        "QiskitExecutor local_sampler": (
            one("QiskitExecutor", device="local_sampler"), ("10000",)),
        "BraketLocalExecutor braket_sv": (one("BraketLocalExecutor"), ("10000", "None")),
        "Executor2300 (serve-2300)": (
            one("Executor2300", address=rep, subscribe_address=pub, timeout=30.0), ("10000",)),
        "cluster Local + Qiskit + Braket, cyclic": (
            '[qfleet]\nexecutors = ["LocalExecutor", "QiskitExecutor", "BraketLocalExecutor"]\n'
            + _section("LocalExecutor", {})
            + _section("QiskitExecutor", {"device": "local_sampler"})
            + _section("BraketLocalExecutor", {}),
            ("10000", "None"),
        ),
    }


def main(selected: list[str]) -> None:
    rep, pub = f"tcp://127.0.0.1:{_free_port()}", f"tcp://127.0.0.1:{_free_port()}"
    emulator = subprocess.Popen(
        [sys.executable, "-m", "qfleet.cli", "serve-2300", "--bind", rep, "--publish", pub,
         "--seed", "2300", "--qubits", "16"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(5)  # the emulator imports PennyLane before it binds
        print(f"{'executor':42s} {'shots':>6s}  passed failed skipped xfailed  seconds")
        for name, (config, shots_list) in configs(rep, pub).items():
            if selected and not any(s.lower() in name.lower() for s in selected):
                continue
            for shots in shots_list:
                started = time.perf_counter()
                with tempfile.TemporaryDirectory() as work:
                    counts, output = run_suite(config, shots, Path(work), timeout=3600)
                failed = counts.get("failed", 0) + counts.get("error", 0)
                print(table_row(name, shots, counts, time.perf_counter() - started), flush=True)
                if failed:
                    tail = [line for line in output.splitlines() if line.startswith("FAILED")]
                    print("    " + "\n    ".join(tail[:20]))
    finally:
        emulator.kill()


if __name__ == "__main__":
    main(sys.argv[1:])
