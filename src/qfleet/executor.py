"""The executor namespace users write: ``qf.executor.LocalExecutor(...)``.

Every executor, the cluster, and the names Covalent's QElectron used (``Simulator``,
``QCluster``), so QElectron code runs with ``import qfleet as ct``.
"""

from qfleet.cluster import QuantumCluster
from qfleet.executors import (
    AzureCredential,
    AzureExecutor,
    BatchHandle,
    BatchResult,
    BraketLocalExecutor,
    Capabilities,
    ClassiqExecutor,
    DaskExecutor,
    Executor2300,
    LocalExecutor,
    QiskitExecutor,
    QuantumExecutor,
    RunMetadata,
)

#: Covalent's names.
Simulator = LocalExecutor
QCluster = QuantumCluster

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
    "QCluster",
    "QiskitExecutor",
    "QuantumCluster",
    "QuantumExecutor",
    "RunMetadata",
    "Simulator",
]
