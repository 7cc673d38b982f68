"""Tape work the background loop hands back to a thread that waits in qfleet.

PennyLane's recording contexts are one list shared by all threads, so tape work (preparing a
batch for another cluster member on failover or late binding) must not run on a thread of
qfleet's own: it would record into whatever tape the caller's thread builds at that moment.
The loop asks for it with :func:`on_caller_thread`, and a thread that is blocked waiting in
qfleet does it (DESIGN.md's threading rule):

1. the batch's own waiter: the thread blocked in ``Dispatcher.run`` or in a ``run_later``
   future's ``result()``/``await``;
2. else any thread blocked waiting in qfleet: the work goes to one process-wide pool that
   every waiter serves (the waiter of another batch, a durable job's ``poll``/``result``
   via :func:`serve_while_waiting`), so concurrent ``run_later`` futures with late binding
   all make progress while the caller waits on the first of them;
3. else it waits in the pool until such a thread comes.

No worker thread ever does tape work here, so PennyLane's queuing stays as PennyLane made it
(:mod:`qfleet.runtime.queuing` is for thread-mode local simulation only).
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

from pennylane.queuing import QueuingManager

T = TypeVar("T")

_current: contextvars.ContextVar[CallerThread | None] = contextvars.ContextVar(
    "qfleet_caller_thread", default=None
)
_DONE = object()  # the awaited future is done
_WAKE = object()  # work arrived in the process-wide pool

_pool: queue.SimpleQueue[Any] = queue.SimpleQueue()
"""Tape work no batch waiter took: served by any thread waiting in qfleet."""
_waiters: set[queue.SimpleQueue[Any]] = set()
"""The channels of the threads waiting in qfleet right now (woken for pool work)."""
_waiters_lock = threading.Lock()


def _to_pool(item: tuple) -> None:
    with _waiters_lock:  # with registration: a waiter either gets _WAKE or finds the item
        _pool.put(item)
        for channel in _waiters:
            channel.put(_WAKE)


def pending() -> int:
    """How many pieces of tape work wait in the pool for a thread waiting in qfleet."""
    return _pool.qsize()


def serve_pending() -> None:
    """Do the tape work waiting in the process-wide pool, on this thread, now."""
    while True:
        try:
            item = _pool.get_nowait()
        except queue.Empty:
            return
        _serve(item)


@contextlib.contextmanager
def _registered(channel: queue.SimpleQueue[Any]) -> Iterator[None]:
    with _waiters_lock:
        _waiters.add(channel)
    try:
        serve_pending()  # what arrived before this thread came
        yield
    finally:
        with _waiters_lock:
            _waiters.discard(channel)


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(deadline - time.monotonic(), 0)


def _wait_on(channel: queue.SimpleQueue[Any], future: concurrent.futures.Future[Any],
             timeout: float | None) -> bool:
    """Block until ``future`` is done (True) or ``timeout`` passed (False), doing the work
    that comes on ``channel`` and in the pool meanwhile."""
    future.add_done_callback(lambda _: channel.put(_DONE))
    deadline = None if timeout is None else time.monotonic() + timeout
    with _registered(channel):
        while not future.done():
            try:
                item = channel.get(timeout=_remaining(deadline))
            except queue.Empty:
                return False
            if _handled(channel, item):
                break
    return True


def _handled(channel: queue.SimpleQueue[Any], item: Any) -> bool:
    """Do what ``item`` from ``channel`` asks; True when it says the future is done."""
    if item is _DONE:
        channel.put(_DONE)  # other threads waiting on the same channel wake too
        return True
    if item is _WAKE:
        serve_pending()
    else:
        _serve(item)
    return False


async def _wait_on_async(channel: queue.SimpleQueue[Any], future: concurrent.futures.Future[Any],
                         timeout: float | None) -> bool:
    """:func:`_wait_on` on the caller's own event loop (Jupyter): the work runs on the
    loop's thread, which is the caller's; only the blocking ``get`` goes to a thread."""
    future.add_done_callback(lambda _: channel.put(_DONE))
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else time.monotonic() + timeout
    with _registered(channel):
        while not future.done():
            try:
                item = await loop.run_in_executor(None, _get, channel, _remaining(deadline))
            except queue.Empty:
                return False
            if _handled(channel, item):
                break
    return True


def _get(channel: queue.SimpleQueue[Any], timeout: float | None) -> Any:
    return channel.get(timeout=timeout)


def serve_while_waiting(future: concurrent.futures.Future[Any], timeout: float | None) -> bool:
    """Wait up to ``timeout`` seconds for ``future`` (True once done), doing the pool's
    tape work meanwhile (a durable job's poll waits so for the job's batch)."""
    return _wait_on(queue.SimpleQueue(), future, timeout)


async def serve_while_waiting_async(future: concurrent.futures.Future[Any],
                                    timeout: float | None) -> bool:
    """:func:`serve_while_waiting` on the caller's own event loop."""
    return await _wait_on_async(queue.SimpleQueue(), future, timeout)


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
        loop = asyncio.get_running_loop()
        settled: asyncio.Future[T] = loop.create_future()
        item = (fn, args, settled, loop)
        with self._lock:  # with _waiter's exit: an item never stays behind unserved
            if self._waiting:
                self._items.put(item)
            else:
                _to_pool(item)
        return await settled

    # -- caller side ----------------------------------------------------------------------

    def wait(self, future: concurrent.futures.Future[T], timeout: float | None = None) -> T:
        """``future.result(timeout)``, serving the loop's tape work meanwhile."""
        with self._waiter():
            done = _wait_on(self._items, future, timeout)
        if not done:
            raise concurrent.futures.TimeoutError()
        return future.result(0)

    async def wait_async(self, future: concurrent.futures.Future[T]) -> T:
        """Await ``future`` on a caller's own event loop (Jupyter), serving tape work on it."""
        with self._waiter():
            await _wait_on_async(self._items, future, None)
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
                if not self._waiting:  # the last waiter left (a timeout): hand on its work
                    self._hand_on()

    def _hand_on(self) -> None:
        done = False
        while True:
            try:
                item = self._items.get_nowait()
            except queue.Empty:
                break
            if item is _DONE:
                done = True
            elif item is not _WAKE:
                _to_pool(item)
        if done:
            self._items.put(_DONE)


