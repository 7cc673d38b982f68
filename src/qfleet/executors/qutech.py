"""Executor2300: run tapes on QuTech 2300 control software (or ``qfleet serve-2300``).

This file only translates: the sampling plan's circuits -> cQASM 3 programs (caller's
thread), 2300 replies -> samples or counts per circuit (caller's thread); the plan does the
rest (shots, broadcasting, diagonalization, native gates, results). The wire protocol lives in
:mod:`qfleet.protocols.p2300`; the coroutines here only move messages.

One batch is one 2300 session: ``initialize`` (lock), one ``execute`` per circuit (job ids
increase), ``terminate`` (unlock) -- sent even when an execute fails or the batch is
cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import os
import time
import uuid
import weakref
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from pennylane.tape import QuantumScript
from pydantic import Field, ValidationError

from qfleet.circuits.cqasm import CqasmProgram, CqasmTarget, native_gates, to_cqasm3
from qfleet.errors import ExecutorError, ExecutorTimeoutError
from qfleet.executors.base import SAMPLING_MEASUREMENTS, Capabilities, QuantumExecutor
from qfleet.sampling import Counts, RawOutput, Samples, SamplingPlan

#: Seconds within which a 2300 publishes its state again (it does at least once a second).
_HEARTBEAT_S = 1.2

#: Shots for analytic tapes (the plan warns); less when the 2300 allows fewer.
DEFAULT_SHOTS = 1024

log = logging.getLogger("qfleet.executor.2300")

#: Words in a failure reply that mean "try again later" rather than "this circuit is wrong".
_TRANSIENT_MARKERS = (
    "transient", "try again", "locked", "calibrating", "offline", "busy", "benchmarking",
)  # fmt: skip


def _is_transient(error_msg: str) -> bool:
    text = error_msg.lower()
    return any(marker in text for marker in _TRANSIENT_MARKERS)


@dataclasses.dataclass(frozen=True)
class _Payload:
    programs: tuple[CqasmProgram, ...]
    """One program per plan circuit (to read the bit order of its results)."""
    executes: tuple[dict[str, Any], ...]
    """Execute payloads without job ids, in order (the loop only reads these)."""


class _Running:
    """A batch in flight: the task that runs it and the terminate that ends it."""

    def __init__(self) -> None:
        self.task: asyncio.Task | None = None
        self.terminated = asyncio.Event()


def _max_shots(static: Any) -> int | None:
    """The 2300's shot limit, where its get_static publishes one (``max_shots``)."""
    value = getattr(static, "max_shots", None) if static is not None else None
    try:
        value = int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return value if value and value > 0 else None


def _client_module():
    try:
        from qfleet.protocols.p2300 import client
    except ImportError as exc:
        raise ImportError(
            f"Executor2300 needs pyzmq ({exc}); install qfleet's qutech extra: "
            f"pip install 'qfleet[qutech]'"
        ) from exc
    return client


class _Connection:
    """Per process and event loop: the REQ client, the state listener, the job counter."""

    def __init__(self, executor: Executor2300, loop: asyncio.AbstractEventLoop) -> None:
        client = _client_module()
        LazyPirateClient, StateListener = client.LazyPirateClient, client.StateListener

        self.loop = loop
        self.client = LazyPirateClient(executor.address, executor.timeout, executor.retries)
        self.listener = (
            StateListener(executor.subscribe_address) if executor.subscribe_address else None
        )
        self.job_ids = itertools.count(1)

    def close(self) -> None:
        for closer in (self.client.close, self.listener.close if self.listener else None):
            if closer is not None:
                with contextlib.suppress(RuntimeError):  # its event loop is already closed
                    closer()


# One batch at a time per 2300 and event loop, across executors: 2300 has one lock.
_batch_locks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _batch_lock(address: str) -> asyncio.Lock:
    locks = _batch_locks.setdefault(asyncio.get_running_loop(), {})
    return locks.setdefault(address, asyncio.Lock())


# Strong references to tasks nobody awaits (a batch submitted and never collected, a
# terminate after a cancel): the event loop itself only keeps weak ones.
_background: set[asyncio.Task] = set()


def _keep(task: asyncio.Task) -> asyncio.Task:
    _background.add(task)
    task.add_done_callback(_background.discard)
    return task


