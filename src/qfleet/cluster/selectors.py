"""Selectors: which executor of a cluster runs the next batch."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pennylane.tape import QuantumScript

    from qfleet.executors.base import QuantumExecutor

SelectorFn = Callable[[Sequence["QuantumScript"], Sequence["QuantumExecutor"]], "QuantumExecutor"]


class CyclicSelector:
    """Executor 1, 2, ..., n, 1, ... The position survives pickling."""

    def __init__(self, position: int = 0):
        self.position = position
        self._lock = threading.Lock()

    def __call__(self, tapes: Sequence[Any], executors: Sequence[Any]) -> Any:
        with self._lock:
            chosen = executors[self.position % len(executors)]
            self.position = (self.position + 1) % len(executors)
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


SELECTORS: dict[str, type] = {"cyclic": CyclicSelector, "random": RandomSelector}
