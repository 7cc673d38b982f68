"""Tape -> cQASM 3.0 for QuTech 2300 control software (and its emulator, ``qfleet serve-2300``).

Three steps, all on the caller's thread (PennyLane work):

1. PennyLane decomposes the tape's operations into gates with a cQASM 3 equivalent
   (:data:`PENNYLANE_TO_CQASM`).
2. When the target reports a primitive gate set (``pgs``), gates outside it are rewritten
   into gates inside it (exact up to a global phase: e.g. ``CNOT`` -> ``H CZ H``,
   ``Rx(a)`` -> ``mY90 Rz(a) Y90``).
3. The qubits are checked against the target's ``nqubits`` and ``topology`` and the program
   is written: ``qubit[n] q``, ``bit[n] b``, the gates, ``b[i] = measure q[i]`` for every
   qubit.

A circuit the target cannot run raises :class:`~qfleet.errors.UnsupportedCircuitError` here,
before anything is sent.

Wires -> qubits: when every wire is an integer in ``0 .. nqubits-1``, wire ``k`` is qubit
``q[k]`` (wires are physical qubits, so topology means what it says); otherwise the tape's
wires are numbered in order (``tape.wires[i]`` -> ``q[i]``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pennylane as qml
from pennylane.tape import QuantumScript

from qfleet.circuits.results import require_computational_basis
from qfleet.errors import UnsupportedCircuitError

#: PennyLane operation name -> cQASM 3 gate name (None: dropped, it changes no measurement).
PENNYLANE_TO_CQASM: dict[str, str | None] = {
    "Identity": None,
    "GlobalPhase": None,
    "Barrier": None,
    "Snapshot": None,
    "Hadamard": "H",
    "PauliX": "X",
    "PauliY": "Y",
    "PauliZ": "Z",
    "S": "S",
    "Adjoint(S)": "Sdag",
    "T": "T",
    "Adjoint(T)": "Tdag",
    "SX": "X90",
    "Adjoint(SX)": "mX90",
    "RX": "Rx",
    "RY": "Ry",
    "RZ": "Rz",
    "PhaseShift": "Rz",  # equal up to a global phase
    "CNOT": "CNOT",
    "CZ": "CZ",
    "SWAP": "SWAP",
    "ControlledPhaseShift": "CR",
}

#: cQASM 3 gates this module writes: name -> (number of qubits, number of parameters).
CQASM3_GATES: dict[str, tuple[int, int]] = {
    "I": (1, 0), "H": (1, 0), "X": (1, 0), "Y": (1, 0), "Z": (1, 0),
    "S": (1, 0), "Sdag": (1, 0), "T": (1, 0), "Tdag": (1, 0),
    "X90": (1, 0), "mX90": (1, 0), "Y90": (1, 0), "mY90": (1, 0),
    "Rx": (1, 1), "Ry": (1, 1), "Rz": (1, 1),
    "CNOT": (2, 0), "CZ": (2, 0), "CR": (2, 1), "SWAP": (2, 0),
}  # fmt: skip

_PL_GATE_SET = frozenset(PENNYLANE_TO_CQASM)

Instr = tuple[str, tuple[float, ...], tuple[int, ...]]
"""One cQASM gate: (name, parameters, qubit indices)."""


@dataclasses.dataclass(frozen=True)
class CqasmTarget:
    """What a 2300 backend can run (from its ``get_static`` reply).

    ``pgs``: primitive gate names, any case (None or empty: every gate in
    :data:`CQASM3_GATES`). ``topology``: directed qubit pairs; a two-qubit gate may act on
    an edge in either direction (None or empty: all pairs).
    """

    nqubits: int | None = None
    pgs: frozenset[str] | None = None
    topology: frozenset[tuple[int, int]] | None = None

    def __post_init__(self) -> None:
        if self.pgs is not None:
            object.__setattr__(self, "pgs", frozenset(g.upper() for g in self.pgs) or None)
        if self.topology is not None:
            edges = frozenset((int(a), int(b)) for a, b in self.topology)
            object.__setattr__(self, "topology", edges or None)

    @classmethod
    def from_static(cls, static: Mapping[str, Any] | Any) -> CqasmTarget:
        """From a ``get_static`` payload (a dict or a model with the same fields)."""
        get = static.get if isinstance(static, Mapping) else lambda k: getattr(static, k, None)
        return cls(nqubits=get("nqubits"), pgs=get("pgs"), topology=get("topology"))

    def allows(self, gate: str) -> bool:
        return self.pgs is None or gate.upper() in self.pgs

    def connected(self, a: int, b: int) -> bool:
        return self.topology is None or (a, b) in self.topology or (b, a) in self.topology

    def connectivity(self) -> dict[str, list[int]]:
        """The topology as OpenSquirrel's ``Connectivity`` (both directions; {} when every
        pair is connected)."""
        if self.topology is None:
            return {}
        neighbours: dict[int, set[int]] = {q: set() for q in range(self.nqubits or 0)}
        for a, b in self.topology:
            neighbours.setdefault(a, set()).add(b)
            neighbours.setdefault(b, set()).add(a)
        return {str(q): sorted(ns) for q, ns in sorted(neighbours.items())}


@dataclasses.dataclass(frozen=True)
class CqasmProgram:
    """A cQASM 3.0 program and where each tape wire went.

    ``qubits[i]`` is the qubit index of ``wires[i]``; the program declares ``num_qubits``
    qubits and measures all of them (``b[k] = measure q[k]``), so a 2300 result bitstring
    has ``num_qubits`` characters, q[num_qubits-1] first.
    """

    text: str
    wires: tuple[Any, ...]
    qubits: tuple[int, ...]
    num_qubits: int

    def __str__(self) -> str:
        return self.text

    def bits_for_wires(self, bitstring: str) -> str:
        """A 2300 bitstring (q[n]...q[0]) -> the tape wires' bits, first wire first."""
        n = self.num_qubits
        if len(bitstring) != n:
            raise ValueError(f"bitstring {bitstring!r} has {len(bitstring)} bits, expected {n}")
        return "".join(bitstring[n - 1 - q] for q in self.qubits)


