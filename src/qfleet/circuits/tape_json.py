"""PennyLane tapes as JSON data, and back: what the job store keeps instead of pickles.

A pickle is code: reading one back can run anything its writer chose. A job row therefore
keeps its circuits as plain JSON, and reading it back only ever builds PennyLane operator and
measurement classes, found by name among the subclasses of ``qml.operation.Operator`` and
``MeasurementProcess`` that PennyLane itself defines (nothing is imported by name).

The encoding follows PennyLane's own pytree split (``qml.pytrees.flatten``): each operator
or measurement is a node ``{"type", "module", "meta", "children"}`` whose leaves are its
numeric data (numbers, arrays incl. complex, sparse matrices) and whose metadata (wires,
hyperparameters, nested operators) is written with explicit tags for tuples, wires, arrays,
complex numbers and non-finite floats, so a tape comes back equal to the one written
(``qml.equal``). A mid-circuit measurement's value (``qml.cond``, ``qml.expval(m)``) is kept
as its table of branches, not as its Python function.

Example:
    >>> import pennylane as qml
    >>> tape = qml.tape.QuantumScript([qml.RX(0.5, 0), qml.CNOT([0, 1])],
    ...                               [qml.expval(qml.Z(0) @ qml.X(1))], shots=100)
    >>> (back,) = tapes_from_json(tapes_to_json([tape]))
    >>> qml.equal(back, tape), back.shots.total_shots
    (True, 100)
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pennylane as qml
from pennylane.measurements import MeasurementProcess, Shots
from pennylane.operation import Operator
from pennylane.tape import QuantumScript
from pennylane.wires import Wires

from qfleet.errors import QFleetError

FORMAT = "qfleet.tapes"
VERSION = 1


class TapeCodecError(QFleetError, ValueError):
    """A tape cannot be written as JSON data, or JSON data is not a tape this version reads."""


# -- which classes may be built ---------------------------------------------------------------

_index: dict[str, list[type]] = {}
_index_lock = threading.Lock()
_CONTAINERS: dict[str, type] = {"list": list, "tuple": tuple, "dict": dict}


def _pennylane_classes() -> dict[str, list[type]]:
    """PennyLane's own operator and measurement classes by name (its modules only)."""
    found: dict[str, list[type]] = {}
    pending: list[type] = [Operator, MeasurementProcess]
    seen: set[type] = set()
    while pending:
        cls = pending.pop()
        if cls in seen:
            continue
        seen.add(cls)
        pending.extend(cls.__subclasses__())
        if cls.__module__.split(".")[0] == "pennylane" and qml.pytrees.is_pytree(cls):
            found.setdefault(cls.__qualname__, []).append(cls)
    return found


def _lookup(name: str, module: str | None) -> type:
    if name in _CONTAINERS and module in (None, "builtins"):
        return _CONTAINERS[name]
    for attempt in range(2):  # a miss re-scans once: a PennyLane module loaded since
        with _index_lock:
            if attempt or not _index:
                _index.clear()
                _index.update(_pennylane_classes())
            candidates = list(_index.get(name, ()))
        if candidates:
            for cls in candidates:
                if module is None or cls.__module__ == module:
                    return cls
            return candidates[0]  # moved between PennyLane modules: the name decides
    raise TapeCodecError(
        f"{name!r} is not a PennyLane operator or measurement class this PennyLane "
        f"{qml.__version__} has; the tapes were written by another PennyLane version or "
        f"the data was altered"
    )


# -- values -----------------------------------------------------------------------------------


def _float(value: float) -> Any:
    return value if math.isfinite(value) else {"float": repr(value)}


def _array(value: np.ndarray) -> dict[str, Any]:
    value = np.asarray(value)
    if value.dtype.kind not in "biufc":
        raise TapeCodecError(f"an array of dtype {value.dtype} cannot be stored as data")
    out: dict[str, Any] = {"array": str(value.dtype), "shape": list(value.shape)}
    flat = value.ravel()
    if value.dtype.kind == "c":
        out["real"] = [_float(float(v)) for v in flat.real]
        out["imag"] = [_float(float(v)) for v in flat.imag]
    elif value.dtype.kind == "f":
        out["data"] = [_float(float(v)) for v in flat]
    else:
        out["data"] = flat.tolist()
    return out


