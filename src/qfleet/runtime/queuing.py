"""Thread-local recording contexts for PennyLane.

PennyLane's QueuingManager keeps the active recording contexts in one class-level list
shared by all threads: an operator created by a simulation on a worker thread is appended to
whatever tape the caller's thread is recording (DESIGN.md measured 26 lost operations in 3000
tapes). qfleet keeps all tape construction on the caller's thread; where simulations must run
on worker threads (LocalExecutor(parallel="thread"), DaskExecutor's threaded workers in
this process, a background minimization's optimizer thread), this makes the contexts per
thread. Nothing else installs it: tape work the background loop needs is done by a thread
waiting in qfleet (:mod:`qfleet.runtime.caller`), durable jobs finish their raw output on the
thread that asks for results.
"""

from __future__ import annotations

import threading

import pennylane.queuing
from pennylane.queuing import QueuingManager

_installed = False
_install_lock = threading.Lock()


def is_installed() -> bool:
    """Whether :func:`make_queuing_thread_safe` has patched PennyLane in this process."""
    return _installed


def make_queuing_thread_safe() -> None:
    """Give each thread its own stack of PennyLane recording contexts (idempotent)."""
    global _installed
    if _installed:  # fast path: called on every thread-parallel batch
        return
    with _install_lock:
        if _installed:
            return
        local = threading.local()
        # Contexts open right now belong to the installing thread.
        initial = list(QueuingManager._active_contexts)
        owner = threading.get_ident()

        def stack() -> list:
            try:
                return local.stack
            except AttributeError:
                local.stack = initial if threading.get_ident() == owner else []
                return local.stack

        def add_active_queue(cls, queue):
            stack().append(queue)

        def remove_active_queue(cls):
            return stack().pop()

        def recording(cls):
            return bool(stack())

        def active_context(cls):
            contexts = stack()
            return contexts[-1] if contexts else None

        # stop_recording() is also applied as a decorator at PennyLane's import time
        # (e.g. MeasurementProcess.diagonalizing_gates), holding the original generator
        # function: swap that function's code so every use sees per-thread stacks.
        pennylane.queuing._qfleet_thread_contexts = stack
        original = QueuingManager.stop_recording.__func__.__wrapped__
        original.__code__ = _stop_recording_per_thread.__code__

        QueuingManager.add_active_queue = classmethod(add_active_queue)
        QueuingManager.remove_active_queue = classmethod(remove_active_queue)
        QueuingManager.recording = classmethod(recording)
        QueuingManager.active_context = classmethod(active_context)
        _installed = True


def _stop_recording_per_thread(cls):
    # Runs with pennylane.queuing's globals (its code replaces stop_recording's).
    contexts = _qfleet_thread_contexts()  # noqa: F821 - injected into pennylane.queuing
    saved = contexts[:]
    contexts.clear()
    try:
        yield
    finally:
        contexts[:] = saved
