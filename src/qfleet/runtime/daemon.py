"""Blocking SDK calls on daemon threads, so pending backend work never keeps a finished
script alive.

``asyncio.to_thread`` runs calls on the loop's default thread pool, whose threads Python
joins at interpreter exit: a script that ends while an SDK call retries (the classiq SDK
retries an unreachable host for minutes) waits for it. :func:`in_daemon_thread` runs the
call on a daemon thread instead, which exit does not wait for; the call's result or error
comes back to the awaiting coroutine as with ``to_thread``. Durable jobs lose nothing: an
interrupted job is taken over by the next process (re-attached by backend job id).

Example:
    >>> import asyncio
    >>> asyncio.run(in_daemon_thread(sum, [1, 2, 3]))
    6
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def in_daemon_thread(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Await ``fn(*args, **kwargs)`` run on a new daemon thread."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    context = contextvars.copy_context()

    def settle(ok: bool, value: Any) -> None:
        if future.done():  # the awaiting coroutine was cancelled meanwhile
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def work() -> None:
        try:
            result = context.run(fn, *args, **kwargs)
        except BaseException as exc:  # handed to the awaiting coroutine
            outcome: tuple[bool, Any] = (False, exc)
        else:
            outcome = (True, result)
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=work, name=f"qfleet-sdk-{getattr(fn, '__name__', 'call')}",
                     daemon=True).start()
    return await future
