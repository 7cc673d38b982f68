"""The front door for programs: OpenQASM 2/3 text, PennyLane quantum functions and QNodes,
qiskit ``QuantumCircuit`` objects -> PennyLane operations with parameters bound by name.

    >>> prog = load_program('OPENQASM 3.0; include "stdgates.inc"; input float t; '
    ...                     'qubit[1] q; bit[1] c; rx(t) q[0]; c = measure q;')
    >>> prog.parameters
    ('t',)
    >>> circuit = prog.bind({"t": 0.5})
    >>> circuit.operations
    [RX(0.5, wires=[0])]

Conventions:

- OpenQASM / qiskit programs: qubit ``i`` (registers flattened in declaration order) is
  wire ``i``. Their bitstrings are written as OpenQASM and qiskit write them (and Classiq
  shows them): classical bit 0 rightmost.
- PennyLane programs keep their own wires (the QNode device's wires, else the wires the
  function uses); their bitstrings list the wires in order, first wire first (as
  ``qml.counts`` does).
- Pauli index ``i`` in an observable is ``wires[i]``.

OpenQASM and qiskit programs need qiskit (the ``ibm`` extra); it is imported lazily.
OpenQASM 3 ``input float x;`` parameters may share a name with a standard gate (``t``,
``s``, ...), as Classiq's examples do; qiskit's importer rejects that, so such inputs are
renamed on the way in (the caller still binds them by the name it wrote).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pennylane as qml
from pennylane.operation import Operator
from pennylane.wires import Wires

from qfleet.errors import QFleetError, UnsupportedCircuitError


class ProgramError(QFleetError, ValueError):
    """A program cannot be read (bad OpenQASM, unsupported object or instruction)."""


class ParameterError(ProgramError):
    """Parameters do not match the program's: unknown or missing names, bad values."""


class UnknownParameterError(ParameterError, KeyError):
    """A parameter name the program does not declare (or any name, for a program with none)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class MissingParameterError(ParameterError, KeyError):
    """A parameter the program declares was not given a value."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


LSB_RIGHT = "lsb_right"
"""Bitstrings written classical bit 0 rightmost (OpenQASM, qiskit, Classiq)."""
WIRE_ORDER = "wire_order"
"""Bitstrings listing the measured wires in order, first wire first (PennyLane)."""


@dataclasses.dataclass(frozen=True)
class BoundCircuit:
    """A program with its parameters bound: operations, and what sampling measures."""

    operations: list[Operator]
    wires: Wires
    """All the program's wires; Pauli index ``i`` is ``wires[i]``."""
    measured_wires: Wires
    """The wires a sample measures, one per bit in ``bit_wires``' order."""
    num_bits: int
    """Length of a bitstring."""
    bit_positions: tuple[int, ...]
    """Bit index (0-based, in the program's classical bits) of each measured wire."""
    bit_order: str

    def bitstring(self, measured: str) -> str:
        """The program's bitstring for a sample of ``measured_wires`` (first wire first)."""
        bits = ["0"] * self.num_bits
        for position, bit in zip(self.bit_positions, measured, strict=True):
            bits[position] = bit
        text = "".join(bits)
        return text[::-1] if self.bit_order == LSB_RIGHT else text


class Program:
    """A program of any supported kind, ready to bind parameters. Use :func:`load_program`."""

    kind: str = "program"

    @property
    def parameters(self) -> tuple[str, ...]:
        """Names of the program's parameters, in declaration order."""
        raise NotImplementedError

    @property
    def required_parameters(self) -> tuple[str, ...]:
        return self.parameters

    @property
    def source(self) -> str:
        """Text shown for the program (``qfleet jobs show``)."""
        raise NotImplementedError

    def check_parameters(self, values: Mapping[str, Any] | None) -> dict[str, Any]:
        """``values`` as a dict after checking names; raises ParameterError."""
        if values is None:
            values = {}
        if not isinstance(values, Mapping):
            raise ParameterError(
                f"parameters must be a dict of name -> value (or a list of such dicts), got "
                f"{type(values).__name__}"
            )
        declared = self.parameters
        unknown = [name for name in values if name not in declared and not self._accepts_any()]
        if unknown:
            if not declared:
                raise UnknownParameterError(
                    f"parameters {sorted(map(str, unknown))} were given, but this {self.kind} "
                    f"program has no parameters; call without parameters"
                )
            raise UnknownParameterError(
                f"unknown parameter(s) {sorted(map(str, unknown))}; this {self.kind} program's "
                f"parameters are {list(declared)}"
            )
        missing = [name for name in self.required_parameters if name not in values]
        if missing:
            raise MissingParameterError(
                f"missing value(s) for parameter(s) {missing}; this {self.kind} program's "
                f"parameters are {list(declared)}"
            )
        return dict(values)

    def _accepts_any(self) -> bool:
        return False

    def bind(self, values: Mapping[str, Any] | None = None) -> BoundCircuit:
        """Operations with ``values`` bound (call on the caller's thread: builds operators)."""
        raise NotImplementedError


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        try:
            import numpy as np

            if isinstance(value, np.ndarray) and value.shape == ():
                return _real(name, value.item())
        except ImportError:  # pragma: no cover
            pass
        raise ParameterError(
            f"parameter {name!r} must be a real number, got {type(value).__name__} {value!r}"
        )
    value = float(value)
    if not math.isfinite(value):
        raise ParameterError(f"parameter {name!r} must be finite, got {value}")
    return value


