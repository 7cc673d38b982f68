"""Tasks nobody awaits (a clean-up cancel, a terminate, a batch never collected).

The event loop keeps only weak references to its tasks, so such a task can be garbage
collected before it finishes; :func:`keep` holds it until it is done.

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
from collections.abc import Coroutine
from typing import Any

_running: set[asyncio.Task] = set()


def keep(work: Coroutine[Any, Any, Any]) -> asyncio.Task:
    """Run ``work`` as a task of the running loop and hold it until it is done."""
    task = asyncio.get_running_loop().create_task(work)
    _running.add(task)
    task.add_done_callback(_running.discard)
    return task


__all__ = ["keep"]