# -- gate rewriting (exact up to a global phase; circuit order, first gate first) ---------

_PI = math.pi


def _angle_is(theta: float, value: float) -> bool:
    """theta == value modulo 2*pi (a 2*pi rotation is a global phase)."""
    diff = (theta - value) % (2 * _PI)
    return min(diff, 2 * _PI - diff) < 1e-12


def _special(
    theta: float, table: Sequence[tuple[float, Sequence[str]]], q: int
) -> list[Instr] | None:
    for value, names in table:
        if _angle_is(theta, value):
            return [(name, (), (q,)) for name in names]
    return None


_RX_SPECIAL = [(0.0, ()), (_PI / 2, ("X90",)), (-_PI / 2, ("mX90",)), (_PI, ("X",))]
_RY_SPECIAL = [(0.0, ()), (_PI / 2, ("Y90",)), (-_PI / 2, ("mY90",)), (_PI, ("Y",))]
_RZ_SPECIAL = [
    (0.0, ()), (_PI / 2, ("S",)), (-_PI / 2, ("Sdag",)), (_PI / 4, ("T",)),
    (-_PI / 4, ("Tdag",)), (_PI, ("Z",)),
]  # fmt: skip


def _g(name: str, q: int, *params: float) -> Instr:
    return (name, tuple(params), (q,))


Rule = Callable[[tuple[float, ...], tuple[int, ...]], list[Instr] | None]

_RULES: dict[str, list[Rule]] = {
    "I": [lambda p, q: []],
    "H": [
        lambda p, q: [_g("Y90", q[0]), _g("X", q[0])],
        lambda p, q: [_g("mY90", q[0]), _g("Z", q[0])],
        lambda p, q: [_g("Rz", q[0], _PI), _g("Ry", q[0], _PI / 2)],
    ],
    "X": [lambda p, q: [_g("Rx", q[0], _PI)], lambda p, q: [_g("X90", q[0]), _g("X90", q[0])]],
    "Y": [lambda p, q: [_g("Ry", q[0], _PI)], lambda p, q: [_g("Y90", q[0]), _g("Y90", q[0])]],
    "Z": [lambda p, q: [_g("Rz", q[0], _PI)], lambda p, q: [_g("S", q[0]), _g("S", q[0])]],
    "S": [lambda p, q: [_g("Rz", q[0], _PI / 2)], lambda p, q: [_g("T", q[0]), _g("T", q[0])]],
    "Sdag": [lambda p, q: [_g("Rz", q[0], -_PI / 2)]],
    "T": [lambda p, q: [_g("Rz", q[0], _PI / 4)]],
    "Tdag": [lambda p, q: [_g("Rz", q[0], -_PI / 4)]],
    "X90": [lambda p, q: [_g("Rx", q[0], _PI / 2)]],
    "mX90": [lambda p, q: [_g("Rx", q[0], -_PI / 2)]],
    "Y90": [lambda p, q: [_g("Ry", q[0], _PI / 2)]],
    "mY90": [lambda p, q: [_g("Ry", q[0], -_PI / 2)]],
    "Rx": [
        lambda p, q: _special(p[0], _RX_SPECIAL, q[0]),
        lambda p, q: [_g("mY90", q[0]), _g("Rz", q[0], p[0]), _g("Y90", q[0])],
        lambda p, q: [_g("Rz", q[0], _PI / 2), _g("Ry", q[0], p[0]), _g("Rz", q[0], -_PI / 2)],
        lambda p, q: [_g("H", q[0]), _g("Rz", q[0], p[0]), _g("H", q[0])],
    ],
    "Ry": [
        lambda p, q: _special(p[0], _RY_SPECIAL, q[0]),
        lambda p, q: [_g("X90", q[0]), _g("Rz", q[0], p[0]), _g("mX90", q[0])],
        lambda p, q: [_g("Rz", q[0], -_PI / 2), _g("Rx", q[0], p[0]), _g("Rz", q[0], _PI / 2)],
    ],
    "Rz": [
        lambda p, q: _special(p[0], _RZ_SPECIAL, q[0]),
        lambda p, q: [_g("mX90", q[0]), _g("Ry", q[0], p[0]), _g("X90", q[0])],
        lambda p, q: [_g("Y90", q[0]), _g("Rx", q[0], p[0]), _g("mY90", q[0])],
        lambda p, q: [_g("H", q[0]), _g("Rx", q[0], p[0]), _g("H", q[0])],
    ],
    "CNOT": [lambda p, q: [_g("H", q[1]), ("CZ", (), q), _g("H", q[1])]],
    "CZ": [lambda p, q: [_g("H", q[1]), ("CNOT", (), q), _g("H", q[1])]],
    "SWAP": [lambda p, q: [("CNOT", (), q), ("CNOT", (), q[::-1]), ("CNOT", (), q)]],
    "CR": [
        lambda p, q: [
            _g("Rz", q[0], p[0] / 2), ("CNOT", (), q), _g("Rz", q[1], -p[0] / 2),
            ("CNOT", (), q), _g("Rz", q[1], p[0] / 2),
        ]
    ],
}  # fmt: skip

