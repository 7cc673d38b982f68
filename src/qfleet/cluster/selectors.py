"""Selectors: which executor of a cluster runs the next batch.

A selector is any callable ``f(tapes, executors) -> executor``; it is given the executors
that are available right now (circuit breakers closed). Load-aware selectors also read the
cluster's live statistics, which the cluster hands them with ``attach``.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from qfleet.errors import QFleetError

if TYPE_CHECKING:
    from pennylane.tape import QuantumScript

    from qfleet.executors.base import QuantumExecutor

SelectorFn = Callable[[Sequence["QuantumScript"], Sequence["QuantumExecutor"]], "QuantumExecutor"]


class MemberStats(Protocol):
    in_flight: int
    queued: int
    ewma_latency: float | None


class CyclicSelector:
    """Executor 1, 2, ..., n, 1, ... The position survives pickling."""

    def __init__(self, position: int = 0):
        self.position = position
        self._lock = threading.Lock()

    def __call__(self, tapes: Sequence[Any], executors: Sequence[Any]) -> Any:
        with self._lock:
            chosen = executors[self.position % len(executors)]
            self.position = (self.position + 1) % max(len(executors), 1)
        return chosen

    def __reduce__(self):
        return (CyclicSelector, (self.position,))


class RandomSelector:
    """A uniformly random executor per batch; ``seed`` makes the sequence repeatable."""

    def __init__(self, seed: int | None = None):
        self.seed = seed
        self._rng = random.Random(seed)

    def __call__(self, tapes: Sequence[Any], executors: Sequence[Any]) -> Any:
        return self._rng.choice(executors)

    def __reduce__(self):
        return (RandomSelector, (self.seed,))


class _StatsSelector:
    """Base of the selectors that read the cluster's per-executor statistics."""

    def __init__(self) -> None:
        self._stats: Callable[[Any], MemberStats] | None = None

    def attach(self, stats: Callable[[Any], MemberStats]) -> None:
        self._stats = stats

    def _stats_of(self, executor: Any) -> MemberStats:
        assert self._stats is not None, "the cluster attaches its statistics first"
        return self._stats(executor)

    def __reduce__(self):
        return (type(self), ())


class LeastBusySelector(_StatsSelector):
    """The executor with the fewest batches in flight (running or routed to it) relative
    to its ``max_concurrent``. Ties go to the earlier executor in the list.
    """

    def __call__(self, tapes: Sequence[Any], executors: Sequence[Any]) -> Any:
        def load(executor: Any) -> float:
            stats = self._stats_of(executor)
            return (stats.in_flight + stats.queued) / (executor.max_concurrent or 1)

        return min(executors, key=load)


class FastestSelector(_StatsSelector):
    """The executor with the lowest exponentially weighted latency per circuit.

    With probability ``explore`` (and always for executors never measured) another
    executor is tried, so one that recovered from a slow spell gets traffic again.
    """

    def __init__(self, explore: float = 0.1, seed: int | None = None) -> None:
        super().__init__()
        self.explore = explore
        self._rng = random.Random(seed)

    def __call__(self, tapes: Sequence[Any], executors: Sequence[Any]) -> Any:
        unmeasured = [e for e in executors if self._stats_of(e).ewma_latency is None]
        if unmeasured:
            return unmeasured[0]
        if len(executors) > 1 and self._rng.random() < self.explore:
            return self._rng.choice(executors)

        def expected_wait(executor: Any) -> float:
            stats = self._stats_of(executor)
            queue = 1 + (stats.in_flight + stats.queued) / (executor.max_concurrent or 1)
            assert stats.ewma_latency is not None  # unmeasured executors returned above
            return stats.ewma_latency * queue

        return min(executors, key=expected_wait)

    def __reduce__(self):
        return (FastestSelector, (self.explore,))


SELECTORS: dict[str, type] = {
    "cyclic": CyclicSelector,
    "random": RandomSelector,
    "least_busy": LeastBusySelector,
    "fastest": FastestSelector,
}


class SelectorFailedError(QFleetError, RuntimeError):
    """A user's selector function raised; the message names it and its error."""


def guarded(selector: Callable[..., Any]) -> Callable[..., Any]:
    """``selector`` (a user's function), with what it raises reported as coming from it."""
    if hasattr(selector, "attach"):  # a stats-driven selector object: keep its interface
        return selector
    name = getattr(selector, "__qualname__", None) or type(selector).__name__

    def select(tapes: Sequence[Any], executors: Sequence[Any]) -> Any:
        try:
            return selector(tapes, executors)
        except QFleetError:
            raise
        except Exception as exc:
            raise SelectorFailedError(
                f"the cluster's selector {name} raised {type(exc).__name__}: {exc}; fix the "
                f"selector (it is called as f(tapes, executors) and returns one of executors)"
            ) from exc

    return select
