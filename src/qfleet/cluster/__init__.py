"""QuantumCluster and its selectors."""

from qfleet.cluster.cluster import QuantumCluster
from qfleet.cluster.selectors import SELECTORS, CyclicSelector, RandomSelector

__all__ = ["SELECTORS", "CyclicSelector", "QuantumCluster", "RandomSelector"]
