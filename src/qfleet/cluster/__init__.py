"""QuantumCluster, its selectors and policies, budgets and the result cache."""

from qfleet.cluster.cluster import (
    ClusterRunMetadata,
    ExecutorHealth,
    QuantumCluster,
    RawPart,
    SelectorError,
)
from qfleet.cluster.idempotency import IdempotencyKeyError, idempotent
from qfleet.cluster.ledger import Budget, BudgetExceededError, Ledger
from qfleet.cluster.policy import Decision, Policy
from qfleet.cluster.selectors import (
    SELECTORS,
    CyclicSelector,
    FastestSelector,
    LeastBusySelector,
    RandomSelector,
)

__all__ = [
    "SELECTORS",
    "Budget",
    "BudgetExceededError",
    "ClusterRunMetadata",
    "CyclicSelector",
    "Decision",
    "ExecutorHealth",
    "FastestSelector",
    "IdempotencyKeyError",
    "LeastBusySelector",
    "Ledger",
    "Policy",
    "QuantumCluster",
    "RandomSelector",
    "RawPart",
    "SelectorError",
    "idempotent",
]
