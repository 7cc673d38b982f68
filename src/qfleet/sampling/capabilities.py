"""What a backend can run, and the one check of a tape against it.

A backend declares its :class:`Capabilities`; the sampling plan reads them to turn tapes
into circuits the backend runs, and the cluster reads them (through :func:`why_not`) to route
a batch only to members that can run it, before anything is sent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from pennylane.tape import QuantumScript
from pydantic import BaseModel, ConfigDict, Field

from qfleet.sampling.derivatives import Derivatives

#: Measurement kinds, by PennyLane's measurement class names.
ALL_MEASUREMENTS = frozenset(
    {"expval", "var", "probs", "sample", "counts", "state", "density_matrix", "purity",
     "vn_entropy", "mutual_info", "classical_shadow", "shadow_expval"}
)
#: What per-shot computational-basis data gives (after diagonalizing observables).
SAMPLING_MEASUREMENTS = frozenset({"expval", "var", "probs", "sample", "counts"})
#: Measurements that need per-shot data or shots by definition.
SHOTS_ONLY_MEASUREMENTS = frozenset({"sample", "counts", "classical_shadow", "shadow_expval"})


class Capabilities(BaseModel):
    """What a backend can run. The defaults describe a full PennyLane simulator.

    ``native_gates=None`` means the backend takes PennyLane tapes as they are (a PennyLane
    device runs them); a set of gate names means the sampling plan decomposes every tape
    into those gates (through the operator's matrix where PennyLane has no decomposition).

    Example:
        >>> caps = Capabilities(analytic=False, native_gates=frozenset({"RX", "RZ", "CNOT"}),
        ...                     measurements=SAMPLING_MEASUREMENTS, max_shots=10_000)
        >>> caps.why_not(QuantumScript([], [qml.state()], shots=10))
        'it cannot return state() (it returns counts(), expval(), probs(), sample(), var())'
    """

    model_config = ConfigDict(frozen=True)

    analytic: bool = True
    """Exact results for tapes without shots. False: shots only (the executor's shots
    stand in for analytic expval/probs, with a warning)."""
    max_wires: int | None = None
    measurements: frozenset[str] = ALL_MEASUREMENTS
    """Measurement kinds it returns with shots."""
    exact_measurements: frozenset[str] = ALL_MEASUREMENTS - SHOTS_ONLY_MEASUREMENTS
    """Measurement kinds it returns without shots (when ``analytic``)."""
    native_gates: frozenset[str] | None = None
    mid_circuit_measurements: bool = True
    """Runs ``qml.measure``/``qml.cond`` itself; else the plan defers them to extra wires."""
    max_shots: int | None = Field(default=None, gt=0)
    max_circuits: int | None = Field(default=None, gt=0)
    """Most circuits one backend job takes (None: no limit); informational: a backend's
    ``translate`` groups its circuits into jobs of at most this many."""
    observables: bool = False
    """Measures observables itself (an estimator): no diagonalization, values come back."""
    default_shots: int | None = Field(default=None, gt=0)
    """Shots used for analytic tapes on a shots-only backend."""
    simulator: str | None = None
    """The PennyLane simulator the backend runs circuits on (None: not a simulator)."""
    derivatives: frozenset[str] = frozenset()
    """Derivatives ``simulator`` computes here itself ("adjoint", "backprop"); a batch
    that asks for them (a :class:`~qfleet.sampling.derivatives.Derivatives` request) goes
    only to backends that have them. Empty: gradients by parameter-shift."""

    @property
    def declares_limits(self) -> bool:
        """Whether it declares limits a full PennyLane simulator lacks (then the executor
        checks tapes against them before sending)."""
        return not (
            self.takes_tapes and self.analytic and self.mid_circuit_measurements
            and self.max_wires is None and self.max_shots is None
            and self.measurements == ALL_MEASUREMENTS
            and self.exact_measurements == ALL_MEASUREMENTS - SHOTS_ONLY_MEASUREMENTS
        )  # fmt: skip

    def why_not_derivatives(self, request: Derivatives) -> str | None:
        """Why this backend cannot compute the derivatives ``request`` asks for, or None."""
        if request.method not in self.derivatives:
            offered = f"it computes {sorted(self.derivatives)}" if self.derivatives else "none"
            return f"it does not compute {request.method} derivatives itself ({offered})"
        if request.simulator != self.simulator:
            return (
                f"its {request.method} derivatives are {self.simulator}'s, the batch was "
                f"prepared for {request.simulator}"
            )
        return None

    @property
    def takes_tapes(self) -> bool:
        """True when the backend runs PennyLane tapes as they are (no plan needed)."""
        return self.native_gates is None

    def why_not(self, tape: QuantumScript) -> str | None:
        """Why this backend cannot run ``tape`` (one sentence), or None if it can."""
        from qfleet.sampling.kinds import measurement_kind

        if self.max_wires is not None and len(tape.wires) > self.max_wires:
            return f"the circuit uses {len(tape.wires)} wires, it has {self.max_wires}"
        kinds = {measurement_kind(mp) for mp in tape.measurements}
        if tape.shots:
            missing = kinds - self.measurements
            if missing:
                return (
                    f"it cannot return {_names(missing)} (it returns {_names(self.measurements)})"
                )
            total = tape.shots.total_shots
            if self.max_shots is not None and total > self.max_shots:
                return f"{total} shots exceed its limit of {self.max_shots}"
            return None
        if self.analytic:
            missing = kinds - self.exact_measurements
            if missing:
                return f"it cannot return {_names(missing)} without shots; set shots on the QNode"
            return None
        missing = kinds - (self.measurements - SHOTS_ONLY_MEASUREMENTS)
        if missing:
            return f"it cannot return {_names(missing)} without shots; set shots on the QNode"
        if self.default_shots is None:
            return "it samples and no shots were given; set shots on the QNode or the executor"
        return None

    def union(self, other: Capabilities) -> Capabilities:
        """What at least one can run (what a cluster accepts at the device's door)."""
        # Derivatives of one simulator: members that differentiate with different
        # simulators would differentiate different tapes, so a mix offers none.
        simulator, derivatives = self.simulator, self.derivatives
        if not self.derivatives:
            simulator, derivatives = other.simulator, other.derivatives
        elif other.derivatives:
            same = self.simulator == other.simulator
            derivatives = self.derivatives | other.derivatives if same else frozenset()
        return Capabilities(
            analytic=self.analytic or other.analytic,
            max_wires=None if None in (self.max_wires, other.max_wires)
            else max(self.max_wires, other.max_wires),  # type: ignore[type-var]
            measurements=self.measurements | other.measurements,
            exact_measurements=self.exact_measurements | other.exact_measurements,
            native_gates=None,
            max_shots=None if None in (self.max_shots, other.max_shots)
            else max(self.max_shots, other.max_shots),  # type: ignore[type-var]
            default_shots=self.default_shots or other.default_shots,
            simulator=simulator,
            derivatives=derivatives,
        )


@dataclasses.dataclass(frozen=True)
class BatchShape:
    """What a capability check needs from a batch, gathered in one pass: one tape per
    distinct (wires, shots, measurement classes) and one operator per operator class.

    A gradient's hundreds of shifted tapes have one shape, so a cluster judges each
    member on a handful of tapes instead of all of them.
    """

    tapes: tuple[QuantumScript, ...]
    operators: tuple[Any, ...]

    @classmethod
    def of(cls, tapes: Iterable[QuantumScript]) -> BatchShape:
        shapes: dict[tuple, QuantumScript] = {}
        operators: dict[type, Any] = {}
        for tape in tapes:
            key = (len(tape.wires), tape.shots.total_shots, *map(type, tape.measurements))
            shapes.setdefault(key, tape)
            operators.update(zip(map(type, tape.operations), tape.operations, strict=True))
        return cls(tuple(shapes.values()), tuple(operators.values()))


def _names(kinds: Iterable[str]) -> str:
    return ", ".join(f"{k}()" for k in sorted(kinds))


__all__ = [
    "ALL_MEASUREMENTS",
    "SAMPLING_MEASUREMENTS",
    "SHOTS_ONLY_MEASUREMENTS",
    "BatchShape",
    "Capabilities",
]
