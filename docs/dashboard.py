"""Writes docs/dashboard.png, the README's screenshot of ``qfleet ui``.

Run from the repository root: ``.venv/bin/python docs/dashboard.py`` (needs Debian's
``chromium`` and playwright, as the browser tests do). It fills a fresh job store with a few
jobs (sampled, estimated, one failing, one still running), serves the dashboard and
photographs the jobs page.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILL = r"""
import qfleet as qf
from qfleet.executors import LocalExecutor

bell = ('OPENQASM 2.0; include "qelib1.inc"; qreg q[2]; creg c[2]; h q[0]; cx q[0],q[1]; '
        'measure q -> c;')
ghz = ('OPENQASM 3.0; include "stdgates.inc"; qubit[3] q; bit[3] c; h q[0]; cx q[0], q[1]; '
       'cx q[1], q[2]; c = measure q;')
rx = ('OPENQASM 3.0; include "stdgates.inc"; input float t; qubit[1] q; bit[1] c; '
      'rx(t) q[0]; c = measure q;')
priced = LocalExecutor(name="sim-priced", price=qf.Price(per_task=0.3, per_shot=0.0001))
jobs = []
lightning = LocalExecutor(device="lightning.qubit")
for program, name, backend, shots in [(bell, "bell pair", None, 1000),
                                      (ghz, "ghz-3", priced, 4000),
                                      (rx, "rx sweep", lightning, 2000)]:
    prefs = qf.ExecutionPreferences(num_shots=shots, job_name=name, random_seed=1,
                                    backend=backend)
    sweep = [{"t": 0.2 * i} for i in range(3)] if "input" in program else None
    with qf.ExecutionSession(program, prefs) as es:
        jobs.append(es.submit_sample(sweep))
with qf.ExecutionSession(rx, qf.ExecutionPreferences(job_name="energy")) as es:
    jobs.append(es.submit_estimate(qf.Pauli.I(0) + 2 * qf.Pauli.Z(0), {"t": 0.5}))
for job in jobs:
    job.result(timeout_sec=60)
from qfleet.executors import Executor2300
down = Executor2300(address="tcp://127.0.0.1:9", timeout=0.3, retries=0)
try:
    with qf.ExecutionSession(bell, qf.ExecutionPreferences(job_name="on a 2300 that is down",
                                                           backend=down)) as es:
        es.submit_sample().result(timeout_sec=10)
except Exception:
    pass  # the job store keeps the failed job and its error
slow = LocalExecutor(name="remote-like", latency=600)
with qf.ExecutionSession(bell, qf.ExecutionPreferences(job_name="overnight run",
                                                       backend=slow)) as es:
    es.submit_sample()
print("ready", flush=True)
import sys; sys.stdin.read()
"""


def main() -> None:
    from playwright.sync_api import sync_playwright

    home = tempfile.mkdtemp(prefix="qfleet-dashboard-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("QFLEET_")}
    env.update(QFLEET_HOME=home, QFLEET_CONFIG=str(Path(home) / "none.toml"))
    filler = subprocess.Popen([sys.executable, "-c", FILL], env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert filler.stdout.readline().startswith("ready")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    qfleet = str(Path(sys.executable).with_name("qfleet"))
    ui = subprocess.Popen([qfleet, "ui", "--port", str(port)], env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1200, "height": 520})
            page.goto(url)
            page.screenshot(path=str(ROOT / "docs" / "dashboard.png"))
            browser.close()
    finally:
        ui.terminate()
        filler.stdin.close()
        filler.terminate()
        ui.wait(10)
        filler.wait(10)
    print(f"wrote {ROOT / 'docs' / 'dashboard.png'}")


if __name__ == "__main__":
    main()
