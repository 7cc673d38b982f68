"""qfleet: run PennyLane QNodes on a fleet of quantum backends.

Example:
    >>> import qfleet as qf
    >>> @qf.qelectron(executors=[qf.executor.LocalExecutor(), qf.executor.LocalExecutor()])
    ... @qml.qnode(qml.device("default.qubit", wires=2))
    ... def circuit(x):
    ...     qml.RX(x, wires=0)
    ...     return qml.expval(qml.Z(0))
    >>> circuit(0.5)
    np.float64(0.87758256189...)

Code written for Covalent's QElectron runs with ``import qfleet as ct``.

The public names load on first use: ``import qfleet`` alone does not import PennyLane, so
the command line (``qfleet serve-2300``, ``qfleet config``) starts in a fraction of a second.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from qfleet.errors import (
    ConfigError,
    ExecutorError,
    ExecutorTimeoutError,
    QFleetError,
    UnsupportedCircuitError,
)

__version__ = "0.1.0"

#: public name -> (module, attribute in it; None: the module itself)
_LAZY: dict[str, tuple[str, str | None]] = {
    "executor": ("qfleet.executor", None),
    "LocalExecutor": ("qfleet.executors", "LocalExecutor"),
    "QuantumExecutor": ("qfleet.executors", "QuantumExecutor"),
    "QuantumCluster": ("qfleet.cluster", "QuantumCluster"),
    "QCluster": ("qfleet.cluster", "QuantumCluster"),  # Covalent's name
    "Price": ("qfleet.executors.status", "Price"),
    "ExecutorStatus": ("qfleet.executors.status", "ExecutorStatus"),
    "Policy": ("qfleet.cluster", "Policy"),
    "Budget": ("qfleet.cluster", "Budget"),
    "BudgetExceededError": ("qfleet.cluster", "BudgetExceededError"),
    "idempotent": ("qfleet.cluster", "idempotent"),
    "IdempotencyKeyError": ("qfleet.cluster", "IdempotencyKeyError"),
    "load_config": ("qfleet.config", "load_config"),
    "qelectron": ("qfleet.pennylane", "qelectron"),
    "QElectron": ("qfleet.pennylane", "QElectron"),
    "QFleetDevice": ("qfleet.pennylane", "QFleetDevice"),
    "QFuture": ("qfleet.pennylane", "QFuture"),
    "ExecutionJob": ("qfleet.jobs", "ExecutionJob"),
    "ExecutionPreferences": ("qfleet.jobs", "ExecutionPreferences"),
    "ExecutionSession": ("qfleet.jobs", "ExecutionSession"),
    "Pauli": ("qfleet.jobs", "Pauli"),
    "get_execution_jobs": ("qfleet.jobs", "get_execution_jobs"),
    "get_execution_actions": ("qfleet.jobs", "get_execution_actions"),
    "ExecutionJobFilters": ("qfleet.jobs", "ExecutionJobFilters"),
}


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'qfleet' has no attribute {name!r}") from None
    value = importlib.import_module(module)
    if attribute is not None:
        value = getattr(value, attribute)
    globals()[name] = value  # once loaded, a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


def _mask_secrets_in_qfleet_logs() -> None:
    # The one secret rule for logs (qfleet.config.logs): every record of a qfleet logger, its
    # children included, is masked before any handler sees it; other libraries' records pass
    # through. The masking module loads with the first qfleet record: `import qfleet` stays light.
    previous = logging.getLogRecordFactory()

    def factory(name: str, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(name, *args, **kwargs)
        if name == "qfleet" or name.startswith("qfleet."):
            from qfleet.config.logs import mask_record

            mask_record(record)
        return record

    logging.setLogRecordFactory(factory)


_mask_secrets_in_qfleet_logs()


if TYPE_CHECKING:
    # What _LAZY loads, for type checkers and IDEs; ``X as X`` marks each as a re-export.
    from qfleet import executor as executor
    from qfleet.cluster import Budget as Budget
    from qfleet.cluster import BudgetExceededError as BudgetExceededError
    from qfleet.cluster import IdempotencyKeyError as IdempotencyKeyError
    from qfleet.cluster import Policy as Policy
    from qfleet.cluster import QuantumCluster as QCluster  # noqa: F401 - Covalent's name, in _LAZY
    from qfleet.cluster import QuantumCluster as QuantumCluster
    from qfleet.cluster import idempotent as idempotent
    from qfleet.config import load_config as load_config
    from qfleet.executors import LocalExecutor as LocalExecutor
    from qfleet.executors import QuantumExecutor as QuantumExecutor
    from qfleet.executors.status import ExecutorStatus as ExecutorStatus
    from qfleet.executors.status import Price as Price
    from qfleet.jobs import ExecutionJob as ExecutionJob
    from qfleet.jobs import ExecutionJobFilters as ExecutionJobFilters
    from qfleet.jobs import ExecutionPreferences as ExecutionPreferences
    from qfleet.jobs import ExecutionSession as ExecutionSession
    from qfleet.jobs import Pauli as Pauli
    from qfleet.jobs import get_execution_actions as get_execution_actions
    from qfleet.jobs import get_execution_jobs as get_execution_jobs
    from qfleet.pennylane import QElectron as QElectron
    from qfleet.pennylane import QFleetDevice as QFleetDevice
    from qfleet.pennylane import QFuture as QFuture
    from qfleet.pennylane.qelectron import qelectron as qelectron

__all__ = [
    "ConfigError",
    "ExecutorError",
    "ExecutorTimeoutError",
    "QFleetError",
    "UnsupportedCircuitError",
    "__version__",
    *_LAZY,
]
