"""Routing policies: score every member of a cluster for one batch, pick the best, say why.

A policy weighs three estimates per member (lower is better for the first two):

- **time**: estimated completion, the backend's published wait plus this cluster's own
  batches ahead of it plus this batch, at the member's measured seconds per circuit;
- **cost**: the member's ``price`` for this batch (circuits and shots);
- **fidelity**: the estimated success probability of the batch's circuits from the member's
  published calibration (one- and two-qubit gate and readout fidelities); a member that
  publishes none ranks after those that do.

``"queue"``, ``"cost"`` and ``"fidelity"`` weigh one of them (ties go to the faster
member); ``Policy(time=, cost=, fidelity=)`` mixes them, each scaled to [0, 1] over the members
that can take the batch. Members that cannot run the batch, whose circuit breaker is open,
that would break the budget or that are offline are skipped, and the decision says so.

The numbers live in numpy arrays (:class:`FleetState`) so a decision over a thousand
members costs microseconds. A decision keeps only its inputs (a shared snapshot of the
arrays, a position in the log of changes since, and the batch's features), and works its
explanation out when asked: a batch in flight costs a few hundred bytes, not a copy of every
member's score.

Example:
    >>> fleet = FleetState(["a", "b"], fixed_shots=[0, 0], default_shots=[0, 0])
    >>> fleet.set_status(0, price=Price(per_task=2.0))
    >>> fleet.set_status(1, price=Price(per_task=1.0))
    >>> decision = decide(fleet, Policy.preset("cost"), Features(tasks=3))
    >>> decision.chosen_label, decision.scores()["a"]
    ('b', 6.0)
"""

from __future__ import annotations

import dataclasses
import math
import threading
from array import array
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from qfleet.executors.status import Calibration, ExecutorStatus, Price

#: Log entries (member, kind, value) kept before a fresh snapshot is taken.
MAX_LOG = 3 * 65536
#: Weight of the time estimate that breaks ties in the single-aim policies.
TIE_BREAK = 1e-9

_LOAD, _LATENCY = 0.0, 1.0


