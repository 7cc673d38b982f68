"""qfleet: run PennyLane QNodes on a fleet of quantum backends.

Example:
    >>> import qfleet as qf
    >>> @qf.qelectron(executors=[qf.executor.LocalExecutor(), qf.executor.LocalExecutor()])
    ... @qml.qnode(qml.device("default.qubit", wires=2))
    ... def circuit(x): ...

Code written for Covalent's QElectron runs with ``import qfleet as ct``.
"""

from qfleet import executors as executor
from qfleet.cluster import QuantumCluster
from qfleet.config import load_config
from qfleet.errors import (
    ConfigError,
    ExecutorError,
    ExecutorTimeoutError,
    QFleetError,
    UnsupportedCircuitError,
)
from qfleet.executors import LocalExecutor, QuantumExecutor
from qfleet.jobs import (
    ExecutionJob,
    ExecutionPreferences,
    ExecutionSession,
    Pauli,
    get_execution_jobs,
)
from qfleet.pennylane import QElectron, QFleetDevice, QFuture, qelectron

QCluster = QuantumCluster  # Covalent's name

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "ExecutionJob",
    "ExecutionPreferences",
    "ExecutionSession",
    "ExecutorError",
    "ExecutorTimeoutError",
    "LocalExecutor",
    "Pauli",
    "QCluster",
    "QElectron",
    "QFleetDevice",
    "QFleetError",
    "QFuture",
    "QuantumCluster",
    "QuantumExecutor",
    "UnsupportedCircuitError",
    "executor",
    "get_execution_jobs",
    "load_config",
    "qelectron",
]
