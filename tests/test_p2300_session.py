"""The 2300 protocol without sockets: message models and the server's state machine."""

from __future__ import annotations

import json

import pytest

from qfleet.protocols.p2300 import messages as m
from qfleet.protocols.p2300.messages import ExecuteResult, ProtocolError, State, StaticData
from qfleet.protocols.p2300.session import ControlSession, ExecuteJob

CIRCUIT = "version 3.0\nqubit[1] q\nbit[1] b\nX q[0]\nb[0] = measure q[0]\n"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_session(**kwargs) -> tuple[ControlSession, Clock]:
    clock = Clock()
    static = StaticData(nqubits=2, name="test", pgs=["X"], topology=[(0, 1)], starttime=1.0)
    return ControlSession(static, clock=clock, **kwargs), clock


def send(session: ControlSession, command: str, sid: str = "s1", payload=None, **extra):
    message = {"session_id": sid, "command": command, **extra}
    if payload is not None:
        message["payload"] = payload
    out = session.receive(json.dumps(message).encode())
    return out if isinstance(out, ExecuteJob) else json.loads(out)


def execute_payload(job_id: int = 1, shots: int = 10, **kw):
    return {"job_id": job_id, "circuit": CIRCUIT, "number_of_shots": shots, **kw}


def test_lock_cycle_and_execute():
    session, _ = make_session()
    assert send(session, "execute", payload=execute_payload())["status"] == "failure"
    assert send(session, "initialize") == {"session_id": "s1", "status": "success"}
    job = send(session, "execute", payload=execute_payload())
    assert isinstance(job, ExecuteJob) and session.state is State.EXECUTING
    reply = json.loads(session.complete(job, ExecuteResult(job_id=1, results={"1": 10})))
    assert reply == {"session_id": "s1", "status": "success", "payload": {"job_id": 1, "results": {"1": 10}}}
    assert session.state is State.IDLE and session.locked
    assert send(session, "terminate")["status"] == "success" and not session.locked
    assert send(session, "terminate")["status"] == "success"  # idempotent


def test_execute_before_initialize_names_the_fix():
    session, _ = make_session()
    reply = send(session, "execute", payload=execute_payload())
    assert reply["status"] == "failure" and "initialize first" in reply["payload"]["error_msg"]


def test_other_session_is_refused_until_the_lock_expires():
    session, clock = make_session(lock_timeout=30)
    send(session, "initialize", "a")
    for command in ("initialize", "execute", "terminate"):
        reply = send(session, command, "b", payload=execute_payload() if command == "execute" else None)
        assert reply["status"] == "failure" and "locked by another session" in reply["payload"]["error_msg"]
    clock.now += 31  # "a" died without terminate
    assert send(session, "initialize", "b")["status"] == "success"
    assert session.locked_by == "b" and session.counts["lock_expired"] == 1


def test_initialize_is_idempotent_for_the_same_session():
    session, _ = make_session()
    assert send(session, "initialize")["status"] == "success"
    assert send(session, "initialize")["status"] == "success"


def test_retried_execute_gets_the_first_reply_not_a_second_run():
    session, _ = make_session()
    send(session, "initialize")
    job = send(session, "execute", payload=execute_payload(job_id=4))
    first = session.complete(job, ExecuteResult(job_id=4, results={"1": 10}))
    again = session.receive(json.dumps({"session_id": "s1", "command": "execute", "payload": execute_payload(job_id=4)}))
    assert again == first
    # same job id with another circuit is new work
    changed = send(session, "execute", payload=execute_payload(job_id=4, shots=11))
    assert isinstance(changed, ExecuteJob)


def test_failure_outcome_and_shot_cap():
    session, _ = make_session(max_shots=100)
    send(session, "initialize")
    reply = send(session, "execute", payload=execute_payload(shots=101))
    assert reply["status"] == "failure" and "exceeds" in reply["payload"]["error_msg"]
    job = send(session, "execute", payload=execute_payload())
    reply = json.loads(session.complete(job, "invalid circuit: nope"))
    assert reply["payload"] == {"error_msg": "invalid circuit: nope"}


def test_calibrating_refuses_work_but_answers_queries():
    session, _ = make_session(state=State.CALIBRATING)
    reply = send(session, "initialize")
    assert reply["status"] == "failure" and "CALIBRATING" in reply["payload"]["error_msg"]
    assert send(session, "get_static")["payload"]["nqubits"] == 2
    assert send(session, "get_dynamic")["payload"]["state"] == "CALIBRATING"
    session.set_state(State.IDLE)
    assert send(session, "initialize")["status"] == "success"


def test_older_version_field_is_accepted():
    session, _ = make_session()
    assert send(session, "initialize", version="0.2.0")["status"] == "success"
    reply = m.decode_reply(b'{"session_id": "x", "status": "success", "version": "0.2.0"}')
    assert reply.ok and reply.version == "0.2.0"


def test_get_static_payload_matches_the_schema_fields():
    session, _ = make_session()
    payload = send(session, "get_static")["payload"]
    assert set(payload) >= {
        "protocol_version", "nqubits", "topology", "name", "pgs", "starttime",
        "default_compiler_config", "supports_raw_data",
    }  # fmt: skip
    assert payload["protocol_version"] == 3 and payload["topology"] == [[0, 1]]


def test_reply_models_are_lenient_and_requests_strict():
    result = ExecuteResult.model_validate({"job_id": 1, "results": {"01": 2}, "raw_data": [], "extra": 1})
    assert result.raw_data == []
    reply = m.decode_reply(b'{"session_id": "s", "status": "failure", "payload": {"error_msg": "boom"}}')
    assert not reply.ok and reply.error_msg == "boom"
    for bad in (b"", b"[]", b'{"status": "success"}', b'{"session_id": 1, "status": "success"}'):
        with pytest.raises(ProtocolError):
            m.decode_reply(bad)
    with pytest.raises(ProtocolError, match="job_id"):
        m.decode_execute({"job_id": 1.0, "circuit": "", "number_of_shots": 1})
    published = m.decode_publish(m.publish_state(State.OFFLINE, 5.0))
    assert published.payload.state is State.OFFLINE and not published.payload.state.available


def test_session_never_raises():
    session, _ = make_session()
    for data in (b"\xff", b"{", b"[]", b"null", b'{"command": "x"}', "x" * 10, b"[" * 50000):
        reply = json.loads(session.receive(data))
        assert reply["status"] == "failure" and reply["payload"]["error_msg"]
    assert session.counts["failures"] == 7
