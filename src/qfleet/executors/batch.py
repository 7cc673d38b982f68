"""What a batch is on its way through an executor: prepared, accepted, finished.

:class:`Prepared` (the tapes translated for one executor, with their sampling plan),
:class:`BatchHandle` (a batch the backend has accepted), :class:`BatchResult` (results in
PennyLane's structure with :class:`RunMetadata`). Plain data: the runner
(:mod:`qfleet.executors.runner`) moves them between the phases.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pennylane.tape import QuantumScript
from pydantic import BaseModel, ConfigDict, Field

import qfleet.telemetry as telemetry
from qfleet.sampling import SamplingPlan
from qfleet.sampling.derivatives import Derivatives

if TYPE_CHECKING:
    from qfleet.executors.base import QuantumExecutor

__all__ = ["BatchHandle", "BatchResult", "Prepared", "RunMetadata"]


class RunMetadata(BaseModel):
    """Where and how a batch ran."""

    executor: str
    backend: str
    num_circuits: int
    execution_time: float
    """Seconds from submission to results."""
    submitted_at: float
    """Unix time of submission."""
    job_ids: tuple[str, ...] = ()
    shots: tuple[int | None, ...] = ()
    """Per tape: the shots its circuits ran on the backend (None: exact)."""
    cost: float | None = None
    """Estimated price of the batch (the executor's ``price``; None: unknown)."""
    compile: dict[str, Any] | None = None
    """What compiling for the backend's chip did (2300, Quantum Inspire): ``seconds``,
    ``cached`` circuits, ``swaps`` and ``added_two_qubit_gates``; None: not compiled."""


class BatchResult(tuple):
    """The results of a batch, in PennyLane's structure, with ``metadata`` attached.

    It is a tuple (one entry per tape), so it can be handed to PennyLane as is.
    """

    metadata: RunMetadata

    def __new__(cls, results: Sequence[Any], metadata: RunMetadata) -> BatchResult:
        obj = super().__new__(cls, results)
        obj.metadata = metadata
        return obj

    def __reduce__(self):
        return (BatchResult, (tuple(self), self.metadata))


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A batch translated for one executor, ready to run on an event loop."""

    executor: QuantumExecutor
    payload: Any
    tapes: tuple[QuantumScript, ...]
    plan: SamplingPlan | None = None
    """How the tapes became the backend's circuits (None: a delegating executor)."""
    derivatives: Derivatives | None = None
    """The simulator derivatives the batch asks for (None: results only)."""

    @property
    def num_circuits(self) -> int:
        return len(self.tapes)

    @property
    def num_outputs(self) -> int:
        """Raw outputs the backend returns: one per planned circuit."""
        return len(self.plan.circuits) if self.plan is not None else len(self.tapes)

    def complete(self, raw: BatchResult) -> BatchResult:
        """Raw backend output -> PennyLane results (call on the caller's thread)."""
        with telemetry.finishing(self, raw):
            if self.plan is None:
                return BatchResult(self.executor.finish(self.tapes, raw), raw.metadata)
            if self.plan.is_passthrough:
                return raw
            outputs = self.executor.decode(self.plan.circuits, raw)
            metadata = raw.metadata.model_copy(update={"shots": self.plan.shots_used})
            return BatchResult(self.plan.results(outputs), metadata)


class BatchHandle(BaseModel):
    """Returned by ``batch_submit`` once the backend has accepted the work."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    executor: str
    num_circuits: int
    submitted_at: float
    job_ids: tuple[str, ...] = ()
    job: Any = Field(default=None, repr=False, exclude=True)
    prepared: Any = Field(default=None, repr=False, exclude=True)
    owner: Any = Field(default=None, repr=False, exclude=True)
    """The executor that accepted the batch (a cluster member for cluster batches)."""
    started: float = Field(default=0.0, repr=False)
    limits_held: bool = Field(default=False, repr=False)
