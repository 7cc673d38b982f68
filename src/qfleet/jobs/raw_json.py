"""Backends' raw output as JSON data: what a durable job stores until someone asks for results.

A durable job writes the raw output of its backend (``collect``) to the job store as soon as
it arrives, and finishes it into PennyLane results (tape work) on the thread that asks for
them, in whatever process. The job store holds data, never code, so this codec knows a
closed set of types and writes each with a tag that keeps it exact on the way back:

- ``None``, ``bool``, ``int``, ``float`` (NaN and infinities too), ``complex``, ``str``;
- lists and tuples (kept apart), dicts (keys keep their types: ``{0: ...}`` stays int);
- numpy arrays (dtype, shape, bytes; complex too) and numpy scalars (dtype kept);
- :class:`~qfleet.executors.batch.BatchResult` with its
  :class:`~qfleet.executors.batch.RunMetadata`;
- the raw output classes executors return (:data:`ALLOWED`): the sampling plan's
  ``Samples``/``Counts``/``State``/``Values``, the 2300's ``ExecuteResult``, the cQASM
  programs the 2300 and Quantum Inspire return their counts with, Classiq's exact values.

Anything else raises :class:`RawCodecError` naming the type, never a lossy ``str()``.
Decoding imports nothing but the classes of :data:`ALLOWED`.

Example:
    >>> import numpy as np
    >>> text = dumps((np.arange(3, dtype=np.int8), {0: 1.5j}, [None, True]))
    >>> loads(text)
    (array([0, 1, 2], dtype=int8), {0: 1.5j}, [None, True])
"""

from __future__ import annotations

import base64
import dataclasses
import importlib
import json
import math
from typing import Any

import numpy as np

from qfleet.errors import QFleetError

FORMAT = "qfleet.raw"
VERSION = 1

#: The classes (``module:qualname``) whose instances the codec writes field by field and
#: builds again from their fields: raw output types of the executors.
ALLOWED = frozenset({
    "qfleet.sampling.plan:Samples",
    "qfleet.sampling.plan:Counts",
    "qfleet.sampling.plan:State",
    "qfleet.sampling.plan:Values",
    "qfleet.executors.batch:RunMetadata",
    "qfleet.circuits.cqasm:CqasmProgram",
    "qfleet.circuits.compile2300:CompiledProgram",
    "qfleet.protocols.p2300.messages:ExecuteResult",
    "qfleet.executors.classiq:ObservedValues",
})


class RawCodecError(QFleetError, ValueError):
    """A value the raw-output codec cannot write, or a document it cannot read."""


def _name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _float(value: float) -> Any:
    if math.isfinite(value):
        return value
    return {"$": "float", "v": repr(value)}  # 'nan', 'inf', '-inf': JSON has no literal


def _array(value: np.ndarray) -> dict[str, Any]:
    if value.dtype.hasobject:
        return {"$": "ndarray", "dtype": "O", "shape": list(value.shape),
                "items": [encode(v) for v in value.ravel().tolist()]}
    data = np.ascontiguousarray(value)
    return {"$": "ndarray", "dtype": value.dtype.str, "shape": list(value.shape),
            "data": base64.b64encode(data.tobytes()).decode("ascii")}


def encode(value: Any) -> Any:
    """``value`` as JSON-able data with type tags (see the module docstring)."""
    # numpy first: np.float64 is a float and np.bool_ compares like a bool.
    if isinstance(value, np.ndarray):
        return _array(value)
    if isinstance(value, np.generic):
        if value.dtype.hasobject:
            raise RawCodecError(f"cannot store a numpy object scalar ({value!r}) as data")
        return {"$": "npscalar", "dtype": value.dtype.str,
                "data": base64.b64encode(value.tobytes()).decode("ascii")}
    if value is None or isinstance(value, (bool, str)):
        return value
    if type(value) is int:
        return value
    if type(value) is float:
        return _float(value)
    if type(value) is complex:
        return {"$": "complex", "re": _float(value.real), "im": _float(value.imag)}
    if type(value) is list:
        return [encode(v) for v in value]
    if type(value) is tuple:
        return {"$": "tuple", "items": [encode(v) for v in value]}
    if type(value) is dict:
        return {"$": "dict", "items": [[encode(k), encode(v)] for k, v in value.items()]}
    from qfleet.executors.batch import BatchResult

    if type(value) is BatchResult:
        return {"$": "batch", "items": [encode(v) for v in value],
                "metadata": encode(value.metadata)}
    name = _name(type(value))
    if name in ALLOWED:
        if dataclasses.is_dataclass(value):
            fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value) if f.init}
        else:  # a pydantic model: its declared fields (extras of lenient models too)
            fields = {k: getattr(value, k) for k in type(value).model_fields}
            fields.update(value.model_extra or {})
        return {"$": "obj", "cls": name, "fields": {k: encode(v) for k, v in fields.items()}}
    raise RawCodecError(
        f"cannot store raw output of type {type(value).__module__}.{type(value).__qualname__} "
        f"as data: the job store's raw-output codec (qfleet.jobs.raw_json) knows None, bool, "
        f"int, float, complex, str, list, tuple, dict, numpy arrays and scalars, BatchResult "
        f"and {sorted(ALLOWED)}; add the type to raw_json.ALLOWED if it is plain data"
    )


