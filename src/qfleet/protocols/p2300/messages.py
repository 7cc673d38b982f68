"""2300 messages (compute-runtime schema, protocol v3) as pydantic models. Sans-IO.

Every message is one JSON object in one ZeroMQ frame. Requests carry ``session_id``,
``command`` and, for some commands, ``payload``; replies echo ``session_id`` and carry
``status`` ("success" | "failure") and ``payload`` (``{"error_msg": ...}`` on failure).
Protocol v1/v2 messages also carried a ``version`` string ("0.2.0"), and their schemas (and
QuTech's control-software validator) require it on replies and published states: it is
accepted in both directions, a reply echoes the request's, and published states carry
:data:`MESSAGE_VERSION`. ``get_static``/``get_dynamic`` requests may leave out
``session_id`` (the v1/v2 schemas have none).

Bitstrings in results are q[n]...q[0]: the rightmost character is qubit 0.
"""

from __future__ import annotations

import enum
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

PROTOCOL_VERSION = 3

#: The message-format ``version`` a 2300 writes into replies and published states when the
#: request named none. Protocol v1/v2 schemas (and QuTech's control-software validator)
#: require one matching ``^\d+\.\d+\.\d$``; v3 ignores it.
MESSAGE_VERSION = "0.2.0"

#: Commands that need no session (``get_static``/``get_dynamic`` requests of the v1/v2
#: schemas carry only ``command`` and ``version``).
SESSIONLESS = ("get_static", "get_dynamic")

COMMANDS = ("initialize", "execute", "terminate", "get_static", "get_dynamic")


class State(str, enum.Enum):  # noqa: UP042 - StrEnum would change str() of members
    """What 2300 publishes on its PUB socket."""

    IDLE = "IDLE"
    EXECUTING = "EXECUTING"
    CALIBRATING = "CALIBRATING"
    BENCHMARKING = "BENCHMARKING"
    OFFLINE = "OFFLINE"

    @property
    def available(self) -> bool:
        """Whether a job processor may start a batch (IDLE or EXECUTING)."""
        return self in (State.IDLE, State.EXECUTING)


class ProtocolError(ValueError):
    """Bytes that are not a valid 2300 message; the text says what is wrong."""


# -- requests (client -> 2300) ------------------------------------------------------------

_STRICT = ConfigDict(extra="forbid", strict=True)


class Request(BaseModel):
    """Any request. ``payload`` is validated per command (:class:`ExecutePayload`).
    ``session_id`` may be left out only by :data:`SESSIONLESS` commands."""

    model_config = _STRICT

    session_id: str = ""
    command: str
    payload: dict[str, Any] | None = None
    version: str | None = None


class ExecutePayload(BaseModel):
    """The payload of ``execute``."""

    model_config = _STRICT

    job_id: int
    circuit: str
    number_of_shots: int = Field(gt=0)
    include_raw_data: bool = False


# -- replies (2300 -> client) -------------------------------------------------------------

_LENIENT = ConfigDict(extra="allow")


class Reply(BaseModel):
    """Any reply; ``payload`` is read per command (:class:`ExecuteResult`, :class:`StaticData`)."""

    model_config = _LENIENT

    session_id: str
    status: Literal["success", "failure"]
    payload: dict[str, Any] | None = None
    version: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "success"

    @property
    def error_msg(self) -> str:
        """The server's failure text ("" on success)."""
        if self.ok:
            return ""
        msg = (self.payload or {}).get("error_msg")
        return str(msg) if msg is not None else f"failure reply without error_msg: {self.payload!r}"


class ExecuteResult(BaseModel):
    """The payload of a successful ``execute`` reply."""

    model_config = _LENIENT

    job_id: int
    # Strict: a count of "100", 100.0 or true is a misbehaving 2300, not a count to coerce.
    results: dict[str, StrictInt]
    """{bitstring (q[n]...q[0]): count}."""
    raw_data: list[str] | None = None
    """Bitstrings in shot order, when asked for (older servers send [] when not)."""


class CompilerConfig(BaseModel):
    model_config = _LENIENT

    decomposition: list[dict[str, Any]] = Field(default_factory=list)
    mapping: list[dict[str, Any]] = Field(default_factory=list)
    optimization: list[dict[str, Any]] = Field(default_factory=list)
    routing: list[dict[str, Any]] = Field(default_factory=list)


