"""The per-process background event loop that runs executor I/O."""

from qfleet.runtime.dispatcher import Dispatcher, get_dispatcher

__all__ = ["Dispatcher", "get_dispatcher"]
