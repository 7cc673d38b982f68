"""One background asyncio loop per process, for executor I/O.

Why a private loop: the caller may already run one (Jupyter), and ``asyncio.run`` inside it
fails; scheduling onto a loop owned by another thread is only safe through
``run_coroutine_threadsafe``. The loop thread does I/O and waits only — PennyLane is not
thread-safe, so tapes are built and post-processed on the caller's thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from qfleet.runtime.caller import CallerThread

T = TypeVar("T")


class Dispatcher:
    """Runs coroutines on a daemon thread's event loop and hands back futures.

    Example:
        >>> fut = get_dispatcher().submit(asyncio.sleep(0, result=42))
        >>> fut.result()
        42
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(started,), name="qfleet-dispatcher", daemon=True
        )
        self._thread.start()
        started.wait()

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(started.set)
        self._loop.run_forever()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the background loop; returns at once."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the background loop and block the caller until it is done,
        doing the tape work the loop hands back meanwhile (see :mod:`qfleet.runtime.caller`)."""
        if threading.current_thread() is self._thread:
            raise RuntimeError(
                "Dispatcher.run called from the dispatcher's own loop (would deadlock)"
            )
        caller = CallerThread()
        future = self.submit(caller.bind(coro))
        try:
            return caller.wait(future, timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise
        except KeyboardInterrupt:
            future.cancel()
            raise


_lock = threading.Lock()
_dispatcher: Dispatcher | None = None


def get_dispatcher() -> Dispatcher:
    """The process's dispatcher, started on first use."""
    global _dispatcher
    if _dispatcher is None:
        with _lock:
            if _dispatcher is None:
                _dispatcher = Dispatcher()
    return _dispatcher


def on_dispatcher_loop() -> bool:
    """Whether the running coroutine runs on this process's background loop (starts none)."""
    dispatcher = _dispatcher
    return dispatcher is not None and asyncio.get_running_loop() is dispatcher.loop


def _forget_after_fork() -> None:
    # A forked child has the parent's loop object but not its thread: start afresh.
    global _dispatcher, _lock
    _dispatcher = None
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
