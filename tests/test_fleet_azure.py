"""AzureExecutor.status() and fleet routing on it: the real azure-quantum SDK reads
``providerStatus`` from the Azure Quantum stand-in (tests/standins/azure_quantum.py)."""

from __future__ import annotations

import pennylane as qml
from pennylane.tape import QuantumScript
from test_azure_executor import executor, server, stack  # noqa: F401 - fixtures

import qfleet as qf


def test_provider_status_feeds_routing_which_skips_an_unavailable_target(server):  # noqa: F811
    ionq = executor(server, name="ionq")
    status = ionq.status()
    assert status.available and status.reason is None and status.estimated_wait == 0.0
    aria = executor(server, target="ionq.qpu.aria-1", name="aria")
    status = aria.status()
    assert not status.available and status.reason == "unavailable"

    cluster = qf.QuantumCluster(executors=[aria, ionq], selector="queue")
    cluster.member_status(refresh=True)
    bell = QuantumScript([qml.Hadamard(0), qml.CNOT([0, 1])], [qml.counts()], shots=100)
    result = cluster.execute([bell])
    assert result.metadata.executor == "ionq"
    assert result.metadata.routing.skipped() == {"aria": "offline: unavailable"}
    assert set(result[0]) <= {"00", "11"} and sum(result[0].values()) == 100

    server.control("faults", {"availability": {"ionq.qpu.aria-1": "Available"}})
    assert executor(server, target="ionq.qpu.aria-1").status().available
    missing = executor(server, target="ionq.qpu.nowhere").status()
    assert not missing.available and "not in workspace" in missing.reason
