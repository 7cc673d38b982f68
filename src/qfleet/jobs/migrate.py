"""Reading the pickled tapes of job stores written before schema 2, without running code.

Schema 1 kept each job's tapes as a pickle. A pickle names callables that unpickling calls,
so a row replaced by a crafted pickle would run whatever it names. The migration to
schema 2 (tapes as JSON, :mod:`qfleet.circuits.tape_json`) therefore reads old rows only
through :class:`SafeUnpickler`, which resolves nothing but PennyLane's circuit classes
(operators, measurements, tapes, wires, shots, Pauli words), numpy arrays and scipy sparse
matrices. Anything else (``os.system``, ``builtins.eval``, ``subprocess.Popen``, a class of
another package) is refused before it is called: that row's tapes are recorded as
unavailable (its saved results, if any, are kept) and an unfinished job is marked FAILED
with the reason, so it is never re-run from data nobody can vouch for.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

#: Non-PennyLane globals a pickled tape may name: numpy's and scipy's array rebuilders.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.dtypes", "Float64DType"),
    ("numpy.dtypes", "Complex128DType"),
    ("numpy.dtypes", "Int64DType"),
    ("builtins", "complex"),
    ("builtins", "frozenset"),
    ("builtins", "set"),
    ("builtins", "slice"),
    ("copyreg", "_reconstructor"),
    ("builtins", "object"),
    ("collections", "OrderedDict"),
    ("scipy.sparse._csr", "csr_matrix"),
    ("scipy.sparse._csr", "csr_array"),
    ("scipy.sparse._csc", "csc_matrix"),
    ("scipy.sparse._coo", "coo_matrix"),
}


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle names something other than PennyLane circuit classes and numpy arrays."""


def _pennylane_bases() -> tuple[type, ...]:
    import numpy as np
    from pennylane.measurements import MeasurementProcess, MeasurementValue, Shots
    from pennylane.measurements.shots import ShotCopies
    from pennylane.operation import Operator
    from pennylane.pauli import PauliSentence, PauliWord
    from pennylane.tape import QuantumScript
    from pennylane.wires import Wires

    return (Operator, MeasurementProcess, MeasurementValue, QuantumScript, Wires, Shots,
            ShotCopies, PauliWord, PauliSentence, np.ndarray)


class SafeUnpickler(pickle.Unpickler):
    """Unpickles PennyLane tapes and nothing else (see the module docstring)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        if module.split(".")[0] == "pennylane" and "." not in name:
            found = super().find_class(module, name)  # imports a PennyLane module at most
            if isinstance(found, type) and issubclass(found, _pennylane_bases()):
                return found
        raise UnsafePickleError(
            f"the pickle names {module}.{name}, which is not a PennyLane circuit class; "
            f"refused (reading it could run code)"
        )


def safe_load_tapes(data: bytes) -> tuple[Any, ...]:
    """The tapes a schema-1 row pickled; UnsafePickleError for anything else."""
    from pennylane.tape import QuantumScript

    try:
        tapes = SafeUnpickler(io.BytesIO(data)).load()
    except UnsafePickleError:
        raise
    except Exception as exc:  # truncated or garbled pickle
        raise UnsafePickleError(f"the pickle is unreadable: {type(exc).__name__}: {exc}") from exc
    if not isinstance(tapes, (tuple, list)) or not all(
        isinstance(t, QuantumScript) for t in tapes
    ):
        raise UnsafePickleError(f"the pickle holds a {type(tapes).__name__}, not tapes")
    return tuple(tapes)