def _serve(item: tuple) -> None:
    fn, args, settled, loop = item
    try:
        # The waiting thread may be recording a tape of its own (a QNode called inside a
        # QNode's function): the batch's tape work must not land in it.
        with QueuingManager.stop_recording():
            value = fn(*args)
    except BaseException as exc:  # handed to the loop, which raises it where it waits
        outcome: tuple[Any, BaseException | None] = (None, exc)
    else:
        outcome = (value, None)
    with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
        loop.call_soon_threadsafe(_settle, settled, *outcome)


def _settle(settled: asyncio.Future, value: Any, error: BaseException | None) -> None:
    if settled.done():  # the batch was cancelled meanwhile
        return
    if error is not None:
        settled.set_exception(error)
    else:
        settled.set_result(value)


async def on_caller_thread(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on a thread waiting in qfleet (see the module docstring), or right
    here when this coroutine runs on the caller's own loop (the async API), whose thread is
    the caller's."""
    caller = _current.get()
    if caller is not None:
        return await caller.call(fn, *args)
    from qfleet.runtime.dispatcher import on_dispatcher_loop  # it imports this module

    if not on_dispatcher_loop():
        return fn(*args)
    # Driven by nobody's future (a durable job): whoever waits in qfleet does it.
    loop = asyncio.get_running_loop()
    settled: asyncio.Future[T] = loop.create_future()
    _to_pool((fn, args, settled, loop))
    return await settled
