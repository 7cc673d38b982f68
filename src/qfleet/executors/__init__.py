"""Executors: one module per backend, on the contract in :mod:`qfleet.executors.base`.

The user-facing namespace (with the cluster and Covalent's names) is :mod:`qfleet.executor`.
"""

from qfleet.executors.azure import AzureCredential, AzureExecutor  # azure is imported lazily
from qfleet.executors.base import (
    BatchHandle,
    BatchResult,
    Capabilities,
    Prepared,
    QuantumExecutor,
    RunMetadata,
)
from qfleet.executors.braket import BraketLocalExecutor  # braket is imported lazily
from qfleet.executors.braket_cloud import BraketExecutor  # braket is imported lazily
from qfleet.executors.classiq import ClassiqExecutor  # classiq is imported lazily
from qfleet.executors.dask import DaskExecutor  # distributed is imported lazily
from qfleet.executors.ibm import QiskitExecutor  # qiskit itself is imported lazily
from qfleet.executors.local import LocalExecutor
from qfleet.executors.quantum_inspire import (  # the compute API client is imported lazily
    QuantumInspireExecutor,
)
from qfleet.executors.qutech import Executor2300  # pyzmq is imported lazily

__all__ = [
    "AzureCredential",
    "AzureExecutor",
    "BatchHandle",
    "BatchResult",
    "BraketExecutor",
    "BraketLocalExecutor",
    "Capabilities",
    "ClassiqExecutor",
    "DaskExecutor",
    "Executor2300",
    "LocalExecutor",
    "Prepared",
    "QiskitExecutor",
    "QuantumExecutor",
    "QuantumInspireExecutor",
    "RunMetadata",
]