_MAX_DEPTH = 4


def lower(instr: Instr, target: CqasmTarget, depth: int = 0) -> list[Instr] | None:
    """``instr`` as gates the target allows (exact up to a global phase), or None when the
    rewriting rules find no way.

    Example:
        >>> lower(("CNOT", (), (0, 1)), CqasmTarget(pgs={"CZ", "H"}))
        [('H', (), (1,)), ('CZ', (), (0, 1)), ('H', (), (1,))]
    """
    name, params, qubits = instr
    if name != "I" and target.allows(name):
        return [instr]
    if depth >= _MAX_DEPTH:
        return None
    for rule in _RULES.get(name, ()):
        expansion = rule(params, qubits)
        if expansion is None:
            continue
        lowered: list[Instr] = []
        for sub in expansion:
            done = lower(sub, target, depth + 1)
            if done is None:
                break
            lowered.extend(done)
        else:
            return lowered
    return None


def native_gates(target: CqasmTarget | None = None) -> frozenset[str]:
    """PennyLane operation names :func:`to_cqasm3` writes for ``target`` without
    decomposing them: those whose cQASM gate is in the target's gate set or can be rewritten
    into it (for every angle). A sampling plan decomposes into these.

    Example:
        >>> sorted(native_gates(CqasmTarget(pgs={"X90", "MX90", "Y90", "MY90", "RZ", "CZ"})))[:3]
        ['Adjoint(S)', 'Adjoint(SX)', 'Adjoint(T)']
    """
    target = target or CqasmTarget()
    names = set()
    for pl_name, gate in PENNYLANE_TO_CQASM.items():
        if gate is None:
            names.add(pl_name)
            continue
        arity, nparams = CQASM3_GATES[gate]
        # an angle that is none of the special ones: the general rules must work
        instr: Instr = (gate, (0.123,) * nparams, tuple(range(arity)))
        if lower(instr, target) is not None:
            names.add(pl_name)
    return frozenset(names)


# -- export ---------------------------------------------------------------------------------


def _format_angle(value: float, precision: int | None) -> str:
    if not math.isfinite(value):
        raise UnsupportedCircuitError(f"gate parameter {value} is not a finite number")
    text = repr(value) if precision is None else f"{value:.{precision}g}"
    # cQASM 3 float literals need a '.' before an exponent ("1e-05" does not parse).
    mantissa, e, exponent = text.partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    return mantissa + e + exponent


def format_instruction(instr: Instr, precision: int | None = None) -> str:
    """One gate as a cQASM 3 line (angles in full precision unless ``precision`` digits).

    Example:
        >>> format_instruction(("Rz", (0.25,), (3,)))
        'Rz(0.25) q[3]'
    """
    gate, params, qubits = instr
    args = ", ".join(f"q[{q}]" for q in qubits)
    if params:
        angles = ", ".join(_format_angle(p, precision) for p in params)
        return f"{gate}({angles}) {args}"
    return f"{gate} {args}"


