"""Measurement kinds by name: ``measurement_kind(qml.expval(...)) == "expval"``."""

from __future__ import annotations

from typing import Any

_KINDS = {
    "ExpectationMP": "expval",
    "VarianceMP": "var",
    "ProbabilityMP": "probs",
    "SampleMP": "sample",
    "CountsMP": "counts",
    "StateMP": "state",
    "DensityMatrixMP": "density_matrix",
    "PurityMP": "purity",
    "VnEntropyMP": "vn_entropy",
    "MutualInfoMP": "mutual_info",
    "ClassicalShadowMP": "classical_shadow",
    "ShadowExpvalMP": "shadow_expval",
    # Custom measurements: a SampleMeasurement is computed from samples (process_samples /
    # process_counts), a StateMeasurement from the state (process_state).
    "SampleMeasurement": "sample",
    "StateMeasurement": "state",
}


def measurement_kind(mp: Any) -> str:
    """'expval', 'probs', ... for a PennyLane measurement process (subclasses and custom
    measurements get the kind of their nearest PennyLane base class).

    Example:
        >>> measurement_kind(qml.expval(qml.Z(0)))
        'expval'
    """
    kind = _by_type.get(type(mp))
    if kind is None:  # once per measurement class: this is on every tape's path
        kind = next(
            (_KINDS[cls.__name__] for cls in type(mp).__mro__ if cls.__name__ in _KINDS),
            type(mp).__name__.removesuffix("MP").lower(),
        )
        _by_type[type(mp)] = kind
    return kind


_by_type: dict[type, str] = {}
