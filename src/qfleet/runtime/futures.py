"""Futures whose final step runs on the thread that asks for the result."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, Self

from qfleet.runtime.caller import CallerThread
from qfleet.runtime.dispatcher import get_dispatcher

_UNSET = object()


class LazyFuture(concurrent.futures.Future):
    """A future over ``inner`` whose result is ``finish(inner.result())``.

    The backend work behind ``inner`` starts at once; ``finish`` (PennyLane post-processing,
    which is not thread-safe) runs once, on the first thread that asks for the result.
    Awaitable, and ``cancel()`` cancels the backend work.
    """

    def __init__(
        self,
        inner: concurrent.futures.Future,
        finish: Callable[[Any], Any],
        caller: CallerThread | None = None,
    ) -> None:
        super().__init__()
        self._inner = inner
        self._finish = finish
        self._caller = caller
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

    @classmethod
    def start(cls, coro: Coroutine[Any, Any, Any], finish: Callable[[Any], Any]) -> Self:
        """Start ``coro`` on the background loop; the future's waiters serve its tape work."""
        caller = CallerThread()
        return cls(get_dispatcher().submit(caller.bind(coro)), finish, caller)

    def result(self, timeout: float | None = None) -> Any:
        if self._caller is not None and not self._inner.done():
            started = time.monotonic()
            self._caller.wait(self._inner, timeout)
            if timeout is not None:
                timeout = max(timeout - (time.monotonic() - started), 0)
        raw = super().result(timeout)
        with self._final_lock:
            if self._final is _UNSET:
                self._final = self._finish(raw)
        return self._final

    def __await__(self):
        if self._caller is not None and not self._inner.done():
            # On the caller's own loop (Jupyter): serve the batch's tape work on it.
            yield from asyncio.ensure_future(self._caller.wait_async(self._inner)).__await__()
        yield from asyncio.wrap_future(self).__await__()
        return self.result()
