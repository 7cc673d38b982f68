"""The job processor's side of 2300: a lazy-pirate REQ client and a state listener (pyzmq).

:class:`LazyPirateClient` sends one request at a time on a REQ socket. When no reply comes
within ``timeout`` it closes the socket (a REQ socket that lost its reply can never send
again), opens a new one and sends the request again, up to ``retries`` times, then raises
:class:`NoReply`. An ``on_retry`` hook runs before each resend (the executor re-sends
``initialize`` there: a 2300 that restarted has forgotten the lock).

A resend is the same request, byte for byte: an ``execute`` keeps its ``session_id`` and
``job_id``. When only the reply was lost, the 2300 has run the circuit already; qfleet's rule,
and its emulator's (:mod:`qfleet.protocols.p2300.session`), is that such a repeated
``execute`` gets the stored reply back instead of a second run. The compute-runtime schema
does not say what a real 2300 does with a repeated ``job_id`` (unknown): there a lost reply
may mean the circuit runs twice. A batch resubmitted after :class:`NoReply` (a new session)
runs again everywhere: nothing in the protocol finds an earlier session's results.

:class:`StateListener` keeps the latest ``publish_state`` from 2300's PUB socket and lets a
caller wait until 2300 is available (IDLE or EXECUTING).

Both use ``zmq.asyncio`` and must be used on one event loop; :func:`request_sync` is the
blocking one-shot variant for the caller's thread. pyzmq is imported here, so importing this
module needs the ``qutech`` extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import zmq
import zmq.asyncio

from qfleet.protocols.p2300 import messages as m
from qfleet.protocols.p2300.messages import ProtocolError, Reply, State
from qfleet.protocols.p2300.session import MAX_REQUEST_BYTES

log = logging.getLogger("qfleet.p2300")

_contexts: dict[int, zmq.asyncio.Context] = {}


def async_context() -> zmq.asyncio.Context:
    """This process's asyncio ZeroMQ context (a forked child gets its own)."""
    pid = os.getpid()
    context = _contexts.get(pid)
    if context is None or context.closed:
        context = _contexts[pid] = zmq.asyncio.Context()
    return context


class NoReply(TimeoutError):
    """2300 did not answer a request in ``timeout`` seconds, ``retries + 1`` times."""

    def __init__(self, address: str, command: str, attempts: int, timeout: float):
        super().__init__(
            f"no reply from {address} to {command!r} after {attempts} attempt(s) of "
            f"{timeout:g} s; is 2300 (or `qfleet serve-2300`) running there?"
        )
        self.address, self.command = address, command
        self.attempts, self.timeout = attempts, timeout


class Unavailable(TimeoutError):
    """2300 stayed CALIBRATING / OFFLINE / BENCHMARKING for longer than the wait allowed."""

    def __init__(self, state: State, waited: float):
        super().__init__(
            f"2300 is {state.value} and did not become IDLE within {waited:g} s; try again "
            f"later or raise the executor's timeout"
        )
        self.state, self.waited = state, waited


class RequestTooLarge(ValueError):
    """A request larger than a 2300 accepts (ZeroMQ would drop it without a reply)."""

    def __init__(self, command: str, size: int, limit: int = MAX_REQUEST_BYTES):
        super().__init__(
            f"{command} request of {size} bytes is larger than the {limit} bytes "
            f"({limit // (1024 * 1024)} MiB) a 2300 accepts; send fewer or smaller circuits"
        )
        self.size, self.limit = size, limit


class NoStateWarning(UserWarning):
    """A subscribe address that delivers no ``publish_state`` (wrong address, or a 2300
    without a PUB socket): no state, no heartbeat, so no waiting for calibration and no
    keeping long jobs alive."""


def _encoded(command: str, session_id: str, payload: dict[str, Any] | None) -> bytes:
    data = m.request(command, session_id, payload)
    if len(data) > MAX_REQUEST_BYTES:
        raise RequestTooLarge(command, len(data))
    return data


def _check_reply(data: bytes, session_id: str) -> Reply:
    reply = m.decode_reply(data)
    if reply.session_id != session_id:
        raise ProtocolError(
            f"reply for session {reply.session_id!r} to a request of session {session_id!r}"
        )
    return reply


