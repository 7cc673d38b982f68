"""Idempotency keys of submissions, as context for the executors.

A cluster gives every batch a key (see :mod:`qfleet.cluster.idempotency`): the same key means
the same work, so a retry under it must not run the work a second time. Two context
variables carry keys where no argument can:

- :func:`idempotent` (the caller's thread): a caller's own key for the calls in its block,
  e.g. the same key in a process restarted after a crash, so the restarted call re-attaches
  to the jobs the first one started instead of submitting them again.
- :func:`submitting` (the event loop, around ``submit``): the key of the batch being
  submitted. Backends whose protocol takes a client-chosen handle use it:
  :func:`backend_job_id` turns it into stable job ids (Azure Quantum job ids), so a
  resubmission after a lost reply names the job the backend already has.

Example:
    >>> with idempotent("nightly-run-42"):
    ...     caller_key()
    'nightly-run-42'
    >>> caller_key() is None
    True
    >>> with submitting("0123abcd"):
    ...     backend_job_id(0) == backend_job_id(0) != backend_job_id(1)
    True
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

from qfleet.errors import ExecutorError, QFleetError

__all__ = [
    "IdempotencyKeyError",
    "backend_job_id",
    "caller_key",
    "gather_or_cancel",
    "idempotent",
    "keeps_jobs_on",
    "submission_key",
    "submitting",
]

_CALLER: contextvars.ContextVar[str | None] = contextvars.ContextVar("qfleet_caller_key",
                                                                     default=None)
_SUBMITTING: contextvars.ContextVar[str | None] = contextvars.ContextVar("qfleet_submission",
                                                                         default=None)


class IdempotencyKeyError(QFleetError, ValueError):
    """An idempotency key is not a non-empty string, or was used again for a different batch."""


#: uuid5 namespace of the job ids derived from submission keys.
_NAMESPACE = uuid.UUID("6f1c2a52-6a0e-4d1b-9a53-0f9b3c1d2e7a")


@contextlib.contextmanager
def idempotent(key: str) -> Iterator[str]:
    """Run the cluster calls in this block under the caller's idempotency ``key`` (instead of
    a fresh key per call): a call whose batch a backend already accepted under this key
    re-attaches to those backend jobs, in this process or another."""
    if not isinstance(key, str) or not key:
        raise IdempotencyKeyError(
            f"an idempotency key is a non-empty string naming one call (e.g. "
            f"'nightly-run-42'), got {key!r}"
        )
    token = _CALLER.set(key)
    try:
        yield key
    finally:
        _CALLER.reset(token)


def caller_key() -> str | None:
    """The key of the enclosing :func:`idempotent` block, or None."""
    return _CALLER.get()


@contextlib.contextmanager
def submitting(key: str | None) -> Iterator[None]:
    """Mark the submissions in this block (one task on the event loop) with ``key``."""
    token = _SUBMITTING.set(key)
    try:
        yield
    finally:
        _SUBMITTING.reset(token)


def submission_key() -> str | None:
    """The key of the batch being submitted (see :func:`submitting`), or None."""
    return _SUBMITTING.get()


def backend_job_id(index: int) -> str | None:
    """A stable job id (a UUID) for circuit ``index`` of the batch being submitted, or None
    outside :func:`submitting` (then the backend's own scheme applies)."""
    key = _SUBMITTING.get()
    return None if key is None else str(uuid.uuid5(_NAMESPACE, f"{key}/{index}"))


def keeps_jobs_on(exc: BaseException) -> bool:
    """Whether jobs a batch created outlive ``exc``: a transient failure under a submission
    key leaves them to the retry, which re-attaches to them instead of submitting again."""
    return submission_key() is not None and isinstance(exc, ExecutorError) and exc.transient


async def gather_or_cancel(waits: Sequence[Awaitable[Any]],
                           cancel: Callable[[], Awaitable[None]]) -> list[Any]:
    """Wait for one backend job per circuit; when one fails, stop waiting for the others and
    cancel the batch's jobs -- unless :func:`keeps_jobs_on` the failure. Cancellation of the
    caller passes through (the base class cancels the jobs then)."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException as exc:
        for task in tasks:
            task.cancel()
        if not isinstance(exc, asyncio.CancelledError) and not keeps_jobs_on(exc):
            await asyncio.shield(cancel())
        raise
