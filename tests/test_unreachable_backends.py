"""Unreachable backends, through their real SDKs at a closed port on 127.0.0.1: the error is
transient (a cluster retries it elsewhere), never "wrong credentials"; ``timeout`` is
honoured end to end (each test's pytest-timeout is the deadline a hang would miss: the
SDKs' own retries ran 60-300 s); a script that ends with a pending Classiq ``run_later``
exits. Elapsed times are measured in bench/hardening.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pennylane as qml
import pytest

from qfleet.errors import ExecutorError

os.environ.setdefault("CLASSIQ_TELEMETRY_MODE", "disabled")

TAPE = qml.tape.QuantumScript([qml.Hadamard(0)], [qml.counts(wires=[0])], shots=10)


@pytest.fixture(scope="module")
def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.timeout(30)
def test_ibm_unreachable_is_transient_not_an_auth_error(closed_port):
    pytest.importorskip("qiskit_ibm_runtime")
    from qfleet.executors.ibm import QiskitExecutor
    from qfleet.executors.ibm_runtime import IBMAuthenticationError

    ex = QiskitExecutor(device="sampler", backend="ibm_fez", token="x" * 44, timeout=10,
                        url=f"http://127.0.0.1:{closed_port}",
                        instance="crn:v1:bluemix:public:quantum-computing:us-east:a/b:c::")
    with pytest.raises(ExecutorError, match="could not reach IBM Cloud") as info:
        ex.run_all_circuits_sync([TAPE])
    assert info.value.transient and not isinstance(info.value, IBMAuthenticationError)
    assert "x" * 44 not in str(info.value)


@pytest.mark.timeout(60)
def test_azure_unreachable_is_transient_not_an_auth_error(closed_port):
    pytest.importorskip("azure.quantum")
    from qfleet.executors.azure import AzureAuthenticationError, AzureCredential, AzureExecutor

    base = f"https://127.0.0.1:{closed_port}"
    credential = AzureCredential(
        tenant_id="72f988bf-86f1-41af-91ab-2d7cd011db47", client_id="c", client_secret="s" * 20,
        resource_id="/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg1/"
                    "providers/Microsoft.Quantum/Workspaces/ws1")
    ex = AzureExecutor(backend_name="ionq.simulator", credentials=credential, location="eastus",
                       arm_endpoint=base, authority=base, timeout=10)
    with pytest.raises(ExecutorError, match="could not reach Azure") as info:
        ex.run_all_circuits_sync([TAPE])
    assert info.value.transient and not isinstance(info.value, AzureAuthenticationError)
    assert "s" * 20 not in str(info.value)


@pytest.mark.timeout(30)
def test_dask_unreachable_scheduler_honours_timeout(closed_port):
    pytest.importorskip("distributed")
    from qfleet.executors.dask import DaskExecutor

    ex = DaskExecutor(address=f"tcp://127.0.0.1:{closed_port}", timeout=2)
    assert ex.connect_limit == 2
    assert DaskExecutor(address="tcp://127.0.0.1:1").connect_limit == 10  # seconds, not 60
    assert DaskExecutor().connect_limit == 60  # a LocalCluster's start may take a while
    with pytest.raises(ExecutorError, match="after 2 s") as info:
        ex.run_all_circuits_sync([TAPE.copy(shots=None, measurements=[qml.probs(wires=0)])])
    assert info.value.transient


@pytest.mark.timeout(90)
def test_classiq_timeout_and_a_pending_run_later_at_script_end(closed_port):
    """In one process (one import of the classiq SDK): timeout=5 bounds the SDK's retries
    (300 s of its own) and the error is transient; then a script that ends with a pending
    run_later exits (its SDK call runs on a daemon thread)."""
    pytest.importorskip("classiq")
    script = textwrap.dedent(f"""
        import logging, pennylane as qml
        logging.disable(logging.CRITICAL)
        from qfleet.executors.classiq import ClassiqExecutor
        tape = qml.tape.QuantumScript([qml.Hadamard(0)], [qml.counts(wires=[0])], shots=10)
        host = "http://127.0.0.1:{closed_port}"
        try:
            ClassiqExecutor(host=host, token="t" * 24, timeout=5).run_all_circuits_sync([tape])
        except Exception as exc:
            print(type(exc).__name__, exc.transient, flush=True)
        future = ClassiqExecutor(host=host, token="t" * 24).run_later([tape])
        print("pending" if not future.done() else "done", flush=True)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=80, env={**os.environ, "CLASSIQ_TELEMETRY_MODE": "disabled"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("\n")[:2] == ["ExecutorError True", "pending"]
