"""The 2300 side of the protocol as a state machine. Sans-IO: bytes in, bytes (or work) out.

:class:`ControlSession` knows the lock ("non-interruption mode"), the commands and their
validation, but no sockets and no simulator: ``receive(bytes)`` returns either the reply
bytes or an :class:`ExecuteJob` that the caller runs and hands back to ``complete``. It never
raises on bad input: every problem becomes a failure reply.

Rules (compute-runtime schema, protocol v3):

- ``initialize`` locks 2300 for its ``session_id``. Again from the same session: success
  (idempotent; clients re-initialize after reconnecting). From another session while locked:
  failure, naming how long the lock has been idle. A lock idle (no request from its session)
  for ``lock_timeout`` seconds is released (:meth:`ControlSession.expire_lock`, or on the
  next ``initialize``): a client that died without ``terminate`` must not lock 2300 forever.
- Every request but ``get_static``/``get_dynamic`` needs a ``session_id``. A reply carries
  the request's ``version`` when it named one (protocol v1/v2 peers, QuTech's validator).
- ``execute`` only from the session holding the lock. A repeated ``(session_id, job_id)``
  with the same circuit, shots and raw-data flag (a client retrying after a lost reply)
  gets the stored reply again, not a second run (the last 8 successful executes are kept; a
  failure reply is not, so a failed execute runs again). This is the emulator's rule, and
  the one qfleet's client (:mod:`qfleet.protocols.p2300.client`) relies on to resend an
  ``execute`` safely: the compute-runtime schema does not say what a real 2300 does with a
  repeated ``job_id`` (unknown; it may run the circuit again).
- ``get_dynamic`` counts requests by command; ``executed`` counts the circuits actually run
  to a result and ``replayed`` the repeated executes answered from the stored replies, so
  tests can tell a lost reply retried from a circuit run twice.
- ``terminate`` unlocks; without a lock it is a no-op success (clients always send it).
- ``get_static`` / ``get_dynamic`` work in every state.
- While CALIBRATING, BENCHMARKING or OFFLINE, ``initialize`` and ``execute`` fail.
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from qfleet.protocols.p2300 import messages as m
from qfleet.protocols.p2300.messages import ExecutePayload, ExecuteResult, ProtocolError, State

#: Longest request accepted (bytes); larger ones get a failure reply.
MAX_REQUEST_BYTES = 8 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class ExecuteJob:
    """Work for the caller: run ``payload.circuit``, then call ``ControlSession.complete``."""

    session_id: str
    payload: ExecutePayload
    version: str | None = None


class ControlSession:
    """2300's request handling and lock, without I/O.

    Example:
        >>> session = ControlSession(m.StaticData(nqubits=1, name="demo", pgs=["X"], starttime=0))
        >>> session.receive(m.request("initialize", "s"))
        b'{"session_id":"s","status":"success"}'
        >>> circuit = "version 3.0\\nqubit[1] q\\nbit[1] b\\nX q[0]\\nb[0] = measure q[0]\\n"
        >>> work = session.receive(m.request(
        ...     "execute", "s", {"job_id": 1, "circuit": circuit, "number_of_shots": 10}))
        >>> work.payload.number_of_shots                       # an ExecuteJob: run it, then
        10
        >>> session.complete(work, ExecuteResult(job_id=1, results={"1": 10}))
        b'{"session_id":"s","status":"success","payload":{"job_id":1,"results":{"1":10}}}'
    """

    def __init__(
        self,
        static: m.StaticData,
        *,
        max_shots: int = 1_000_000,
        lock_timeout: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        state: State = State.IDLE,
    ) -> None:
        self.static = static
        self.max_shots = max_shots
        self.lock_timeout = lock_timeout
        self._clock = clock
        self.state = state
        self.locked_by: str | None = None
        self._lock_seen = 0.0
        self._started = clock()
        self._done: OrderedDict[tuple[str, int], tuple[tuple, bytes]] = OrderedDict()
        self.counts: dict[str, int] = {
            "requests": 0, "failures": 0, "initialize": 0, "execute": 0, "terminate": 0,
            "lock_expired": 0, "executed": 0, "replayed": 0,
        }  # fmt: skip
        self._version: str | None = None
        self._handlers: dict[str, Callable[[m.Request], bytes | ExecuteJob]] = {
            "initialize": self._initialize,
            "execute": self._execute,
            "terminate": self._terminate,
            "get_static": self._get_static,
            "get_dynamic": self._get_dynamic,
        }

    # -- state ------------------------------------------------------------------------

    def set_state(self, state: State) -> None:
        """Change the published state (calibration, going offline, ...)."""
        self.state = State(state)

    @property
    def locked(self) -> bool:
        return self.locked_by is not None

    def dynamic(self) -> dict[str, Any]:
        """The ``get_dynamic`` payload: state, lock and request counters."""
        return {
            "state": self.state.value,
            "locked": self.locked,
            "uptime": round(self._clock() - self._started, 3),
            **self.counts,
        }

    # -- requests ---------------------------------------------------------------------

    def receive(self, data: bytes | str) -> bytes | ExecuteJob:
        """Handle one request: the reply, or an :class:`ExecuteJob` to run first."""
        self.counts["requests"] += 1
        self._version = None
        try:
            if len(data) > MAX_REQUEST_BYTES:
                raise ProtocolError(
                    f"request of {len(data)} bytes is larger than the {MAX_REQUEST_BYTES} "
                    f"bytes 2300 accepts"
                )
            req = m.decode_request(data)
            self._version = req.version
            handler = self._handlers.get(req.command)
            if handler is None:
                raise ProtocolError(
                    f"unknown command {req.command!r}; 2300 understands "
                    f"{', '.join(m.COMMANDS)}"
                )
            if not req.session_id and req.command not in m.SESSIONLESS:
                raise ProtocolError(
                    f"{req.command} needs a session_id (a UUID string naming the client's "
                    f"session); only {' and '.join(m.SESSIONLESS)} may leave it out"
                )
            return handler(req)
        except ProtocolError as exc:
            if len(data) > MAX_REQUEST_BYTES:  # not parsed: that is what the limit is for
                return self._fail("", str(exc))
            self._version = self._version or m.version_of(data)
            return self._fail(m.session_id_of(data), str(exc))
        except Exception as exc:  # never let a request take 2300 down
            error = f"{type(exc).__name__}: {exc}"
            return self._fail("", f"internal error handling the request: {error}")

    def reject(self, error_msg: str) -> bytes:
        """A failure reply for bytes that never became a request (e.g. a multi-frame one)."""
        self.counts["requests"] += 1
        return self._fail("", error_msg)

    def complete(self, job: ExecuteJob, outcome: ExecuteResult | str) -> bytes:
        """The reply to ``job``, given the circuit's result or an error text."""
        if self.state is State.EXECUTING:
            self.state = State.IDLE
        self._touch(job.session_id)
        self._version = job.version
        if isinstance(outcome, str):
            return self._fail(job.session_id, outcome)
        reply = self._ok(job.session_id, outcome.model_dump(exclude_none=True))
        self.counts["executed"] += 1
        self._remember(job, reply)
        return reply

    def abandon(self) -> None:
        """The caller could not run the current job at all (it is shutting down)."""
        if self.state is State.EXECUTING:
            self.state = State.IDLE

    # -- commands ---------------------------------------------------------------------

    def _fail(self, session_id: str, error_msg: str) -> bytes:
        self.counts["failures"] += 1
        return m.failure(session_id, error_msg, self._version)

    def _ok(self, session_id: str, payload: dict[str, Any] | None = None) -> bytes:
        return m.success(session_id, payload, self._version)

    def _touch(self, session_id: str) -> None:
        if self.locked_by == session_id:
            self._lock_seen = self._clock()

    def _unavailable(self) -> str | None:
        if not self.state.available:
            return (
                f"2300 is {self.state.value}; wait until it publishes IDLE and send "
                f"initialize again (transient)"
            )
        return None

    def _lock_expired(self) -> bool:
        return self._clock() - self._lock_seen > self.lock_timeout

    def expire_lock(self) -> bool:
        """Release a lock idle for longer than ``lock_timeout`` (its client died without
        ``terminate``); True if one was released."""
        if self.locked_by is None or not self._lock_expired():
            return False
        self.locked_by = None
        self.counts["lock_expired"] += 1
        return True

    def _initialize(self, req: m.Request) -> bytes:
        self.counts["initialize"] += 1
        busy = self._unavailable()
        if busy:
            return self._fail(req.session_id, busy)
        if self.locked_by not in (None, req.session_id):
            if not self._lock_expired():
                idle = self._clock() - self._lock_seen
                return self._fail(
                    req.session_id,
                    f"2300 is locked by another session (initialize without terminate; idle "
                    f"for {idle:.1f} s, released after {self.lock_timeout:g} s idle); try "
                    f"again when it terminates (transient)",
                )
            self.counts["lock_expired"] += 1
        self.locked_by = req.session_id
        self._lock_seen = self._clock()
        return self._ok(req.session_id)

    def _execute(self, req: m.Request) -> bytes | ExecuteJob:
        self.counts["execute"] += 1
        if self.locked_by is None:
            return self._fail(
                req.session_id,
                "execute without initialize: 2300 executes only in non-interruption mode; "
                "send initialize first and terminate after the last execute",
            )
        if self.locked_by != req.session_id:
            return self._fail(
                req.session_id,
                "2300 is locked by another session; execute must come from the session "
                "that sent initialize (transient)",
            )
        self._touch(req.session_id)
        payload = m.decode_execute(req.payload)
        if payload.number_of_shots > self.max_shots:
            return self._fail(
                req.session_id,
                f"number_of_shots {payload.number_of_shots} exceeds this 2300's maximum of "
                f"{self.max_shots}; split the job into several executes",
            )
        busy = self._unavailable()
        if busy:
            return self._fail(req.session_id, busy)
        key = (req.session_id, payload.job_id)
        same = (payload.circuit, payload.number_of_shots, payload.include_raw_data)
        if key in self._done and self._done[key][0] == same:
            # The client resent it (its reply was lost): the stored reply, never a second run.
            self.counts["replayed"] += 1
            return self._done[key][1]
        self.state = State.EXECUTING
        return ExecuteJob(req.session_id, payload, self._version)

    def _remember(self, job: ExecuteJob, reply: bytes) -> None:
        p = job.payload
        self._done[(job.session_id, p.job_id)] = (
            (p.circuit, p.number_of_shots, p.include_raw_data),
            reply,
        )
        while len(self._done) > 8:
            self._done.popitem(last=False)

    def _terminate(self, req: m.Request) -> bytes:
        self.counts["terminate"] += 1
        if self.locked_by is None:
            return self._ok(req.session_id)
        if self.locked_by != req.session_id and not self._lock_expired():
            return self._fail(
                req.session_id,
                "2300 is locked by another session; only the session that sent initialize "
                "can terminate",
            )
        self.locked_by = None
        return self._ok(req.session_id)

    def _get_static(self, req: m.Request) -> bytes:
        return self._ok(req.session_id, self.static.model_dump(mode="json"))

    def _get_dynamic(self, req: m.Request) -> bytes:
        return self._ok(req.session_id, self.dynamic())
