"""Result cache keys: a content address for a batch as one backend runs it.

The key covers the circuits after the backend's sampling plan (gates, parameters as exact
bytes, wires, measurements, shots), the backend (executor class and description), the
member's shots and seed, and the backend's calibration epoch. Python's ``hash`` is salted per
process, so the key is a SHA-256 over a canonical text instead: the same batch has the same
key in every process. A circuit whose operators cannot be written down exactly (a
hyperparameter that prints as an object address) gets no key and is not cached.

Example:
    >>> tape = qml.tape.QuantumScript([qml.RX(0.5, 0)], [qml.expval(qml.Z(0))])
    >>> key = batch_key([tape], backend="default.qubit")
    >>> key == batch_key([tape.copy()], backend="default.qubit"), len(key)
    (True, 64)
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pennylane as qml


class Uncacheable(Exception):
    """The batch has no exact canonical form."""


def _data(values: Sequence[Any]) -> str:
    parts = []
    for value in values:
        arr = np.asarray(qml.math.unwrap(value))
        if arr.dtype == object:
            raise Uncacheable("object-valued parameter")
        parts.append(f"{arr.dtype.str}{arr.shape}{arr.tobytes().hex()}")
    return ",".join(parts)


def _plain(value: Any) -> str:
    text = repr(value)
    if " at 0x" in text:  # an object without a stable text form
        raise Uncacheable(text)
    return text


def _value(value: Any) -> str:
    if isinstance(value, qml.operation.Operator):
        return _operator(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(_value(v) for v in value) + "]"
    if isinstance(value, float | complex | np.ndarray | np.generic):
        return _data([value])
    return _plain(value)


def _operator(op: Any) -> str:
    hyper = getattr(op, "hyperparameters", {}) or {}
    extra = ";".join(f"{k}={_value(v)}" for k, v in sorted(hyper.items()))
    return f"{type(op).__name__}[{_plain(list(op.wires))}]({_data(op.data)}){{{extra}}}"


def _measurement(mp: Any) -> str:
    obs = _operator(mp.obs) if mp.obs is not None else ""
    mv = _plain(mp.mv) if getattr(mp, "mv", None) is not None else ""
    return f"{type(mp).__name__}[{_plain(list(mp.wires))}]<{obs}>{mv}"


def circuit_text(tape: Any) -> str:
    """A canonical text of one circuit (raises Uncacheable when there is none)."""
    ops = "|".join(_operator(op) for op in tape.operations)
    mps = "|".join(_measurement(mp) for mp in tape.measurements)
    return f"{ops}#{mps}#{_plain(tape.shots.shot_vector)}"


def batch_key(
    circuits: Sequence[Any],
    *,
    backend: str,
    shots: Any = None,
    seed: Any = None,
    epoch: str | None = None,
) -> str | None:
    """The content address of ``circuits`` on ``backend``, or None if it has none."""
    digest = hashlib.sha256()
    digest.update(f"{backend}\x00{shots!r}\x00{seed!r}\x00{epoch!r}\x00".encode())
    try:
        for circuit in circuits:
            digest.update(circuit_text(circuit).encode())
            digest.update(b"\x00")
    except Uncacheable:
        return None
    return digest.hexdigest()
