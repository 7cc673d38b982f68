"""QuantumCluster: a group of executors that acts as one executor."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pennylane.tape import QuantumScript
from pydantic import Field, PrivateAttr, field_validator, model_validator

from qfleet.cluster.selectors import SELECTORS, SelectorFn
from qfleet.errors import QFleetError
from qfleet.executors.base import Capabilities, Prepared, QuantumExecutor


class SelectorError(QFleetError, ValueError):
    """A selector is unknown or chose something that is not in the cluster."""


class QuantumCluster(QuantumExecutor):
    """Runs each batch on one of its executors, chosen by ``selector``.

    Routing is per batch, so all tapes of one QNode call or one gradient run on one
    executor (one job). ``selector`` is "cyclic" (default), "random", or a callable
    ``f(tapes, executors) -> executor``.

    Example:
        >>> cluster = QuantumCluster(
        ...     executors=[LocalExecutor(), LocalExecutor(device="lightning.qubit")],
        ...     selector="cyclic",
        ... )
        >>> cluster.select([tape]).label
        'LocalExecutor'
    """

    executors: list[QuantumExecutor] = Field(min_length=1)
    selector: str | Callable = "cyclic"

    backend_kind = "cluster"

    _select: SelectorFn = PrivateAttr()

    @field_validator("executors", mode="before")
    @classmethod
    def _non_empty(cls, value: Any) -> Any:
        if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 0:
            raise ValueError("a QuantumCluster needs at least one executor, got an empty list")
        return value

    @field_validator("selector")
    @classmethod
    def _known_selector(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in SELECTORS:
            raise ValueError(
                f"unknown selector {value!r}; use one of {sorted(SELECTORS)} or a callable "
                f"f(tapes, executors) -> executor"
            )
        return value

    @model_validator(mode="after")
    def _member_limits_only(self) -> QuantumCluster:
        for field in ("max_concurrent", "rate", "timeout"):
            if getattr(self, field) is not None:
                raise ValueError(
                    f"set {field} on the cluster's executors, not on the cluster itself"
                )
        return self

    def model_post_init(self, context: Any) -> None:
        self._select = SELECTORS[self.selector]() if isinstance(self.selector, str) else self.selector

    @property
    def capabilities(self) -> Capabilities:
        caps = self.executors[0].capabilities
        for executor in self.executors[1:]:
            caps = caps.intersect(executor.capabilities)
        return caps

    def select(self, tapes: Sequence[QuantumScript]) -> QuantumExecutor:
        """The executor that will run ``tapes``."""
        chosen = self._select(tapes, self.executors)
        if not any(chosen is executor for executor in self.executors):
            raise SelectorError(
                f"selector {self.selector!r} returned {chosen!r}, which is not one of this "
                f"cluster's executors; it must return an element of the list it is given"
            )
        return chosen

    def prepare(self, tapes: Sequence[QuantumScript]) -> Prepared:
        # The chosen member prepares the batch, and runs it: the cluster only routes.
        return self.select(tapes).prepare(self.with_shots(tapes))
