"""What an executor says about itself right now: availability, queue, calibration, price.

Backends that publish these (IBM backend status, Azure providerStatus, 2300 ``get_dynamic``)
fill them in their ``status()``; prices come from the user (argument or config), since no
provider serves them.

Example:
    >>> price = Price(per_task=0.3, per_shot=0.00035)
    >>> round(price.cost(tasks=2, shots=2000), 4)
    1.3
    >>> Calibration(two_qubit_error=0.01, readout_error=0.02).success_probability(0, 3, 2)
    0.9318...
"""

from __future__ import annotations

import math
import time

from pydantic import BaseModel, ConfigDict, Field


class Price(BaseModel):
    """What one batch costs on a backend: ``per_task`` per circuit plus ``per_shot`` per
    shot, in ``currency``. Set as an executor's ``price=`` argument or in its config section
    (``price = {per_task = 0.3, per_shot = 0.00035}``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    per_task: float = Field(default=0.0, ge=0)
    per_shot: float = Field(default=0.0, ge=0)
    currency: str = "USD"

    def cost(self, tasks: int, shots: int) -> float:
        """The price of ``tasks`` circuits with ``shots`` shots in total."""
        return self.per_task * tasks + self.per_shot * shots


class Calibration(BaseModel):
    """A backend's published error rates (means over its qubits and couplers).

    ``epoch`` changes whenever the backend recalibrates (result caches key on it).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    one_qubit_error: float = Field(default=0.0, ge=0, le=1)
    two_qubit_error: float = Field(default=0.0, ge=0, le=1)
    readout_error: float = Field(default=0.0, ge=0, le=1)
    epoch: str | None = None

    def log_fidelities(self) -> tuple[float, float, float]:
        """log(1 - error) of one-qubit gates, two-qubit gates and readout (-inf at error 1)."""
        return tuple(  # type: ignore[return-value]  # three entries
            math.log1p(-e) if e < 1 else -math.inf
            for e in (self.one_qubit_error, self.two_qubit_error, self.readout_error)
        )

    def success_probability(self, one_qubit: int, two_qubit: int, measured: int) -> float:
        """Estimated probability that a circuit with these gate and readout counts runs
        without error (independent errors)."""
        l1, l2, lr = self.log_fidelities()
        return math.exp(one_qubit * l1 + two_qubit * l2 + measured * lr)


#: A noiseless simulator's calibration.
PERFECT = Calibration()


class ExecutorStatus(BaseModel):
    """One executor's live status, as ``executor.status()`` returns it.

    ``queue_length``/``estimated_wait`` (seconds) are None where the backend does not
    publish them; ``calibration`` is None where it publishes no error rates.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    executor: str
    available: bool = True
    reason: str | None = None
    """Why it is not available (or a note on its state)."""
    queue_length: int | None = Field(default=None, ge=0)
    estimated_wait: float | None = Field(default=None, ge=0)
    calibration: Calibration | None = None
    price: Price | None = None
    metrics: dict[str, str | int | float | bool | None] = Field(default_factory=dict)
    """Other figures the backend publishes about itself, as it names them (a 2300's
    ``get_dynamic``: ``state``, ``locked``, ``uptime``, request counters, ...)."""
    checked_at: float = Field(default_factory=time.time)
    """Unix time the status was read."""