# -- qiskit circuits (and OpenQASM, which is read through qiskit) -------------------------

def _require_qiskit(what: str):
    try:
        import qiskit  # noqa: F401
    except ImportError as exc:  # pragma: no cover - qiskit is installed in the test env
        raise ProgramError(
            f"{what} needs qiskit, which is not installed; install qfleet[ibm]"
        ) from exc


def _adjoint(op_class):
    return lambda wires: qml.adjoint(op_class(wires=wires))


#: qiskit instruction name -> (PennyLane constructor, number of parameters).
_QISKIT_GATES: dict[str, tuple[Callable[..., Operator], int]] = {
    "id": (lambda wires: qml.Identity(wires=wires), 0),
    "x": (lambda wires: qml.PauliX(wires), 0),
    "y": (lambda wires: qml.PauliY(wires), 0),
    "z": (lambda wires: qml.PauliZ(wires), 0),
    "h": (lambda wires: qml.Hadamard(wires), 0),
    "s": (lambda wires: qml.S(wires), 0),
    "sdg": (_adjoint(qml.S), 0),
    "t": (lambda wires: qml.T(wires), 0),
    "tdg": (_adjoint(qml.T), 0),
    "sx": (lambda wires: qml.SX(wires), 0),
    "sxdg": (_adjoint(qml.SX), 0),
    "rx": (lambda a, wires: qml.RX(a, wires), 1),
    "ry": (lambda a, wires: qml.RY(a, wires), 1),
    "rz": (lambda a, wires: qml.RZ(a, wires), 1),
    "p": (lambda a, wires: qml.PhaseShift(a, wires), 1),
    "u1": (lambda a, wires: qml.PhaseShift(a, wires), 1),
    "u2": (lambda a, b, wires: qml.U2(a, b, wires), 2),
    "u3": (lambda a, b, c, wires: qml.U3(a, b, c, wires), 3),
    "u": (lambda a, b, c, wires: qml.U3(a, b, c, wires), 3),
    "cx": (lambda wires: qml.CNOT(wires), 0),
    "cy": (lambda wires: qml.CY(wires), 0),
    "cz": (lambda wires: qml.CZ(wires), 0),
    "ch": (lambda wires: qml.CH(wires), 0),
    "swap": (lambda wires: qml.SWAP(wires), 0),
    "iswap": (lambda wires: qml.ISWAP(wires), 0),
    "ccx": (lambda wires: qml.Toffoli(wires), 0),
    "cswap": (lambda wires: qml.CSWAP(wires), 0),
    "crx": (lambda a, wires: qml.CRX(a, wires), 1),
    "cry": (lambda a, wires: qml.CRY(a, wires), 1),
    "crz": (lambda a, wires: qml.CRZ(a, wires), 1),
    "cp": (lambda a, wires: qml.ControlledPhaseShift(a, wires), 1),
    "cu1": (lambda a, wires: qml.ControlledPhaseShift(a, wires), 1),
    "rxx": (lambda a, wires: qml.IsingXX(a, wires), 1),
    "ryy": (lambda a, wires: qml.IsingYY(a, wires), 1),
    "rzz": (lambda a, wires: qml.IsingZZ(a, wires), 1),
}
_IGNORED = {"barrier", "delay", "global_phase"}