class Executor2300(QuantumExecutor):
    """Runs tapes on QuTech 2300 control software over ZeroMQ (compute-runtime schema v3).

    ``address``: 2300's request socket; ``subscribe_address``: its state socket (None: do
    not listen). ``timeout``: seconds to wait for each reply; without one the request socket
    is reopened and the request sent again, ``retries`` times. ``include_raw_data``: ask for
    per-shot bitstrings (otherwise ``qml.sample`` and shot vectors use a shuffled
    histogram, which has the same distribution).

    Samples only: tapes without shots run with ``default_shots`` (1024, fewer when the
    2300 publishes a lower ``max_shots``), with a warning. Reads ``get_static`` once per
    connection to learn the qubits, gate set and topology; a circuit that does not fit raises
    UnsupportedCircuitError before anything is sent. Run ``qfleet serve-2300`` for a local
    2300.

    Example (running needs a 2300 at the address, e.g. ``qfleet serve-2300``):
        >>> ex = Executor2300(shots=1000)                 # tcp://127.0.0.1:4203
        >>> tape = qml.tape.QuantumScript([qml.X(0)], [qml.probs(wires=0)])
        >>> ex.run_circuit_sync(tape)  # doctest: +SKIP
        array([0., 1.])
    """

    address: str = "tcp://127.0.0.1:4203"
    subscribe_address: str | None = "tcp://127.0.0.1:4204"
    include_raw_data: bool = False
    """Ask for per-shot bitstrings (when 2300 reports ``supports_raw_data``)."""
    timeout: float = Field(default=30.0, gt=0)
    """Seconds to wait for one reply (not for the whole batch)."""
    retries: int = Field(default=2, ge=0)
    """Times a request without a reply is sent again (on a new socket)."""

    backend_kind: ClassVar[str] = "qutech-2300"

    # -- description ------------------------------------------------------------------

    def _cached_static(self) -> Any:
        return self._runtime.get(("static", os.getpid()))

    @property
    def capabilities(self) -> Capabilities:
        # The gate set, qubits and shot limit come from get_static (fetched in prepare);
        # before that, any 2300: every gate the cQASM exporter writes.
        static = self._cached_static()
        target = CqasmTarget.from_static(static) if static is not None else CqasmTarget()
        max_shots = _max_shots(static)
        return Capabilities(
            analytic=False,
            max_wires=target.nqubits,
            measurements=SAMPLING_MEASUREMENTS,
            native_gates=native_gates(target),
            mid_circuit_measurements=False,
            max_shots=max_shots,
            default_shots=min(DEFAULT_SHOTS, max_shots) if max_shots else DEFAULT_SHOTS,
        )

    @property
    def backend_description(self) -> str:
        static = self._cached_static()
        return f"2300 {static.name!r} at {self.address}" if static else f"2300 at {self.address}"

    @property
    def batch_timeout(self) -> float | None:
        # Every request has its own timeout and retries, so a batch cannot hang; a batch
        # of many circuits may take longer than one request's timeout.
        return None

    # -- caller's thread --------------------------------------------------------------

    def static(self) -> Any:
        """2300's ``get_static`` reply (StaticData), fetched once per connection."""
        key = ("static", os.getpid())
        static = self._runtime.get(key)
        if static is None:
            client = _client_module()
            NoReply, request_sync = client.NoReply, client.request_sync
            from qfleet.protocols.p2300.messages import ProtocolError, StaticData

            try:
                reply = request_sync(
                    self.address, "get_static", str(uuid.uuid4()),
                    timeout=self.timeout, retries=self.retries,
                )  # fmt: skip
            except NoReply as exc:
                raise ExecutorTimeoutError(str(exc), executor=self.label, transient=True) from exc
            except ProtocolError as exc:
                raise ExecutorError(f"get_static: {exc}", executor=self.label) from exc
            if not reply.ok:
                raise ExecutorError(
                    f"get_static failed: {reply.error_msg}", executor=self.label, transient=True
                )
            try:
                static = StaticData.model_validate(reply.payload or {})
            except ValidationError as exc:
                raise ExecutorError(
                    f"get_static: malformed reply: {exc}", executor=self.label
                ) from exc
            self._runtime[key] = static
        return static

    def plan(self, tapes: Sequence[QuantumScript], checked: bool = False) -> SamplingPlan:
        self.static()  # the capabilities (gate set, qubits) are the 2300's own
        return super().plan(tapes, checked=checked)

    def translate(self, circuits: tuple[QuantumScript, ...]) -> _Payload:
        static = self.static()
        target = CqasmTarget.from_static(static)
        # A 2300 without shot memory gets no raw-data requests; its histograms stand in.
        raw_data = self.include_raw_data and static.supports_raw_data
        programs = tuple(to_cqasm3(circuit, target) for circuit in circuits)
        executes = tuple(
            {
                "circuit": program.text,
                "number_of_shots": circuit.shots.total_shots,
                "include_raw_data": raw_data,
            }
            for circuit, program in zip(circuits, programs, strict=True)
        )
        return _Payload(programs, executes)

    def decode(self, circuits: tuple[QuantumScript, ...], raw: Sequence[Any]) -> list[RawOutput]:
        return [
            self._output(circuit, program, reply)
            for circuit, (program, reply) in zip(circuits, raw, strict=True)
        ]

    def _output(self, circuit: QuantumScript, program: CqasmProgram, reply: Any) -> RawOutput:
        try:
            if reply.raw_data and len(reply.raw_data) == circuit.shots.total_shots:
                return Samples(self._samples(reply.raw_data, program))
            counts: dict[str, int] = {}
            for bitstring, count in reply.results.items():
                bits = program.bits_for_wires(bitstring)  # 2300: q[n]...q[0]; PL: wire order
                counts[bits] = counts.get(bits, 0) + int(count)
            return Counts(counts)
        except ValueError as exc:
            raise ExecutorError(
                f"2300 returned results that do not fit job {reply.job_id}: {exc}",
                executor=self.label,
            ) from exc

    @staticmethod
    def _samples(raw: Sequence[str], program: CqasmProgram) -> np.ndarray:
        n = program.num_qubits
        flat = np.frombuffer("".join(raw).encode("ascii"), dtype=np.uint8)
        if flat.size != n * len(raw) or not np.isin(flat, (48, 49)).all():
            raise ValueError(f"raw_data holds strings that are not {n}-bit bitstrings")
        bits = flat.reshape(len(raw), n) - 48
        columns = [n - 1 - q for q in program.qubits]  # rightmost character is q[0]
        return bits[:, columns].astype(np.int64)

    # -- event loop: messages only ------------------------------------------------------

    def _connection(self) -> _Connection:
        loop = asyncio.get_running_loop()
        key = ("connection", os.getpid(), id(loop))
        conn = self._runtime.get(key)
        if conn is None or conn.loop is not loop:
            # Sockets of event loops that are gone (asyncio.run per call) are closed here.
            for old_key, old in list(self._runtime.items()):
                if old_key[0] == "connection" and (old.loop.is_closed() or old_key == key):
                    old.close()
                    del self._runtime[old_key]
            conn = self._runtime[key] = _Connection(self, loop)
        return conn

    def _error(self, exc: BaseException, doing: str) -> ExecutorError:
        from qfleet.protocols.p2300.client import NoReply, Unavailable

        if isinstance(exc, NoReply | Unavailable):
            return ExecutorTimeoutError(str(exc), executor=self.label, transient=True)
        return ExecutorError(f"{doing}: {exc}", executor=self.label, transient=True)

    async def _request(self, conn: _Connection, command: str, session_id: str, payload=None, **kw):
        from qfleet.protocols.p2300.client import NoReply
        from qfleet.protocols.p2300.messages import ProtocolError

        reconnects = conn.client.reconnects
        try:
            reply = await conn.client.request(command, session_id, payload, **kw)
        except (NoReply, ProtocolError) as exc:
            raise self._error(exc, command) from exc
        finally:
            if conn.client.reconnects != reconnects:
                # The peer may have restarted: read its description again next time.
                self._runtime.pop(("static", os.getpid()), None)
        return reply

    async def _initialize(self, conn: _Connection, session_id: str) -> None:
        reply = await self._request(conn, "initialize", session_id)
        if not reply.ok:
            raise ExecutorError(
                f"2300 refused initialize: {reply.error_msg}",
                executor=self.label,
                transient=True,
            )

    async def _lock_2300(self, conn: _Connection, session_id: str) -> None:
        """Wait until 2300 is available, then ``initialize``. A refusal that says "later"
        (calibrating, locked by another job processor) is retried until ``timeout``."""
        from qfleet.protocols.p2300.client import Unavailable

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while True:
            if conn.listener is not None:
                try:
                    await conn.listener.wait_available(max(deadline - loop.time(), 0.0))
                except Unavailable as exc:
                    raise self._error(exc, "waiting for 2300") from exc
            reply = await self._request(conn, "initialize", session_id)
            if reply.ok:
                return
            transient = _is_transient(reply.error_msg)
            if not transient or loop.time() >= deadline:
                raise ExecutorError(
                    f"2300 refused initialize: {reply.error_msg}",
                    executor=self.label,
                    transient=transient,
                )
            await asyncio.sleep(min(0.1, max(deadline - loop.time(), 0.0)))

    async def submit(self, payload: _Payload) -> tuple[_Running, tuple[str, ...]]:
        conn = self._connection()
        lock = _batch_lock(self.address)
        await lock.acquire()
        running = _Running()
        session_id = str(uuid.uuid4())
        try:
            await self._lock_2300(conn, session_id)
        except asyncio.CancelledError:
            # initialize may have reached 2300: unlock it before giving up.
            terminate = self._terminate(conn, session_id, lock, running, retries=0)
            _keep(asyncio.ensure_future(terminate))
            raise
        except BaseException:
            lock.release()
            running.terminated.set()
            raise
        job_ids = tuple(next(conn.job_ids) for _ in payload.executes)
        batch = self._run_batch(conn, session_id, payload, job_ids, lock, running)
        running.task = _keep(asyncio.ensure_future(batch))
        return running, tuple(str(j) for j in job_ids)

    async def _run_batch(
        self,
        conn: _Connection,
        session_id: str,
        payload: _Payload,
        job_ids: tuple[int, ...],
        lock: asyncio.Lock,
        running: _Running,
    ) -> list[tuple[CqasmProgram, Any]]:
        from qfleet.protocols.p2300.messages import ExecuteResult, State

        async def reinitialize() -> None:
            # A restarted 2300 has forgotten our lock; a running one accepts it again.
            await self._initialize(conn, session_id)

        def executing() -> bool:
            # A job longer than timeout: 2300 still publishes EXECUTING (fresh heartbeats)
            # while it runs our job (we hold its lock), so the reply is late, not lost.
            # A 2300 publishes at least once a second: an older state may be a dead one's.
            listener = conn.listener
            return (
                listener is not None
                and listener.current is State.EXECUTING
                and time.monotonic() - listener.received_at < _HEARTBEAT_S
            )

        terminate_retries = None
        try:
            replies = []
            for job_id, execute in zip(job_ids, payload.executes, strict=True):
                request = {"job_id": job_id, **execute}
                reply = await self._request(
                    conn, "execute", session_id, request, on_retry=reinitialize,
                    keep_waiting=executing,
                )  # fmt: skip
                if not reply.ok:
                    raise ExecutorError(
                        f"2300 failed job {job_id}: {reply.error_msg}",
                        executor=self.label,
                        transient=_is_transient(reply.error_msg),
                    )
                try:
                    result = ExecuteResult.model_validate(reply.payload or {})
                except ValidationError as exc:
                    raise ExecutorError(
                        f"malformed execute reply for job {job_id}: {exc}", executor=self.label
                    ) from exc
                if result.job_id != job_id:
                    raise ExecutorError(
                        f"2300 answered job {result.job_id} to job {job_id}", executor=self.label
                    )
                replies.append(result)
        except ExecutorTimeoutError:
            terminate_retries = 0  # 2300 is not answering: one try, not another full wait
            raise
        finally:
            await asyncio.shield(
                self._terminate(conn, session_id, lock, running, retries=terminate_retries)
            )
        return list(zip(payload.programs, replies, strict=True))

    async def _terminate(
        self,
        conn: _Connection,
        session_id: str,
        lock: asyncio.Lock,
        running: _Running,
        retries: int | None = None,
    ) -> None:
        try:
            reply = await conn.client.request("terminate", session_id, retries=retries)
            if not reply.ok:
                log.warning("%s: 2300 refused terminate: %s", self.label, reply.error_msg)
        except Exception as exc:  # the results (or the first error) matter more
            log.warning("%s: terminate got no answer: %s", self.label, exc)
        finally:
            lock.release()
            running.terminated.set()

    async def collect(self, job: _Running) -> list[tuple[CqasmProgram, Any]]:
        assert job.task is not None  # submit sets it before returning the job
        return await job.task

    async def cancel(self, job: _Running) -> None:
        if job.task is not None:
            job.task.cancel()
        # Wait (bounded) for terminate, so 2300 is unlocked when cancel returns.
        bound = self.timeout * (self.retries + 1) + 1
        try:
            await asyncio.wait_for(job.terminated.wait(), bound)
        except TimeoutError:
            log.warning("%s: terminate still pending after %s s", self.label, bound)
