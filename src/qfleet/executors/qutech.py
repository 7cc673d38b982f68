"""Executor2300: run tapes on QuTech 2300 control software (or ``qfleet serve-2300``).

This file only translates: tapes -> cQASM 3 programs (caller's thread), 2300 replies ->
PennyLane results (caller's thread). The wire protocol lives in
:mod:`qfleet.protocols.p2300`; the coroutines here only move messages.

One batch is one 2300 session: ``initialize`` (lock), one ``execute`` per circuit (job ids
increase), ``terminate`` (unlock) -- sent even when an execute fails or the batch is
cancelled.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import os
import uuid
import weakref
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import pennylane as qml
from pennylane.tape import QuantumScript
from pydantic import Field, ValidationError

from qfleet.circuits.cqasm import CqasmProgram, CqasmTarget, to_cqasm3
from qfleet.circuits.results import (
    result_from_counts,
    result_from_samples,
    samples_from_counts,
    sampling_tapes,
)
from qfleet.errors import ExecutorError, ExecutorTimeoutError
from qfleet.executors.base import SAMPLING_MEASUREMENTS, Capabilities, QuantumExecutor

log = logging.getLogger("qfleet.executor.2300")

#: Words in a failure reply that mean "try again later" rather than "this circuit is wrong".
_TRANSIENT_MARKERS = (
    "transient", "try again", "locked", "calibrating", "offline", "busy", "benchmarking",
)  # fmt: skip


def _is_transient(error_msg: str) -> bool:
    text = error_msg.lower()
    return any(marker in text for marker in _TRANSIENT_MARKERS)


@dataclasses.dataclass(frozen=True)
class _TapePlan:
    """One input tape: its computational-basis tapes, their programs and the recombination."""

    tapes: tuple[QuantumScript, ...]
    programs: tuple[CqasmProgram, ...]
    recombine: Callable
    unbroadcast: Callable | None


@dataclasses.dataclass(frozen=True)
class _Payload:
    plans: tuple[_TapePlan, ...]
    executes: tuple[dict[str, Any], ...]
    """Execute payloads without job ids, in order (the loop only reads these)."""


class _Running:
    """A batch in flight: the task that runs it and the terminate that ends it."""

    def __init__(self) -> None:
        self.task: asyncio.Task | None = None
        self.terminated = asyncio.Event()


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
                try:
                    closer()
                except RuntimeError:  # its event loop is already closed
                    pass


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

    Needs shots (2300 samples). Reads ``get_static`` once per connection to learn the
    qubits, gate set and topology; a circuit that does not fit raises
    UnsupportedCircuitError before anything is sent. Run ``qfleet serve-2300`` for a local
    2300.

    Example:
        >>> ex = Executor2300(shots=1000)                 # tcp://127.0.0.1:4203
        >>> ex.run_circuit_sync(qml.tape.QuantumScript([qml.X(0)], [qml.probs(wires=0)]))
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
        static = self._cached_static()
        return Capabilities(
            analytic=False,
            max_wires=static.nqubits if static is not None else None,
            measurements=SAMPLING_MEASUREMENTS,
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

    def translate(self, tapes: tuple[QuantumScript, ...]) -> _Payload:
        static = self.static()
        target = CqasmTarget.from_static(static)
        # A 2300 without shot memory gets no raw-data requests; its histograms stand in.
        raw_data = self.include_raw_data and static.supports_raw_data
        plans, executes = [], []
        for tape in tapes:
            if tape.batch_size:
                expanded, unbroadcast = qml.transforms.broadcast_expand(tape)
            else:
                expanded, unbroadcast = (tape,), None
            split, recombine = sampling_tapes(expanded)
            programs = tuple(to_cqasm3(t, target) for t in split)
            plans.append(_TapePlan(tuple(split), programs, recombine, unbroadcast))
            for t, program in zip(split, programs):
                executes.append(
                    {
                        "circuit": program.text,
                        "number_of_shots": t.shots.total_shots,
                        "include_raw_data": raw_data,
                    }
                )
        return _Payload(tuple(plans), tuple(executes))

    def finish(self, tapes: tuple[QuantumScript, ...], raw: Sequence[Any]) -> list[Any]:
        results = []
        for plan, replies in raw:
            values = [
                self._result(t, program, reply)
                for t, program, reply in zip(plan.tapes, plan.programs, replies)
            ]
            combined = plan.recombine(values)
            results.append(plan.unbroadcast(combined) if plan.unbroadcast else combined[0])
        return results

    def _result(self, tape: QuantumScript, program: CqasmProgram, reply: Any) -> Any:
        try:
            counts: dict[str, int] = {}
            for bitstring, count in reply.results.items():
                bits = program.bits_for_wires(bitstring)  # 2300: q[n]...q[0]; PL: wire order
                counts[bits] = counts.get(bits, 0) + int(count)
            total = tape.shots.total_shots
            raw = reply.raw_data
            if raw and len(raw) == total:
                samples = self._samples(raw, program)
            elif tape.shots.has_partitioned_shots or any(
                isinstance(mp, qml.measurements.SampleMP) for mp in tape.measurements
            ):
                samples = samples_from_counts(counts, len(program.wires))
            else:
                return result_from_counts(tape, counts)
            return result_from_samples(tape, samples)
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

    async def _start(self, payload: _Payload) -> tuple[_Running, tuple[str, ...]]:
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
    ) -> list[tuple[_TapePlan, list[Any]]]:
        from qfleet.protocols.p2300.messages import ExecuteResult

        async def reinitialize() -> None:
            # A restarted 2300 has forgotten our lock; a running one accepts it again.
            await self._initialize(conn, session_id)

        terminate_retries = None
        try:
            replies = []
            for job_id, execute in zip(job_ids, payload.executes):
                request = {"job_id": job_id, **execute}
                reply = await self._request(
                    conn, "execute", session_id, request, on_retry=reinitialize
                )
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
        grouped, at = [], 0
        for plan in payload.plans:
            grouped.append((plan, replies[at : at + len(plan.programs)]))
            at += len(plan.programs)
        return grouped

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

    async def _collect(self, job: _Running) -> list[tuple[_TapePlan, list[Any]]]:
        return await job.task

    async def _cancel(self, job: _Running) -> None:
        if job.task is not None:
            job.task.cancel()
        # Wait (bounded) for terminate, so 2300 is unlocked when cancel returns.
        bound = self.timeout * (self.retries + 1) + 1
        try:
            await asyncio.wait_for(job.terminated.wait(), bound)
        except (asyncio.TimeoutError, TimeoutError):
            log.warning("%s: terminate still pending after %s s", self.label, bound)
