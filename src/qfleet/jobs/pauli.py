"""Pauli sums for ``ExecutionSession.estimate``, written as in Classiq:
``qf.Pauli.I(0) + 2 * qf.Pauli.Z(0)``.

A :class:`PauliSum` maps Pauli words (qubit index -> "X"/"Y"/"Z") to coefficients. Index
``i`` means the program's ``i``-th wire (qubit ``q[i]`` of an OpenQASM program). qiskit
``SparsePauliOp`` (label ``"XZ"``: Z on qubit 0, qiskit's little-endian order), Classiq's
``SparsePauliOp`` and PennyLane observables are accepted wherever a PauliSum is.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from qfleet.errors import QFleetError

# Single-qubit Pauli products: (a, b) -> (phase, result).
_PRODUCT = {
    ("X", "Y"): (1j, "Z"), ("Y", "X"): (-1j, "Z"),
    ("Y", "Z"): (1j, "X"), ("Z", "Y"): (-1j, "X"),
    ("Z", "X"): (1j, "Y"), ("X", "Z"): (-1j, "Y"),
}


class ObservableError(QFleetError, ValueError):
    """An observable is malformed or does not fit the program (e.g. an index beyond its qubits)."""


Word = tuple[tuple[int, str], ...]  # sorted ((index, "X"|"Y"|"Z"), ...); () is the identity


class PauliSum:
    """A linear combination of Pauli words; build with :class:`Pauli`, ``+``, ``-``, ``*``.

    Example:
        >>> h = Pauli.I(0) + 2 * Pauli.Z(0) - 0.5 * Pauli.X(0) * Pauli.X(1)
        >>> h.num_qubits
        2
    """

    __slots__ = ("terms",)

    def __init__(self, terms: Mapping[Word, complex] | None = None):
        self.terms: dict[Word, complex] = {}
        for word, coeff in (terms or {}).items():
            self._add(word, coeff)

    def _add(self, word: Word, coeff: complex) -> None:
        total = self.terms.get(word, 0) + coeff
        if total == 0:
            self.terms.pop(word, None)
        else:
            self.terms[word] = total

    @property
    def num_qubits(self) -> int:
        """1 + the largest index used (1 for a multiple of the identity)."""
        indices = [i for word in self.terms for i, _ in word]
        return max(indices) + 1 if indices else 1

    # -- algebra -----------------------------------------------------------------------

    def __add__(self, other: Any) -> PauliSum:
        other = _as_sum(other)
        if other is None:
            return NotImplemented
        out = PauliSum(self.terms)
        for word, coeff in other.terms.items():
            out._add(word, coeff)
        return out

    __radd__ = __add__

    def __neg__(self) -> PauliSum:
        return PauliSum({w: -c for w, c in self.terms.items()})

    def __sub__(self, other: Any) -> PauliSum:
        other = _as_sum(other)
        if other is None:
            return NotImplemented
        return self + (-other)

    def __rsub__(self, other: Any) -> PauliSum:
        other = _as_sum(other)
        if other is None:
            return NotImplemented
        return other + (-self)

    def __mul__(self, other: Any) -> PauliSum:
        if _is_scalar(other):
            return PauliSum({w: c * other for w, c in self.terms.items()})
        if not isinstance(other, PauliSum):
            return NotImplemented
        out = PauliSum()
        for w1, c1 in self.terms.items():
            for w2, c2 in other.terms.items():
                phase, word = _multiply(w1, w2)
                out._add(word, c1 * c2 * phase)
        return out

    def __rmul__(self, other: Any) -> PauliSum:
        if _is_scalar(other):
            return self * other
        return NotImplemented

    def __truediv__(self, other: Any) -> PauliSum:
        if _is_scalar(other) and other != 0:
            return self * (1 / other)
        return NotImplemented

    def __matmul__(self, other: Any) -> PauliSum:  # tensor product, PennyLane-style
        return self * other

    def __eq__(self, other: Any) -> bool:
        other = _as_sum(other)
        return other is not None and self.terms == other.terms

    def __hash__(self) -> int:
        return hash(frozenset(self.terms.items()))

    def __repr__(self) -> str:
        if not self.terms:
            return "0"
        parts = []
        for word, coeff in self.terms.items():
            c = coeff.real if isinstance(coeff, complex) and coeff.imag == 0 else coeff
            label = " ".join(f"{p}({i})" for i, p in word) or "I"
            parts.append(f"{c:g}*{label}" if not isinstance(c, complex) else f"{c}*{label}")
        return " + ".join(parts)

    # -- conversions -------------------------------------------------------------------

    def to_list(self) -> list[tuple[str, float, float]]:
        """JSON-able form: [(label like "Z0 X1", real, imag), ...]."""
        return [
            (" ".join(f"{p}{i}" for i, p in word) or "I", complex(c).real, complex(c).imag)
            for word, c in self.terms.items()
        ]

    @classmethod
    def from_list(cls, items: Sequence[Sequence[Any]]) -> PauliSum:
        terms: dict[Word, complex] = {}
        for label, real, imag in items:
            word = tuple(sorted((int(tok[1:]), tok[0]) for tok in label.split() if tok != "I"))
            terms[word] = terms.get(word, 0) + complex(real, imag)
        return cls(terms)

    def check_hermitian(self) -> None:
        bad = [w for w, c in self.terms.items() if complex(c).imag != 0]
        if bad:
            raise ObservableError(
                "the observable has complex coefficients (not Hermitian); estimate needs "
                "real coefficients"
            )

    def to_pennylane(self, wires: Sequence[Any]):
        """The PennyLane observable, index ``i`` on ``wires[i]``; ObservableError if an index
        is beyond ``wires``."""
        import pennylane as qml

        self.check_hermitian()
        wires = list(wires)
        beyond = sorted({i for word in self.terms for i, _ in word if i >= len(wires)})
        if beyond:
            raise ObservableError(
                f"the observable acts on qubit index(es) {beyond}, but the program has "
                f"{len(wires)} qubit(s) (indices 0..{len(wires) - 1})"
            )
        make = {"X": qml.PauliX, "Y": qml.PauliY, "Z": qml.PauliZ}
        coeffs, ops = [], []
        for word, coeff in self.terms.items():
            if word:
                factors = [make[p](wires[i]) for i, p in word]
                op = factors[0] if len(factors) == 1 else qml.prod(*factors)
            else:
                op = qml.Identity(wires[0] if wires else 0)
            coeffs.append(complex(coeff).real)
            ops.append(op)
        if not ops:  # the zero operator
            return qml.Hamiltonian([0.0], [qml.Identity(wires[0] if wires else 0)])
        return qml.Hamiltonian(coeffs, ops)


def _multiply(w1: Word, w2: Word) -> tuple[complex, Word]:
    result = dict(w1)
    phase: complex = 1
    for i, p in w2:
        if i not in result:
            result[i] = p
        elif result[i] == p:
            del result[i]
        else:
            ph, q = _PRODUCT[(result[i], p)]
            phase *= ph
            result[i] = q
    return phase, tuple(sorted(result.items()))


def _is_scalar(value: Any) -> bool:
    # A plain bool, not a TypeGuard: numbers.Number declares no arithmetic for type checkers.
    return isinstance(value, numbers.Number) and not isinstance(value, bool)


def _as_sum(value: Any) -> PauliSum | None:
    if isinstance(value, PauliSum):
        return value
    if _is_scalar(value):
        return PauliSum({(): value}) if value != 0 else PauliSum()
    return None


class Pauli:
    """Single-qubit Pauli operators on an index: ``Pauli.Z(0)``, ``Pauli.X(3)``."""

    @staticmethod
    def _one(letter: str, index: int) -> PauliSum:
        if isinstance(index, bool) or not isinstance(index, numbers.Integral) or index < 0:
            raise ObservableError(f"a Pauli index must be a non-negative integer, got {index!r}")
        word: Word = () if letter == "I" else ((int(index), letter),)
        return PauliSum({word: 1.0})

    @staticmethod
    def I(index: int = 0) -> PauliSum:  # noqa: E743 - Classiq's name
        return Pauli._one("I", index)

    @staticmethod
    def X(index: int) -> PauliSum:
        return Pauli._one("X", index)

    @staticmethod
    def Y(index: int) -> PauliSum:
        return Pauli._one("Y", index)

    @staticmethod
    def Z(index: int) -> PauliSum:
        return Pauli._one("Z", index)


def as_pauli_sum(observable: Any) -> PauliSum | None:
    """A PauliSum from a PauliSum, a qiskit or Classiq SparsePauliOp; None for a PennyLane
    operator (used as is); ObservableError for anything else."""
    if isinstance(observable, PauliSum):
        return observable
    if _is_scalar(observable):
        return _as_sum(observable)
    kind = type(observable).__name__
    module = type(observable).__module__ or ""
    if kind == "SparsePauliOp" and module.startswith("qiskit"):
        terms: dict[Word, complex] = {}
        for label, coeff in observable.to_list():
            n = len(label)
            word = tuple(sorted((n - 1 - pos, p) for pos, p in enumerate(label) if p != "I"))
            terms[word] = terms.get(word, 0) + complex(coeff)
        return PauliSum(terms)
    if kind == "SparsePauliOp" and module.startswith("classiq"):
        terms = {}
        for term in observable.terms:
            word_dict: dict[int, str] = {}
            for indexed in term.paulis:
                name = getattr(indexed.pauli, "name", str(indexed.pauli))
                if name != "I":
                    word_dict[int(indexed.index)] = name
            word = tuple(sorted(word_dict.items()))
            terms[word] = terms.get(word, 0) + complex(term.coefficient)
        return PauliSum(terms)
    try:
        from pennylane.operation import Operator

        if isinstance(observable, Operator):
            return None
    except ImportError:  # pragma: no cover
        pass
    raise ObservableError(
        f"cannot estimate a {kind}; use qf.Pauli sums (qf.Pauli.Z(0) + ...), a qiskit "
        f"SparsePauliOp or a PennyLane observable"
    )
