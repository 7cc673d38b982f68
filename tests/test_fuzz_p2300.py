# ruff: noqa: E501 - one fuzz case a line reads best
"""Fuzzing the 2300 protocol both ways (issue 12's fuzz suite, protocol part).

- Requests: malformed, oversized and wrong-typed messages sent with pyzmq straight to a running
  ``qfleet serve-2300``; each gets a failure reply naming what is wrong, and the emulator
  stays alive and keeps serving. (tests/test_p2300_protocol.py has a first corpus in one test;
  these are other messages, one case each.)
- Replies: a misbehaving 2300 (a ZeroMQ REP server in this process, answering as a 2300 does
  except for one command, where it sends a bad reply); Executor2300 raises its typed error
  for each, never hangs and never returns a result.

Every case has its own time limit (``pytest.mark.timeout``), so a hang fails the case.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable

import pennylane as qml
import pytest
import zmq
from p2300_support import raw_request
from pennylane.tape import QuantumScript

from qfleet.errors import ExecutorError, QFleetError
from qfleet.executors import Executor2300
from qfleet.protocols.p2300 import messages as m
from qfleet.protocols.p2300.session import MAX_REQUEST_BYTES, ControlSession

pytest_plugins = ["p2300_support"]

BELL = "version 3.0\nqubit[2] q\nbit[2] b\nH q[0]\nCNOT q[0], q[1]\nb = measure q\n"
X_TAPE = QuantumScript([qml.X(0)], [qml.probs(wires=[0, 1])], shots=100)


# -- requests to serve-2300 -------------------------------------------------------------------


def _execute(**changes) -> dict:
    payload = {"job_id": 1, "circuit": BELL, "number_of_shots": 10, **changes}
    return {"command": "execute", "payload": {k: v for k, v in payload.items() if v is not ...}}


#: case -> (the request: a dict gets this test's session_id unless it has one; bytes go as
#: they are; a list is sent as frames), a word the error message must contain (lower case).
REQUESTS: dict[str, tuple[object, str]] = {
    "json with a BOM": (b'\xef\xbb\xbf{"session_id": "s", "command": "get_static"}', ""),
    "json object with trailing junk": (b'{"session_id": "s", "command": "get_static"} x', ""),
    "Infinity shots": (b'{"session_id": "s", "command": "execute", "payload": '
                       b'{"job_id": 1, "circuit": "", "number_of_shots": Infinity}}', ""),
    "three frames": ([b"{}", b"{}", b"{}"], "frame"),
    "command upper case": ({"command": "EXECUTE"}, "command"),
    "command empty": ({"command": ""}, "command"),
    "command null": ({"command": None}, "command"),
    "session_id null": ({"session_id": None, "command": "initialize"}, "session_id"),
    "session_id a list": ({"session_id": ["a"], "command": "initialize"}, "session_id"),
    "session_id an object": ({"session_id": {"a": 1}, "command": "terminate"}, "session_id"),
    "version a number": ({"command": "get_static", "version": 3}, "version"),
    "payload a string": ({"command": "execute", "payload": "job"}, "payload"),
    "payload null for execute": ({"command": "execute", "payload": None}, "payload"),
    "job_id null": (_execute(job_id=None), "job_id"),
    "job_id a list": (_execute(job_id=[1]), "job_id"),
    "job_id an object": (_execute(job_id={"id": 1}), "job_id"),
    "circuit null": (_execute(circuit=None), "circuit"),
    "circuit a list of lines": (_execute(circuit=BELL.splitlines()), "circuit"),
    "circuit binary junk": (_execute(circuit="\x00\x01\x02 version"), ""),
    "circuit with an unknown gate": (_execute(circuit=BELL.replace("H q[0]", "FOO q[0]")), ""),
    "circuit with an out-of-range qubit": (_execute(circuit=BELL.replace("H q[0]", "H q[7]")), ""),
    "circuit measuring into a too-small register": (
        _execute(circuit="version 3.0\nqubit[2] q\nbit[1] b\nb = measure q\n"), ""),
    "shots null": (_execute(number_of_shots=None), "number_of_shots"),
    "shots a bool": (_execute(number_of_shots=True), "number_of_shots"),
    "shots a list": (_execute(number_of_shots=[10]), "number_of_shots"),
    "shots missing": (_execute(number_of_shots=...), "number_of_shots"),
    "include_raw_data a number": (_execute(include_raw_data=1), "include_raw_data"),
    "payload with 10000 unknown keys": (
        _execute(**{f"k{i}": i for i in range(10_000)}), ""),
    "oversized: just over the request limit": (
        {"command": "get_static", "pad": "x" * (MAX_REQUEST_BYTES + 1)}, ""),
    "oversized circuit": (_execute(circuit="x" * (MAX_REQUEST_BYTES + 16)), ""),
}  # fmt: skip


def _send(address: str, session: str, message: object) -> dict:
    if isinstance(message, list):
        return raw_request(address, None, frames=message)
    if isinstance(message, dict):
        message = {"session_id": session, **message}
    return raw_request(address, message, timeout=20)


@pytest.fixture(scope="module")
def session(emulators):
    """One initialized session on the default emulator for all request cases."""
    emulator = emulators["default"]
    sid = str(uuid.uuid4())
    assert emulator.request("initialize", session_id=sid)["status"] == "success"
    yield emulator, sid
    emulator.request("terminate", session_id=sid)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", list(REQUESTS))
def test_bad_request_gets_a_failure_reply_and_the_emulator_lives(session, case):
    emulator, sid = session
    message, word = REQUESTS[case]
    reply = _send(emulator.rep, sid, message)
    assert reply["status"] == "failure", (case, str(reply)[:300])
    error = reply["payload"]["error_msg"]
    assert isinstance(error, str) and error, case
    assert word in error.lower(), (case, error)
    assert emulator.alive, f"{case} killed serve-2300:\n{emulator.stderr()}"
    # still serving, and the session still holds the lock: a valid execute succeeds
    good = _send(emulator.rep, sid, _execute(job_id=2))
    assert good["status"] == "success", good
    assert set(good["payload"]["results"]) <= {"00", "11"}
    assert sum(good["payload"]["results"].values()) == 10


# -- a misbehaving 2300 -------------------------------------------------------------------


Reply = Callable[[dict], "bytes | list[bytes]"]


class Misbehaving2300:
    """A REP server that answers as a 2300 does, except ``bad_command``, where ``bad(request)``
    makes the reply (bytes, or frames)."""

    def __init__(self, bad_command: str, bad: Reply) -> None:
        self.bad_command, self.bad = bad_command, bad
        self.session = ControlSession(
            m.StaticData(nqubits=2, name="misbehaving", pgs=[], starttime=0))
        self.sock = zmq.Context.instance().socket(zmq.REP)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while not self.stop.is_set():
            if not self.sock.poll(50):
                continue
            body = self.sock.recv()
            request = json.loads(body)
            if request["command"] == self.bad_command:
                reply = self.bad(request)
            elif request["command"] == "execute":  # the right answer: X on q[0] -> "01"
                reply = m.success(request["session_id"], {
                    "job_id": request["payload"]["job_id"],
                    "results": {"01": request["payload"]["number_of_shots"]}})
            else:
                reply = self.session.receive(body)
            if isinstance(reply, list):
                self.sock.send_multipart(reply)
            else:
                self.sock.send(reply)

    def executor(self) -> Executor2300:
        return Executor2300(address=f"tcp://127.0.0.1:{self.port}", subscribe_address=None,
                            timeout=2, retries=0, shots=100)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.sock.close(linger=0)


def _ok(request: dict, payload: object) -> bytes:
    return json.dumps({"session_id": request.get("session_id", ""), "status": "success",
                       "payload": payload}).encode()


def _results(results: object, **extra) -> Reply:
    return lambda r: _ok(r, {"job_id": r["payload"]["job_id"], "results": results, **extra})


def _static(**changes) -> Reply:
    static = {"nqubits": 2, "name": "bad", "pgs": [], "starttime": 0, **changes}
    return lambda r: _ok(r, {k: v for k, v in static.items() if v is not ...})


#: case -> (the command answered badly, how, what the error says). Executor2300 must raise.
REPLIES: dict[str, tuple[str, Reply, str]] = {
    "negative count": ("execute", _results({"00": 150, "01": -50}), 'negative counts'),
    "all counts negative": ("execute", _results({"00": -100}), 'negative counts'),
    "counts summing to more than the shots": ("execute", _results({"00": 60, "01": 60}), 'counts sum to 120, not the 100 shots'),
    "counts summing to less than the shots": ("execute", _results({"01": 99}), 'counts sum to 99, not the 100 shots'),
    "no counts at all": ("execute", _results({}), 'counts sum to 0, not the 100 shots'),
    "bitstring too wide": ("execute", _results({"001": 100}), 'not 2-bit strings'),
    "bitstring too narrow": ("execute", _results({"1": 100}), 'not 2-bit strings'),
    "bitstring not binary": ("execute", _results({"0a": 100}), 'not 2-bit strings'),
    "bitstring empty": ("execute", _results({"": 100}), 'not 2-bit strings'),
    "fractional count": ("execute", _results({"00": 50.5, "01": 49.5}), 'malformed execute reply'),
    "count a string": ("execute", _results({"00": "100"}), 'malformed execute reply'),
    "count a whole float": ("execute", _results({"00": 100.0}), 'malformed execute reply'),
    "count a boolean": ("execute", _results({"01": True, "00": 99}), 'malformed execute reply'),
    "count null": ("execute", _results({"01": None}), 'malformed execute reply'),
    "count a list": ("execute", _results({"01": [100]}), 'malformed execute reply'),
    "results a list": ("execute", _results([["01", 100]]), 'malformed execute reply'),
    "results a string": ("execute", _results("01:100"), 'malformed execute reply'),
    "results missing": ("execute", lambda r: _ok(r, {"job_id": r["payload"]["job_id"]}), 'malformed execute reply'),
    "payload null": ("execute", lambda r: _ok(r, None), 'malformed execute reply'),
    "raw_data the wrong length": ("execute", _results({"01": 100}, raw_data=["01"] * 3), 'raw_data holds 3 shots, not 100'),
    "not JSON": ("execute", lambda r: b"<html>502 Bad Gateway</html>", 'reply is not JSON'),
    "empty reply": ("execute", lambda r: b"", 'reply is not JSON'),
    "JSON array": ("execute", lambda r: b"[]", 'must be a JSON object'),
    "a published state instead of a reply": (
        "execute", lambda r: m.publish_state(m.State.IDLE, 0.0), 'invalid reply: session_id: Field required'),
    "status missing": ("execute", lambda r: json.dumps(
        {"session_id": r["session_id"], "payload": {}}).encode(), 'invalid reply: status: Field required'),
    "status unknown": ("execute", lambda r: json.dumps(
        {"session_id": r["session_id"], "status": "ok", "payload": {}}).encode(), "Input should be 'success' or 'failure'"),
    "another session's reply": ("execute", lambda r: m.success("someone-else", {
        "job_id": r["payload"]["job_id"], "results": {"01": 100}}), "reply for session 'someone-else'"),
    "failure without error_msg": ("execute", lambda r: json.dumps(
        {"session_id": r["session_id"], "status": "failure", "payload": {}}).encode(), 'failure reply without error_msg'),
    "two frames": ("execute", lambda r: [b'{"session_id": ', b'"x"}'], 'reply is not JSON'),
    "initialize: not JSON": ("initialize", lambda r: b"\xff\xfe", 'initialize: reply is not UTF-8'),
    "initialize: status missing": ("initialize", lambda r: json.dumps(
        {"session_id": r["session_id"]}).encode(), 'initialize: invalid reply: status'),
    "get_static: nqubits missing": ("get_static", _static(nqubits=...), 'get_static: malformed reply'),
    "get_static: nqubits a string": ("get_static", _static(nqubits="two"), 'get_static: malformed reply'),
    "get_static: not JSON": ("get_static", lambda r: b"static?", 'get_static: reply is not JSON'),
    "get_static: a failure": ("get_static", lambda r: m.failure(r.get("session_id", ""),
                                                                "hardware fault"), 'get_static failed: hardware fault'),
}  # fmt: skip


@pytest.mark.timeout(20)
@pytest.mark.parametrize("case", list(REPLIES))
def test_bad_reply_is_a_typed_error_not_a_result_or_a_hang(case):
    command, bad, says = REPLIES[case]
    peer = Misbehaving2300(command, bad)
    try:
        with pytest.raises(QFleetError) as info:
            peer.executor().execute([X_TAPE])
        assert isinstance(info.value, ExecutorError), repr(info.value)
        assert says in str(info.value), (case, str(info.value))
    finally:
        peer.close()


@pytest.mark.timeout(20)
def test_the_misbehaving_2300_answers_right_when_it_behaves():
    """The fake itself is sound: with nothing bad, X on wire 0 gives |01> = [0, 1, 0, 0]."""
    peer = Misbehaving2300("no such command", lambda r: b"")
    try:
        [probs] = peer.executor().execute([X_TAPE])
        assert list(probs) == [0.0, 0.0, 1.0, 0.0]  # wire order (0, 1): q0=1, q1=0
    finally:
        peer.close()
