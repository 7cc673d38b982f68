"""Circuit translation shared by every backend: tapes in, backend formats out, results back.

Counts- and sample-based backends turn their output into PennyLane results here, once.
"""

from qfleet.circuits.qasm import QASM2_GATES, to_openqasm2
from qfleet.circuits.results import (
    result_from_samples,
    samples_from_counts,
)

__all__ = [
    "QASM2_GATES",
    "result_from_samples",
    "samples_from_counts",
    "to_openqasm2",
]
