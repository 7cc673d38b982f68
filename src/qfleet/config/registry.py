"""The executor classes config sections may configure (``[executors.<ClassName>]``).

Executors register themselves through the ``qfleet.executors`` entry point group (this
package's own backends and any installed plugin); the config layer reads the registry and
never imports executor modules itself. ``register_executor`` adds a class at run time (an
executor defined in user code).
"""

from __future__ import annotations

import threading
from importlib.metadata import entry_points
from typing import Any

ENTRY_POINT_GROUP = "qfleet.executors"

_registered: dict[str, type] = {}
_loaded = False
_lock = threading.Lock()


def register_executor(cls: type) -> type:
    """Make ``cls`` configurable by its class name (usable as a class decorator)."""
    with _lock:
        _registered[cls.__name__] = cls
    return cls


def executor_classes() -> dict[str, Any]:
    """Registered executor classes by name (entry points loaded on first use)."""
    global _loaded
    with _lock:
        if not _loaded:
            for point in entry_points(group=ENTRY_POINT_GROUP):
                _registered.setdefault(point.name, point.load())
            _loaded = True
        return dict(_registered)
