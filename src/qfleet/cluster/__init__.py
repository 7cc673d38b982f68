"""QuantumCluster and its selectors."""

from qfleet.cluster.cluster import ExecutorHealth, QuantumCluster, SelectorError
from qfleet.cluster.selectors import (
    SELECTORS,
    CyclicSelector,
    FastestSelector,
    LeastBusySelector,
    RandomSelector,
)

__all__ = [
    "SELECTORS",
    "CyclicSelector",
    "ExecutorHealth",
    "FastestSelector",
    "LeastBusySelector",
    "QuantumCluster",
    "RandomSelector",
    "SelectorError",
]
