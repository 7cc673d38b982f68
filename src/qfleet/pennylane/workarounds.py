"""Work-arounds for PennyLane behaviour that costs every QNode call; each says which.

Applied once, when ``qfleet.pennylane`` is imported.
"""

from __future__ import annotations

import importlib
import sys

#: PennyLane's program-capture converter, imported by every new ``Transform``.
CAPTURE_CONVERTER = "pennylane.tape.plxpr_conversion"


def remember_failed_capture_import() -> bool:
    """Make a failing import of PennyLane's capture converter fail fast, once and for all.

    PennyLane 0.45 builds a new ``Transform`` for a gradient transform's expand function
    on every QNode call (``workflow._setup_transform_program``), and every new
    ``Transform`` tries ``from pennylane.tape import plxpr_to_tape`` (for program capture;
    ``ImportError`` means "no capture"). With a jax release PennyLane's capture code does
    not support, that import fails half-way, Python forgets the half-imported modules, and
    the next call executes them again: about 1 ms per parameter-shift QNode call. A
    ``None`` entry in ``sys.modules`` is Python's own way to say "this module cannot be
    imported": the import then raises ImportError at once, which is what PennyLane
    expects when capture is unavailable. Where the import works, nothing changes.

    Returns whether the work-around was applied.
    """
    if CAPTURE_CONVERTER in sys.modules:
        return sys.modules[CAPTURE_CONVERTER] is None
    try:
        importlib.import_module(CAPTURE_CONVERTER)
    except ImportError:
        return False  # jax is not installed: PennyLane's import fails fast by itself
    except Exception:  # a jax that PennyLane's capture code does not support
        sys.modules[CAPTURE_CONVERTER] = None  # type: ignore[assignment]
        return True
    return False


__all__ = ["remember_failed_capture_import"]
