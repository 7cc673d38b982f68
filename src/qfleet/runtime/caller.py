"""Tape work the background loop hands back to the thread that waits for a batch.

PennyLane's recording contexts are not thread-safe, so tape work (preparing a batch for
another cluster member on failover or late binding) belongs on the caller's thread. The
loop asks for it with :func:`on_caller_thread`; the thread blocked in ``Dispatcher.run`` or
in a ``run_later`` future's ``result()`` serves it while it waits (DESIGN.md's threading
rule). Where no thread waits at that moment (a ``run_later`` future nobody has asked yet, a
durable job driving itself) the work goes to a worker thread, with per-thread recording
contexts, so a batch never stalls for want of a waiter.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import queue
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_current: contextvars.ContextVar[CallerThread | None] = contextvars.ContextVar(
    "qfleet_caller_thread", default=None
)
_DONE = object()


class CallerThread:
    """A channel from the loop to the thread that waits for one batch's future."""

    def __init__(self) -> None:
        self._items: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._waiting = 0
        self._lock = threading.Lock()

    def bind(self, coro: Coroutine[Any, Any, T]) -> Coroutine[Any, Any, T]:
        """``coro`` running with this channel as its caller thread (tasks it starts too)."""

        async def bound() -> T:
            _current.set(self)
            return await coro

        return bound()

    # -- loop side ------------------------------------------------------------------------

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        if not self._waiting:
            return await _on_worker_thread(fn, *args)
        loop = asyncio.get_running_loop()
        settled: asyncio.Future[T] = loop.create_future()
        self._items.put((fn, args, settled, loop))
        return await settled

    # -- caller side ----------------------------------------------------------------------

    def wait(self, future: concurrent.futures.Future[T], timeout: float | None = None) -> T:
        """``future.result(timeout)``, serving the loop's tape work meanwhile."""
        future.add_done_callback(lambda _: self._items.put(_DONE))
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._waiter():
            while not future.done():
                remaining = None if deadline is None else max(deadline - time.monotonic(), 0)
                try:
                    item = self._items.get(timeout=remaining)
                except queue.Empty:
                    raise concurrent.futures.TimeoutError() from None
                if item is _DONE:
                    self._items.put(_DONE)  # other threads waiting on the same future wake too
                    break
                _serve(item)
        return future.result(0)

    @contextlib.contextmanager
    def _waiter(self) -> Iterator[None]:
        with self._lock:
            self._waiting += 1
        try:
            yield
        finally:
            with self._lock:
                self._waiting -= 1

    async def wait_async(self, future: concurrent.futures.Future[T]) -> T:
        """Await ``future`` on a caller's own event loop (Jupyter), serving tape work on it."""
        future.add_done_callback(lambda _: self._items.put(_DONE))
        loop = asyncio.get_running_loop()
        with self._waiter():
            while not future.done():
                item = await loop.run_in_executor(None, self._items.get)
                if item is _DONE:
                    self._items.put(_DONE)
                    break
                _serve(item)
        return future.result(0)


def _serve(item: tuple) -> None:
    fn, args, settled, loop = item
    try:
        value = fn(*args)
    except BaseException as exc:  # handed to the loop, which raises it where it waits
        loop.call_soon_threadsafe(_settle, settled, None, exc)
    else:
        loop.call_soon_threadsafe(_settle, settled, value, None)


def _settle(settled: asyncio.Future, value: Any, error: BaseException | None) -> None:
    if settled.done():  # the batch was cancelled meanwhile
        return
    if error is not None:
        settled.set_exception(error)
    else:
        settled.set_result(value)


async def on_caller_thread(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on the thread waiting for this batch: served by the waiter on qfleet's
    own loop, or right here when this coroutine runs on the caller's own loop (the async
    API), whose thread is the caller's."""
    caller = _current.get()
    if caller is not None:
        return await caller.call(fn, *args)
    from qfleet.runtime.dispatcher import on_dispatcher_loop  # it imports this module

    if not on_dispatcher_loop():
        return fn(*args)
    return await _on_worker_thread(fn, *args)


async def _on_worker_thread(fn: Callable[..., T], *args: Any) -> T:
    # Nobody waits: a worker thread, with per-thread recording contexts so it cannot
    # disturb tapes being built elsewhere.
    from qfleet.runtime.queuing import make_queuing_thread_safe

    make_queuing_thread_safe()
    return await asyncio.to_thread(fn, *args)
