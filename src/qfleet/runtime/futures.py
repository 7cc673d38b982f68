"""Futures whose final step runs on the thread that asks for the result."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any

_UNSET = object()


class LazyFuture(concurrent.futures.Future):
    """A future over ``inner`` whose result is ``finish(inner.result())``.

    The backend work behind ``inner`` starts at once; ``finish`` (PennyLane post-processing,
    which is not thread-safe) runs once, on the first thread that asks for the result.
    Awaitable, and ``cancel()`` cancels the backend work.
    """

    def __init__(self, inner: concurrent.futures.Future, finish: Callable[[Any], Any]) -> None:
        super().__init__()
        self._inner = inner
        self._finish = finish
        self._final: Any = _UNSET
        self._final_lock = threading.Lock()
        inner.add_done_callback(self._mirror)

    def _mirror(self, inner: concurrent.futures.Future) -> None:
        if inner.cancelled():
            concurrent.futures.Future.cancel(self)
            self.set_running_or_notify_cancel()
        elif inner.exception() is not None:
            self.set_exception(inner.exception())
        else:
            self.set_result(inner.result())

    def cancel(self) -> bool:
        """Cancel the backend work (the executor cancels or terminates its job)."""
        return self._inner.cancel()

    @property
    def raw(self) -> Any:
        """The unfinished result (raises if not done)."""
        return super().result(0)

    def result(self, timeout: float | None = None) -> Any:
        raw = super().result(timeout)
        with self._final_lock:
            if self._final is _UNSET:
                self._final = self._finish(raw)
        return self._final

    def __await__(self):
        yield from asyncio.wrap_future(self).__await__()
        return self.result()
