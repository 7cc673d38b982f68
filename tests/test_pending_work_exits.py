"""A script whose last call is a pending ``run_later`` on IBM or Azure exits at once.

The executors' blocking SDK calls (submission, polling, result download) run on daemon threads
(:mod:`qfleet.runtime.daemon`), which interpreter exit does not wait for. Each script submits
to its stand-in (real SDK, own process on 127.0.0.1) and ends while the stand-in holds the job
(``hold_jobs``: it never finishes while held) and while an SDK call is in progress: the
stand-in is frozen (SIGSTOP), so the SDK's poll of the job waits inside its HTTP call. On the
event loop's thread pool (``asyncio.to_thread``) that call kept the script alive until the
SDK gave up (its read timeouts and retries); the script must exit with code 0, and
``subprocess.run``'s timeout is the deadline a script kept alive would miss. (Classiq's case is in tests/test_unreachable_backends.py.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from standins.process import ControlChannel, start_port, stop

STANDINS = Path(__file__).parent / "standins"
IBM_KEY = "standin-api-key-for-exit-tests"

# At the script's end: wait until the stand-in holds the job, then freeze the stand-in
# (SIGSTOP) so that the SDK's next poll of the job blocks inside its HTTP call, give the poll
# time to start, and print whether the future is still pending.
AT_THE_END = """
    import os, signal, time, requests
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if requests.get({base!r} + "/__standin__/stats", timeout=5, verify={verify!r}).json()["jobs"]:
            break
        time.sleep(0.1)
    os.kill({pid}, signal.SIGSTOP)
    time.sleep(3)
    print("pending" if not future.done() else "done", flush=True)
"""


def run_script(body: str, base: str, verify: bool | str, pid: int) -> subprocess.CompletedProcess:
    end = AT_THE_END.format(base=base, verify=verify, pid=pid)
    script = textwrap.dedent(body) + textwrap.dedent(end)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=90, env={**os.environ, "QFLEET_CONFIG": os.devnull})


class _IBM(ControlChannel):
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"


@pytest.mark.timeout(150)
def test_pending_ibm_run_later_does_not_keep_the_script_alive(monkeypatch):
    pytest.importorskip("qiskit_ibm_runtime")
    process, port = start_port([sys.executable, str(STANDINS / "ibm_runtime.py"), "--port", "0",
                                "--api-key", IBM_KEY], "the IBM stand-in", timeout=120)
    try:
        ibm = _IBM(port)
        for key in ("IAM_URL", "GLOBAL_SEARCH_URL"):
            monkeypatch.setenv(key, ibm.base)
        monkeypatch.setenv("GLOBAL_CATALOG_URL", f"{ibm.base}/catalog")
        ibm.control("faults", {"hold_jobs": True})
        proc = run_script(f"""
            import pennylane as qml
            from qfleet.executors import QiskitExecutor
            tape = qml.tape.QuantumScript([qml.Hadamard(0)], [qml.counts(wires=[0])], shots=10)
            ex = QiskitExecutor(device="sampler", backend="ibm_manila", token={IBM_KEY!r},
                                url={ibm.base + '/api/v1'!r}, poll_interval=0.2)
            future = ex.run_later([tape])
        """, ibm.base, True, process.pid)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.strip() == "pending"
        # the job was still held (never finished) when the script ended
        os.kill(process.pid, signal.SIGCONT)
        assert [job["status"] for job in ibm.jobs()] == ["Queued"]
    finally:
        os.kill(process.pid, signal.SIGCONT)
        stop(process)


@pytest.mark.timeout(150)
def test_pending_azure_run_later_does_not_keep_the_script_alive(tmp_path):
    pytest.importorskip("azure.quantum")
    pytest.importorskip("cryptography")
    from standins.azure_quantum import AzureStack, azurite_command

    if azurite_command() is None:
        message = "Azurite is not installed: run `npm ci --no-audit --no-fund`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    stack = AzureStack(tmp_path).start()
    patch = pytest.MonkeyPatch()
    try:
        for key, value in stack.env.items():
            patch.setenv(key, value)
        stack.control("faults", {"hold_jobs": True})
        proc = run_script(f"""
            import pennylane as qml
            from qfleet.executors import AzureCredential, AzureExecutor
            tape = qml.tape.QuantumScript([qml.Hadamard(0)], [qml.counts(wires=[0])], shots=10)
            cred = AzureCredential(tenant_id={stack.TENANT!r}, client_id={stack.CLIENT_ID!r},
                                   client_secret={stack.CLIENT_SECRET!r},
                                   resource_id={stack.resource_id!r})
            ex = AzureExecutor(backend_name="ionq.simulator", credentials=cred,
                               location="eastus", arm_endpoint={stack.base!r},
                               authority={stack.base!r})
            future = ex.run_later([tape])
        """, stack.base, stack.verify, stack.processes[-1].pid)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.strip() == "pending"
        os.kill(stack.processes[-1].pid, signal.SIGCONT)
        assert [job["status"] for job in stack.jobs()] == ["Waiting"]
    finally:
        os.kill(stack.processes[-1].pid, signal.SIGCONT)
        patch.undo()
        stack.stop()
