"""The executor namespace: ``qfleet.executor.LocalExecutor(...)``.

``Simulator`` and ``QCluster`` keep the names Covalent's QElectron used.
"""

from typing import Any

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


def __getattr__(name: str) -> Any:
    # The cluster is built on executors (qfleet.cluster imports this package), so it is
    # re-exported here on first use rather than imported at the top.
    if name in ("QuantumCluster", "QCluster"):
        from qfleet.cluster import QuantumCluster

        return QuantumCluster
    raise AttributeError(f"module 'qfleet.executors' has no attribute {name!r}")


def executor_classes() -> dict[str, type[QuantumExecutor]]:
    """Executor classes that config sections (``[executors.<Name>]``) may configure."""
    from qfleet.cluster import QuantumCluster

    classes = (
        LocalExecutor,
        QiskitExecutor,
        Executor2300,
        ClassiqExecutor,
        AzureExecutor,
        DaskExecutor,
        BraketLocalExecutor,
        QuantumCluster,
    )
    return {cls.__name__: cls for cls in classes}


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