class Policy(BaseModel):
    """How much completion time, cost and fidelity count in a routing decision.

    Example:
        >>> Policy(time=1, cost=2).fidelity
        0.0
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    time: float = Field(default=0.0, ge=0)
    cost: float = Field(default=0.0, ge=0)
    fidelity: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _some_weight(self) -> Policy:
        if not (self.time or self.cost or self.fidelity):
            raise ValueError(
                "a Policy needs a positive weight for time, cost or fidelity, "
                "e.g. Policy(time=1, cost=0.5)"
            )
        return self

    @classmethod
    def preset(cls, name: str) -> Policy:
        """The policy of ``selector="queue" | "cost" | "fidelity"``."""
        return PRESETS[name]

    @property
    def name(self) -> str:
        for key, value in PRESETS.items():
            if value == self:
                return key
        return f"Policy(time={self.time}, cost={self.cost}, fidelity={self.fidelity})"


PRESETS: dict[str, Policy] = {
    "queue": Policy(time=1.0),
    "cost": Policy(cost=1.0),
    "fidelity": Policy(fidelity=1.0),
}


@dataclasses.dataclass(frozen=True, slots=True)
class Features:
    """What a policy needs to know about a batch."""

    tasks: int
    """Circuits (tapes) in the batch."""
    shots: int = 0
    """Shots of the batch in total (0: exact, or the member's own shots)."""
    one_qubit: int = 0
    """Gates per circuit acting on one wire (mean over the batch)."""
    two_qubit: int = 0
    """Gates per circuit acting on two or more wires."""
    measured: int = 0
    """Wires measured per circuit."""

    @classmethod
    def of(cls, tapes: Sequence[Any]) -> Features:
        one = two = measured = shots = 0
        for tape in tapes:
            for op in tape.operations:
                if len(op.wires) == 1:
                    one += 1
                elif len(op.wires) > 1:
                    two += 1
            measured += len(tape.wires) if not tape.measurements else len(
                {w for m in tape.measurements for w in (m.wires or tape.wires)}
            )
            shots += tape.shots.total_shots or 0
        n = max(len(tapes), 1)
        return cls(len(tapes), shots, round(one / n), round(two / n), round(measured / n))


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Snapshot:
    """The members' published status as arrays, plus the cluster's own numbers when it was
    taken. Never mutated (a status refresh makes a new one), so decisions share it."""

    labels: tuple[str, ...]
    available: np.ndarray
    reasons: tuple[str | None, ...]
    wait: np.ndarray
    per_task: np.ndarray
    per_shot: np.ndarray
    priced: np.ndarray
    log_fidelity: np.ndarray
    """(3, n): log(1-error) of 1q gates, 2q gates, readout; 0 where unknown."""
    calibrated: np.ndarray
    fixed_shots: np.ndarray
    default_shots: np.ndarray
    currency: tuple[str, ...]
    load0: np.ndarray
    latency0: np.ndarray
    log: array
    """Changes since: (member, kind, value) triples, appended until the next snapshot."""
    all_available: bool
    derived: dict
    """Arrays worked out from this snapshot per batch shape (costs, fidelities)."""


class FleetState:
    """Per-member numbers the policies score, kept current by the cluster.

    ``fixed_shots``: each member's own shots per circuit (0: the batch's);
    ``default_shots``: shots a shots-only member uses for exact tapes (0: exact member).
    """

    def __init__(
        self, labels: Sequence[str], fixed_shots: Sequence[int], default_shots: Sequence[int]
    ) -> None:
        n = len(labels)
        self.labels = tuple(labels)
        self.lock = threading.RLock()
        """Held while the numbers change; hold it to decide on a consistent state."""
        self.load = np.zeros(n)
        """Circuits of this cluster's batches routed to or running on each member."""
        self.latency = np.zeros(n)
        """Measured seconds per circuit (0: not measured yet, so it gets tried)."""
        self.ahead = np.zeros(n)
        """load * latency: seconds of this cluster's work ahead of a new batch."""
        self._fixed = np.asarray(fixed_shots, dtype=float)
        self._default = np.asarray(default_shots, dtype=float)
        self._available = np.ones(n, dtype=bool)
        self._reasons: list[str | None] = [None] * n
        self._wait = np.zeros(n)
        self._per_task = np.zeros(n)
        self._per_shot = np.zeros(n)
        self._priced = np.zeros(n, dtype=bool)
        self._logf = np.zeros((3, n))
        self._calibrated = np.zeros(n, dtype=bool)
        self._currency: list[str] = [""] * n
        self.snapshot = self._take()

    def _take(self) -> Snapshot:
        return Snapshot(
            self.labels,
            self._available.copy(),
            tuple(self._reasons),
            self._wait.copy(),
            self._per_task.copy(),
            self._per_shot.copy(),
            self._priced.copy(),
            self._logf.copy(),
            self._calibrated.copy(),
            self._fixed,
            self._default,
            tuple(self._currency),
            self.load.copy(),
            self.latency.copy(),
            array("d"),
            bool(self._available.all()),
            {},
        )

    # -- changes ---------------------------------------------------------------------

    def add_load(self, i: int, delta: float) -> None:
        with self.lock:
            self.load[i] += delta
            self.ahead[i] = self.load[i] * self.latency[i]
            self._record(i, _LOAD, delta)

    def set_latency(self, i: int, seconds: float) -> None:
        with self.lock:
            self.latency[i] = seconds
            self.ahead[i] = self.load[i] * seconds
            self._record(i, _LATENCY, seconds)

    def _record(self, i: int, kind: float, value: float) -> None:
        log = self.snapshot.log
        log.extend((i, kind, value))
        if len(log) >= MAX_LOG:
            self.snapshot = self._take()

    def set_status(
        self,
        i: int,
        status: ExecutorStatus | None = None,
        *,
        price: Price | None = None,
        calibration: Calibration | None = None,
    ) -> None:
        """Take in member ``i``'s status (or just a price/calibration); call
        :meth:`publish` after a round of updates (``set_status`` alone publishes)."""
        self.update(i, status, price=price, calibration=calibration)
        self.publish()

    def update(
        self,
        i: int,
        status: ExecutorStatus | None = None,
        *,
        price: Price | None = None,
        calibration: Calibration | None = None,
    ) -> None:
        with self.lock:
            self._update(i, status, price, calibration)

    def _update(
        self,
        i: int,
        status: ExecutorStatus | None,
        price: Price | None,
        calibration: Calibration | None,
    ) -> None:
        if status is not None:
            self._available[i] = status.available
            self._reasons[i] = status.reason
            wait = status.estimated_wait
            self._wait[i] = wait if wait is not None else 0.0
            price = price or status.price
            calibration = calibration or status.calibration
        if price is not None:
            self._per_task[i], self._per_shot[i] = price.per_task, price.per_shot
            self._priced[i], self._currency[i] = True, price.currency
        if calibration is not None:
            self._logf[:, i] = calibration.log_fidelities()
            self._calibrated[i] = True
        elif status is not None:
            self._logf[:, i] = 0.0
            self._calibrated[i] = False

    def publish(self) -> None:
        """Decisions from now on see the updates (earlier ones keep their snapshot)."""
        with self.lock:
            self.snapshot = self._take()


def _shots(snap: Snapshot, f: Features) -> np.ndarray:
    if f.shots:
        return np.where(snap.fixed_shots > 0, snap.fixed_shots * f.tasks, float(f.shots))
    return np.where(snap.fixed_shots > 0, snap.fixed_shots, snap.default_shots) * f.tasks


def costs(snap: Snapshot, f: Features) -> np.ndarray:
    """Each member's price for a batch with features ``f`` (kept per snapshot and shape)."""
    key = ("cost", f.tasks, f.shots)
    found = snap.derived.get(key)
    if found is None:
        found = snap.derived[key] = snap.per_task * f.tasks + snap.per_shot * _shots(snap, f)
    return found


def _unlikelihood(snap: Snapshot, f: Features) -> np.ndarray:
    """-log(estimated success probability) per member (0 where no calibration is known)."""
    key = ("fidelity", f.one_qubit, f.two_qubit, f.measured)
    found = snap.derived.get(key)
    if found is None:
        lf = snap.log_fidelity
        found = -(f.one_qubit * lf[0] + f.two_qubit * lf[1] + f.measured * lf[2])
        if not snap.calibrated.all():
            # No published error rates: ranked after every member that publishes them
            # (e times less likely than the worst of those), not treated as perfect.
            known = found[snap.calibrated]
            worst = float(known[np.isfinite(known)].max(initial=0.0))
            found = np.where(snap.calibrated, found, worst + 1.0)
        snap.derived[key] = found
    return found


def _normalized(values: np.ndarray) -> np.ndarray:
    """``values`` scaled to [0, 1] over all members (skipped ones are masked later)."""
    low, high = values.min(), values.max()
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def _weighted_static(policy: Policy, snap: Snapshot, f: Features) -> Any:
    key = ("weighted", policy, f)
    found = snap.derived.get(key)
    if found is None:
        found = 0.0
        if policy.cost:
            found = found + policy.cost * _normalized(costs(snap, f))
        if policy.fidelity:
            found = found + policy.fidelity * _normalized(_unlikelihood(snap, f))
        snap.derived[key] = found
    return found


def completion(
    snap: Snapshot, ahead: np.ndarray, latency: np.ndarray, f: Features
) -> np.ndarray:
    """Estimated seconds until a batch would be done on each member: the published wait,
    this cluster's work ahead, and the batch itself."""
    return snap.wait + ahead + latency * f.tasks


def score(
    policy: Policy, snap: Snapshot, ahead: np.ndarray, latency: np.ndarray, f: Features
) -> np.ndarray:
    """Each member's score for a batch (lower is better); ``ahead``/``latency``: see
    :class:`FleetState`."""
    if policy.time and not (policy.cost or policy.fidelity):
        return completion(snap, ahead, latency, f)
    if policy.cost and not (policy.time or policy.fidelity):
        return costs(snap, f)
    if policy.fidelity and not (policy.cost or policy.time):
        return _unlikelihood(snap, f)
    total = _weighted_static(policy, snap, f)  # an array: two weights at least are set
    if policy.time:
        total = total + policy.time * _normalized(completion(snap, ahead, latency, f))
    return total


_NO_SKIPS: Mapping[int, str] = {}


class Decision:
    """Which member runs a batch and why; the explanation is worked out when asked.

    ``scores()``: every member's score (lower is better; inf: skipped); ``skipped()``: why
    each skipped member was; ``explain()``: all of it as text.
    """

    __slots__ = ("chosen", "cost", "features", "limit", "policy", "seq", "skips", "snapshot")

    def __init__(
        self,
        snapshot: Snapshot,
        seq: int,
        features: Features,
        policy: Policy,
        chosen: int,
        limit: float,
        skips: Mapping[int, str],
        cost: float,
    ) -> None:
        self.snapshot = snapshot
        self.seq = seq
        self.features = features
        self.policy = policy
        self.chosen = chosen
        self.limit = limit
        """Most this batch could cost (per-call limit or what remained of the budget)."""
        self.skips = skips
        """Members skipped for reasons outside the snapshot (cannot run it, breaker open)."""
        self.cost = cost

    @property
    def chosen_label(self) -> str:
        return self.snapshot.labels[self.chosen]

    def _live(self) -> tuple[np.ndarray, np.ndarray]:
        """(ahead, latency) per member when the decision was made (log replayed)."""
        snap = self.snapshot
        load, latency = snap.load0.copy(), snap.latency0.copy()
        log = np.frombuffer(snap.log, dtype=float, count=self.seq).reshape(-1, 3)
        for i, kind, value in log:
            if kind == _LOAD:
                load[int(i)] += value
            else:
                latency[int(i)] = value
        return load * latency, latency

    def _evaluate(self) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
        snap = self.snapshot
        skipped = dict(self.skips)
        price = costs(snap, self.features)
        for i in range(len(snap.labels)):
            if i in skipped or i == self.chosen:  # the chosen one was tried even so
                continue
            if not snap.available[i]:
                skipped[i] = f"offline: {snap.reasons[i] or 'not available'}"
            elif price[i] > self.limit:
                skipped[i] = (
                    f"over budget: costs {price[i]:.6g} {snap.currency[i]}, "
                    f"at most {self.limit:.6g} allowed"
                )
        ahead, latency = self._live()
        scores = np.array(score(self.policy, snap, ahead, latency, self.features), dtype=float)
        scores = np.broadcast_to(scores, price.shape).copy()
        scores[list(skipped)] = np.inf
        return scores, price, skipped

    def scores(self) -> dict[str, float]:
        scores, _, _ = self._evaluate()
        return dict(zip(self.snapshot.labels, scores.tolist(), strict=True))

    def skipped(self) -> dict[str, str]:
        _, _, skipped = self._evaluate()
        return {self.snapshot.labels[i]: why for i, why in sorted(skipped.items())}

    def explain(self) -> str:
        scores, price, skipped = self._evaluate()
        snap = self.snapshot
        lines = [
            f"policy {self.policy.name}: chose {self.chosen_label} "
            f"(score {scores[self.chosen]:.6g}, cost {self.cost:.6g})"
        ]
        for i, label in enumerate(snap.labels):
            why = skipped.get(i)
            lines.append(
                f"  {label}: skipped, {why}" if why else
                f"  {label}: score {scores[i]:.6g}, cost {price[i]:.6g}"
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Decision(policy={self.policy.name}, chosen={self.chosen_label!r})"

    def __reduce__(self):
        # The snapshot's log goes along only up to this decision.
        snap = dataclasses.replace(
            self.snapshot, log=array("d", self.snapshot.log[: self.seq]), derived={}
        )
        return (
            Decision,
            (snap, self.seq, self.features, self.policy, self.chosen, self.limit,
             dict(self.skips), self.cost),
        )  # fmt: skip


class NoMemberError(Exception):
    """No member may take the batch; ``skips`` says why for each."""

    def __init__(self, skips: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in skips.items()))
        self.skips = skips


def decide(
    fleet: FleetState,
    policy: Policy,
    features: Features,
    *,
    limit: float = math.inf,
    blocked: Mapping[int, str] = _NO_SKIPS,
) -> Decision:
    """The best member for a batch. ``limit``: most the batch may cost; ``blocked``: members
    that may not take it, with why. Raises NoMemberError when no member may."""
    return ranked(fleet, policy, features, limit=limit, blocked=blocked)[0]


def ranked(
    fleet: FleetState,
    policy: Policy,
    features: Features,
    *,
    limit: float = math.inf,
    blocked: Mapping[int, str] = _NO_SKIPS,
    top: int = 1,
    offline_ok: bool = False,
) -> list[Decision]:
    """The best ``top`` members for a batch, best first, each with its decision
    (``offline_ok``: members whose status says offline count too)."""
    snap = fleet.snapshot
    scores = score(policy, snap, fleet.ahead, fleet.latency, features)
    limited = limit != math.inf
    if blocked or limited or not (snap.all_available or offline_ok):
        ok = np.ones(len(snap.labels), dtype=bool) if offline_ok else snap.available
        if blocked:
            ok = ok.copy()
            ok[list(blocked)] = False
        if limited:
            ok = ok & (costs(snap, features) <= limit)
        masked = np.where(ok, scores, np.inf)
    else:
        masked = scores
    seq = len(snap.log)
    if top == 1:
        best = int(masked.argmin())
        if masked[best] == np.inf:
            order = []
        else:
            order = [best]
            if not policy.time and np.count_nonzero(masked == masked[best]) > 1:
                # a tie on price or fidelity: the member that finishes first
                ties = np.flatnonzero(masked == masked[best])
                done = snap.wait[ties] + fleet.ahead[ties] + fleet.latency[ties] * features.tasks
                order = [int(ties[done.argmin()])]
    else:
        order = [int(i) for i in np.argsort(masked, kind="stable")[:top] if masked[i] < np.inf]
    if not order:
        probe = Decision(snap, seq, features, policy, -1, limit, blocked, 0.0)
        raise NoMemberError(probe.skipped())
    price = costs(snap, features)
    return [
        Decision(snap, seq, features, policy, i, limit, blocked, float(price[i])) for i in order
    ]