class LazyPirateClient:
    """A REQ socket with timeouts and retries ("lazy pirate", ZeroMQ guide ch. 4).

    Example (needs a 2300 at the address, e.g. ``qfleet serve-2300``):
        >>> client = LazyPirateClient("tcp://127.0.0.1:4203", timeout=5, retries=2)
        >>> reply = asyncio.run(client.request("get_static", "s"))  # doctest: +SKIP
        >>> reply.payload["nqubits"]  # doctest: +SKIP
        8
    """

    def __init__(
        self,
        address: str,
        timeout: float,
        retries: int,
        context: zmq.asyncio.Context | None = None,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.retries = retries
        self._context = context or async_context()
        self._socket: zmq.asyncio.Socket | None = None
        self.reconnects = 0

    def _open(self) -> zmq.asyncio.Socket:
        if self._socket is None:
            sock = self._context.socket(zmq.REQ)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(self.address)
            self._socket = sock
        return self._socket

    def reset(self) -> None:
        """Drop the socket (and any reply still owed to it); the next request opens a new one."""
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    close = reset

    async def request(
        self,
        command: str,
        session_id: str,
        payload: dict[str, Any] | None = None,
        *,
        retries: int | None = None,
        on_retry: Callable[[], Awaitable[None]] | None = None,
        keep_waiting: Callable[[], bool] | None = None,
    ) -> Reply:
        """Send one request and return the reply (success or failure: the caller decides).

        ``keep_waiting()`` is asked each time ``timeout`` passes without a reply: while it
        says True (e.g. 2300 publishes EXECUTING: a long job, not a lost reply) the same
        request goes on waiting instead of counting as an unanswered attempt.

        Raises :class:`NoReply` after ``retries + 1`` unanswered attempts and
        :class:`~qfleet.protocols.p2300.messages.ProtocolError` for a reply that is not a
        2300 reply to this request.
        """
        data = _encoded(command, session_id, payload)
        retries = self.retries if retries is None else retries
        timeout_ms = max(1, int(self.timeout * 1000))
        for attempt in range(retries + 1):
            if attempt:
                self.reconnects += 1
                log.info(
                    "no reply from %s to %s; reconnecting (attempt %d)",
                    self.address, command, attempt + 1,
                )  # fmt: skip
                if on_retry is not None:
                    await on_retry()
            sock = self._open()
            try:
                await sock.send(data)
                while True:
                    # pyzmq's stub of the asyncio Socket.poll omits the flags it takes
                    if await sock.poll(timeout_ms, zmq.POLLIN):  # type: ignore[call-arg]
                        return _check_reply(await sock.recv(), session_id)
                    if keep_waiting is None or not keep_waiting():
                        break
            except BaseException:
                # Cancelled or failed mid-request: the socket still owes a receive.
                self.reset()
                raise
            self.reset()  # lazy pirate: a REQ socket without its reply is unusable
        raise NoReply(self.address, command, retries + 1, self.timeout)


class StateListener:
    """Follows 2300's ``publish_state`` messages on a SUB socket (a task on the loop).

    A state older than ``stale_after`` seconds counts as unknown (the PUB socket may have
    gone away while REQ still works).
    """

    def __init__(
        self,
        address: str,
        context: zmq.asyncio.Context | None = None,
        stale_after: float = 5.0,
    ) -> None:
        self.address = address
        self.stale_after = stale_after
        self._context = context or async_context()
        self._socket: zmq.asyncio.Socket | None = None
        self._task: asyncio.Task | None = None
        self._updated: asyncio.Condition | None = None
        self.state: State | None = None
        self.timestamp: float | None = None
        self.received_at: float = 0.0
        self.messages = 0
        self.started_at: float | None = None
        self.warned = False

    def start(self) -> None:
        """Subscribe (idempotent; call on the loop that will wait)."""
        if self._task is not None and not self._task.done():
            return
        self._updated = asyncio.Condition()
        sock = self._context.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(self.address)
        self._socket = sock
        self.started_at = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._listen(sock, self._updated))

    async def _listen(self, sock: zmq.asyncio.Socket, updated: asyncio.Condition) -> None:
        while True:
            data = await sock.recv()
            try:
                message = m.decode_publish(data)
            except ProtocolError as exc:
                log.debug("ignoring a published message: %s", exc)
                continue
            self.state = message.payload.state
            self.timestamp = message.payload.timestamp
            self.received_at = time.monotonic()
            self.messages += 1
            async with updated:
                updated.notify_all()

    @property
    def current(self) -> State | None:
        """The latest state, or None when none arrived or it is stale."""
        if self.state is None or time.monotonic() - self.received_at > self.stale_after:
            return None
        return self.state

    async def _next_update(self, timeout: float) -> None:
        if timeout <= 0:
            return
        updated = self._updated
        assert updated is not None, "start() first"
        async with updated:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(updated.wait(), timeout)

    async def wait_available(self, timeout: float, first: float = 1.0) -> State | None:
        """Return once 2300 is available (or its state is unknown); raise
        :class:`Unavailable` when it stays busy for ``timeout`` seconds.

        With no state heard yet, waits up to ``first`` seconds for one (a 2300 publishes
        at least once a second).
        """
        self.start()
        started = time.monotonic()
        if self.state is None:
            await self._next_update(min(first, timeout))
            if self.state is None:
                self.warn_silent()
        while True:
            state = self.current
            if state is None or state.available:
                return state
            remaining = timeout - (time.monotonic() - started)
            if remaining <= 0:
                raise Unavailable(state, timeout)
            await self._next_update(min(remaining, self.stale_after))

    @property
    def silent(self) -> bool:
        """Subscribed for a while (over ``first`` wait) and never heard a state."""
        return self.messages == 0 and self.started_at is not None

    def warn_silent(self) -> None:
        """Say (once) that this address delivers nothing: a warning, not silence."""
        if self.warned or self.messages:
            return
        self.warned = True
        text = (
            f"no 2300 state arrived from {self.address}: is the subscribe address right (a "
            f"2300 publishes at least once a second)? Without states, batches neither wait "
            f"for calibration nor stay alive on EXECUTING heartbeats; set the right "
            f"subscribe_address, or subscribe_address=None to not listen"
        )
        log.warning(text)
        warnings.warn(text, NoStateWarning, stacklevel=2)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None


def request_sync(
    address: str,
    command: str,
    session_id: str,
    payload: dict[str, Any] | None = None,
    *,
    timeout: float,
    retries: int,
) -> Reply:
    """Blocking lazy-pirate request on a socket of its own (for the caller's thread)."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    data = _encoded(command, session_id, payload)
    for _attempt in range(retries + 1):
        sock = context.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(address)
            sock.send(data)
            if sock.poll(max(1, int(timeout * 1000)), zmq.POLLIN):
                return _check_reply(sock.recv(), session_id)
        finally:
            sock.close(linger=0)
    raise NoReply(address, command, retries + 1, timeout)
