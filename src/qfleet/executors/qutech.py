"""Executor2300: run tapes on QuTech 2300 control software (or ``qfleet serve-2300``).

This file only translates: the sampling plan's circuits -> programs compiled for the 2300's
chip (:mod:`qfleet.circuits.compile2300`: OpenSquirrel mapping, routing, decomposition,
following the 2300's ``default_compiler_config``), 2300 replies -> samples or counts per
circuit in the user's wire order; the plan does the rest (shots, broadcasting,
diagonalization, results). The wire protocol lives in :mod:`qfleet.protocols.p2300`; the
coroutines here only move messages.

One batch is one 2300 session: ``initialize`` (lock), one ``execute`` per circuit,
``terminate`` (unlock) -- sent even when an execute fails or the batch is cancelled. Job ids
are ``<session>/<n>``, so a process that takes over a durable job whose process died knows
the dead session: :meth:`Executor2300.attach` unlocks it (``terminate``) and runs the batch
again (a 2300 keeps no results after a session).

No I/O on the caller's thread: the 2300's description (``get_static``) is read in the
background and cached; a batch prepared before it arrived is compiled on the event loop, after
``get_static``, inside the cluster's retries and breaker.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import urlsplit

import numpy as np
from pennylane.tape import QuantumScript
from pydantic import Field, ValidationError

from qfleet.circuits.compile2300 import (
    CompiledProgram,
    LogicalCircuit,
    compile_for_target,
    logical_circuit,
)
from qfleet.circuits.cqasm import CqasmTarget, native_gates
from qfleet.errors import ConfigError, ExecutorError, ExecutorTimeoutError
from qfleet.executors.base import SAMPLING_MEASUREMENTS, Capabilities, QuantumExecutor
from qfleet.executors.status import Calibration, ExecutorStatus
from qfleet.runtime.background import keep
from qfleet.sampling import Counts, RawOutput, Samples

#: Seconds within which a 2300 publishes its state again (it does at least once a second).
_HEARTBEAT_S = 1.2

#: Seconds after which the cached get_static is read again (in the background).
_STATIC_REFRESH_S = 60.0

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


def _locked_by_another(error_msg: str) -> bool:
    return "locked by another session" in error_msg.lower()


@dataclasses.dataclass
class _Payload:
    """A batch for one 2300: each circuit's gates (made on the caller's thread), its shots,
    and -- once the 2300's description is known -- its compiled program."""

    circuits: tuple[LogicalCircuit, ...]
    shots: tuple[int, ...]
    programs: tuple[CompiledProgram, ...] | None = None
    raw_data: bool = False

    def compile_report(self) -> dict[str, Any] | None:
        if self.programs is None:
            return None
        return {
            "seconds": round(sum(p.compile_seconds for p in self.programs), 6),
            "cached": sum(p.cached for p in self.programs),
            "circuits": len(self.programs),
            "swaps": sum(p.swaps for p in self.programs),
            "added_two_qubit_gates": sum(p.added_two_qubit_gates for p in self.programs),
            "passes": sorted({name for p in self.programs for name in p.passes}),
        }


class _Running:
    """A batch in flight: the task that runs it and the terminate that ends it."""

    def __init__(self) -> None:
        self.task: asyncio.Task | None = None
        self.terminated = asyncio.Event()


@dataclasses.dataclass
class _Resume:
    """A batch whose process died (from :meth:`Executor2300.attach`): its sessions are
    unlocked and the batch runs again when collected."""

    payload: _Payload
    sessions: tuple[str, ...]
    running: _Running | None = None


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


def _check_address(field: str, address: str) -> None:
    """A ZeroMQ endpoint a REQ/SUB socket can connect to, else ConfigError (not ZMQError)."""
    parts = urlsplit(address) if isinstance(address, str) else None
    ok = parts is not None and parts.scheme in ("tcp", "ipc", "inproc")
    if ok and parts is not None and parts.scheme == "tcp":
        try:
            ok = bool(parts.hostname) and parts.port is not None and parts.port > 0
        except ValueError:  # a port that is not a number
            ok = False
    elif ok and parts is not None:
        ok = bool(parts.netloc or parts.path)
    if not ok:
        raise ConfigError(
            f"Executor2300 {field}={address!r} is not a ZeroMQ endpoint; give "
            f"'tcp://HOST:PORT' (e.g. 'tcp://127.0.0.1:4203' for `qfleet serve-2300`), "
            f"'ipc://PATH' or 'inproc://NAME'"
        )