def _b64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise RawCodecError(f"expected base64 text, got {type(text).__name__}")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise RawCodecError(f"invalid base64 data: {exc}") from exc


def _dtype(text: Any) -> np.dtype:
    if not isinstance(text, str):
        raise RawCodecError(f"expected a dtype name, got {type(text).__name__}")
    try:
        dtype = np.dtype(text)
    except TypeError as exc:
        raise RawCodecError(f"unknown dtype {text!r}") from exc
    if dtype.hasobject or dtype.fields is not None:
        raise RawCodecError(f"dtype {text!r} is not a plain numeric or text dtype")
    return dtype


def _decode_tagged(data: dict[str, Any]) -> Any:
    tag = data.get("$")
    if tag == "float":
        if data.get("v") not in ("nan", "inf", "-inf"):
            raise RawCodecError(f"bad special float {data.get('v')!r}")
        return float(data["v"])
    if tag == "complex":
        return complex(decode(data["re"]), decode(data["im"]))
    if tag == "tuple":
        return tuple(decode(v) for v in data["items"])
    if tag == "dict":
        return {decode(k): decode(v) for k, v in data["items"]}
    if tag == "ndarray":
        shape = tuple(int(n) for n in data["shape"])
        if data["dtype"] == "O":
            items = [decode(v) for v in data["items"]]
            array = np.empty(len(items), dtype=object)
            array[:] = items
            return array.reshape(shape)
        dtype = _dtype(data["dtype"])
        return np.frombuffer(_b64(data["data"]), dtype=dtype).reshape(shape).copy()
    if tag == "npscalar":
        dtype = _dtype(data["dtype"])
        return np.frombuffer(_b64(data["data"]), dtype=dtype)[0]
    if tag == "batch":
        from qfleet.executors.batch import BatchResult

        return BatchResult([decode(v) for v in data["items"]], decode(data["metadata"]))
    if tag == "obj":
        return _decode_object(data["cls"], {k: decode(v) for k, v in data["fields"].items()})
    raise RawCodecError(f"unknown tag {tag!r}")


def _decode_object(name: Any, fields: dict[str, Any]) -> Any:
    if name not in ALLOWED:  # checked before anything is imported
        raise RawCodecError(f"the class {name!r} is not one the raw-output codec builds")
    module, _, qualname = name.partition(":")
    cls: Any = importlib.import_module(module)
    for part in qualname.split("."):
        cls = getattr(cls, part)
    if isinstance(cls, type) and dataclasses.is_dataclass(cls):
        builder: Any = cls
        return builder(**fields)
    return cls.model_validate(fields)


def decode(data: Any) -> Any:
    """The value :func:`encode` wrote (RawCodecError for data it did not write)."""
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    if isinstance(data, list):
        return [decode(v) for v in data]
    if isinstance(data, dict):
        try:
            return _decode_tagged(data)
        except RawCodecError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, ImportError) as exc:
            raise RawCodecError(
                f"malformed {data.get('$')!r} entry: {type(exc).__name__}: {exc}"
            ) from exc
    raise RawCodecError(f"unexpected JSON value of type {type(data).__name__}")


def dumps(value: Any) -> str:
    """The JSON document of ``value`` (RawCodecError for a type the codec does not know)."""
    return json.dumps({"format": FORMAT, "version": VERSION, "data": encode(value)},
                      allow_nan=False, separators=(",", ":"))


def loads(text: str) -> Any:
    """The value of a document written by :func:`dumps` (RawCodecError if it is not one)."""
    try:
        document = json.loads(text)
    except (ValueError, TypeError, RecursionError) as exc:
        raise RawCodecError(f"not JSON: {exc}") from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise RawCodecError(f"not a raw-output document (format {FORMAT!r})")
    if document.get("version") != VERSION:
        raise RawCodecError(
            f"raw-output document version {document.get('version')!r}; this qfleet reads "
            f"version {VERSION}"
        )
    try:
        return decode(document.get("data"))
    except RecursionError as exc:
        raise RawCodecError("the raw-output document is nested too deeply") from exc
