"""Tasks nobody awaits, and objects that belong to one event loop.

The event loop keeps only weak references to its tasks, so such a task (a clean-up cancel,
a terminate, a batch never collected) can be garbage collected before it finishes;
:func:`keep` holds it until it is done. :func:`per_loop` keeps loop-bound objects
(semaphores, conditions) per running loop, forgotten with the loop.

Example:
    >>> import asyncio
    >>> async def main():
    ...     task = keep(asyncio.sleep(0, result="done"))
    ...     return await task
    >>> asyncio.run(main())
    'done'
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_running: set[asyncio.Task] = set()


def keep(work: Coroutine[Any, Any, Any]) -> asyncio.Task:
    """Run ``work`` as a task of the running loop and hold it until it is done."""
    task = asyncio.get_running_loop().create_task(work)
    _running.add(task)
    task.add_done_callback(_running.discard)
    return task


__all__ = ["keep"]


def per_loop(cache: dict[Any, Any], name: str, make: Callable[[], T]) -> T:
    """``cache[name]``'s object for the running loop, made by ``make()`` on first use.

    Keyed by the loop itself, weakly: a loop that is gone (each ``asyncio.run``) takes its
    objects with it, and a new loop never finds an old loop's object (an ``id`` can be
    reused).

    Example:
        >>> import gc
        >>> cache = {}
        >>> async def limit():
        ...     return per_loop(cache, "limit", lambda: asyncio.Semaphore(2))
        >>> asyncio.run(limit()) is asyncio.run(limit())   # one per loop
        False
        >>> _ = gc.collect()
        >>> len(cache["limit"])   # both loops are gone, and their semaphores with them
        0
    """
    loop = asyncio.get_running_loop()
    by_loop = cache.get(name)
    if by_loop is None:
        by_loop = cache.setdefault(name, weakref.WeakKeyDictionary())
    found = by_loop.get(loop)
    if found is None:
        found = by_loop[loop] = make()
    return found