class _Connection:
    """Per process and event loop: the REQ client and the state listener."""

    def __init__(self, executor: Executor2300, loop: asyncio.AbstractEventLoop) -> None:
        client = _client_module()
        LazyPirateClient, StateListener = client.LazyPirateClient, client.StateListener

        self.loop = loop
        self.client = LazyPirateClient(executor.address, executor.timeout, executor.retries)
        self.listener = (
            StateListener(executor.subscribe_address) if executor.subscribe_address else None
        )

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




class Executor2300(QuantumExecutor):
    """Runs tapes on QuTech 2300 control software over ZeroMQ (compute-runtime schema v3).

    ``address``: 2300's request socket; ``subscribe_address``: its state socket (None: do
    not listen; an address that delivers no state gets a ``NoStateWarning``). ``timeout``:
    seconds to wait for a reply while the 2300 shows no sign of working on it -- a request
    whose 2300 publishes EXECUTING keeps waiting, so long jobs are not cut off; a dead
    2300 is known after ``timeout * (retries + 1)`` seconds (10 by default). ``lock_wait``:
    seconds to wait while another session holds the 2300 (a job processor that died without
    ``terminate`` holds it until the 2300's lock timeout). ``include_raw_data``: ask for
    per-shot bitstrings (otherwise ``qml.sample`` and shot vectors use a shuffled histogram,
    which has the same distribution).

    Circuits are compiled for the 2300's chip with OpenSquirrel (qubit placement, SWAPs
    along its topology, its primitive gates), following its ``default_compiler_config``;
    results come back in the user's wire order, and ``metadata.compile`` says what compiling
    did. ``max_concurrent`` is 1: a 2300 runs one session at a time, and saying so keeps
    cluster selectors from queueing work behind it.

    Samples only: tapes without shots run with ``default_shots`` (1024, fewer when the
    2300 publishes a lower ``max_shots``), with a warning. Run ``qfleet serve-2300`` for a
    local 2300.

    Example (running needs a 2300 at the address, e.g. ``qfleet serve-2300``):
        >>> ex = Executor2300(shots=1000)                 # tcp://127.0.0.1:4203
        >>> tape = qml.tape.QuantumScript([qml.X(0)], [qml.probs(wires=0)])
        >>> ex.run_circuit_sync(tape)  # doctest: +SKIP
        array([0., 1.])
        >>> Executor2300(address="not a url")
        Traceback (most recent call last):
        ...
        qfleet.errors.ConfigError: Executor2300 address='not a url' is not a ZeroMQ endpoint; ...
    """

    address: str = "tcp://127.0.0.1:4203"
    subscribe_address: str | None = "tcp://127.0.0.1:4204"
    include_raw_data: bool = False
    """Ask for per-shot bitstrings (when 2300 reports ``supports_raw_data``)."""
    timeout: float = Field(default=5.0, gt=0)
    """Seconds to wait for one reply while the 2300 is not publishing EXECUTING."""
    retries: int = Field(default=1, ge=0)
    """Times a request without a reply is sent again (on a new socket)."""
    lock_wait: float = Field(default=90.0, ge=0)
    """Seconds to wait for a 2300 locked by another session."""
    max_concurrent: int | None = Field(default=1, gt=0)
    """A 2300 runs one session (batch) at a time."""

    backend_kind: ClassVar[str] = "qutech-2300"

    def __init__(self, /, **data: Any) -> None:
        super().__init__(**data)
        _check_address("address", self.address)
        if self.subscribe_address is not None:
            _check_address("subscribe_address", self.subscribe_address)

    # -- description (cached; read in the background, never on the caller's thread) ---

    def _cached_static(self) -> Any:
        entry = self._runtime.get(("static", os.getpid()))
        return entry[0] if entry is not None else None

    def _store_static(self, static: Any) -> None:
        self._runtime[("static", os.getpid())] = (static, time.monotonic())

    def _described(self) -> Any:
        """The cached get_static (None before the first arrives); starts a background
        refresh when there is none or it is old. Never blocks."""
        entry = self._runtime.get(("static", os.getpid()))
        if entry is None or time.monotonic() - entry[1] > _STATIC_REFRESH_S:
            self._refresh_in_background()
        return entry[0] if entry is not None else None

    def _refresh_in_background(self) -> None:
        key = ("static-refresh", os.getpid())
        running = self._runtime.get(key)
        if running is not None and running.is_alive():
            return

        def refresh() -> None:
            with contextlib.suppress(Exception):  # the loop side fetches (and reports) it
                self.static(fresh=True)

        thread = threading.Thread(target=refresh, name="2300-get-static", daemon=True)
        self._runtime[key] = thread
        thread.start()

    def _parse_static(self, reply: Any) -> Any:
        from qfleet.protocols.p2300.messages import StaticData

        if not reply.ok:
            raise ExecutorError(
                f"get_static failed: {reply.error_msg}", executor=self.label, transient=True
            )
        try:
            return StaticData.model_validate(reply.payload or {})
        except ValidationError as exc:
            raise ExecutorError(f"get_static: malformed reply: {exc}", executor=self.label) from exc

    def static(self, fresh: bool = False) -> Any:
        """2300's ``get_static`` reply (StaticData). Blocks (up to ``timeout`` per try) when
        there is none cached or ``fresh``; batches never call this on the caller's thread."""
        static = None if fresh else self._cached_static()
        if static is None:
            client = _client_module()
            from qfleet.protocols.p2300.messages import ProtocolError

            try:
                reply = client.request_sync(
                    self.address, "get_static", str(uuid.uuid4()),
                    timeout=self.timeout, retries=self.retries,
                )  # fmt: skip
            except client.NoReply as exc:
                raise ExecutorTimeoutError(str(exc), executor=self.label, transient=True) from exc
            except ProtocolError as exc:
                raise ExecutorError(f"get_static: {exc}", executor=self.label) from exc
            static = self._parse_static(reply)
            self._store_static(static)
        return static

    def _target(self, static: Any) -> CqasmTarget:
        return CqasmTarget.from_static(static)

    @property
    def capabilities(self) -> Capabilities:
        # From the cached get_static; before it arrives, any 2300: every gate the cQASM
        # export writes (the compile step lowers them to the chip's gates on the loop).
        static = self._described()
        target = self._target(static) if static is not None else CqasmTarget()
        max_shots = _max_shots(static)
        return Capabilities(
            analytic=False,
            max_wires=target.nqubits,
            measurements=SAMPLING_MEASUREMENTS,
            native_gates=native_gates(CqasmTarget()),
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

    def translate(self, circuits: tuple[QuantumScript, ...]) -> _Payload:
        _client_module()  # a missing qutech extra is the caller's error, said here
        payload = _Payload(
            circuits=tuple(logical_circuit(c) for c in circuits),
            shots=tuple(int(c.shots.total_shots) for c in circuits),
        )
        static = self._described()
        if static is not None:
            self._compile(payload, static)
        return payload

    def _compile(self, payload: _Payload, static: Any) -> None:
        """Compile every circuit for the 2300's chip (any thread: no PennyLane objects)."""
        target = self._target(static)
        config = static.default_compiler_config
        payload.programs = tuple(compile_for_target(c, target, config) for c in payload.circuits)
        # A 2300 without shot memory gets no raw-data requests; its histograms stand in.
        payload.raw_data = self.include_raw_data and bool(static.supports_raw_data)

    def decode(self, circuits: tuple[QuantumScript, ...], raw: Sequence[Any]) -> list[RawOutput]:
        return [
            self._output(circuit, program, reply)
            for circuit, (program, reply) in zip(circuits, raw, strict=True)
        ]

    def _output(self, circuit: QuantumScript, program: CompiledProgram, reply: Any) -> RawOutput:
        if reply.raw_data and len(reply.raw_data) == circuit.shots.total_shots:
            return Samples(self._samples(reply.raw_data, program))
        counts: dict[str, int] = {}
        for bitstring, count in reply.results.items():
            bits = program.bits_for_wires(bitstring)  # 2300: q[n]...q[0]; PL: wire order
            counts[bits] = counts.get(bits, 0) + int(count)
        return Counts(counts)

    @staticmethod
    def _samples(raw: Sequence[str], program: CompiledProgram) -> np.ndarray:
        n = program.num_qubits
        bits = np.frombuffer("".join(raw).encode("ascii"), dtype=np.uint8).reshape(len(raw), n)
        columns = [n - 1 - q for q in program.qubits]  # rightmost character is q[0]
        return (bits[:, columns] - 48).astype(np.int64)

    def _validate(self, job_id: str, result: Any, program: CompiledProgram, shots: int) -> None:
        """A 2300's results must be what was asked for: else a typed error, never numbers
        that are quietly wrong (negative counts, missing shots, bitstrings of another width)."""
        n = program.num_qubits
        problems = []
        bad_keys = [k for k in result.results if len(k) != n or set(k) - {"0", "1"}]
        if bad_keys:
            problems.append(f"bitstrings {bad_keys[:3]} are not {n}-bit strings of 0 and 1")
        negative = {k: v for k, v in result.results.items() if v < 0}
        if negative:
            problems.append(f"negative counts {dict(list(negative.items())[:3])}")
        total = sum(result.results.values())
        if total != shots:
            problems.append(f"counts sum to {total}, not the {shots} shots asked for")
        raw = result.raw_data
        if raw:
            if len(raw) != shots:
                problems.append(f"raw_data holds {len(raw)} shots, not {shots}")
            elif any(len(s) != n or set(s) - {"0", "1"} for s in raw):
                problems.append(f"raw_data holds strings that are not {n}-bit bitstrings")
        if problems:
            raise ExecutorError(
                f"2300 returned invalid results for job {job_id}: {'; '.join(problems)}; "
                f"the 2300 (or something between) is misbehaving",
                executor=self.label,
            )

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
        from qfleet.protocols.p2300.client import NoReply, RequestTooLarge, Unavailable

        if isinstance(exc, NoReply | Unavailable):
            return ExecutorTimeoutError(str(exc), executor=self.label, transient=True)
        if isinstance(exc, RequestTooLarge):
            return ExecutorError(str(exc), executor=self.label, transient=False)
        return ExecutorError(f"{doing}: {exc}", executor=self.label, transient=True)

    async def _request(self, conn: _Connection, command: str, session_id: str, payload=None, **kw):
        from qfleet.protocols.p2300.client import NoReply, RequestTooLarge
        from qfleet.protocols.p2300.messages import ProtocolError

        reconnects = conn.client.reconnects
        try:
            reply = await conn.client.request(command, session_id, payload, **kw)
        except (NoReply, ProtocolError, RequestTooLarge) as exc:
            raise self._error(exc, command) from exc
        finally:
            if conn.client.reconnects != reconnects:
                # The peer may have restarted: read its description again next time.
                self._runtime.pop(("static", os.getpid()), None)
        return reply

    async def _static_on_loop(self, conn: _Connection) -> Any:
        refresh = self._runtime.get(("static-refresh", os.getpid()))
        if self._cached_static() is None and refresh is not None and refresh.is_alive():
            # The background read is under way: its answer, not a second request.
            await asyncio.to_thread(refresh.join, self.timeout * (self.retries + 1) + 1)
        static = self._cached_static()
        if static is None:
            static = self._parse_static(await self._request(conn, "get_static", str(uuid.uuid4())))
            self._store_static(static)
        return static

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
        (calibrating) is retried until ``timeout``; a lock held by another session until
        ``lock_wait`` (it may be a dead client's, which the 2300 releases after its lock
        timeout)."""
        from qfleet.protocols.p2300.client import Unavailable

        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self.timeout
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
            if _locked_by_another(reply.error_msg):
                deadline = max(deadline, started + self.lock_wait)
            if not transient or loop.time() >= deadline:
                raise ExecutorError(
                    f"2300 refused initialize: {reply.error_msg}",
                    executor=self.label,
                    transient=transient,
                )
            await asyncio.sleep(min(0.25, max(deadline - loop.time(), 0.0)))

    async def submit(self, payload: _Payload) -> tuple[_Running, tuple[str, ...]]:
        conn = self._connection()
        if payload.programs is None:
            # Prepared before the 2300's description arrived: fetch it here, inside the
            # cluster's retries and breaker, and compile off the loop (no PennyLane work).
            static = await self._static_on_loop(conn)
            await asyncio.to_thread(self._compile, payload, static)
        lock = _batch_lock(self.address)
        await lock.acquire()
        running = _Running()
        session_id = str(uuid.uuid4())
        try:
            await self._lock_2300(conn, session_id)
        except asyncio.CancelledError:
            # initialize may have reached 2300: unlock it before giving up.
            terminate = self._terminate(conn, session_id, lock, running, retries=0)
            keep(terminate)
            raise
        except BaseException:
            lock.release()
            running.terminated.set()
            raise
        job_ids = tuple(range(1, len(payload.circuits) + 1))
        batch = self._run_batch(conn, session_id, payload, job_ids, lock, running)
        running.task = keep(batch)
        return running, tuple(f"{session_id}/{j}" for j in job_ids)

    def _executing(self, conn: _Connection) -> bool:
        # A job longer than timeout: 2300 still publishes EXECUTING (fresh heartbeats)
        # while it runs our job (we hold its lock), so the reply is late, not lost.
        # A 2300 publishes at least once a second: an older state may be a dead one's.
        from qfleet.protocols.p2300.messages import State

        listener = conn.listener
        return (
            listener is not None
            and listener.current is State.EXECUTING
            and time.monotonic() - listener.received_at < _HEARTBEAT_S
        )

    async def _run_batch(
        self,
        conn: _Connection,
        session_id: str,
        payload: _Payload,
        job_ids: tuple[int, ...],
        lock: asyncio.Lock,
        running: _Running,
    ) -> list[tuple[CompiledProgram, Any]]:
        from qfleet.protocols.p2300.messages import ExecuteResult

        async def reinitialize() -> None:
            # A restarted 2300 has forgotten our lock; a running one accepts it again.
            await self._initialize(conn, session_id)

        assert payload.programs is not None  # submit compiled them
        terminate_retries = None
        try:
            replies = []
            for job_id, program, shots in zip(
                job_ids, payload.programs, payload.shots, strict=True
            ):
                request = {
                    "job_id": job_id,
                    "circuit": program.text,
                    "number_of_shots": shots,
                    "include_raw_data": payload.raw_data,
                }
                reply = await self._request(
                    conn, "execute", session_id, request, on_retry=reinitialize,
                    keep_waiting=lambda: self._executing(conn),
                )  # fmt: skip
                name = f"{session_id}/{job_id}"
                if not reply.ok:
                    raise ExecutorError(
                        f"2300 failed job {name}: {reply.error_msg}",
                        executor=self.label,
                        transient=_is_transient(reply.error_msg),
                    )
                try:
                    result = ExecuteResult.model_validate(reply.payload or {})
                except ValidationError as exc:
                    raise ExecutorError(
                        f"malformed execute reply for job {name}: {exc}", executor=self.label
                    ) from exc
                if result.job_id != job_id:
                    raise ExecutorError(
                        f"2300 answered job {result.job_id} to job {job_id}", executor=self.label
                    )
                self._validate(name, result, program, shots)
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
        lock: asyncio.Lock | None,
        running: _Running | None,
        retries: int | None = None,
    ) -> None:
        try:
            reply = await conn.client.request("terminate", session_id, retries=retries)
            if not reply.ok:
                log.warning("%s: 2300 refused terminate: %s", self.label, reply.error_msg)
        except Exception as exc:  # the results (or the first error) matter more
            log.warning("%s: terminate got no answer: %s", self.label, exc)
        finally:
            if lock is not None:
                lock.release()
            if running is not None:
                running.terminated.set()

    def attach(self, payload: _Payload, job_ids: Sequence[str]) -> _Resume:
        """A batch whose process died: a 2300 keeps no results after its session, so
        collecting it unlocks the dead session (``terminate``: no waiting for the 2300's
        lock timeout) and runs the batch again."""
        sessions = tuple(dict.fromkeys(j.rpartition("/")[0] for j in job_ids if "/" in j))
        return _Resume(payload, sessions)

    async def _resume(self, job: _Resume) -> _Running:
        conn = self._connection()
        for session in job.sessions:
            # Only the lock holder may terminate: the dead session's id unlocks the 2300.
            await self._terminate(conn, session, None, None, retries=0)
        job.running, _ = await self.submit(job.payload)
        return job.running

    async def collect(self, job: _Running | _Resume) -> list[tuple[CompiledProgram, Any]]:
        if isinstance(job, _Resume):
            job = await self._resume(job)
        assert job.task is not None  # submit sets it before returning the job
        return await job.task

    def run_metadata(self, payload: Any) -> dict[str, Any]:
        return {"compile": payload.compile_report()} if isinstance(payload, _Payload) else {}

    async def cancel(self, job: _Running | _Resume) -> None:
        if isinstance(job, _Resume):
            if job.running is None:
                conn = self._connection()
                for session in job.sessions:
                    await self._terminate(conn, session, None, None, retries=0)
                return
            job = job.running
        if job.task is not None:
            job.task.cancel()
        # Wait (bounded) for terminate, so 2300 is unlocked when cancel returns.
        bound = self.timeout * (self.retries + 1) + 1
        try:
            await asyncio.wait_for(job.terminated.wait(), bound)
        except TimeoutError:
            log.warning("%s: terminate still pending after %s s", self.label, bound)

    # -- live status (a blocking call: clusters ask from a background thread) -----------

    def status(self) -> ExecutorStatus:
        """2300's ``get_dynamic``: its state (IDLE/EXECUTING run; CALIBRATING,
        BENCHMARKING, OFFLINE do not), its lock (another job processor's session ahead of
        ours), and error rates where it publishes them (a ``calibration`` entry); its other
        figures (``uptime``, request counters, ...) go into ``metrics``. The state socket is
        followed from the first call on: one that delivers nothing, or stopped delivering,
        makes the 2300 unavailable, saying so."""
        client = _client_module()
        base = super().status()
        try:
            reply = client.request_sync(
                self.address, "get_dynamic", str(uuid.uuid4()), timeout=self.timeout, retries=0
            )
        except client.NoReply as exc:
            return base.model_copy(update={"available": False, "reason": f"no reply: {exc}"})
        if self._cached_static() is None:
            self._refresh_in_background()  # a background thread already: the next batch has it
        self._watch_heartbeat()
        dynamic = (reply.payload or {}) if reply.ok else {}
        state = str(dynamic.get("state", "unknown"))
        calibration = dynamic.get("calibration")
        try:
            calibration = Calibration.model_validate(calibration) if calibration else None
        except ValidationError:
            calibration = None  # a 2300 publishing other fields: no estimate, not an error
        reason = f"2300 is {state}" if state != "IDLE" else None
        heartbeat = self._heartbeat_problem()
        return base.model_copy(
            update={
                "available": state in ("IDLE", "EXECUTING") and heartbeat is None,
                "reason": heartbeat or reason,
                "queue_length": int(bool(dynamic.get("locked"))),
                "calibration": calibration,
                "metrics": {
                    k: v for k, v in dynamic.items()
                    if v is None or isinstance(v, str | int | float | bool)
                },
            }
        )

    def _watch_heartbeat(self) -> None:
        """Follow the state socket (on the dispatcher's loop) from the first status check on,
        so a 2300 that never published, or stopped, is known before any batch is sent."""
        from qfleet.runtime.dispatcher import get_dispatcher

        if not self.subscribe_address:
            return
        with contextlib.suppress(RuntimeError):  # called from a coroutine: never block its loop
            asyncio.get_running_loop()
            return

        async def start() -> None:
            listener = self._connection().listener
            if listener is not None:
                listener.start()

        try:
            get_dispatcher().run(start(), timeout=self.timeout)
        except Exception as exc:  # a busy loop: the next status check starts it
            log.debug("%s: could not follow %s yet: %s", self.label, self.subscribe_address, exc)

    def _heartbeat_problem(self) -> str | None:
        """Why the state socket is not to be trusted (None: fine, or not listening)."""
        for key, conn in list(self._runtime.items()):
            if key[0] != "connection" or conn.listener is None:
                continue
            listener = conn.listener
            if listener.started_at is None:
                continue
            now = time.monotonic()
            if listener.messages == 0 and (
                listener.warned or now - listener.started_at > 2 * _HEARTBEAT_S
            ):
                return f"no state ever arrived from {self.subscribe_address}"
            silent_for = now - listener.received_at
            if listener.messages and silent_for > listener.stale_after:
                return f"no heartbeat from {self.subscribe_address} for {silent_for:.0f} s"
        return None
