"""Compile a circuit for a QuTech target with OpenSquirrel: map, route, decompose, optimise.

A QuTech chip (2300 control software, or a Quantum Inspire backend) runs only its primitive
gate set (``pgs``) on pairs of qubits its ``topology`` connects. :func:`compile_for_target`
turns any cQASM 3 program (or PennyLane tape) into one it can run, the way QuTech's own stack
does: with OpenSquirrel passes, following the target's ``default_compiler_config`` (stages
``mapping``, ``routing``, ``decomposition``, ``optimization``; each a list of
``{"path": "opensquirrel.passes...Class", "method": "map"|"route"|"decompose"|"merge",
"arguments": {...}}``; only OpenSquirrel's own classes are imported). Stages the config leaves
empty: :data:`DEFAULT_PIPELINE` for mapping (MIP placement) and routing (SWAPs along shortest
paths), qfleet's exact rules for decomposition and optimization. Whatever the passes leave
outside the gate set is rewritten into it, and every two-qubit gate is checked against the
topology, so the output always runs.

Order: SWAP gates of the input are taken out first (they only rename qubits; done in the
bookkeeping, they cost no two-qubit gates), then mapping and routing (per *structure*: gate
names and qubits, not angles -- cached, so the shifted tapes of a parameter-shift gradient
are placed and routed once), then, with the angles bound, decomposition and optimization.

The result says where each wire is measured (``qubits``), so results are read back in the
user's wire order (:meth:`CompiledProgram.bits_for_wires`), and reports the time spent, the
SWAPs routing added and the two-qubit gates added overall.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import inspect
import json
import math
import threading
import time
import typing
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pennylane.tape import QuantumScript

from qfleet.circuits.cqasm import (
    CqasmProgram,
    CqasmTarget,
    Instr,
    cqasm_operations,
    format_instruction,
    lower,
)
from qfleet.circuits.results import require_computational_basis
from qfleet.errors import UnsupportedCircuitError


@dataclasses.dataclass(frozen=True)
class CompiledProgram(CqasmProgram):
    """A compiled cQASM 3 program for one target, and how it got there.

    As :class:`~qfleet.circuits.cqasm.CqasmProgram`: ``text``, ``wires`` (the input's wires,
    in order), ``qubits`` (``qubits[i]``: the physical qubit ``wires[i]`` is measured on, after
    routing), ``num_qubits`` (the declared register, the target's ``nqubits``). Plus:

    - ``initial_placement``: the physical qubit each wire starts on (the mapping pass).
    - ``swaps``: SWAPs the router added; ``added_two_qubit_gates``: two-qubit gates in the
      output minus those in the input (SWAPs count three CZ/CNOT once decomposed).
    - ``compile_seconds``: time spent in this call; ``cached``: whether mapping and routing
      came from the structure cache.
    - ``passes``: the OpenSquirrel passes that ran, ``stage:ClassName``.
    """

    initial_placement: tuple[int, ...] = ()
    swaps: int = 0
    added_two_qubit_gates: int = 0
    compile_seconds: float = 0.0
    cached: bool = False
    passes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class LogicalCircuit:
    """A circuit as gates on virtual qubits ``0 .. width-1``, free of PennyLane objects:
    made on the caller's thread by :func:`logical_circuit`, compiled anywhere."""

    ops: tuple[Instr, ...]
    wires: tuple[Any, ...]
    width: int


def logical_circuit(tape: QuantumScript) -> LogicalCircuit:
    """The tape's gates on virtual qubits (``tape.wires[i]`` is qubit i); PennyLane
    decomposes what has no cQASM 3 name. Measurements must be in the computational basis.

    Example:
        >>> logical_circuit(QuantumScript([qml.CNOT(["a", "b"])], [qml.probs()])).ops
        (('CNOT', (), (0, 1)),)
    """
    require_computational_basis(tape)
    wires = tuple(tape.wires)
    index = {w: i for i, w in enumerate(wires)}
    ops = tuple((n, p, tuple(index[w] for w in ws)) for n, p, ws in cqasm_operations(tape))
    return LogicalCircuit(ops, wires, max(len(wires), 1))


#: The passes used for stages a target's ``default_compiler_config`` leaves empty: place the
#: qubits so that interacting wires sit close (MIP), route along shortest paths. Without
#: decomposition or optimization passes, qfleet's exact rules do both: every gate rewritten
#: into the gate set (:func:`~qfleet.circuits.cqasm.lower`), then each run of single-qubit
#: gates merged into one rotation (a 2x2 product, written as Rz Ry Rz in the gate set) --
#: microseconds per circuit, where OpenSquirrel's merger takes about a second for 300 gates
#: and, depending on the angles, would run again for every parameter binding.
DEFAULT_PIPELINE: dict[str, list[dict[str, Any]]] = {
    "mapping": [{"path": "opensquirrel.passes.mapper.MIPMapper", "method": "map"}],
    "routing": [{"path": "opensquirrel.passes.router.ShortestPathRouter", "method": "route"}],
}

#: Stages that move qubits (parameter-independent: cached per structure) and the rest.
QUBIT_STAGES = ("mapping", "routing")
GATE_STAGES = ("decomposition", "optimization")

_METHODS = ("decompose", "map", "route", "merge", "validate")

_CACHE_SIZE = 512
_structures: OrderedDict[Any, _Routed] = OrderedDict()
_programs: OrderedDict[Any, CompiledProgram] = OrderedDict()
_cache_lock = threading.Lock()


@dataclasses.dataclass(frozen=True)
class _Routed:
    """A structure after mapping and routing: ``ops`` holds ("op", input index, physical
    qubits) and ("SWAP", -1, (a, b)); ``final[v]`` is where virtual qubit v is measured."""

    ops: tuple[tuple[str, int, tuple[int, ...]], ...]
    initial: tuple[int, ...]
    final: tuple[int, ...]
    swaps: int
    passes: tuple[str, ...]
    seconds: float


def _import_opensquirrel():
    try:
        import opensquirrel
    except ImportError as exc:  # the qutech extra
        raise ImportError(
            f"compiling for a QuTech target needs opensquirrel ({exc}); install qfleet's "
            f"qutech extra: pip install 'qfleet[qutech]'"
        ) from exc
    return opensquirrel


def _resolve(path: str) -> type:
    """An OpenSquirrel pass class from its dotted path. Only OpenSquirrel's own: the path
    comes from a remote 2300, and importing whatever it names would run its code here."""
    if not isinstance(path, str) or not path.startswith("opensquirrel."):
        raise UnsupportedCircuitError(
            f"compiler pass {path!r} is not an OpenSquirrel pass (opensquirrel.passes...); "
            f"fix the target's default_compiler_config or pass compiler_config="
        )
    module_name, _, class_name = path.rpartition(".")
    # Older configs name modules without ".passes" (opensquirrel.decomposer....).
    candidates = [module_name]
    if not module_name.startswith("opensquirrel.passes"):
        candidates.append("opensquirrel.passes." + module_name.removeprefix("opensquirrel."))
    for candidate in candidates:
        try:
            cls = getattr(importlib.import_module(candidate), class_name, None)
        except ImportError:
            continue
        if isinstance(cls, type):
            return cls
    raise UnsupportedCircuitError(
        f"compiler pass {path!r}: no such class in opensquirrel "
        f"{_import_opensquirrel().__version__}; fix the target's default_compiler_config"
    )


def _coerced(cls: type, arguments: dict[str, Any]) -> dict[str, Any]:
    """JSON has no enums: a string given for an Enum-typed argument becomes the member
    (e.g. AStarRouter's ``distance_metric="manhattan"``)."""
    try:
        hints = typing.get_type_hints(cls.__init__)  # type: ignore[misc]
    except Exception:  # unresolvable annotations: pass the arguments as given
        return arguments
    for name, value in arguments.items():
        hint = hints.get(name)
        for kind in typing.get_args(hint) or (hint,):
            if isinstance(kind, type) and issubclass(kind, enum.Enum) and isinstance(value, str):
                try:
                    arguments[name] = kind(value)
                    break
                except ValueError:
                    continue
    return arguments


def _pass_instance(spec: Mapping[str, Any], target: CqasmTarget) -> tuple[Any, str, str]:
    """(pass object, Circuit method name, label) for one ``{"path", "method", "arguments"}``."""
    if not isinstance(spec, Mapping) or "path" not in spec:
        raise UnsupportedCircuitError(
            f"compiler pass {spec!r} needs a 'path' (and 'method'); fix the compiler config"
        )
    cls = _resolve(spec["path"])
    method = spec.get("method") or ""
    if method not in _METHODS:
        raise UnsupportedCircuitError(
            f"compiler pass {spec['path']}: method {method!r} is not one of {_METHODS}"
        )
    arguments = dict(spec.get("arguments") or {})
    wanted = inspect.signature(cls).parameters
    # What the target knows, for passes that ask for it and were not given it.
    if "connectivity" in wanted and "connectivity" not in arguments:
        arguments["connectivity"] = target.connectivity()
    if "primitive_gate_set" in wanted and "primitive_gate_set" not in arguments:
        arguments["primitive_gate_set"] = sorted(target.pgs or ())
    try:
        instance = cls(**_coerced(cls, arguments))
    except (TypeError, ValueError) as exc:
        raise UnsupportedCircuitError(
            f"compiler pass {spec['path']}: bad arguments {sorted(arguments)}: {exc}"
        ) from exc
    return instance, method, f"{cls.__name__}"


def _stages(config: Any) -> dict[str, list]:
    """The passes per stage. Mapping and routing that the config leaves empty come from
    :data:`DEFAULT_PIPELINE` (a sparse chip needs them, and QuTech's configs often name only
    decomposition); empty decomposition and optimization stages use qfleet's exact rules."""
    if hasattr(config, "model_dump"):  # a pydantic CompilerConfig (get_static's model)
        config = config.model_dump()
    config = dict(config or {})
    unknown = sorted(set(config) - {*QUBIT_STAGES, *GATE_STAGES})
    if unknown:
        raise UnsupportedCircuitError(
            f"compiler config stage(s) {unknown}: known stages are {(*QUBIT_STAGES, *GATE_STAGES)}"
        )
    stages = {}
    for stage in (*QUBIT_STAGES, *GATE_STAGES):
        stages[stage] = list(config.get(stage) or DEFAULT_PIPELINE.get(stage, ()))
    return stages


def _program_text(nqubits: int, gates: Sequence[Instr], measures: Sequence[int]) -> str:
    """cQASM 3: ``qubit[n] q``, ``bit[len(measures)] b``, the gates, ``b[v] = measure
    q[measures[v]]``."""
    lines = ["version 3.0", "", f"qubit[{nqubits}] q", f"bit[{len(measures)}] b", ""]
    lines.extend(format_instruction(g) for g in gates)
    lines.append("")
    lines.extend(f"b[{v}] = measure q[{q}]" for v, q in enumerate(measures))
    return "\n".join(lines) + "\n"


def _circuit(text: str) -> Any:
    from opensquirrel import Circuit

    try:
        return Circuit.from_string(text)
    except Exception as exc:  # libqasm's analysis errors (IOError, ValueError, ...)
        raise UnsupportedCircuitError(f"OpenSquirrel cannot read the program: {exc}") from exc


def _run_pass(circuit: Any, spec: Mapping[str, Any], target: CqasmTarget) -> str:
    instance, method, label = _pass_instance(spec, target)
    try:
        getattr(circuit, method)(instance)
    except UnsupportedCircuitError:
        raise
    except Exception as exc:  # OpenSquirrel raises many types (NoRoutingPathError, ...)
        raise UnsupportedCircuitError(
            f"compiler pass {label} failed: {type(exc).__name__}: {exc}"
        ) from exc
    return label


def _measured(circuit: Any, width: int) -> tuple[int, ...]:
    """Physical qubit of each bit b[0..width-1] (every bit is measured once)."""
    where = {}
    for statement in circuit.ir.statements:
        if type(statement).__name__ == "Measure":
            where[statement.bit.index] = statement.qubit.index
    if sorted(where) != list(range(width)):
        raise UnsupportedCircuitError(
            "after compiling, the measurements no longer cover every wire; report this with "
            "the compiler config"
        )
    return tuple(where[v] for v in range(width))


#: Extra placements tried (seeded random ones) when the mapping stage is the default one:
#: routing greedily from a single placement often adds SWAPs another would not need, and
#: the best of a few costs tens of milliseconds once per structure.
RESTARTS = 12


def _route(
    ops: Sequence[Instr],
    holder: Sequence[int],
    target: CqasmTarget,
    stages: dict[str, list],
) -> _Routed:
    """Mapping and routing of one structure (angles do not matter to either). Bit v
    measures ``holder[v]``; the result's ``initial``/``final`` are per bit (wire). With the
    default mapping, the placement (of MIP's and :data:`RESTARTS` random ones) that needs
    the fewest SWAPs wins."""
    started = time.perf_counter()
    best = _route_once(ops, holder, target, stages)
    if target.topology is not None and stages["mapping"] == DEFAULT_PIPELINE["mapping"]:
        for seed in range(RESTARTS):
            if best.swaps == 0:
                break
            mapper = {"path": "opensquirrel.passes.mapper.RandomMapper", "method": "map",
                      "arguments": {"seed": seed}}  # fmt: skip
            other = _route_once(ops, holder, target, {**stages, "mapping": [mapper]})
            if other.swaps < best.swaps:
                best = other
    return dataclasses.replace(best, seconds=time.perf_counter() - started)


def _route_once(
    ops: Sequence[Instr],
    holder: Sequence[int],
    target: CqasmTarget,
    stages: dict[str, list],
) -> _Routed:
    started = time.perf_counter()
    width = len(holder)
    nqubits = target.nqubits or width
    if target.topology is None or not (stages["mapping"] or stages["routing"]):
        # Every pair connected (or nothing asked): qubits stay where they are.
        same = tuple(("op", k, ops[k][2]) for k in range(len(ops)))
        return _Routed(
            same, tuple(range(width)), tuple(holder), 0, (), time.perf_counter() - started
        )
    _import_opensquirrel()
    circuit = _circuit(_program_text(nqubits, ops, holder))
    index = {
        id(statement): k
        for k, statement in enumerate(
            s for s in circuit.ir.statements if type(s).__name__ != "Measure"
        )
    }
    passes = []
    for spec in stages["mapping"]:
        passes.append("mapping:" + _run_pass(circuit, spec, target))
    # where each wire's own qubit (v) was placed: bit u measures holder[u]
    placed = dict(zip(holder, _measured(circuit, width), strict=True))
    initial = tuple(placed[v] for v in range(width))
    for spec in stages["routing"]:
        passes.append("routing:" + _run_pass(circuit, spec, target))
    routed: list[tuple[str, int, tuple[int, ...]]] = []
    swaps = 0
    for statement in circuit.ir.statements:
        name = type(statement).__name__
        if name == "Measure":
            continue
        qubits = tuple(q.index for q in statement.get_qubit_operands())
        k = index.get(id(statement))
        if k is not None:
            routed.append(("op", k, qubits))
        elif name == "SWAP":
            routed.append(("SWAP", -1, qubits))
            swaps += 1
        else:
            raise UnsupportedCircuitError(
                f"a mapping or routing pass added a {name} gate; only SWAPs are expected"
            )
    final = _measured(circuit, width)
    return _Routed(
        tuple(routed), initial, final, swaps, tuple(passes), time.perf_counter() - started
    )


def _lowered(gates: Sequence[Instr], target: CqasmTarget) -> list[Instr]:
    """Every gate rewritten into the target's gate set (exact up to a global phase)."""
    out: list[Instr] = []
    for gate in gates:
        lowered = lower(gate, target)
        if lowered is None:
            raise UnsupportedCircuitError(
                f"gate {gate[0]} cannot be expressed in the target's gate set "
                f"{sorted(target.pgs or ())}; use another executor or a target with more gates"
            )
        out.extend(lowered)
    return out


def _finish(
    routed: _Routed, ops: Sequence[Instr], width: int, target: CqasmTarget, stages: dict
) -> tuple[list[Instr], tuple[str, ...]]:
    """Bind the angles, decompose to the gate set, optimise, decompose what optimising
    merged, and check every two-qubit gate against the topology."""
    nqubits = target.nqubits or width
    gates: list[Instr] = [
        (ops[k][0], ops[k][1], qubits) if kind == "op" else ("SWAP", (), qubits)
        for kind, k, qubits in routed.ops
    ]
    passes: list[str] = []
    for stage in GATE_STAGES:
        if not stages[stage]:
            # qfleet's exact rules: rewrite into the gate set, merge single-qubit runs
            gates = _lowered(gates, target)
            if stage == "optimization":
                gates = merge_single_qubit_runs(gates)
            continue
        _import_opensquirrel()
        circuit = _circuit(_program_text(nqubits, gates, routed.final))
        for spec in stages[stage]:
            passes.append(f"{stage}:" + _run_pass(circuit, spec, target))
        gates = _gates_of(circuit)
    out = _lowered(gates, target)
    for name, _, qubits in out:
        if len(qubits) == 2 and not target.connected(*qubits):
            a, b = qubits
            raise UnsupportedCircuitError(
                f"{name} on q[{a}], q[{b}] after routing: the target has no connection "
                f"between qubits {a} and {b}; check the compiler config's routing stage"
            )
    return out, tuple(passes)


_SQ2 = math.sqrt(0.5)
#: Single-qubit gates as 2x2 matrices (cQASM 3 names; angles filled in by _matrix).
_FIXED = {
    "I": np.eye(2), "H": np.array([[1, 1], [1, -1]]) * _SQ2,
    "X": np.array([[0, 1], [1, 0]]), "Y": np.array([[0, -1j], [1j, 0]]),
    "Z": np.diag([1, -1]), "S": np.diag([1, 1j]), "Sdag": np.diag([1, -1j]),
    "T": np.diag([1, np.exp(1j * math.pi / 4)]), "Tdag": np.diag([1, np.exp(-1j * math.pi / 4)]),
}  # fmt: skip
_ROTATION = {"X90": ("Rx", math.pi / 2), "mX90": ("Rx", -math.pi / 2),
             "Y90": ("Ry", math.pi / 2), "mY90": ("Ry", -math.pi / 2)}  # fmt: skip


def _matrix(name: str, params: tuple[float, ...]) -> np.ndarray | None:
    if name in _FIXED:
        return _FIXED[name]
    if name in _ROTATION:
        name, params = _ROTATION[name][0], (_ROTATION[name][1],)
    if name not in ("Rx", "Ry", "Rz"):
        return None
    c, s = math.cos(params[0] / 2), math.sin(params[0] / 2)
    if name == "Rx":
        return np.array([[c, -1j * s], [-1j * s, c]])
    if name == "Ry":
        return np.array([[c, -s], [s, c]])
    return np.diag([complex(c, -s), complex(c, s)])


def _zyz(u: np.ndarray, q: int) -> list[Instr]:
    """``u`` (up to a global phase) as Rz(c), Ry(b), Rz(a) -- circuit order -- leaving out
    rotations by 0."""
    u = np.asarray(u, dtype=complex)  # a real matrix with det -1 (X, H) has no real root
    v = u / np.sqrt(np.linalg.det(u))
    b = 2 * math.atan2(abs(v[1, 0]), abs(v[0, 0]))
    total = 2 * np.angle(v[1, 1]) if abs(v[0, 0]) > 1e-9 else 0.0  # a + c
    diff = 2 * np.angle(v[1, 0]) if abs(v[1, 0]) > 1e-9 else 0.0  # a - c
    a, c = (total + diff) / 2, (total - diff) / 2
    out: list[Instr] = []
    for name, angle in (("Rz", c), ("Ry", b), ("Rz", a)):
        angle = math.remainder(float(angle), 2 * math.pi)
        if abs(angle) > 1e-12:
            out.append((name, (angle,), (q,)))
    if len(out) == 2 and out[0][0] == out[1][0] == "Rz":
        out = [("Rz", (math.remainder(out[0][1][0] + out[1][1][0], 2 * math.pi),), (q,))]
    return out


def merge_single_qubit_runs(gates: Sequence[Instr]) -> list[Instr]:
    """Each run of single-qubit gates on a qubit as one rotation, Rz Ry Rz (exact up to a
    global phase; rotations by 0 left out), before the next gate on that qubit that is not
    a single-qubit one. Gates it has no matrix for stay as they are.

    Example:
        >>> merge_single_qubit_runs([("H", (), (0,)), ("H", (), (0,)), ("Rz", (0.5,), (1,))])
        [('Rz', (0.5,), (1,))]
    """
    pending: dict[int, np.ndarray] = {}
    out: list[Instr] = []

    def flush(q: int) -> None:
        u = pending.pop(q, None)
        if u is not None:
            out.extend(_zyz(u, q))

    for gate in gates:
        name, params, qubits = gate
        m = _matrix(name, params) if len(qubits) == 1 else None
        if m is not None:
            q = qubits[0]
            pending[q] = m @ pending.get(q, np.eye(2))
            continue
        for q in qubits:
            flush(q)
        out.append(gate)
    for q in sorted(pending):
        flush(q)
    return out


#: OpenSquirrel gate class -> cQASM 3 name for gates ``lower`` knows.
_NAMED = {
    "I": "I", "H": "H", "X": "X", "Y": "Y", "Z": "Z", "S": "S", "SDagger": "Sdag",
    "T": "T", "TDagger": "Tdag", "X90": "X90", "MinusX90": "mX90", "Y90": "Y90",
    "MinusY90": "mY90", "Rx": "Rx", "Ry": "Ry", "Rz": "Rz", "CNOT": "CNOT", "CZ": "CZ",
    "SWAP": "SWAP", "CR": "CR",
}  # fmt: skip


def _angles(statement: Any) -> tuple[float, ...]:
    name = type(statement).__name__
    if name in ("Rx", "Ry", "Rz"):
        return (float(statement.bsr.theta.value),)
    if name == "CR":
        return (float(statement.theta.value),)
    return ()


def _gates_of(circuit: Any) -> list[Instr]:
    """The circuit's gates as (name, angles, qubits); a merged rotation (no name) is
    decomposed with McKay's (Rz, X90) rules first."""
    from opensquirrel.passes.decomposer import McKayDecomposer

    def unnamed(statement: Any) -> bool:
        return type(statement).__name__ not in _NAMED and type(statement).__name__ != "Measure"

    if any(unnamed(s) for s in circuit.ir.statements):
        circuit.decompose(McKayDecomposer())
    gates: list[Instr] = []
    for statement in circuit.ir.statements:
        name = type(statement).__name__
        if name == "Measure":
            continue
        if name not in _NAMED:
            raise UnsupportedCircuitError(
                f"the compiled circuit holds a {name} gate, which has no cQASM 3 name here"
            )
        qubits = tuple(q.index for q in statement.get_qubit_operands())
        gates.append((_NAMED[name], _angles(statement), qubits))
    return gates


def _structure(
    program: Any,
) -> tuple[list[Instr], tuple[Any, ...], tuple[int, ...], int]:
    """(gates on virtual qubits, wires, virtual qubit per wire, number of virtual qubits)."""
    if isinstance(program, QuantumScript):
        program = logical_circuit(program)
    if isinstance(program, LogicalCircuit):
        return list(program.ops), program.wires, tuple(range(len(program.wires))), program.width
    if isinstance(program, str):
        return _parse_text(program)
    raise TypeError(f"compile_for_target takes a cQASM 3 string or a tape, got {type(program)}")


def _parse_text(text: str) -> tuple[list[Instr], tuple[Any, ...], tuple[int, ...], int]:
    _import_opensquirrel()
    circuit = _circuit(text)
    width = circuit.qubit_register_size
    ops: list[Instr] = []
    for statement in circuit.ir.statements:
        name = type(statement).__name__
        if name in ("Measure", "Barrier", "Wait"):
            continue
        if name not in _NAMED:
            raise UnsupportedCircuitError(
                f"{name} is not a gate the QuTech compiler path takes; use standard cQASM 3 "
                f"gates ({', '.join(sorted(set(_NAMED.values())))})"
            )
        qubits = tuple(q.index for q in statement.get_qubit_operands())
        ops.append((_NAMED[name], _angles(statement), qubits))
    return ops, tuple(range(width)), tuple(range(width)), width


def _without_swaps(ops: Sequence[Instr], width: int) -> tuple[list[Instr], tuple[int, ...]]:
    """The circuit with its SWAP gates taken out, and ``holder[v]``: the qubit that holds
    wire v's state at the end. Exact: a SWAP only renames the qubits of what follows, so it
    is done in the bookkeeping instead of with three two-qubit gates."""
    rename = list(range(width))  # rename[q]: where the input's qubit q is now
    out: list[Instr] = []
    for name, params, qubits in ops:
        if name == "SWAP":
            a, b = qubits
            rename[a], rename[b] = rename[b], rename[a]
        else:
            out.append((name, params, tuple(rename[q] for q in qubits)))
    return out, tuple(rename)


def _config_key(target: CqasmTarget, stages: dict[str, list]) -> tuple:
    return (
        target.nqubits,
        tuple(sorted(target.pgs or ())),
        tuple(sorted(target.topology or ())),
        json.dumps(stages, sort_keys=True, default=str),
    )


def _remember(cache: OrderedDict, key: Any, value: Any) -> None:
    with _cache_lock:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)