def _value(value: Any) -> Any:
    """A metadata or leaf value as tagged JSON."""
    import scipy.sparse

    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, complex):
        return {"complex": [_float(value.real), _float(value.imag)]}
    if isinstance(value, Wires):
        return {"wires": [_value(w) for w in value.labels]}
    if isinstance(value, tuple):
        return {"tuple": [_value(v) for v in value]}
    if isinstance(value, list):
        return {"list": [_value(v) for v in value]}
    if isinstance(value, dict):
        return {"dict": [[_value(k), _value(v)] for k, v in value.items()]}
    if isinstance(value, (Operator, MeasurementProcess)):
        return {"node": _node(value)}
    if isinstance(value, type) and issubclass(value, (Operator, MeasurementProcess)):
        # e.g. StronglyEntanglingLayers' ``imprimitive=qml.CNOT``
        return {"class": [value.__qualname__, value.__module__]}
    if isinstance(value, qml.measurements.MeasurementValue):
        return {"mcm": {
            "measurements": [_node(m) for m in value.measurements],
            "branches": [[list(k), _value(_plain(v))] for k, v in value.branches.items()],
        }}
    if scipy.sparse.issparse(value):
        csr = scipy.sparse.csr_matrix(value)
        return {"csr": {"shape": list(csr.shape), "data": _array(csr.data),
                        "indices": csr.indices.tolist(), "indptr": csr.indptr.tolist()}}
    if isinstance(value, (np.ndarray, np.generic)) or hasattr(value, "__array__"):
        array = np.asarray(value)
        tagged = _array(array)
        if array.ndim == 0 and not isinstance(value, np.ndarray):
            tagged["scalar"] = True
        return tagged
    raise TapeCodecError(
        f"a {type(value).__module__}.{type(value).__qualname__} in a tape cannot be stored as data"
    )


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _number(value: Any) -> float:
    if isinstance(value, dict) and set(value) == {"float"} and value["float"] in (
        "nan", "inf", "-inf"
    ):
        return float(value["float"])
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise TapeCodecError(f"expected a number, found {value!r}")


def _from_array(data: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(data["array"])
    if dtype.kind not in "biufc":
        raise TapeCodecError(f"arrays of dtype {dtype} are not stored as data")
    shape = tuple(int(n) for n in data["shape"])
    size = math.prod(shape)
    if dtype.kind == "c":
        real, imag = data["real"], data["imag"]
        if len(real) != size or len(imag) != size:
            raise TapeCodecError(f"an array of shape {shape} with {len(real)} values")
        flat = np.array([_number(r) for r in real]) + 1j * np.array([_number(i) for i in imag])
    elif dtype.kind == "f":
        flat = np.array([_number(v) for v in data["data"]], dtype=float)
    else:
        flat = np.array(data["data"])
    if flat.size != size:
        raise TapeCodecError(f"an array of shape {shape} with {flat.size} values")
    out = flat.astype(dtype).reshape(shape)
    return out[()] if data.get("scalar") else out


def _from_value(data: Any) -> Any:
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    if isinstance(data, list):
        raise TapeCodecError("an untagged list in tape data")
    if not isinstance(data, dict) or not data:
        raise TapeCodecError(f"unexpected tape data {data!r:.80}")
    if "array" in data:
        return _from_array(data)
    (tag, body), *rest = data.items()
    if rest:
        raise TapeCodecError(f"unexpected tape data {data!r:.80}")
    if tag == "float":
        return _number(data)
    if tag == "complex":
        return complex(_number(body[0]), _number(body[1]))
    if tag == "wires":
        return Wires([_from_value(w) for w in body])
    if tag == "tuple":
        return tuple(_from_value(v) for v in body)
    if tag == "list":
        return [_from_value(v) for v in body]
    if tag == "dict":
        return {_from_value(k): _from_value(v) for k, v in body}
    if tag == "node":
        return _from_node(body)
    if tag == "class":
        name, module = body
        cls = _lookup(str(name), str(module))
        if cls in _CONTAINERS.values():
            raise TapeCodecError(f"{name!r} is not a PennyLane operator class")
        return cls
    if tag == "mcm":
        measurements = [_from_node(m) for m in body["measurements"]]
        table = {tuple(int(b) for b in k): _from_value(v) for k, v in body["branches"]}

        def processing_fn(*outcomes: Any) -> Any:
            return table[tuple(int(o) for o in outcomes)]

        return qml.measurements.MeasurementValue(measurements, processing_fn)
    if tag == "csr":
        import scipy.sparse

        return scipy.sparse.csr_matrix(
            (_from_array(body["data"]), np.array(body["indices"], dtype=np.int32),
             np.array(body["indptr"], dtype=np.int32)),
            shape=tuple(int(n) for n in body["shape"]),
        )
    raise TapeCodecError(f"unknown tag {tag!r} in tape data")


# -- operators, measurements, tapes -----------------------------------------------------------


def _node(obj: Any) -> dict[str, Any]:
    if isinstance(obj, qml.ops.Conditional):
        # PennyLane 0.45's Conditional does not unflatten what it flattens (wires=...).
        return {"conditional": {"meas_val": _value(obj.meas_val), "base": _node(obj.base)}}
    leaves, structure = qml.pytrees.flatten(obj)
    return _structure(structure, iter(leaves))


def _structure(structure: Any, leaves: Any) -> dict[str, Any]:
    if structure.is_leaf:
        return {"leaf": _value(next(leaves))}
    cls = structure.type_
    return {
        "type": cls.__qualname__,
        "module": cls.__module__,
        "meta": _value(structure.metadata),
        "children": [_structure(child, leaves) for child in structure.children],
    }


def _from_node(data: Any) -> Any:
    if not isinstance(data, dict):
        raise TapeCodecError(f"expected an operator, found {data!r:.80}")
    if "leaf" in data:
        return _from_value(data["leaf"])
    if "conditional" in data:
        body = data["conditional"]
        meas_val = _from_value(body["meas_val"])
        if not isinstance(meas_val, qml.measurements.MeasurementValue):
            raise TapeCodecError("a conditional operation without a measurement value")
        return qml.ops.Conditional(meas_val, _from_node(body["base"]))
    cls = _lookup(str(data["type"]), data.get("module"))
    children = [_from_node(c) for c in data["children"]]
    leaves, structure = [], []
    for child in children:
        leaves.append(child)
        structure.append(qml.pytrees.leaf)
    tree = qml.pytrees.PyTreeStructure(cls, _from_value(data["meta"]), tuple(structure))
    return qml.pytrees.unflatten(leaves, tree)


def _operation(op: Operator) -> dict[str, Any]:
    try:
        return _node(op)
    except TapeCodecError:
        if not op.has_matrix:
            raise
    # Hyperparameters that are not data (a callable): keep the gate as its matrix.
    return _node(qml.QubitUnitary(qml.matrix(op), wires=op.wires))


def _shots(shots: Shots) -> Any:
    if not shots:
        return None
    return [[s.shots, s.copies] for s in shots.shot_vector]


def tape_to_data(tape: QuantumScript) -> dict[str, Any]:
    """One tape as JSON-able data (raises TapeCodecError for what cannot be data)."""
    return {
        "operations": [_operation(op) for op in tape.operations],
        "measurements": [_node(mp) for mp in tape.measurements],
        "shots": _shots(tape.shots),
        "trainable_params": list(tape.trainable_params),
    }


def tape_from_data(data: dict[str, Any]) -> QuantumScript:
    """The tape :func:`tape_to_data` wrote (raises TapeCodecError for anything else)."""
    try:
        operations = [_from_node(op) for op in data["operations"]]
        measurements = [_from_node(mp) for mp in data["measurements"]]
        if not all(isinstance(op, Operator) for op in operations):
            raise TapeCodecError("a tape's operations must be PennyLane operators")
        if not all(isinstance(mp, MeasurementProcess) for mp in measurements):
            raise TapeCodecError("a tape's measurements must be PennyLane measurements")
        shots = data["shots"]
        if shots is not None:
            shots = [(int(s), int(c)) for s, c in shots]
        tape = QuantumScript(operations, measurements, shots=shots)
        trainable = [int(i) for i in data.get("trainable_params", [])]
        if trainable != list(tape.trainable_params):
            tape.trainable_params = trainable
        return tape
    except TapeCodecError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, StopIteration, AttributeError) as exc:
        raise TapeCodecError(f"tape data is malformed: {type(exc).__name__}: {exc}") from exc