class StaticData(BaseModel):
    """The payload of a successful ``get_static`` reply."""

    model_config = _LENIENT

    protocol_version: int = PROTOCOL_VERSION
    nqubits: int
    topology: list[tuple[int, int]] = Field(default_factory=list)
    """Directed qubit pairs [source, target]."""
    name: str
    pgs: list[str] = Field(default_factory=list)
    """Primitive gate set: cQASM gate names in upper case."""
    starttime: float
    default_compiler_config: CompilerConfig = Field(default_factory=CompilerConfig)
    supports_raw_data: bool = False


# -- published (2300 PUB socket) ----------------------------------------------------------


class StatePayload(BaseModel):
    model_config = _LENIENT

    state: State
    timestamp: float


class PublishState(BaseModel):
    """``{"command": "publish_state", "payload": {"state": ..., "timestamp": ...}}``."""

    model_config = _LENIENT

    command: Literal["publish_state"] = "publish_state"
    payload: StatePayload
    version: str | None = None


# -- encoding -----------------------------------------------------------------------------


def encode(message: BaseModel) -> bytes:
    """One message as the bytes of one ZeroMQ frame (``None`` fields left out)."""
    return message.model_dump_json(exclude_none=True).encode()


def request(command: str, session_id: str, payload: dict[str, Any] | None = None) -> bytes:
    return encode(Request(session_id=session_id, command=command, payload=payload))


def success(
    session_id: str, payload: dict[str, Any] | None = None, version: str | None = None
) -> bytes:
    return encode(Reply(session_id=session_id, status="success", payload=payload, version=version))


def failure(session_id: str, error_msg: str, version: str | None = None) -> bytes:
    return encode(
        Reply(
            session_id=session_id,
            status="failure",
            payload={"error_msg": error_msg},
            version=version,
        )
    )


def publish_state(state: State, timestamp: float, version: str | None = MESSAGE_VERSION) -> bytes:
    return encode(
        PublishState(payload=StatePayload(state=state, timestamp=timestamp), version=version)
    )


def describe(exc: ValidationError, what: str) -> str:
    """A pydantic error as one line: ``execute payload: number_of_shots: ... (got 0)``."""
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"]) or "message"
        got = error.get("input")
        shown = repr(got) if not isinstance(got, dict) else "{...}"
        if len(shown) > 60:
            shown = shown[:57] + "..."
        parts.append(f"{where}: {error['msg']} (got {shown})")
    return f"invalid {what}: " + "; ".join(parts)


def _load_object(data: bytes | str, what: str) -> dict[str, Any]:
    try:
        text = data if isinstance(data, str) else bytes(data).decode()
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"{what} is not UTF-8 text: {exc}") from None
    try:
        obj = json.loads(text)
    except RecursionError:
        raise ProtocolError(f"{what} is nested too deeply") from None
    except ValueError as exc:
        raise ProtocolError(f"{what} is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"{what} must be a JSON object, got {type(obj).__name__}")
    return obj


def _validated(model: type[BaseModel], obj: Any, what: str) -> Any:
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        raise ProtocolError(describe(exc, what)) from None


def decode_request(data: bytes | str) -> Request:
    """Bytes -> :class:`Request`; :class:`ProtocolError` with a readable reason otherwise."""
    return _validated(Request, _load_object(data, "request"), "request")


def decode_execute(payload: dict[str, Any] | None) -> ExecutePayload:
    if payload is None:
        raise ProtocolError(
            "execute needs a payload {job_id, circuit, number_of_shots[, include_raw_data]}"
        )
    return _validated(ExecutePayload, payload, "execute payload")


def decode_reply(data: bytes | str) -> Reply:
    return _validated(Reply, _load_object(data, "reply"), "reply")


def decode_publish(data: bytes | str) -> PublishState:
    what = "published message"
    return _validated(PublishState, _load_object(data, what), what)


def version_of(data: bytes | str) -> str | None:
    """The ``version`` a (possibly invalid) request names, or None."""
    try:
        obj = _load_object(data, "request")
    except ProtocolError:
        return None
    version = obj.get("version")
    return version if isinstance(version, str) and version else None


def session_id_of(data: bytes | str) -> str:
    """The ``session_id`` of a (possibly invalid) request, or "" when it has none."""
    try:
        obj = _load_object(data, "request")
    except ProtocolError:
        return ""
    sid = obj.get("session_id")
    return sid if isinstance(sid, str) else ""