def compile_for_target(
    program: Any,
    target: CqasmTarget,
    compiler_config: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    *,
    use_cache: bool = True,
) -> CompiledProgram:
    """``program`` compiled for ``target``, measuring every wire.

    Args:
        program: a cQASM 3 program (text; its qubits are the wires ``0 .. n-1``), a
            PennyLane tape whose measurements are in the computational basis (wires in
            ``tape.wires`` order), or a :class:`LogicalCircuit` (a tape's gates, made on the
            caller's thread: compiling it touches no PennyLane object, so any thread may).
        target: the chip: ``nqubits``, ``pgs`` (primitive gates), ``topology`` (directed
            pairs; a two-qubit gate may use an edge in either direction). Build it from a
            ``get_static`` reply or a Quantum Inspire backend type with
            :meth:`CqasmTarget.from_static`.
        compiler_config: the target's ``default_compiler_config``
            (``{stage: [{"path", "method", "arguments"}]}``); None or empty stages:
            :data:`DEFAULT_PIPELINE`.
        use_cache: reuse mapping and routing of a structure seen before.

    Raises:
        UnsupportedCircuitError: more wires than qubits, a gate that cannot be expressed in
            the gate set, a topology that does not connect the qubits, or a compiler config
            naming a pass that is not OpenSquirrel's (the message names it).

    Example:
        >>> line = CqasmTarget(nqubits=3, pgs={"X90", "MX90", "Y90", "MY90", "RZ", "CZ"},
        ...                    topology={(0, 1), (1, 2)})
        >>> ghz = QuantumScript([qml.H(0), qml.CNOT([0, 2]), qml.CNOT([2, 1])], [qml.probs()])
        >>> out = compile_for_target(ghz, line)    # MIP places wires 0 and 2 side by side
        >>> out.swaps, out.num_qubits, sorted(out.qubits)
        (0, 3, [0, 1, 2])
        >>> "CNOT" in out.text, "CZ" in out.text        # only the target's gates
        (False, True)
    """
    started = time.perf_counter()
    ops, wires, virtual, width = _structure(program)
    before = sum(len(q) == 2 for _, _, q in ops)
    if target.nqubits is not None and width > target.nqubits:
        raise UnsupportedCircuitError(
            f"the circuit uses {width} wires but the target has {target.nqubits} qubits; "
            f"use fewer wires or another executor"
        )
    for name, _, qubits in ops:
        if len(set(qubits)) != len(qubits):
            raise UnsupportedCircuitError(
                f"{name} names qubit {qubits[0]} twice; a two-qubit gate needs two qubits"
            )
    ops, holder = _without_swaps(ops, width)
    stages = _stages(compiler_config)
    config_key = _config_key(target, stages)
    structure_key = (config_key, holder, tuple((n, q) for n, _, q in ops))
    program_key = (structure_key, tuple(p for _, p, _ in ops))
    if use_cache:
        with _cache_lock:
            done = _programs.get(program_key)
        if done is not None:
            return dataclasses.replace(
                done, wires=wires, compile_seconds=time.perf_counter() - started, cached=True
            )
    with _cache_lock:
        routed = _structures.get(structure_key) if use_cache else None
    cached = routed is not None
    if routed is None:
        routed = _route(ops, holder, target, stages)
        if use_cache:
            _remember(_structures, structure_key, routed)
    gates, gate_passes = _finish(routed, ops, width, target, stages)
    nqubits = target.nqubits or width
    text = _program_text(nqubits, gates, routed.final)
    after = sum(len(q) == 2 for _, _, q in gates)
    out = CompiledProgram(
        text=text,
        wires=wires,
        qubits=tuple(routed.final[v] for v in virtual),
        num_qubits=nqubits,
        initial_placement=tuple(routed.initial[v] for v in virtual),
        swaps=routed.swaps,
        added_two_qubit_gates=after - before,
        compile_seconds=time.perf_counter() - started,
        cached=cached,
        passes=routed.passes + gate_passes,
    )
    if use_cache:
        _remember(_programs, program_key, out)
    return out


def clear_cache() -> None:
    """Forget every compiled structure and program (e.g. after a target changed)."""
    with _cache_lock:
        _structures.clear()
        _programs.clear()
