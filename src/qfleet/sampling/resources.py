"""The resource guard: a simulation that cannot fit in memory is refused before it starts.

Without it, 60 qubits on a state-vector simulator allocate until the kernel kills the
process, 34 qubits end in numpy's bare ``_ArrayMemoryError``, and ``shots=10**12`` the same.
:func:`check_memory` estimates what a batch needs and raises
:class:`SimulationTooLargeError` (stating the estimate, how it was made, and the limit)
when that exceeds the limit:

* the smaller of the memory available now (psutil, else ``/proc/meminfo``) -- for a
  simulator running in this machine -- and
* a configured cap: ``QFLEET_MEMORY_LIMIT`` (bytes, or ``"8GiB"``, ``"500MB"``, ...).

The estimate per circuit (one circuit is simulated at a time per worker): the state,
``16 B x 2**n`` (complex128; ``16 B x 4**n`` for a density matrix), twice (a gate writes a
new array beside the old one), times the broadcast size; plus the shots' sample buffer,
``8 B x n x shots``, when it samples.

Example:
    >>> import pennylane as qml
    >>> tape = qml.tape.QuantumScript([qml.Hadamard(i) for i in range(60)], [qml.probs()])
    >>> try:
    ...     check_memory([tape], executor="LocalExecutor", limit=2**30)
    ... except SimulationTooLargeError as exc:
    ...     print(str(exc)[:72])
    LocalExecutor: simulating this batch needs about 32 EiB (60 qubits: stat
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from typing import Any

from qfleet.errors import ConfigError, UnsupportedCircuitError

ENV_LIMIT = "QFLEET_MEMORY_LIMIT"
_WORKING_COPIES = 2
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
          "gb": 10**9, "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30,
          "tib": 2**40}


class SimulationTooLargeError(UnsupportedCircuitError):
    """A simulation would need more memory than is available or allowed."""


def human(size: float) -> str:
    """``size`` bytes as text with a binary unit (``"1.5 GiB"``)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if size < 1024 or unit == "EiB":
            return f"{size:.3g} {unit}"
        size /= 1024
    raise AssertionError  # pragma: no cover


def parse_size(text: str, source: str = ENV_LIMIT) -> int:
    """``"8GiB"``, ``"500 MB"``, ``"1e9"`` -> bytes; ConfigError naming ``source`` else."""
    match = re.fullmatch(r"\s*([0-9.eE+]+)\s*([a-zA-Z]*)\s*", text)
    unit = match[2].lower() if match else ""
    try:
        value = float(match[1]) if match else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0 or unit not in _UNITS:
        raise ConfigError(
            f"{source}={text!r} is not a memory size; write bytes or a number with a unit, "
            f"e.g. 8GiB, 500MB, 2e9"
        )
    return int(value * _UNITS[unit])


def configured_limit() -> int | None:
    """The cap from ``QFLEET_MEMORY_LIMIT``, or None."""
    raw = os.environ.get(ENV_LIMIT)
    return parse_size(raw) if raw and raw.strip() else None


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation now (None if unknown)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # psutil missing: Linux's own figure
        pass
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _estimate(tape: Any, mixed: bool) -> tuple[float, str]:
    from pennylane.operation import Channel

    n = len(tape.wires)
    density = mixed or any(isinstance(op, Channel) for op in tape.operations)
    per_state = 16.0 * (4.0**n if density else 2.0**n)
    batch = tape.batch_size or 1
    state = per_state * _WORKING_COPIES * batch
    what = (f"{n} qubits: {'density matrix 16 B x 4^n' if density else 'state 16 B x 2^n'}"
            f" x {_WORKING_COPIES} working copies" + (f" x {batch} broadcast" if batch > 1 else ""))
    shots = tape.shots.total_shots if tape.shots else None
    if shots:
        samples = 8.0 * max(n, 1) * shots * batch
        what += f" + samples 8 B x {max(n, 1)} wires x {shots} shots"
        return state + samples, what
    return state, what


#: Below this need a batch is not checked against the machine's free memory: every machine
#: qfleet runs on has it, and asking the OS costs ~0.1 ms per batch on the hot path.
ALWAYS_AVAILABLE = 64 * 2**20


def _upper_bound(tape: Any) -> float:
    """What ``tape`` needs at most (as if a density matrix), without looking at its gates."""
    n = len(tape.wires)
    shots = tape.shots.total_shots if tape.shots else 0
    batch = tape.batch_size or 1
    return (16.0 * 4.0**n * _WORKING_COPIES + 8.0 * max(n, 1) * (shots or 0)) * batch


def check_memory(tapes: Sequence[Any], *, executor: str, mixed: bool = False,
                 local: bool = True, limit: int | None = None) -> None:
    """Raise SimulationTooLargeError if simulating ``tapes`` needs more memory than the
    limit (see the module docstring). ``local``: the simulator runs on this machine, so
    its available memory counts; ``limit``: a cap instead of ``QFLEET_MEMORY_LIMIT``."""
    if not tapes:
        return
    cap = configured_limit() if limit is None else limit
    bound = max(_upper_bound(t) for t in tapes)
    if bound <= ALWAYS_AVAILABLE and (cap is None or bound <= cap):
        return  # small: no gate scan, no OS query
    need, what = max((_estimate(t, mixed) for t in tapes), key=lambda e: e[0])
    free = available_memory() if local else None
    bounds = [b for b in (cap, free) if b is not None]
    if not bounds or need <= min(bounds):
        return
    allowed = min(bounds)
    why = []
    if free is not None:
        why.append(f"available memory {human(free)}")
    if cap is not None:
        why.append(f"{ENV_LIMIT if limit is None else 'limit'} {human(cap)}")
    raise SimulationTooLargeError(
        f"{executor}: simulating this batch needs about {human(need)} ({what}), more than "
        f"the limit of {human(allowed)} ({'; '.join(why)}); use fewer qubits or shots, a "
        f"machine with more memory or a hardware backend (raise {ENV_LIMIT} only if the "
        f"memory is really there)"
    )