def operations_from_qiskit(circuit: Any) -> tuple[list[Operator], list[tuple[int, int]]]:
    """PennyLane operations for a qiskit circuit with every parameter bound, and its
    terminal measurements as (qubit, clbit) pairs. Qubit ``i`` becomes wire ``i``.

    Gates without a PennyLane equivalent are expanded through their qiskit definition.
    Measurements must be terminal: mid-circuit measurement, reset and classical control
    raise UnsupportedCircuitError.
    """
    qubit_index = {bit: i for i, bit in enumerate(circuit.qubits)}
    clbit_index = {bit: i for i, bit in enumerate(circuit.clbits)}
    operations: list[Operator] = []
    measurements: dict[int, int] = {}  # clbit -> qubit
    measured_qubits: set[int] = set()

    def visit(instructions, qubit_map) -> None:
        for instruction in instructions:
            op = instruction.operation
            name = op.name
            qubits = [qubit_map[q] for q in instruction.qubits]
            if name in _IGNORED:
                continue
            if getattr(op, "condition", None) is not None or name in {
                "if_else", "while_loop", "for_loop", "switch_case", "box",
            }:
                raise UnsupportedCircuitError(
                    f"classical control flow ({name}) is not supported; unroll it first"
                )
            if name == "measure":
                clbit = clbit_index[instruction.clbits[0]]
                measurements[clbit] = qubits[0]
                measured_qubits.add(qubits[0])
                continue
            if name == "reset":
                raise UnsupportedCircuitError("reset is not supported in programs")
            touched = measured_qubits.intersection(qubits)
            if touched:
                raise UnsupportedCircuitError(
                    f"{name} acts on qubit(s) {sorted(touched)} after they were measured; "
                    f"only terminal measurements are supported"
                )
            entry = _QISKIT_GATES.get(name)
            params = []
            for p in op.params:
                try:
                    params.append(float(p))
                except TypeError as exc:
                    raise ParameterError(
                        f"{name} has an unbound parameter {p}; bind every parameter"
                    ) from exc
            if entry is not None and entry[1] == len(params):
                maker, _ = entry
                wires = qubits if len(qubits) > 1 else qubits[0]
                operations.append(maker(*params, wires=wires))
                continue
            definition = getattr(op, "definition", None)
            if definition is None:
                raise UnsupportedCircuitError(
                    f"instruction {name!r} has no PennyLane equivalent and no definition"
                )
            inner = dict(zip(definition.qubits, qubits, strict=True))
            visit(definition.data, inner)

    visit(circuit.data, qubit_index)
    return operations, sorted((qubit, clbit) for clbit, qubit in measurements.items())


class QiskitProgram(Program):
    """A qiskit ``QuantumCircuit``, parameters by their names (``ParameterVector`` elements
    by their element name ``theta[0]``, or the whole vector as ``theta=[...]``)."""

    kind = "qiskit"

    def __init__(self, circuit: Any, *, renamed: Mapping[str, str] | None = None,
                 source: str | None = None, kind: str | None = None):
        self.circuit = circuit
        self._renamed = dict(renamed or {})  # qiskit name -> user name
        self._source = source
        if kind:
            self.kind = kind
        self._by_user_name = {}
        for param in circuit.parameters:
            self._by_user_name[self._renamed.get(param.name, param.name)] = param
        self._vectors: dict[str, list] = {}
        for param in circuit.parameters:
            vector = getattr(param, "vector", None)
            if vector is not None:
                self._vectors.setdefault(vector.name, []).append(param)

    @property
    def parameters(self) -> tuple[str, ...]:
        return tuple(self._by_user_name)

    def _expand(self, values: Mapping[str, Any]) -> dict[str, Any]:
        out = {}
        for name, value in values.items():
            if name in self._vectors and name not in self._by_user_name:
                elements = self._vectors[name]
                size = len(elements[0].vector)
                try:
                    items = list(value)
                except TypeError as exc:
                    raise ParameterError(
                        f"parameter vector {name!r} needs a list of {size} numbers"
                    ) from exc
                if len(items) != size:
                    raise ParameterError(
                        f"parameter vector {name!r} has {size} elements, got {len(items)} values"
                    )
                for element in elements:
                    out[element.name] = items[element.index]
            else:
                out[name] = value
        return out

    @property
    def source(self) -> str:
        if self._source is None:
            try:
                from qiskit import qasm3

                self._source = qasm3.dumps(self.circuit)
            except Exception:  # display only
                self._source = str(self.circuit)
        return self._source

    def bind(self, values: Mapping[str, Any] | None = None) -> BoundCircuit:
        values = self.check_parameters(self._expand(values or {}))
        bindings = {self._by_user_name[name]: _real(name, v) for name, v in values.items()}
        circuit = self.circuit.assign_parameters(bindings) if bindings else self.circuit
        operations, measured = operations_from_qiskit(circuit)
        wires = Wires(range(circuit.num_qubits))
        if measured:
            measured_wires = Wires([q for q, _ in measured])
            positions = tuple(c for _, c in measured)
            num_bits = circuit.num_clbits
        else:  # nothing measured: sample every qubit, bit i <- qubit i
            measured_wires = wires
            positions = tuple(range(len(wires)))
            num_bits = len(wires)
        return BoundCircuit(operations, wires, measured_wires, num_bits, positions, LSB_RIGHT)