def _qubit_map(wires: Sequence[Any], nqubits: int | None) -> tuple[tuple[int, ...], int]:
    labels = list(wires)
    physical = all(
        isinstance(w, int)
        and not isinstance(w, bool)
        and w >= 0
        and (nqubits is None or w < nqubits)
        for w in labels
    )
    if physical:
        qubits = tuple(labels)
        size = max(qubits, default=0) + 1
    else:
        qubits = tuple(range(len(labels)))
        size = max(len(labels), 1)
        if nqubits is not None and len(labels) > nqubits:
            raise UnsupportedCircuitError(
                f"the circuit uses {len(labels)} wires but the target has {nqubits} qubits; "
                f"use fewer wires or another executor"
            )
    return qubits, size


def cqasm_operations(
    tape: QuantumScript,
) -> list[tuple[str, tuple[float, ...], tuple[Any, ...]]]:
    """The tape's operations as (cQASM name, parameters, wire labels), PennyLane decomposing
    what has no cQASM equivalent.

    Example:
        >>> cqasm_operations(QuantumScript([qml.RX(0.5, "a"), qml.CNOT(["a", 2])]))
        [('Rx', (0.5,), ('a',)), ('CNOT', (), ('a', 2))]
    """
    operations = tape.operations
    if any(op.name not in _PL_GATE_SET for op in operations):
        for op in operations:
            if isinstance(op, qml.measurements.MidMeasureMP) or type(op).__name__ == "Conditional":
                raise UnsupportedCircuitError(
                    "mid-circuit measurements and classically controlled operations are not "
                    "supported by the 2300 export; measure at the end of the circuit"
                )
        [decomposed], _ = qml.transforms.decompose(
            QuantumScript(operations, [], shots=tape.shots), gate_set=_PL_GATE_SET
        )
        operations = decomposed.operations
    out = []
    for op in operations:
        if op.name not in _PL_GATE_SET:
            raise UnsupportedCircuitError(
                f"{op.name} has no cQASM 3 equivalent and PennyLane could not decompose it; "
                f"decompose it into standard gates first"
            )
        name = PENNYLANE_TO_CQASM[op.name]
        if name is None:
            continue
        params = tuple(float(qml.math.unwrap(p)) for p in op.parameters)
        out.append((name, params, tuple(op.wires)))
    return out


def to_cqasm3(
    tape: QuantumScript, target: CqasmTarget | None = None, precision: int | None = None
) -> CqasmProgram:
    """cQASM 3.0 for ``tape``, for ``target`` (None: any 2300 with enough qubits).

    The tape's measurements must already be in the computational basis (pass it through
    :class:`qfleet.sampling.SamplingPlan`). Every declared qubit is measured.

    Example:
        >>> print(to_cqasm3(QuantumScript([qml.H(0), qml.CNOT([0, 1])], [qml.probs()])))
        version 3.0
        <BLANKLINE>
        qubit[2] q
        bit[2] b
        <BLANKLINE>
        H q[0]
        CNOT q[0], q[1]
        <BLANKLINE>
        b[0] = measure q[0]
        b[1] = measure q[1]
    """
    target = target or CqasmTarget()
    require_computational_basis(tape)
    wires = tuple(tape.wires)
    qubits, size = _qubit_map(wires, target.nqubits)
    if target.nqubits is not None and size > target.nqubits:
        raise UnsupportedCircuitError(
            f"the circuit needs {size} qubits but the target has {target.nqubits}"
        )
    index = dict(zip(wires, qubits, strict=True))
    lines = ["version 3.0", "", f"qubit[{size}] q", f"bit[{size}] b", ""]
    for name, params, op_wires in cqasm_operations(tape):
        instr: Instr = (name, params, tuple(index[w] for w in op_wires))
        lowered = lower(instr, target)
        if lowered is None:
            raise UnsupportedCircuitError(
                f"gate {name} cannot be expressed in the target's gate set "
                f"{sorted(target.pgs or ())}; use another executor or a target with more gates"
            )
        for gate, gate_params, gate_qubits in lowered:
            if len(gate_qubits) == 2 and not target.connected(*gate_qubits):
                a, b = gate_qubits
                raise UnsupportedCircuitError(
                    f"{gate} on q[{a}], q[{b}]: the target has no connection between qubits "
                    f"{a} and {b} (topology {sorted(target.topology or ())}); use connected "
                    f"wires or add SWAPs along the topology"
                )
            lines.append(format_instruction((gate, gate_params, gate_qubits), precision))
    lines.append("")
    lines.extend(f"b[{k}] = measure q[{k}]" for k in range(size))
    return CqasmProgram("\n".join(lines) + "\n", wires, qubits, size)

