"""QuTech's control-software validator flows against ``qfleet serve-2300``.

The flows and messages of the validator in QuTech's compute-runtime-schema repository
(tests/control-software-validator: test_flows.py and its models generated from
schemas/*/request.schema.json and reply_success.schema.json), written here as pydantic
models from those published schemas: message-format ``version`` required on every reply and
published state, ``session_id`` a UUID, the same (not extra) payload fields. Like the
validator, each flow uses plain ZeroMQ REQ/SUB sockets and version "0.1.0", and the happy
flow sends a ``version 1.0`` program with a cQASM 3 body.
"""

from __future__ import annotations

import uuid
from enum import Enum
from typing import Any, Literal
from uuid import UUID

import pytest
import zmq
from pydantic import BaseModel, Field

pytest_plugins = ["p2300_support"]

VERSION = "0.1.0"
_V = Field(..., pattern=r"^\d+\.\d+\.\d$")

# -- requests (schemas/<command>/request.schema.json) -----------------------------------


class InitializeRequest(BaseModel):
    version: str = _V
    session_id: UUID
    command: Literal["initialize"] = "initialize"


class RunCircuitPayload(BaseModel):
    job_id: int
    circuit: str
    number_of_shots: int = Field(..., gt=0)
    include_raw_data: bool | None = False


class ExecuteRequest(BaseModel):
    version: str = _V
    session_id: UUID
    command: Literal["execute"] = "execute"
    payload: RunCircuitPayload


class TerminateRequest(BaseModel):
    version: str = _V
    session_id: UUID
    command: Literal["terminate"] = "terminate"


class GetStaticRequest(BaseModel):  # no session_id in the schema
    version: str = _V
    command: Literal["get_static"] = "get_static"


class GetDynamicRequest(BaseModel):
    version: str = _V
    command: Literal["get_dynamic"] = "get_dynamic"


# -- replies (schemas/<command>/reply_success.schema.json) ------------------------------


class SimpleReplySuccess(BaseModel):  # initialize and terminate
    version: str = _V
    session_id: UUID
    status: Literal["success"]


class RunCircuitResult(BaseModel):
    job_id: int
    results: dict[str, int]
    raw_data: list[str] | None = None


class ExecuteReplySuccess(BaseModel):
    version: str = _V
    session_id: UUID
    status: Literal["success"]
    payload: RunCircuitResult


class CompilerPass(BaseModel):
    path: str
    method: str
    arguments: dict[str, Any] | None = {}


class CompilerConfig(BaseModel):
    decomposition: list[CompilerPass] | None = []
    mapping: list[CompilerPass] | None = []
    optimization: list[CompilerPass] | None = []
    routing: list[CompilerPass] | None = []


class StaticData(BaseModel):
    nqubits: int
    topology: list[list[int]]
    name: str
    pgs: list[str]
    default_compiler_config: CompilerConfig | None = None
    starttime: float
    supports_raw_data: bool | None = False


class GetStaticReplySuccess(BaseModel):
    version: str = _V
    status: Literal["success"]
    payload: StaticData


class GetDynamicReplySuccess(BaseModel):
    version: str = _V
    status: Literal["success"]
    payload: dict[str, Any]


class HWCSState(Enum):
    IDLE = "IDLE"
    EXECUTING = "EXECUTING"
    CALIBRATING = "CALIBRATING"
    OFFLINE = "OFFLINE"


class PublishStatePayload(BaseModel):
    timestamp: float
    state: HWCSState


class PublishStateMessage(BaseModel):
    version: str = _V
    command: Literal["publish_state"]
    payload: PublishStatePayload


class FailureReply(BaseModel):
    status: Literal["failure"]
    payload: dict[str, str]


VALIDATOR_CIRCUIT = "version 1.0\nqubit[1] q\nbit[1] b\nX q[0]\nb[0] = measure q[0]"


@pytest.fixture
def req(emulators):
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 10_000)
    sock.connect(emulators["default"].rep)
    yield sock
    sock.close(linger=0)


def ask(sock, request: BaseModel, reply: type[BaseModel]) -> BaseModel:
    sock.send_string(request.model_dump_json())
    return reply.model_validate_json(sock.recv_string())


def test_publish_state(emulators):
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVTIMEO, 10_000)
    sub.connect(emulators["default"].pub)
    sub.subscribe("")
    try:
        message = PublishStateMessage.model_validate_json(sub.recv_string())
    finally:
        sub.close(linger=0)
    assert message.payload.state in HWCSState


def test_static_data_request(req):
    reply = ask(req, GetStaticRequest(version=VERSION), GetStaticReplySuccess)
    assert reply.version == VERSION and reply.payload.nqubits == 8
    assert {tuple(e) for e in reply.payload.topology} >= {(0, 1), (1, 0), (3, 4)}  # all pairs


def test_dynamic_data_request(req):
    ask(req, GetDynamicRequest(version=VERSION), GetDynamicReplySuccess)


def test_happy_flow(req):
    # initialize -> execute (a 'version 1.0' program) -> terminate
    session = uuid.uuid4()
    ask(req, InitializeRequest(version=VERSION, session_id=session), SimpleReplySuccess)
    payload = RunCircuitPayload(job_id=1, circuit=VALIDATOR_CIRCUIT, number_of_shots=10)
    reply = ask(req, ExecuteRequest(version=VERSION, session_id=session, payload=payload),
                ExecuteReplySuccess)  # fmt: skip
    assert reply.payload.results == {"1": 10}  # X on the only qubit, every shot
    ask(req, TerminateRequest(version=VERSION, session_id=session), SimpleReplySuccess)


def test_two_init_flow(req):
    # initialize, execute, initialize again (same session: accepted), terminate
    session = uuid.uuid4()
    ask(req, InitializeRequest(version=VERSION, session_id=session), SimpleReplySuccess)
    payload = RunCircuitPayload(job_id=1, circuit=VALIDATOR_CIRCUIT, number_of_shots=10)
    ask(req, ExecuteRequest(version=VERSION, session_id=session, payload=payload), ExecuteReplySuccess)
    ask(req, InitializeRequest(version=VERSION, session_id=session), SimpleReplySuccess)
    ask(req, TerminateRequest(version=VERSION, session_id=session), SimpleReplySuccess)


def test_execute_without_initialize_flow(req):
    payload = RunCircuitPayload(job_id=1, circuit=VALIDATOR_CIRCUIT, number_of_shots=10)
    reply = ask(req, ExecuteRequest(version=VERSION, session_id=uuid.uuid4(), payload=payload), FailureReply)
    assert "without initialize" in reply.payload["error_msg"]
    # and 2300 is not left locked: another session initializes at once
    session = uuid.uuid4()
    ask(req, InitializeRequest(version=VERSION, session_id=session), SimpleReplySuccess)
    ask(req, TerminateRequest(version=VERSION, session_id=session), SimpleReplySuccess)


def test_cqasm1_body_is_refused_naming_the_cause(req):
    session = uuid.uuid4()
    ask(req, InitializeRequest(version=VERSION, session_id=session), SimpleReplySuccess)
    try:
        payload = RunCircuitPayload(job_id=2, circuit="version 1.0\nqubits 1\nx q[0]\nmeasure_z q[0]", number_of_shots=5)
        reply = ask(req, ExecuteRequest(version=VERSION, session_id=session, payload=payload), FailureReply)
        assert "cQASM 1.0 program" in reply.payload["error_msg"] and "version 3.0" in reply.payload["error_msg"]
    finally:
        ask(req, TerminateRequest(version=VERSION, session_id=session), SimpleReplySuccess)
