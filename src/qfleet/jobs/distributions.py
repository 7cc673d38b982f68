"""Measured distributions for classical cost functions: exact probabilities on statevector
simulators, measured-state filters, and the quantile (CVaR) cost of Classiq's
``estimate_cost``.

    >>> quantile_cost([1.0, -1.0], [0.75, 0.25], quantile=0.5, exact=True)   # CVaR_0.5
    0.0
    >>> quantile_cost([1.0, -1.0], [3, 1], quantile=0.5, exact=False)        # lowest 2 of 4 shots
    0.0

A distribution here is what a job measured: ``{bitstring: weight}`` with counts (sampled)
or probabilities (exact), bitstrings written as the program writes them (see
:mod:`qfleet.circuits.programs`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from qfleet.errors import QFleetError


class CostFunctionError(QFleetError, ValueError):
    """A cost function, quantile or measured-state filter is malformed or does not fit."""


def check_quantile(quantile: Any) -> float:
    """``quantile`` as a float in [0, 1]; CostFunctionError otherwise."""
    if isinstance(quantile, bool) or not isinstance(quantile, (int, float, np.floating)):
        raise CostFunctionError(f"quantile must be a number in [0, 1], got {quantile!r}")
    if not 0 <= float(quantile) <= 1:
        raise CostFunctionError(f"quantile must be between 0 and 1, got {quantile}")
    return float(quantile)


def quantile_cost(costs: Sequence[float], weights: Sequence[float], quantile: float = 1.0,
                  *, exact: bool) -> float:
    """The mean cost over the lowest-cost ``quantile`` of the distribution (CVaR).

    ``quantile=1``: the plain weighted mean. Sampled (``exact=False``, weights are counts):
    Classiq's rule, the mean of the ``int(quantile * shots)`` lowest-cost shots (the lowest
    one when that is zero). Exact (weights are probabilities): the lowest-cost states up to
    probability mass ``quantile``, the boundary state counted with the part of its
    probability that fits, divided by ``quantile`` (the limit of the sampled rule).
    """
    q = check_quantile(quantile)
    c = np.asarray(costs, dtype=float)
    w = np.asarray(weights, dtype=float)
    keep = w > 0
    c, w = c[keep], w[keep]
    if c.size == 0:
        raise CostFunctionError("the distribution is empty (no state was measured)")
    if q == 1:
        return float(np.average(c, weights=w))
    order = np.argsort(c, kind="stable")
    c, w = c[order], w[order]
    if exact:
        total = w.sum()
        mass = q * total
        if mass == 0:
            return float(c[0])
        before = np.concatenate(([0.0], np.cumsum(w)[:-1]))
        taken = np.clip(mass - before, 0.0, w)
        return float(np.dot(c, taken) / mass)
    shots = round(float(w.sum()))
    k = int(q * shots)
    if k == 0:
        return float(c[0])
    counts = w.astype(int)
    before = np.concatenate(([0], np.cumsum(counts)[:-1]))
    taken = np.clip(k - before, 0, counts)
    return float(np.dot(c, taken) / k)


def evaluate_cost(cost_func: Callable[[str], float], distribution: Mapping[str, float],
                  quantile: float = 1.0, *, exact: bool) -> float:
    """``cost_func(bitstring)`` over a distribution, by :func:`quantile_cost`."""
    if not callable(cost_func):
        raise CostFunctionError(
            f"cost_func must be a callable bitstring -> float, got {type(cost_func).__name__}"
        )
    keys = list(distribution)
    costs = []
    for key in keys:
        value = cost_func(key)
        try:
            costs.append(float(value))
        except (TypeError, ValueError) as exc:
            raise CostFunctionError(
                f"cost_func({key!r}) returned {value!r}; it must return a real number"
            ) from exc
    return quantile_cost(costs, [distribution[k] for k in keys], quantile, exact=exact)


def diagonal_costs(terms: Sequence[Sequence[Any]], bitstrings: Sequence[str]) -> list[float]:
    """Eigenvalues of a diagonal Pauli sum (``PauliSum.to_list()`` form, only I and Z) on
    bitstrings that list qubit ``i`` at position ``i``."""
    parsed = []
    for label, real, _imag in terms:
        indices = []
        for token in str(label).split():
            if token == "I":
                continue
            if token[0] != "Z":
                raise CostFunctionError(
                    f"a quantile (CVaR) cost needs a diagonal observable (I and Z only); "
                    f"the term {label!r} is not; use quantile=1 for any observable"
                )
            indices.append(int(token[1:]))
        parsed.append((float(real), indices))
    out = []
    for bits in bitstrings:
        total = 0.0
        for coeff, indices in parsed:
            sign = 1
            for i in indices:
                if bits[i] == "1":
                    sign = -sign
            total += coeff * sign
        out.append(total)
    return out


# -- exact distributions and measured-state filters ------------------------------------------


def keep_state(bitstring: str, filters: Sequence[Mapping[str, Any]]) -> bool:
    """Whether ``bitstring`` passes every filter (``{"positions": [...], "allowed": [...]}``:
    the register's bit ``j`` is at ``positions[j]``; its integer value must be allowed)."""
    for flt in filters:
        value = 0
        for j, position in enumerate(flt["positions"]):
            if bitstring[position] == "1":
                value |= 1 << j
        if value not in flt["allowed"]:
            return False
    return True


def exact_item(kind: str, parameters: dict[str, Any], bins: list, layout: Mapping[str, Any],
               bitstring: Callable[[str], str]) -> dict[str, Any]:
    """A job row's result item from exact probabilities (``qml.probs`` of the measured wires,
    first wire first): ``kind="probs"`` keeps the probabilities; ``kind="sample"`` draws
    ``layout["shots"]`` shots from them with ``layout["seed"]`` after the measured-state
    filters (amplitudes of other states are discarded, as on Classiq's statevector
    simulators), so every shot lands in the filtered states."""
    probs = np.asarray(bins[0], dtype=float).ravel()
    width = (probs.size - 1).bit_length()
    distribution: dict[str, float] = {}
    for index, p in enumerate(probs):
        if p <= 0:
            continue
        key = bitstring(format(index, f"0{width}b") if width else "")
        distribution[key] = distribution.get(key, 0.0) + float(p)
    filters = layout.get("filters") or []
    if filters:
        distribution = {k: p for k, p in distribution.items() if keep_state(k, filters)}
    if kind == "probs":
        total = sum(distribution.values())
        if filters and total > 0:
            distribution = {k: p / total for k, p in distribution.items()}
        return {"parameters": parameters, "probabilities": distribution, "num_shots": None}
    shots = int(layout["shots"])
    keys = sorted(distribution)
    if not keys:  # the filters match no state: an empty result, as in Classiq
        return {"parameters": parameters, "counts": {}, "num_shots": 0}
    weights = np.array([distribution[k] for k in keys])
    rng = np.random.default_rng(layout.get("seed"))
    drawn = rng.multinomial(shots, weights / weights.sum())
    counts = {k: int(n) for k, n in zip(keys, drawn, strict=True) if n}
    return {"parameters": parameters, "counts": counts, "num_shots": shots}