def tapes_to_json(tapes: Sequence[QuantumScript]) -> str:
    """Tapes as a versioned JSON document (``{"format", "version", "tapes"}``)."""
    return json.dumps(
        {"format": FORMAT, "version": VERSION, "tapes": [tape_to_data(t) for t in tapes]},
        allow_nan=False, separators=(",", ":"),
    )


def tapes_from_json(text: str | bytes) -> tuple[QuantumScript, ...]:
    """The tapes :func:`tapes_to_json` wrote; TapeCodecError for anything else."""
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise TapeCodecError(f"the tapes are not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise TapeCodecError("the data is not qfleet tapes (no 'format': 'qfleet.tapes')")
    if document.get("version") != VERSION:
        raise TapeCodecError(
            f"tapes written in format version {document.get('version')!r}; this qfleet "
            f"reads version {VERSION}: upgrade qfleet"
        )
    tapes = document.get("tapes")
    if tapes is None and "unavailable" in document:
        raise TapeCodecError(f"the circuits were not stored: {document['unavailable']}")
    if not isinstance(tapes, list):
        raise TapeCodecError("the tapes document has no list of tapes")
    try:
        return tuple(tape_from_data(t) for t in tapes)
    except RecursionError as exc:
        raise TapeCodecError("the tape data is nested too deeply") from exc


def tapes_document(tapes: Sequence[QuantumScript]) -> str:
    """:func:`tapes_to_json`, or, for tapes that cannot be data, a document that says why
    (the job can then be shown and its results kept, but not re-run)."""
    try:
        return tapes_to_json(tapes)
    except (TapeCodecError, RecursionError) as exc:
        return unavailable_document(str(exc))


def unavailable_document(reason: str) -> str:
    """A tape document recording that the tapes are not available, and why."""
    return json.dumps({"format": FORMAT, "version": VERSION, "tapes": None, "unavailable": reason})
