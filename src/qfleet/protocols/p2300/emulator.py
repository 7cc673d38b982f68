"""A local 2300 control-software peer: ``qfleet serve-2300``.

It speaks the compute-runtime protocol on two ZeroMQ sockets: requests on a ROUTER socket
(wire-compatible with the REP socket of a real 2300: REQ clients cannot tell the
difference, and a ROUTER can leave a reply unsent, which fault injection needs) and state on
an XPUB socket (a PUB that also sees subscriptions, so a new subscriber hears the state at
once instead of waiting for the next heartbeat).

Circuits are validated with libqasm (``cqasm.v3x``; a bad circuit gets a failure reply with
libqasm's messages) and simulated with qxelarator. Besides libqasm's analysis, a gate whose
operands name one qubit twice (``CNOT q[0], q[0]``) is refused, and with ``--gates`` /
``--topology`` every gate must be in the primitive gate set and every two-qubit gate on a
connected pair.

Programs headed ``version 1.0`` (or any ``1.x``): libqasm analyses only cQASM 3 since it
dropped cQASM 1 (libqasm PR #207, 2024), and QuTech's control-software validator sends
``version 1.0`` headers on cQASM 3 bodies (``qubit[1] q``, ``b[0] = measure q[0]``). The
rule: a ``1.x`` header on a body that declares its registers the cQASM 3 way is read as
cQASM 3 (the header is the only difference); a cQASM 1 body (``qubits N``, ``measure_z``,
``prep_z``) is refused with a message saying so. Any other version is refused by libqasm.

The lock: a session that sent ``initialize`` and then nothing for ``--lock-timeout`` seconds
(default 60; its client died without ``terminate``) loses the lock, and 2300 is free again.
A request larger than 8 MiB gets a failure reply naming the limit.

Requests are served one at a time; the state (IDLE / EXECUTING / CALIBRATING) is published
at least twice a second from its own thread, so the heartbeat goes on during long
simulations.

Nothing a client sends can stop it: bad bytes, bad JSON, wrong fields and types, circuits
that do not parse, zero-qubit programs (qxelarator aborts the whole process on those, so they
never reach it), programs with more qubits than ``--qubits`` and shot counts above
``--max-shots`` all get failure replies.

Fault injection (for tests of clients; all drawn from one generator seeded by ``--seed``):
``--latency`` (+ uniform ``--latency-jitter``) seconds per execute, ``--fail-rate``
(probability that an execute gets a failure reply), ``--drop-rate`` (probability that a
request gets no reply at all: it is carried out first, so a dropped execute reply means the
circuit ran; the client's resend gets the stored reply, see
:mod:`qfleet.protocols.p2300.session`, and ``get_dynamic``'s ``executed`` counts each circuit
run once), ``--calibrating S`` (start CALIBRATING for S seconds; with
``--calibration-interval T``, again every T seconds while unlocked).
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import numpy as np

from qfleet.protocols.p2300 import messages as m
from qfleet.protocols.p2300.messages import ExecutePayload, ExecuteResult, State
from qfleet.protocols.p2300.session import ControlSession, ExecuteJob

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    import zmq

log = logging.getLogger("qfleet.serve_2300")

#: Gates the emulator runs (cQASM 3 names, upper case as in ``pgs``).
EMULATOR_GATES = (
    "I", "H", "X", "Y", "Z", "S", "SDAG", "T", "TDAG", "X90", "MX90", "Y90", "MY90",
    "RX", "RY", "RZ", "CNOT", "CZ", "CR", "CRK", "SWAP",
)  # fmt: skip

#: Most qubits ``--qubits`` may ask for (qxelarator keeps the full state vector).
MAX_QUBITS = 30

TOPOLOGIES = ("full", "line", "star")

_VERSION_LINE = re.compile(r"^(\s*(?://[^\n]*\n\s*|/\*.*?\*/\s*)*)version\s+([0-9.]+)", re.S)
_CQASM1_BODY = re.compile(r"^\s*(qubits\s+\d+|measure_z\b|prep_z\b|measure_all\b)", re.M | re.I)


def cqasm3_text(circuit: str) -> str:
    """``circuit`` as libqasm (cQASM 3 only) reads it: a ``version 1.x`` header on a cQASM 3
    body becomes ``version 3.0`` (line numbers kept); a cQASM 1 body raises CircuitError.

    Example:
        >>> cqasm3_text("version 1.0\\nqubit[1] q\\nX q[0]").splitlines()[0]
        'version 3.0'
    """
    match = _VERSION_LINE.match(circuit)
    if match is None or not match.group(2).startswith("1"):
        return circuit
    if _CQASM1_BODY.search(circuit):
        raise CircuitError(
            f"invalid circuit: this is a cQASM {match.group(2)} program (qubits N, "
            f"measure_z, prep_z); this 2300 runs cQASM 3 (libqasm dropped cQASM 1): declare "
            f"'qubit[N] q' and 'bit[N] b', measure with 'b = measure q', head it 'version 3.0'"
        )
    return circuit[: match.start(2)] + "3.0" + circuit[match.end(2) :]


class CircuitError(Exception):
    """A circuit the emulator will not run; the text goes into the failure reply."""


@dataclasses.dataclass
class EmulatorOptions:
    """``qfleet serve-2300`` options (see ``qfleet serve-2300 --help``)."""

    bind: str = "tcp://127.0.0.1:4203"
    publish: str = "tcp://127.0.0.1:4204"
    qubits: int = 8
    seed: int | None = None
    latency: float = 0.0
    latency_jitter: float = 0.0
    drop_rate: float = 0.0
    fail_rate: float = 0.0
    max_shots: int = 1_000_000
    gates: tuple[str, ...] | None = None
    """Restrict the primitive gate set (``pgs``); None: every gate in EMULATOR_GATES."""
    topology: str = "full"
    """"full" (every pair), "line" (q[i] - q[i+1]) or "star" (every qubit - the middle one,
    q[n // 2], as on Starmon-5)."""
    compiler_config: dict[str, Any] | None = None
    """The ``default_compiler_config`` get_static reports (stages of OpenSquirrel passes)."""
    calibrating: float = 0.0
    """Seconds of CALIBRATING at start-up (and at every calibration_interval)."""
    calibration_interval: float = 0.0
    """Calibrate again every this many seconds (0: only at start-up); postponed while locked."""
    lock_timeout: float = 60.0
    name: str = "qfleet 2300 emulator"
    publish_interval: float = 0.5

    def __post_init__(self) -> None:
        if not 1 <= self.qubits <= MAX_QUBITS:
            raise ValueError(f"--qubits must be between 1 and {MAX_QUBITS}, got {self.qubits}")
        for name in ("drop_rate", "fail_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1], got {value}")
        for name in ("latency", "latency_jitter", "calibrating", "calibration_interval"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0")
        if self.calibration_interval and not self.calibrating:
            raise ValueError("--calibration-interval needs --calibrating SECONDS (its duration)")
        if self.max_shots < 1:
            raise ValueError("--max-shots must be >= 1")
        if self.topology not in TOPOLOGIES:
            raise ValueError(
                f"--topology must be one of {', '.join(TOPOLOGIES)}, got {self.topology!r}"
            )
        if self.gates is not None:
            gates = tuple(g.strip().upper() for g in self.gates if g.strip())
            unknown = sorted(set(gates) - set(EMULATOR_GATES))
            if unknown:
                raise ValueError(
                    f"--gates: unknown gate(s) {unknown}; known: {', '.join(EMULATOR_GATES)}"
                )
            self.gates = gates

    def edges(self) -> list[tuple[int, int]]:
        n = self.qubits
        if self.topology == "line":
            pairs = [(i, i + 1) for i in range(n - 1)]
            return pairs + [(b, a) for a, b in pairs]
        if self.topology == "star":
            centre = n // 2
            pairs = [(i, centre) for i in range(n) if i != centre]
            return pairs + [(b, a) for a, b in pairs]
        return [(a, b) for a in range(n) for b in range(n) if a != b]

    def static(self) -> m.StaticData:
        return m.StaticData(
            nqubits=self.qubits,
            topology=self.edges(),
            name=self.name,
            pgs=list(self.gates or EMULATOR_GATES),
            starttime=time.time(),
            supports_raw_data=True,
            default_compiler_config=m.CompilerConfig.model_validate(self.compiler_config or {}),
        )


# -- the "hardware": libqasm + qxelarator ---------------------------------------------------


class Simulator:
    """Validates a cQASM 3 program with libqasm and runs it on qxelarator.

    ``run`` raises :class:`CircuitError` for anything it will not run; it never passes
    qxelarator a program that would abort the process.
    """

    def __init__(
        self,
        nqubits: int,
        pgs: Iterable[str] | None = None,
        edges: Iterable[tuple[int, int]] | None = None,
    ) -> None:
        import cqasm.v3x  # noqa: F401 - fail at start-up, not on the first circuit
        import qxelarator  # noqa: F401

        self.nqubits = nqubits
        self.pgs = None if pgs is None else frozenset(g.upper() for g in pgs)
        self.edges = None if edges is None else frozenset((int(a), int(b)) for a, b in edges)

    def analyze(self, circuit: str) -> dict[str, Any]:
        """libqasm's semantic tree as JSON (dicts), or CircuitError with libqasm's messages.

        The JSON form skips building Python objects for the tree (half of the time).
        """
        import cqasm.v3x as cq

        # A fresh Analyzer per program: a reused one remembers earlier declarations.
        tree = json.loads(cq.Analyzer().analyze_string_to_json(circuit))
        if "Program" not in tree:
            errors = []
            for error in tree.get("errors") or [{"message": "libqasm rejected the circuit"}]:
                start = (error.get("range") or {}).get("start") or {}
                where = ""
                if "line" in start:
                    where = f"line {start['line']}:{start.get('character', '?')}: "
                errors.append(where + str(error.get("message", error)))
            raise CircuitError(f"invalid cQASM 3.0 circuit: {'; '.join(errors)}")
        return tree["Program"]

    @staticmethod
    def _typ(variable: dict[str, Any]) -> tuple[str, int]:
        (kind, info), = variable["typ"].items()
        return kind, int((info or {}).get("size", 1))

    def qubit_offsets(self, program: dict[str, Any]) -> tuple[dict[str, int], int]:
        offsets, total = {}, 0
        for item in program.get("variables", []):
            variable = item["Variable"]
            kind, size = self._typ(variable)
            if kind in ("Qubit", "QubitArray"):
                offsets[variable["name"]], total = total, total + size
        return offsets, total

    def check(self, program: dict[str, Any]) -> int:
        """Qubit count, gate set and topology; returns the number of qubits."""
        offsets, total = self.qubit_offsets(program)
        if total == 0:
            raise CircuitError(
                "invalid circuit: the program declares no qubits (add e.g. 'qubit[2] q')"
            )
        if total > self.nqubits:
            raise CircuitError(
                f"invalid circuit: the program declares {total} qubits but this 2300 has "
                f"{self.nqubits}"
            )
        self._check_gates(program, offsets)
        return total

    def _check_gates(self, program: dict[str, Any], offsets: dict[str, int]) -> None:
        statements = program.get("block", {}).get("Block", {}).get("statements", [])
        for statement in statements:
            instruction = statement.get("GateInstruction")
            if instruction is None:
                continue
            gate, names = instruction["gate"], []
            while isinstance(gate, dict):  # modifiers wrap the gate: inv.X, pow(2).S, ctrl.X
                names.append(str(gate["Gate"]["name"]))
                gate = gate["Gate"].get("gate")
            if self.pgs is not None:
                for name in names:
                    if name.upper() not in self.pgs:
                        raise CircuitError(
                            f"invalid circuit: gate {name} is not in this 2300's primitive "
                            f"gate set {sorted(self.pgs)}"
                        )
            operands = [self._qubits(op, offsets) for op in instruction.get("operands", [])]
            for qubits in zip(*operands, strict=False):
                if len(operands) > 1 and len(set(qubits)) != len(qubits):
                    raise CircuitError(
                        f"invalid circuit: {'.'.join(names)} names qubit {qubits[0]} more "
                        f"than once; a multi-qubit gate needs distinct qubits"
                    )
            if self.edges is not None and len(operands) == 2:
                for a, b in zip(*operands, strict=True):
                    if (a, b) not in self.edges and (b, a) not in self.edges:
                        raise CircuitError(
                            f"invalid circuit: {'.'.join(names)} on qubits {a} and {b}, "
                            f"which are not connected in this 2300's topology"
                        )

    def _qubits(self, operand: dict[str, Any], offsets: dict[str, int]) -> list[int]:
        (kind, ref), = operand.items()
        variable = ref["variable"]["Variable"]
        base = offsets.get(variable["name"], 0)
        if kind == "IndexRef":
            return [base + int(i["ConstInt"]["value"]) for i in ref.get("indices", [])]
        return [base + i for i in range(self._typ(variable)[1])]

    def run(self, payload: ExecutePayload, seed: int) -> ExecuteResult:
        """Run ``payload.circuit``; ``seed`` fixes the shots (and the raw-data order)."""
        import qxelarator

        text = cqasm3_text(payload.circuit)
        program = self.analyze(text)
        num_qubits = self.check(program)
        shots = payload.number_of_shots
        result = qxelarator.execute_string(text, iterations=shots, seed=seed)
        if not hasattr(result, "results"):
            message = getattr(result, "message", str(result))
            raise CircuitError(f"simulation failed: {message}")
        counts = {str(k): int(v) for k, v in result.results.items()}
        if sum(counts.values()) != shots or any(len(k) != num_qubits for k in counts):
            raise CircuitError(
                f"simulation failed: qxelarator returned {sum(counts.values())} shots "
                f"({list(counts)[:4]}) for {shots}"
            )
        raw = None
        if payload.include_raw_data:
            # qxelarator has no per-shot output. Shots are independent, so a uniformly
            # shuffled list of the outcomes has exactly the distribution of a shot record.
            outcomes = np.repeat(np.array(list(counts), dtype=object), list(counts.values()))
            np.random.default_rng(seed).shuffle(outcomes)
            raw = [str(s) for s in outcomes]
        return ExecuteResult(job_id=payload.job_id, results=counts, raw_data=raw)


def _worker_main(conn: Any, config: dict[str, Any], inherited: Any, server_pid: int) -> None:
    """The simulator process: (payload dict, seed) in, ("ok", result) or ("error", text) out.

    It ends when the server closes the pipe, sends None, or dies (a killed server sends
    nothing: the child notices that its parent changed).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when to stop
    if inherited is not None:
        inherited.close()  # a forked child holds the server's end too: no EOF without this
    simulator = Simulator(**config)
    while True:
        try:
            while not conn.poll(1.0):
                if os.getppid() != server_pid:
                    return
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        payload, seed = message
        try:
            result = simulator.run(ExecutePayload.model_validate(payload), seed)
            conn.send(("ok", result.model_dump()))
        except CircuitError as exc:
            conn.send(("error", str(exc)))
        except Exception as exc:
            conn.send(("error", f"simulation failed: {type(exc).__name__}: {exc}"))


class SimulatorProcess:
    """Runs :class:`Simulator` in a child process.

    Two reasons: qxelarator holds the GIL while it simulates (the state heartbeat would stop
    for long jobs), and a circuit that crashes it (it aborts on some inputs) must not take
    the server down: the server answers with a failure and starts a new child.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None

    def start(self) -> None:
        import multiprocessing

        # fork is fast and safe while the process has one thread (at start-up); later
        # (a restart after a crash) the server runs threads, so spawn.
        method = "fork" if threading.active_count() == 1 and sys.platform != "win32" else "spawn"
        context = multiprocessing.get_context(method)
        parent, child = context.Pipe()
        # typeshed's BaseContext (get_context(str)) lacks Process; every real context has it
        process = context.Process(  # type: ignore[attr-defined]
            target=_worker_main,
            args=(child, self.config, parent if method == "fork" else None, os.getpid()),
            name="2300-simulator",
            daemon=True,
        )
        process.start()
        child.close()
        self._process, self._conn = process, parent

    def run(self, payload: ExecutePayload, seed: int, stop: threading.Event) -> ExecuteResult | str:
        """The result, or an error text (the circuit's fault or the simulator's)."""
        if self._process is None or not self._process.is_alive():
            self.restart()
        process, conn = self._process, self._conn
        assert process is not None and conn is not None  # start() set both
        try:
            conn.send((payload.model_dump(), seed))
            while not conn.poll(0.1):
                if not process.is_alive():
                    code = process.exitcode
                    self.restart()
                    return (
                        f"simulation failed: the simulator crashed on this circuit (exit code "
                        f"{code}); the emulator restarted it"
                    )
                if stop.is_set():
                    return "2300 is shutting down"
            status, value = conn.recv()
        except (EOFError, OSError, BrokenPipeError) as exc:
            self.restart()
            return f"simulation failed: lost the simulator process ({exc}); restarted it"
        return ExecuteResult.model_validate(value) if status == "ok" else value

    def restart(self) -> None:
        log.warning("starting a new simulator process")
        self.close()
        self.start()

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):  # BrokenPipeError included: the worker is gone
                self._conn.send(None)
            self._conn.close()
            self._conn = None
        if self._process is not None:
            self._process.join(timeout=1)
            if self._process.is_alive():
                self._process.kill()
                self._process.join(timeout=1)
            self._process = None


# -- the server --------------------------------------------------------------------------


def _endpoint(address: str) -> str:
    # zmq picks a free port for "tcp://host:*"; accept ":0" for the same.
    if address.startswith("tcp://") and address.endswith(":0"):
        return address[:-2] + ":*"
    return address


def _is_loopback(address: str) -> bool:
    parts = urlsplit(address)
    if parts.scheme != "tcp":
        return True  # ipc://, inproc://: local by construction
    host = parts.hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Emulator2300:
    """The server: one ROUTER socket for requests, one XPUB socket for state.

    Example (starting binds two ports and starts a simulator process):
        >>> options = EmulatorOptions(bind="tcp://127.0.0.1:0", publish="tcp://127.0.0.1:0")
        >>> emu = Emulator2300(options)
        >>> rep, pub = emu.start()           # doctest: +SKIP
        >>> server = threading.Thread(target=emu.serve_forever)
        >>> server.start()                   # doctest: +SKIP
        >>> emu.stop(); server.join(); emu.close()  # doctest: +SKIP
    """

    def __init__(self, options: EmulatorOptions) -> None:
        self.options = options
        seed = options.seed
        self.simulator = SimulatorProcess(
            {
                "nqubits": options.qubits,
                "pgs": options.gates,
                "edges": options.edges() if options.topology != "full" else None,
            }
        )
        # One generator for the simulation seeds (so a seeded server repeats its results
        # request for request) and one for the faults.
        self.seeds = np.random.default_rng(seed)
        # Faults draw from their own generator, so the simulation's shots do not depend on
        # whether faults are switched on.
        self.faults = np.random.default_rng(None if seed is None else [seed, 2300])
        initial = State.CALIBRATING if options.calibrating > 0 else State.IDLE
        self.session = ControlSession(
            options.static(),
            max_shots=options.max_shots,
            lock_timeout=options.lock_timeout,
            state=initial,
        )
        now = time.monotonic()
        self._calibrated_at = now + options.calibrating if options.calibrating else None
        self._next_calibration = (
            now + options.calibration_interval if options.calibration_interval else None
        )
        self._stop = threading.Event()
        self._changed = threading.Event()
        self._context: zmq.Context[zmq.Socket[bytes]] | None = None
        self._router: zmq.Socket[bytes] | None = None
        self._xpub: zmq.Socket[bytes] | None = None
        self._publisher: threading.Thread | None = None
        self.endpoints: tuple[str, str] = ("", "")

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> tuple[str, str]:
        """Bind both sockets and start the publisher; returns the bound endpoints."""
        import zmq

        self.simulator.start()  # before any thread or socket exists (see SimulatorProcess)
        self._context = context = zmq.Context()
        router = context.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        # Larger than the 8 MiB a request may have, so an oversized request still arrives
        # and gets a failure reply naming the limit (ZeroMQ drops larger ones silently).
        router.setsockopt(zmq.MAXMSGSIZE, 256 * 1024 * 1024)
        xpub = context.socket(zmq.XPUB)
        xpub.setsockopt(zmq.LINGER, 0)
        xpub.setsockopt(zmq.XPUB_VERBOSE, 1)
        try:
            router.bind(_endpoint(self.options.bind))
            xpub.bind(_endpoint(self.options.publish))
        except zmq.ZMQError as exc:
            router.close()
            xpub.close()
            context.term()
            self.simulator.close()
            raise OSError(
                f"cannot bind {self.options.bind} / {self.options.publish}: {exc}; is another "
                f"2300 (or serve-2300) running there? pick other ports with --bind/--publish"
            ) from exc
        self._router, self._xpub = router, xpub
        self.endpoints = (
            cast(bytes, router.getsockopt(zmq.LAST_ENDPOINT)).decode(),
            cast(bytes, xpub.getsockopt(zmq.LAST_ENDPOINT)).decode(),
        )
        for address in (self.options.bind, self.options.publish):
            if not _is_loopback(address):
                log.warning("serve-2300 listens on %s: reachable from other machines", address)
        self._publisher = threading.Thread(
            target=self._publish_loop, name="2300-publisher", daemon=True
        )
        self._publisher.start()
        return self.endpoints

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        if self._publisher is not None:
            self._publisher.join(timeout=2)
        if self._router is not None:
            self._router.close(linger=0)
        if self._context is not None:
            self._context.term()
        self.simulator.close()

    # -- publishing (own thread, owns the XPUB socket) ----------------------------------

    def _publish_loop(self) -> None:
        import zmq

        xpub, interval = self._xpub, self.options.publish_interval
        assert xpub is not None  # start() set it before starting this thread
        next_at = 0.0
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_at or self._changed.is_set():
                    self._changed.clear()
                    xpub.send(m.publish_state(self.session.state, time.time()))
                    next_at = now + interval
                    continue
                if xpub.poll(int(min(next_at - now, 0.05) * 1000) + 1, zmq.POLLIN):
                    frame = xpub.recv()
                    if frame[:1] == b"\x01":  # a new subscriber: tell it the state now
                        next_at = 0.0
        except Exception:  # a broken heartbeat must not take requests down with it
            log.exception("state publisher stopped")
        finally:
            xpub.close(linger=0)

    def _state_changed(self) -> None:
        self._changed.set()

    # -- requests (main thread, owns the ROUTER socket) ----------------------------------

    def serve_forever(self) -> None:
        import zmq

        if self._router is None:
            self.start()
        router = self._router
        assert router is not None  # start() set it
        while not self._stop.is_set():
            self._tick()
            try:
                if not router.poll(100, zmq.POLLIN):
                    continue
                frames = router.recv_multipart()
            except zmq.ZMQError as exc:
                if self._stop.is_set():
                    break
                log.warning("receive failed: %s", exc)
                continue
            try:
                self._handle(router, frames)
            except Exception:  # one bad request never ends the service
                log.exception("request handling failed")

    def _tick(self) -> None:
        now = time.monotonic()
        if self.session.expire_lock():
            log.warning(
                "released the lock of a session idle for %s s (its client died without "
                "terminate?)", self.options.lock_timeout,
            )  # fmt: skip
        if self._calibrated_at is not None and now >= self._calibrated_at:
            self._calibrated_at = None
            self.session.set_state(State.IDLE)
            self._state_changed()
            log.info("calibration done: IDLE")
        elif (
            self._next_calibration is not None
            and now >= self._next_calibration
            and self._calibrated_at is None
            and not self.session.locked
            and self.session.state is State.IDLE
        ):
            self._calibrated_at = now + self.options.calibrating
            self._next_calibration = now + self.options.calibration_interval
            self.session.set_state(State.CALIBRATING)
            self._state_changed()
            log.info("calibrating for %s s", self.options.calibrating)

    def _handle(self, router: Any, frames: list[bytes]) -> None:
        # REQ envelope: [identity, b"", body]; a DEALER may leave out the empty frame.
        if len(frames) < 2:
            return
        split = frames.index(b"", 1) + 1 if b"" in frames[1:] else 1
        envelope, body = frames[:split], frames[split:]
        reply: bytes | ExecuteJob
        if len(body) != 1:
            reply = self.session.reject(f"a request is one frame of JSON, got {len(body)} frames")
        else:
            reply = self.session.receive(body[0])
        if isinstance(reply, ExecuteJob):
            reply = self._run(reply)
        if self.options.drop_rate and self.faults.random() < self.options.drop_rate:
            log.info("dropping the reply (--drop-rate)")
            return
        router.send_multipart([*envelope, reply])

    def _run(self, job: ExecuteJob) -> bytes:
        self._state_changed()  # EXECUTING
        try:
            delay = self.options.latency
            if self.options.latency_jitter:
                delay += float(self.faults.uniform(0, self.options.latency_jitter))
            if delay:
                self._stop.wait(delay)
            if self.options.fail_rate and self.faults.random() < self.options.fail_rate:
                outcome: ExecuteResult | str = (
                    "injected fault (--fail-rate): the execution failed, try again (transient)"
                )
            else:
                seed = int(self.seeds.integers(0, 2**31 - 1))
                outcome = self.simulator.run(job.payload, seed, self._stop)
            return self.session.complete(job, outcome)
        finally:
            self.session.abandon()
            self._state_changed()  # IDLE


def serve(options: EmulatorOptions, *, out=None) -> int:
    """Run an emulator until SIGINT/SIGTERM; prints one 'ready' line with the endpoints."""
    out = out or sys.stdout
    emulator = Emulator2300(options)
    rep, pub = emulator.start()

    def _stop(signum, frame):
        emulator.stop()

    previous = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(
            f"qfleet serve-2300 ready: REP {rep} PUB {pub} ({options.qubits} qubits, "
            f"seed {options.seed})",
            file=out,
            flush=True,
        )
        emulator.serve_forever()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        emulator.close()
    return 0


# -- command line (``qfleet serve-2300``) ------------------------------------------------


def add_arguments(parser: Any) -> None:
    """The options of ``qfleet serve-2300`` (an argparse parser)."""
    parser.description = (
        "Run a local QuTech 2300 control-software peer: requests on --bind (ZeroMQ REP "
        "pattern), state on --publish (PUB). Circuits are validated with libqasm and "
        "simulated with qxelarator. Stop with Ctrl-C. Port 0 picks a free port (printed)."
    )
    add = parser.add_argument
    add("--bind", default="tcp://127.0.0.1:4203", help="request endpoint (default %(default)s)")
    add("--publish", default="tcp://127.0.0.1:4204", help="state endpoint (default %(default)s)")
    add("--qubits", type=int, default=8, help="number of qubits (default %(default)s)")
    add("--seed", type=int, default=None, help="seed of the shots and faults (default: random)")
    add("--latency", type=float, default=0.0, help="seconds added to every execute")
    add("--latency-jitter", type=float, default=0.0,
        help="up to this many more seconds per execute (uniform)")
    add("--fail-rate", type=float, default=0.0,
        help="probability that an execute gets a failure reply (fault injection)")
    add("--drop-rate", type=float, default=0.0,
        help="probability that a request gets no reply at all (fault injection)")
    add("--max-shots", type=int, default=1_000_000,
        help="largest number_of_shots accepted (default %(default)s)")
    add("--gates", default=None,
        help="comma-separated primitive gate set, e.g. X90,MX90,Y90,MY90,RZ,CZ (default: all)")
    add("--topology", choices=TOPOLOGIES, default="full",
        help="qubit connectivity reported and enforced (default %(default)s)")
    add("--calibrating", type=float, default=0.0, metavar="SECONDS",
        help="start in state CALIBRATING for this long")
    add("--calibration-interval", type=float, default=0.0, metavar="SECONDS",
        help="calibrate (for --calibrating seconds) again every this many seconds")
    add("--lock-timeout", type=float, default=60.0,
        help="seconds after which a lock whose session sends nothing (a client that died "
             "without terminate) is released (default %(default)s)")
    add("--compiler-config", default=None, metavar="JSON",
        help="default_compiler_config to report in get_static: JSON {stage: [{path, method, "
             "arguments}]} with OpenSquirrel passes, or @FILE")
    add("--name", default="qfleet 2300 emulator", help="system name in get_static")
    add("--log-level", default="warning",
        choices=("debug", "info", "warning", "error"), help="log level (stderr)")


def _compiler_config(value: str | None) -> dict[str, Any] | None:
    if not value:
        return None
    if value.startswith("@"):
        try:
            value = Path(value[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"--compiler-config {value}: {exc}") from exc
    try:
        config = json.loads(value)
    except ValueError as exc:
        raise ValueError(f"--compiler-config is not JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise ValueError("--compiler-config must be a JSON object {stage: [passes]}")
    try:
        m.CompilerConfig.model_validate(config)
    except Exception as exc:
        raise ValueError(f"--compiler-config: {exc}") from exc
    return config


def run_from_args(args: Any) -> int:
    """``qfleet serve-2300``: build the options from parsed arguments and serve."""
    from qfleet.errors import QFleetError

    missing = []
    for module in ("zmq", "cqasm.v3x", "qxelarator"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise QFleetError(
            f"serve-2300 needs {', '.join(missing)}: install qfleet's qutech extra "
            f"(pip install 'qfleet[qutech]')"
        )
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s serve-2300 %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        options = EmulatorOptions(
            bind=args.bind,
            publish=args.publish,
            qubits=args.qubits,
            seed=args.seed,
            latency=args.latency,
            latency_jitter=args.latency_jitter,
            drop_rate=args.drop_rate,
            fail_rate=args.fail_rate,
            max_shots=args.max_shots,
            gates=tuple(args.gates.split(",")) if args.gates else None,
            topology=args.topology,
            calibrating=args.calibrating,
            calibration_interval=args.calibration_interval,
            lock_timeout=args.lock_timeout,
            name=args.name,
            compiler_config=_compiler_config(args.compiler_config),
        )
        return serve(options)
    except (ValueError, OSError) as exc:
        raise QFleetError(str(exc)) from exc
