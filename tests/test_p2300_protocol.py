"""The 2300 protocol over real sockets: lock rules, terminate always sent, failure replies,
lazy-pirate retries (lost replies, a restarted or dead server, a silent peer), the state
heartbeat and calibration, and a corpus of bad messages the emulator must survive."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid

import numpy as np
import pennylane as qml
import pytest
import zmq
from pennylane.tape import QuantumScript

from qfleet.circuits.cqasm import to_cqasm3
from qfleet.cli import main as cli_main
from qfleet.errors import ExecutorError, ExecutorTimeoutError
from qfleet.executors import Executor2300
from qfleet.protocols.p2300 import messages as m

pytest_plugins = ["p2300_support"]  # the emulator fixtures


def raw_request(*args, **kwargs):
    # imported late: pytest must import (and assert-rewrite) the plugin first
    from p2300_support import raw_request as impl

    return impl(*args, **kwargs)


def child_pids(*args, **kwargs):
    # imported late: pytest must import (and assert-rewrite) the plugin first
    from p2300_support import child_pids as impl

    return impl(*args, **kwargs)


def pid_alive(*args, **kwargs):
    # imported late: pytest must import (and assert-rewrite) the plugin first
    from p2300_support import pid_alive as impl

    return impl(*args, **kwargs)


def wait_until(*args, **kwargs):
    # imported late: pytest must import (and assert-rewrite) the plugin first
    from p2300_support import wait_until as impl

    return impl(*args, **kwargs)

BELL = to_cqasm3(QuantumScript([qml.H(0), qml.CNOT([0, 1])], [qml.probs()])).text


def rx_tapes(n: int, shots: int = 200) -> list[QuantumScript]:
    return [
        QuantumScript([qml.RX(0.3 * k, 0)], [qml.expval(qml.Z(0))], shots=shots) for k in range(n)
    ]


def check_rx(results, tol=0.3):
    assert np.allclose(results, [np.cos(0.3 * k) for k in range(len(results))], atol=tol)


def deltas(before: dict, after: dict) -> dict:
    return {k: after[k] - before[k] for k in ("initialize", "execute", "terminate")}


def test_execute_before_initialize_fails(emulator):
    sid = str(uuid.uuid4())
    payload = {"job_id": 1, "circuit": BELL, "number_of_shots": 10}
    reply = raw_request(emulator.rep, {"session_id": sid, "command": "execute", "payload": payload})
    assert reply["status"] == "failure" and reply["session_id"] == sid
    assert "initialize" in reply["payload"]["error_msg"]


def test_other_session_cannot_execute_while_locked(emulator):
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    payload = {"job_id": 1, "circuit": BELL, "number_of_shots": 10}
    assert raw_request(emulator.rep, {"session_id": a, "command": "initialize"})["status"] == "success"
    try:
        reply = raw_request(emulator.rep, {"session_id": b, "command": "execute", "payload": payload})
        assert reply["status"] == "failure" and "locked" in reply["payload"]["error_msg"]
        reply = raw_request(emulator.rep, {"session_id": a, "command": "execute", "payload": payload})
        assert reply["status"] == "success" and sum(reply["payload"]["results"].values()) == 10
    finally:
        raw_request(emulator.rep, {"session_id": a, "command": "terminate"})


def test_failure_reply_surfaces_error_msg_and_terminate_is_sent(emulator):
    sid = str(uuid.uuid4())
    raw_request(emulator.rep, {"session_id": sid, "command": "initialize"})
    bad = {"job_id": 1, "circuit": "version 3.0\nqubit[2] q\nFOO q[0]\n", "number_of_shots": 5}
    reply = raw_request(emulator.rep, {"session_id": sid, "command": "execute", "payload": bad})
    raw_request(emulator.rep, {"session_id": sid, "command": "terminate"})
    assert reply["status"] == "failure" and "couldn't find instruction 'FOO'" in reply["payload"]["error_msg"]

    # through the executor: the second job exceeds the server's shot cap (100000)
    ex = emulator.executor()
    before = emulator.dynamic()
    tapes = [rx_tapes(1)[0], QuantumScript([qml.X(0)], [qml.probs(wires=[0])], shots=200_000)]
    with pytest.raises(ExecutorError, match="exceeds this 2300's maximum") as info:
        ex.execute(tapes)
    assert info.value.transient is False and info.value.executor == "Executor2300"
    after = emulator.dynamic()
    assert deltas(before, after) == {"initialize": 1, "execute": 2, "terminate": 1}
    assert not after["locked"]
    check_rx(ex.execute(rx_tapes(2)))  # the lock was released


def test_terminate_sent_when_the_batch_is_cancelled_midway(emulators):
    emu = emulators["slow"]  # 0.25 s per execute
    ex = emu.executor(timeout=5)
    check_rx(ex.execute(rx_tapes(1)))  # connect outside the timing
    before = emu.dynamic()
    future = ex.run_later(rx_tapes(8))
    time.sleep(0.6)
    assert future.cancel()
    unlocked = wait_until(lambda: not emu.dynamic()["locked"], timeout=5)
    after = emu.dynamic()
    assert unlocked, after
    change = deltas(before, after)
    assert change["initialize"] == change["terminate"] == 1 and 1 <= change["execute"] < 8
    check_rx(ex.execute(rx_tapes(2)))


def test_heartbeat_at_least_once_a_second_also_while_executing(emulators):
    emu = emulators["slow"]
    context = zmq.Context.instance()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(emu.pub)
    ex = emu.executor()
    worker = threading.Thread(target=ex.execute, args=(rx_tapes(8),))
    seen = []
    try:
        assert sub.poll(5000), "no state published within 5 s"
        worker.start()
        end = time.monotonic() + 2.6
        while time.monotonic() < end:
            if sub.poll(100):
                message = m.decode_publish(sub.recv())
                seen.append((time.monotonic(), message.payload.state.value))
    finally:
        worker.join(30)
        sub.close(linger=0)
    times = [t for t, _ in seen]
    assert max(np.diff(times)) <= 1.0, np.diff(times)
    assert {"IDLE", "EXECUTING"} <= {s for _, s in seen}


def test_bad_message_corpus_then_a_valid_request_succeeds(emulator):
    sid = str(uuid.uuid4())
    good = {"job_id": 1, "circuit": BELL, "number_of_shots": 10}

    def execute(**changes):
        payload = {**good, **changes}
        return {"session_id": sid, "command": "execute", "payload": {k: v for k, v in payload.items() if v is not ...}}

    corpus = {
        "not utf-8": b"\xff\xfe\xfd",
        "empty frame": b"",
        "not json": b"hello 2300",
        "truncated json": b'{"session_id": "x", "command": ',
        "json array": b"[1, 2, 3]",
        "json number": b"42",
        "json string": b'"initialize"',
        "json null": b"null",
        "nested too deeply": b"[" * 100_000,
        "missing command": {"session_id": sid},
        "missing session_id": {"command": "initialize"},  # get_static may leave it out
        "session_id not a string": {"session_id": 12, "command": "get_static"},
        "command not a string": {"session_id": sid, "command": ["initialize"]},
        "unknown command": {"session_id": sid, "command": "self_destruct"},
        "payload not an object": {"session_id": sid, "command": "initialize", "payload": [1]},
        "unknown top-level field": {"session_id": sid, "command": "get_static", "colour": "red"},
        "execute without payload": {"session_id": sid, "command": "execute"},
        "missing job_id": execute(job_id=...),
        "job_id a string": execute(job_id="1"),
        "job_id a float": execute(job_id=1.0),
        "job_id a bool": execute(job_id=True),
        "missing circuit": execute(circuit=...),
        "circuit not a string": execute(circuit=123),
        "empty circuit": execute(circuit=""),
        "invalid cQASM": execute(circuit="version 3.0\nqubit[2] q\nCNOT q[0]\n"),
        "cQASM 1.0": execute(circuit="version 1.0\nqubits 2\nh q[0]\n"),
        "zero qubits": execute(circuit="version 3.0\nbit[2] b\n"),
        "only a version": execute(circuit="version 3.0\n"),
        "zero-size qubit array": execute(circuit="version 3.0\nqubit[0] q\n"),
        "more qubits than the device": execute(circuit="version 3.0\nqubit[40] q\nH q[0]\n"),
        "zero shots": execute(number_of_shots=0),
        "negative shots": execute(number_of_shots=-5),
        "fractional shots": execute(number_of_shots=2.5),
        "huge shot count": execute(number_of_shots=10**15),
        "shots a string": execute(number_of_shots="10"),
        "include_raw_data not a bool": execute(include_raw_data="yes"),
        "unknown payload field": execute(shots=10),
        "NaN shots": b'{"session_id": "%s", "command": "execute", "payload": {"job_id": 1, "circuit": "", "number_of_shots": NaN}}' % sid.encode(),
        "oversized message": json.dumps({"session_id": sid, "command": "get_static", "pad": "x" * (9 * 1024 * 1024)}).encode(),
        "two frames": [b'{"session_id": "x",', b'"command": "get_static"}'],
    }  # fmt: skip
    assert len(corpus) >= 20
    assert raw_request(emulator.rep, {"session_id": sid, "command": "initialize"})["status"] == "success"
    try:
        for kind, message in corpus.items():
            if isinstance(message, list):
                reply = raw_request(emulator.rep, None, frames=message)
            else:
                reply = raw_request(emulator.rep, message)
            assert reply["status"] == "failure", (kind, reply)
            assert isinstance(reply["payload"]["error_msg"], str) and reply["payload"]["error_msg"], kind
            assert emulator.alive, f"{kind} killed serve-2300:\n{emulator.stderr()}"
        # the session survived all of it
        reply = raw_request(emulator.rep, execute())
        assert reply["status"] == "success" and set(reply["payload"]["results"]) <= {"00", "11"}
    finally:
        raw_request(emulator.rep, {"session_id": sid, "command": "terminate"})
    check_rx(emulator.executor().execute(rx_tapes(3)))


def test_older_version_field_is_accepted(emulator):
    reply = raw_request(emulator.rep, {"session_id": "v", "command": "get_static", "version": "0.2.0"})
    assert reply["status"] == "success" and reply["payload"]["nqubits"] == 8


def test_get_static_once_per_connection(emulator):
    ex = emulator.executor()
    before = emulator.dynamic()["requests"]
    for _ in range(3):
        check_rx(ex.execute(rx_tapes(1)))
    # 1 get_static + 3 x (initialize, execute, terminate); + 1 for this get_dynamic
    assert emulator.dynamic()["requests"] - before == 1 + 3 * 3 + 1


def test_no_reply_is_a_timeout_error_not_a_hang():
    context = zmq.Context.instance()
    silent = context.socket(zmq.ROUTER)  # takes requests, never answers
    silent.setsockopt(zmq.LINGER, 0)
    port = silent.bind_to_random_port("tcp://127.0.0.1")
    try:
        ex = Executor2300(address=f"tcp://127.0.0.1:{port}", subscribe_address=None, timeout=0.3, retries=2, shots=10)
        started = time.monotonic()
        with pytest.raises(ExecutorTimeoutError, match=r"no reply .* after 3 attempt") as info:
            ex.execute(rx_tapes(1))
        assert time.monotonic() - started < 0.3 * 3 + 2
        assert info.value.transient
    finally:
        silent.close(linger=0)


def test_lost_replies_are_retried(emulators):
    emu = emulators["lossy"]  # drops 30% of the replies (seeded)
    ex = emu.executor(timeout=0.3, retries=12)
    check_rx(ex.execute(rx_tapes(6)), tol=0.35)
    check_rx(ex.execute(rx_tapes(6)), tol=0.35)
    connections = [v for k, v in ex._runtime.items() if k[0] == "connection"]
    assert sum(c.client.reconnects for c in connections) > 0


def test_waits_while_calibrating(emulators):
    emu = emulators["restricted"]  # CALIBRATING for 1.5 s every 4 s
    context = zmq.Context.instance()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(emu.pub)

    def wait_for(wanted: str) -> None:
        deadline = time.monotonic() + 10
        state = None
        while state != wanted and time.monotonic() < deadline:
            if sub.poll(200):
                state = m.decode_publish(sub.recv()).payload.state.value
        assert state == wanted

    impatient = emu.executor(timeout=0.3, shots=100)
    outcomes = []
    try:
        # A loaded machine can start the batch after the 1.5 s window closed (then it simply
        # runs): try up to three calibration windows, from the moment one opens.
        for _ in range(3):
            wait_for("IDLE")
            wait_for("CALIBRATING")
            try:
                check_rx(impatient.execute(rx_tapes(1, shots=100)))
                outcomes.append("ran after the window")
            except ExecutorTimeoutError as exc:
                assert "CALIBRATING" in str(exc) and exc.transient, exc
                outcomes.append("timed out while calibrating")
                break
    finally:
        sub.close(linger=0)
    assert outcomes[-1] == "timed out while calibrating", outcomes
    patient = emu.executor(timeout=5, shots=100)
    check_rx(patient.execute(rx_tapes(2, shots=100)))


def test_server_restart_mid_batch_recovers(emulators):
    emu = emulators["slow"]
    ex = emu.executor(timeout=1.0, retries=30)
    check_rx(ex.execute(rx_tapes(1)))
    future = ex.run_later(rx_tapes(6))
    time.sleep(0.6)
    emu.kill()
    emu.restart()
    check_rx(future.result(timeout=90))
    fresh = emu.wait_ready().dynamic()
    assert fresh["initialize"] >= 1 and fresh["terminate"] >= 1 and not fresh["locked"]


def test_server_dead_mid_batch_fails_with_a_typed_error(emulators):
    emu = emulators["slow"]
    ex = emu.executor(timeout=0.5, retries=2)
    check_rx(ex.execute(rx_tapes(1)))
    future = ex.run_later(rx_tapes(6))
    time.sleep(0.4)
    workers = child_pids(emu.proc.pid)  # its simulator process
    assert workers or not os.path.exists("/proc")
    emu.kill()
    started = time.monotonic()
    with pytest.raises(ExecutorTimeoutError, match="no reply") as info:
        future.result(timeout=30)
    # 3 attempts of 0.5 s, plus one 0.5 s terminate attempt, plus slack
    assert time.monotonic() - started < 0.5 * 4 + 2
    assert info.value.transient
    # a killed server leaves no simulator process behind
    assert wait_until(lambda: not any(pid_alive(p) for p in workers), timeout=5), workers


def test_cli_rejects_bad_options(capsys):
    assert cli_main(["serve-2300", "--qubits", "0"]) == 2
    assert "--qubits must be between 1" in capsys.readouterr().out
    assert cli_main(["serve-2300", "--gates", "H,FOO"]) == 2
    assert "unknown gate" in capsys.readouterr().out


def test_emulator_enforces_its_gate_set_and_topology(emulators):
    emu = emulators["restricted"]  # X90, mX90, Y90, mY90, Rz, CZ on a line of 3 qubits
    static = emu.request("get_static")["payload"]
    assert static["nqubits"] == 3 and sorted(map(tuple, static["topology"])) == [(0, 1), (1, 0), (1, 2), (2, 1)]
    sid = str(uuid.uuid4())
    head = "version 3.0\nqubit[3] q\nbit[3] b\n"
    cases = {
        "H q[0]\n": "primitive gate set",
        "CZ q[0], q[2]\n": "not connected",
        "X90 q[0]\nCZ q[1], q[2]\n": None,
    }
    deadline = time.monotonic() + 10
    while raw_request(emu.rep, {"session_id": sid, "command": "initialize"})["status"] != "success":
        assert time.monotonic() < deadline, "never left CALIBRATING"
        time.sleep(0.1)
    try:
        for body, error in cases.items():
            payload = {"job_id": 1 + len(body), "circuit": head + body + "b = measure q\n", "number_of_shots": 10}
            reply = raw_request(emu.rep, {"session_id": sid, "command": "execute", "payload": payload})
            if error is None:
                assert reply["status"] == "success", reply
            else:
                assert reply["status"] == "failure" and error in reply["payload"]["error_msg"], reply
    finally:
        raw_request(emu.rep, {"session_id": sid, "command": "terminate"})
