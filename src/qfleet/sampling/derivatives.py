"""A batch that asks for a simulator's own derivatives (adjoint, backprop).

A backend that runs a PennyLane simulator itself (a local simulator, a dask worker) can
differentiate the way that simulator does for a plain QNode: adjoint (one forward and one
backward pass per tape) or backprop (the simulation traced by autograd/jax/torch, on the
caller's thread). The device sends such a batch with a :class:`Derivatives` request; the
backend declares what it computes in ``Capabilities.derivatives``, and a cluster routes the
batch only to members that compute it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

#: Device derivatives a simulator backend may compute itself, as PennyLane names them.
NATIVE_METHODS = frozenset({"adjoint", "backprop"})

Mode = Literal[
    "execute", "jacobian", "execute_and_jacobian", "vjp", "execute_and_vjp", "jvp",
    "execute_and_jvp",
]  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Derivatives:
    """What a derivative batch asks of the backend, per tape.

    ``method``: "adjoint" or "backprop"; ``simulator``: the PennyLane simulator whose own
    preprocessing the tapes went through (they are ready for it: the backend runs them as
    they are). ``mode`` names the device method (``execute`` is a backprop forward pass,
    traced; ``vjp``/``jvp`` take ``vectors``, one cotangent or tangent per tape). Per tape
    the backend returns the result, the jacobian / vjp / jvp, or the pair of both for the
    ``execute_and_*`` modes.

    Example:
        >>> request = Derivatives("adjoint", "lightning.qubit", "execute_and_jacobian")
        >>> Capabilities(simulator="lightning.qubit", derivatives=frozenset({"adjoint"})
        ...              ).why_not_derivatives(request) is None
        True
    """

    method: str
    simulator: str
    mode: Mode = "execute"
    vectors: tuple | None = None
    interface: str | None = None
    """The ML interface (PennyLane's name), for backprop."""
    order: int = 1
    """Derivative order (backprop through default.qubit takes higher orders)."""

    def part(self, start: int, stop: int) -> Derivatives:
        """The request for tapes ``start:stop`` of the batch (its vectors sliced)."""
        if self.vectors is None:
            return self
        return dataclasses.replace(self, vectors=tuple(self.vectors[start:stop]))


def split_pairs(pairs: Any) -> tuple[tuple, tuple]:
    """Per-tape (result, derivative) pairs -> (results, derivatives), as PennyLane's
    ``execute_and_compute_*`` device methods return them."""
    pairs = tuple(pairs)
    return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)


__all__ = ["NATIVE_METHODS", "Derivatives", "split_pairs"]
