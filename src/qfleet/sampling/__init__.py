"""The sampling layer: what a backend can run, and the one plan from tapes to its circuits
and from its raw output back to PennyLane results."""

from qfleet.sampling.capabilities import (
    ALL_MEASUREMENTS,
    SAMPLING_MEASUREMENTS,
    SHOTS_ONLY_MEASUREMENTS,
    BatchShape,
    Capabilities,
)
from qfleet.sampling.kinds import measurement_kind
from qfleet.sampling.plan import (
    Counts,
    RawOutput,
    Samples,
    SamplingPlan,
    ShotsWarning,
    State,
    Values,
    is_mid_circuit,
    needs_backend_support,
)

__all__ = [
    "ALL_MEASUREMENTS",
    "SAMPLING_MEASUREMENTS",
    "SHOTS_ONLY_MEASUREMENTS",
    "BatchShape",
    "Capabilities",
    "Counts",
    "RawOutput",
    "Samples",
    "SamplingPlan",
    "ShotsWarning",
    "State",
    "Values",
    "is_mid_circuit",
    "measurement_kind",
    "needs_backend_support",
]