_QASM3_HEADER = re.compile(r"^(\s|//[^\n]*\n|/\*.*?\*/)*OPENQASM\s+3(\.\d+)?\s*;", re.S)
_QASM2_HEADER = re.compile(r"^(\s|//[^\n]*\n|/\*.*?\*/)*OPENQASM\s+2(\.\d+)?\s*;", re.S)

# Names stdgates.inc (and the OpenQASM 3 built-ins) define; an input with one of these names
# clashes in qiskit's importer.
_QASM3_GATE_NAMES = frozenset(
    [
        "p", "x", "y", "z", "h", "s", "sdg", "t", "tdg", "sx", "rx", "ry", "rz", "cx", "cy",
        "cz", "cp", "crx", "cry", "crz", "ch", "swap", "ccx", "cswap", "cu", "CX", "phase",
        "cphase", "id", "u1", "u2", "u3", "U", "gphase", "pi", "π", "tau", "τ", "euler", "ℇ",
    ]
)


def _load_qasm3(text: str) -> QiskitProgram:
    from qiskit import qasm3

    renamed: dict[str, str] = {}
    source = text
    try:
        import openqasm3
        from openqasm3 import ast
        from openqasm3.visitor import QASMTransformer
    except ImportError:  # pragma: no cover - comes with qiskit-qasm3-import
        pass
    else:
        try:
            tree = openqasm3.parse(text)
        except Exception as exc:  # the parser raises several types
            raise ProgramError(f"invalid OpenQASM 3: {exc}") from exc
        inputs = [
            s.identifier.name for s in tree.statements
            if isinstance(s, ast.IODeclaration) and s.io_identifier == ast.IOKeyword.input
        ]
        clashes = {name: f"qfleet_input_{name}" for name in inputs if name in _QASM3_GATE_NAMES}
        if clashes:

            class _Rename(QASMTransformer):
                def visit_QuantumGate(self, node):  # the gate's own name is not an input
                    node.arguments = [self.visit(a) for a in node.arguments]
                    return node

                def visit_Identifier(self, node):
                    return ast.Identifier(clashes[node.name]) if node.name in clashes else node

            tree = _Rename().visit(tree)
            text = openqasm3.dumps(tree)
            renamed = {new: old for old, new in clashes.items()}
    try:
        circuit = qasm3.loads(text)
    except Exception as exc:  # QASM3ImporterError and parser errors
        raise ProgramError(f"cannot read OpenQASM 3 program: {exc}") from exc
    return QiskitProgram(circuit, renamed=renamed, source=source, kind="openqasm3")


def _load_qasm2(text: str) -> QiskitProgram:
    from qiskit import qasm2

    try:
        circuit = qasm2.loads(text, custom_instructions=qasm2.LEGACY_CUSTOM_INSTRUCTIONS)
    except Exception as exc:  # QASM2ParseError
        raise ProgramError(f"cannot read OpenQASM 2 program: {exc}") from exc
    return QiskitProgram(circuit, source=text, kind="openqasm2")


# -- PennyLane ----------------------------------------------------------------------------

