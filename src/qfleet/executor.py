"""The executor namespace users write: ``qf.executor.LocalExecutor(...)``.

Every executor, the cluster, and the names Covalent's QElectron used (``Simulator``,
``QCluster``, ``LocalBraketQubitExecutor``, ``BraketQubitExecutor``, ``IBMQExecutor``; see
:mod:`qfleet.executors.covalent_compat`), so QElectron code runs with ``import qfleet as ct``.
"""

from qfleet.cluster import QuantumCluster
from qfleet.executors import (
    AzureCredential,
    AzureExecutor,
    BatchHandle,
    BatchResult,
    BraketExecutor,
    BraketLocalExecutor,
    Capabilities,
    ClassiqExecutor,
    DaskExecutor,
    Executor2300,
    LocalExecutor,
    QiskitExecutor,
    QuantumExecutor,
    QuantumInspireExecutor,
    RunMetadata,
)
from qfleet.executors.covalent_compat import (  # Covalent's names (shots=None: exact)
    BraketQubitExecutor,
    IBMQExecutor,
    LocalBraketQubitExecutor,
    Simulator,
    removed_name,
)

#: Covalent's names.
QCluster = QuantumCluster


def __getattr__(name: str):
    """QElectron names qfleet does not carry on raise an AttributeError saying what to write."""
    removed_name(name)

__all__ = [
    "AzureCredential",
    "AzureExecutor",
    "BatchHandle",
    "BatchResult",
    "BraketExecutor",
    "BraketLocalExecutor",
    "BraketQubitExecutor",
    "Capabilities",
    "ClassiqExecutor",
    "DaskExecutor",
    "Executor2300",
    "IBMQExecutor",
    "LocalBraketQubitExecutor",
    "LocalExecutor",
    "QCluster",
    "QiskitExecutor",
    "QuantumCluster",
    "QuantumExecutor",
    "QuantumInspireExecutor",
    "RunMetadata",
    "Simulator",
]
