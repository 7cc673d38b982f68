"""The executor namespace: ``qfleet.executor.LocalExecutor(...)``.

``Simulator`` and ``QCluster`` keep the names Covalent's QElectron used.
"""

from qfleet.cluster import QuantumCluster
from qfleet.executors.base import (
    BatchHandle,
    BatchResult,
    Capabilities,
    Prepared,
    QuantumExecutor,
    RunMetadata,
)
from qfleet.executors.local import LocalExecutor
from qfleet.executors.ibm import QiskitExecutor  # qiskit itself is imported lazily
from qfleet.executors.qutech import Executor2300  # pyzmq is imported lazily
from qfleet.executors.classiq import ClassiqExecutor  # classiq is imported lazily
from qfleet.executors.dask import DaskExecutor  # distributed is imported lazily
from qfleet.executors.braket import BraketLocalExecutor  # braket is imported lazily
from qfleet.executors.azure import AzureCredential, AzureExecutor  # azure is imported lazily

Simulator = LocalExecutor
QCluster = QuantumCluster


def executor_classes() -> dict[str, type[QuantumExecutor]]:
    """Executor classes that config sections (``[executors.<Name>]``) may configure."""
    return {cls.__name__: cls for cls in (LocalExecutor, QiskitExecutor, Executor2300, ClassiqExecutor, AzureExecutor, DaskExecutor, BraketLocalExecutor, QuantumCluster)}


__all__ = [
    "AzureCredential",
    "AzureExecutor",
    "BatchHandle",
    "BatchResult",
    "BraketLocalExecutor",
    "Capabilities",
    "ClassiqExecutor",
    "DaskExecutor",
    "Executor2300",
    "LocalExecutor",
    "Prepared",
    "QiskitExecutor",
    "QCluster",
    "QuantumCluster",
    "QuantumExecutor",
    "RunMetadata",
    "Simulator",
    "executor_classes",
]