class PennyLaneProgram(Program):
    """A PennyLane quantum function or QNode; parameters are its argument names.

    Its own return value (measurements) is ignored: sampling measures every program wire,
    estimation measures the given observable.
    """

    kind = "pennylane"

    def __init__(self, func: Callable, wires: Any = None):
        self.qnode = func if isinstance(func, qml.QNode) else None
        self.func = func.func if isinstance(func, qml.QNode) else func
        if wires is None and self.qnode is not None:
            wires = self.qnode.device.wires
        self.wires = Wires(wires) if wires is not None else None
        try:
            self.signature = inspect.signature(self.func)
        except (TypeError, ValueError) as exc:
            raise ProgramError(f"cannot read the signature of {self.func!r}: {exc}") from exc
        params = self.signature.parameters.values()
        self._names = tuple(
            p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        )
        self._required = tuple(
            p.name for p in params
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        )
        self._any = any(p.kind == p.VAR_KEYWORD for p in params)

    @property
    def parameters(self) -> tuple[str, ...]:
        return self._names

    @property
    def required_parameters(self) -> tuple[str, ...]:
        return self._required

    def _accepts_any(self) -> bool:
        return self._any

    @property
    def source(self) -> str:
        try:
            return inspect.getsource(self.func)
        except (OSError, TypeError):
            module = getattr(self.func, "__module__", "?")
            return f"{module}.{getattr(self.func, '__qualname__', self.func)}"

    def bind(self, values: Mapping[str, Any] | None = None) -> BoundCircuit:
        values = self.check_parameters(values)
        tape = qml.tape.make_qscript(self.func)(**values)
        used = tape.wires
        if self.wires is not None:
            extra = [w for w in used if w not in self.wires]
            if extra:
                raise UnsupportedCircuitError(
                    f"the program uses wires {extra} that its device does not have "
                    f"({list(self.wires)})"
                )
            wires = self.wires
        else:
            labels = list(used)
            if all(isinstance(w, numbers.Integral) for w in labels):
                labels = sorted(labels)
            wires = Wires(labels)
        return BoundCircuit(
            list(tape.operations), wires, wires, len(wires), tuple(range(len(wires))), WIRE_ORDER
        )


# -- the front door -----------------------------------------------------------------------

def load_program(program: Any) -> Program:
    """A :class:`Program` from OpenQASM 2/3 text, a PennyLane quantum function or QNode, a
    qiskit ``QuantumCircuit``, or a Program (returned as is).

    Raises ProgramError for text that is not OpenQASM and for objects of other types.
    """
    if isinstance(program, Program):
        return program
    if isinstance(program, str):
        try:
            program.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ProgramError(
                f"the program text holds {program[exc.start]!r} at position {exc.start}, "
                f"which is not a Unicode character (a lone surrogate); remove it"
            ) from None
        loaded = None
        if _QASM3_HEADER.match(program):
            _require_qiskit("OpenQASM 3")
            loaded = _load_qasm3(program)
        elif _QASM2_HEADER.match(program):
            _require_qiskit("OpenQASM 2")
            loaded = _load_qasm2(program)
        if loaded is not None:
            if loaded.circuit.num_qubits == 0:  # else PennyLane's "empty list of wires"
                raise ProgramError(
                    "the program declares no qubits; declare a register, e.g. `qreg q[1];` "
                    "(OpenQASM 2) or `qubit[1] q;` (OpenQASM 3)"
                )
            return loaded
        raise ProgramError(
            "a program string must be OpenQASM 2 or 3 and start with an 'OPENQASM 2.0;' or "
            "'OPENQASM 3.0;' header"
        )
    if type(program).__name__ == "QuantumCircuit" and hasattr(program, "assign_parameters"):
        return QiskitProgram(program)
    if isinstance(program, qml.QNode) or callable(program):
        return PennyLaneProgram(program)
    raise ProgramError(
        f"cannot run a {type(program).__name__}; pass OpenQASM 2/3 text, a PennyLane quantum "
        f"function or QNode, or a qiskit QuantumCircuit"
    )


def program_parameters(parameters: Any) -> tuple[list[dict[str, Any]], bool]:
    """(list of parameter dicts, whether it was a batch) from one dict, a list, or None."""
    if parameters is None:
        return [{}], False
    if isinstance(parameters, Mapping):
        return [dict(parameters)], False
    if isinstance(parameters, Sequence) and not isinstance(parameters, (str, bytes)):
        items = list(parameters)
        if not items:
            raise ParameterError("an empty list of parameter sets; give at least one dict")
        for item in items:
            if not isinstance(item, Mapping):
                raise ParameterError(
                    f"a batch of parameters must be a list of dicts, got an item of type "
                    f"{type(item).__name__}"
                )
        return [dict(item) for item in items], True
    raise ParameterError(
        f"parameters must be a dict of name -> value or a list of dicts, got "
        f"{type(parameters).__name__}"
    )
